//! What the decode and transcribe steps share: getting the call's
//! recording out of the blob store, and explaining decoder errors.

use rop_audio::DecodeError;
use rop_blob::{BlobError, BlobStore};
use rop_domain::Call;

use crate::worker::StepError;

pub(crate) async fn open_recording(
    blobs: &dyn BlobStore,
    call: &Call,
) -> Result<std::fs::File, StepError> {
    let key = call
        .audio_blob
        .as_deref()
        .ok_or_else(|| StepError::Permanent {
            code: "no_audio".into(),
            message: "У звонка нет записи в хранилище".into(),
        })?;
    match blobs.open(key).await {
        Ok(file) => Ok(file.into_std().await),
        Err(BlobError::NotFound(_)) => Err(StepError::Permanent {
            code: "audio_missing".into(),
            message: "Файл записи пропал из хранилища".into(),
        }),
        Err(error) => Err(StepError::Transient(format!("blob store: {error}"))),
    }
}

pub(crate) fn explain(error: &DecodeError) -> StepError {
    if error.is_transient() {
        return StepError::Transient(error.to_string());
    }
    StepError::Permanent {
        code: error.code().to_owned(),
        message: format!("Запись не обработана: {error}"),
    }
}
