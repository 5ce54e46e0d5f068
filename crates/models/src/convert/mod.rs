//! CTranslate2 Whisper → whisper.cpp ggml.
//!
//! The output is what whisper.cpp's `models/convert-pt-to-ggml.py` writes
//! for OpenAI's PyTorch checkpoint: the same tensor names, shapes, types and
//! order (the order of OpenAI's `state_dict`), so the bytes are those of an
//! f16 conversion of the original model. Writing is deterministic: the same
//! inputs always give the same file.

mod bpe;
mod ct2;
mod mel;

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use half::{bf16, f16};

use ct2::{Ct2Model, Dtype, Variable};

const GGML_MAGIC: u32 = 0x6767_6d6c;
const SAMPLE_RATE: u32 = 16_000;
const N_FFT: usize = 400;
/// Elements converted per read; bounds memory whatever the tensor size.
const CHUNK_ELEMENTS: usize = 1 << 18;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("ошибка чтения или записи: {0}")]
    Io(#[from] io::Error),
    #[error("модель CTranslate2: {0}")]
    Model(String),
    #[error("tokenizer.json: {0}")]
    Tokenizer(String),
}

/// whisper.cpp's hyper-parameters, in the order of its file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WhisperHparams {
    pub n_vocab: usize,
    pub n_audio_ctx: usize,
    pub n_audio_state: usize,
    pub n_audio_head: usize,
    pub n_audio_layer: usize,
    pub n_text_ctx: usize,
    pub n_text_state: usize,
    pub n_text_head: usize,
    pub n_text_layer: usize,
    pub n_mels: usize,
}

#[derive(Debug, Clone)]
pub struct Conversion {
    pub hparams: WhisperHparams,
    /// Regular (non-special) tokens written.
    pub tokens: usize,
    pub tensors: usize,
    /// Size of the written file.
    pub bytes: u64,
}

/// Converts a CTranslate2 Whisper model (`model.bin` of float16 or float32
/// weights, and the `tokenizer.json` next to it) into a whisper.cpp model
/// file at `out`, which is created or truncated, then synced.
pub fn ct2_whisper_to_ggml(
    model_bin: &Path,
    tokenizer_json: &Path,
    out: &Path,
) -> Result<Conversion, ConvertError> {
    convert(model_bin, tokenizer_json, out, &mut |_, _| {})
}

/// As [`ct2_whisper_to_ggml`], calling `progress(written, total)` as the
/// bytes go out.
pub(crate) fn convert(
    model_bin: &Path,
    tokenizer_json: &Path,
    out: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Conversion, ConvertError> {
    let mut input = File::open(model_bin)?;
    let model = ct2::read_index(&mut input)?;
    if !model.spec.is_empty() && model.spec != "WhisperSpec" {
        return Err(ConvertError::Model(format!(
            "это не Whisper, а {}",
            model.spec
        )));
    }
    let hparams = hparams(&model)?;
    let tensors = plan(&model, &hparams)?;
    for tensor in &tensors {
        tensor.check_source(&model)?;
    }
    let tokens = read_tokens(tokenizer_json)?;
    if tokens.len() > hparams.n_vocab {
        return Err(ConvertError::Tokenizer(format!(
            "{} обычных токенов, а в модели словарь на {}",
            tokens.len(),
            hparams.n_vocab
        )));
    }
    check_key_biases(&model, &hparams, &mut input)?;

    let filters = mel::mel_filters(SAMPLE_RATE, N_FFT, hparams.n_mels);
    let n_freqs = N_FFT / 2 + 1;
    let header_bytes = 4 + 11 * 4 + 8 + filters.len() as u64 * 4 + 4;
    let token_bytes: u64 = tokens.iter().map(|t| 4 + t.len() as u64).sum();
    let total = header_bytes + token_bytes + tensors.iter().map(Tensor::file_bytes).sum::<u64>();

    let mut writer = Counter {
        inner: BufWriter::with_capacity(1 << 20, File::create(out)?),
        written: 0,
    };
    writer.write_all(&GGML_MAGIC.to_le_bytes())?;
    for value in [
        hparams.n_vocab,
        hparams.n_audio_ctx,
        hparams.n_audio_state,
        hparams.n_audio_head,
        hparams.n_audio_layer,
        hparams.n_text_ctx,
        hparams.n_text_state,
        hparams.n_text_head,
        hparams.n_text_layer,
        hparams.n_mels,
        1, // ftype: mostly f16
    ] {
        write_i32(&mut writer, value)?;
    }
    write_i32(&mut writer, hparams.n_mels)?;
    write_i32(&mut writer, n_freqs)?;
    for weight in &filters {
        writer.write_all(&weight.to_le_bytes())?;
    }
    write_i32(&mut writer, tokens.len())?;
    for token in &tokens {
        write_i32(&mut writer, token.len())?;
        writer.write_all(token)?;
    }
    progress(writer.written, total);

    let mut raw = Vec::new();
    let mut converted = Vec::new();
    for tensor in &tensors {
        tensor.write(&model, &mut input, &mut writer, &mut raw, &mut converted)?;
        progress(writer.written, total);
    }
    let written = writer.written;
    let file = writer.inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    debug_assert_eq!(written, total);
    Ok(Conversion {
        hparams,
        tokens: tokens.len(),
        tensors: tensors.len(),
        bytes: written,
    })
}

struct Counter<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_i32(writer: &mut impl Write, value: usize) -> Result<(), ConvertError> {
    let value = i32::try_from(value)
        .map_err(|_| ConvertError::Model(format!("значение {value} не помещается в i32")))?;
    writer.write_all(&value.to_le_bytes())?;
    Ok(())
}

fn shape_of<'a>(model: &'a Ct2Model, name: &str, rank: usize) -> Result<&'a [usize], ConvertError> {
    let shape = &model.get(name)?.shape;
    if shape.len() != rank {
        return Err(ConvertError::Model(format!(
            "{name}: форма {shape:?}, ожидалась размерности {rank}"
        )));
    }
    Ok(shape)
}

/// Number of `layer_N` scopes under `prefix` (`encoder` or `decoder`),
/// which must be numbered 0..N without gaps.
fn count_layers(model: &Ct2Model, prefix: &str) -> Result<usize, ConvertError> {
    let scope = format!("{prefix}/layer_");
    let mut seen = std::collections::BTreeSet::new();
    for name in model.variables.keys() {
        if let Some(rest) = name.strip_prefix(&scope) {
            let index = rest.split('/').next().unwrap_or_default();
            if let Ok(index) = index.parse::<usize>() {
                seen.insert(index);
            }
        }
    }
    if seen.is_empty() || seen.iter().copied().ne(0..seen.len()) {
        return Err(ConvertError::Model(format!(
            "слои {prefix} пронумерованы не подряд или отсутствуют: {seen:?}"
        )));
    }
    Ok(seen.len())
}

fn heads(model: &Ct2Model, prefix: &str, state: usize) -> Result<usize, ConvertError> {
    // CTranslate2 records the head count; models written without it use
    // Whisper's fixed head width of 64.
    let heads = match model.variables.get(&format!("{prefix}/num_heads")) {
        Some(variable) => variable.scalar_int().and_then(|h| usize::try_from(h).ok()),
        None => Some(state / 64),
    };
    match heads {
        Some(heads) if heads > 0 && state % heads == 0 => Ok(heads),
        _ => Err(ConvertError::Model(format!(
            "{prefix}: не удалось определить число голов внимания для ширины {state}"
        ))),
    }
}

fn hparams(model: &Ct2Model) -> Result<WhisperHparams, ConvertError> {
    let embeddings = shape_of(model, "decoder/embeddings/weight", 2)?;
    let (n_vocab, n_text_state) = (embeddings[0], embeddings[1]);
    let audio_pos = shape_of(model, "encoder/position_encodings/encodings", 2)?;
    let (n_audio_ctx, n_audio_state) = (audio_pos[0], audio_pos[1]);
    let text_pos = shape_of(model, "decoder/position_encodings/encodings", 2)?;
    if text_pos[1] != n_text_state {
        return Err(ConvertError::Model(format!(
            "ширина позиций декодера {} не равна ширине эмбеддингов {n_text_state}",
            text_pos[1]
        )));
    }
    let conv1 = shape_of(model, "encoder/conv1/weight", 3)?;
    if conv1[0] != n_audio_state {
        return Err(ConvertError::Model(format!(
            "conv1 выдаёт {} каналов, а ширина энкодера {n_audio_state}",
            conv1[0]
        )));
    }
    Ok(WhisperHparams {
        n_vocab,
        n_audio_ctx,
        n_audio_state,
        n_audio_head: heads(model, "encoder", n_audio_state)?,
        n_audio_layer: count_layers(model, "encoder")?,
        n_text_ctx: text_pos[0],
        n_text_state,
        n_text_head: heads(model, "decoder", n_text_state)?,
        n_text_layer: count_layers(model, "decoder")?,
        n_mels: conv1[1],
    })
}

/// One tensor of the output and the slice of a CTranslate2 variable it is
/// made of.
#[derive(Debug)]
struct Tensor {
    name: String,
    /// PyTorch order (rows first); the file gets it reversed.
    shape: Vec<usize>,
    f16: bool,
    source: String,
    /// Where the slice starts in the source, in elements: fused projections
    /// are split by rows.
    first_element: usize,
    /// Shape the source must have.
    source_shape: Vec<usize>,
}

impl Tensor {
    fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    fn file_bytes(&self) -> u64 {
        let header = 12 + 4 * self.shape.len() + self.name.len();
        header as u64 + self.elements() as u64 * if self.f16 { 2 } else { 4 }
    }

    fn check_source(&self, model: &Ct2Model) -> Result<(), ConvertError> {
        let source = model.get(&self.source)?;
        if source.shape != self.source_shape {
            return Err(ConvertError::Model(format!(
                "{}: форма {:?}, ожидалась {:?}",
                self.source, source.shape, self.source_shape
            )));
        }
        match source.dtype {
            Dtype::F16 | Dtype::F32 | Dtype::Bf16 => Ok(()),
            other => Err(ConvertError::Model(format!(
                "{}: тип {other:?} не поддерживается — нужна модель float16 или float32, \
                 не квантованная",
                self.source
            ))),
        }
    }

    fn write(
        &self,
        model: &Ct2Model,
        input: &mut File,
        out: &mut impl Write,
        raw: &mut Vec<u8>,
        converted: &mut Vec<u8>,
    ) -> Result<(), ConvertError> {
        let source = model.get(&self.source)?;
        let dims = self.shape.len();
        write_i32(out, dims)?;
        write_i32(out, self.name.len())?;
        write_i32(out, usize::from(self.f16))?;
        for dim in self.shape.iter().rev() {
            write_i32(out, *dim)?;
        }
        out.write_all(self.name.as_bytes())?;

        let size = source.dtype.size();
        input.seek(SeekFrom::Start(
            source.offset + self.first_element as u64 * size,
        ))?;
        let mut left = self.elements();
        while left > 0 {
            let n = left.min(CHUNK_ELEMENTS);
            raw.resize(n * size as usize, 0);
            input.read_exact(raw)?;
            let bytes: &[u8] = match (source.dtype, self.f16) {
                (Dtype::F16, true) | (Dtype::F32, false) => raw,
                (from, to_f16) => {
                    convert_chunk(raw, from, to_f16, converted);
                    converted
                }
            };
            out.write_all(bytes)?;
            left -= n;
        }
        Ok(())
    }
}

fn convert_chunk(raw: &[u8], from: Dtype, to_f16: bool, out: &mut Vec<u8>) {
    out.clear();
    let values = raw.chunks_exact(from.size() as usize).map(|b| match from {
        Dtype::F16 => f16::from_le_bytes([b[0], b[1]]).to_f32(),
        Dtype::Bf16 => bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        _ => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
    });
    if to_f16 {
        for value in values {
            out.extend_from_slice(&f16::from_f32(value).to_le_bytes());
        }
    } else {
        for value in values {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
}

struct Planner<'a> {
    model: &'a Ct2Model,
    tensors: Vec<Tensor>,
}

impl Planner<'_> {
    /// `source` whole, or its `part`-th of `parts` equal row blocks.
    fn push(
        &mut self,
        name: &str,
        source: &str,
        part: usize,
        parts: usize,
    ) -> Result<(), ConvertError> {
        let source_shape = self.model.get(source)?.shape.clone();
        let rows = source_shape.first().copied().unwrap_or(0);
        if rows == 0 || rows % parts != 0 {
            return Err(ConvertError::Model(format!(
                "{source}: форма {source_shape:?} не делится на {parts} части"
            )));
        }
        let mut shape = source_shape.clone();
        shape[0] = rows / parts;
        let per_row: usize = shape[1..].iter().product();
        let first_element = part * shape[0] * per_row;
        // convert-pt-to-ggml.py keeps vectors, positional embeddings and the
        // conv biases (reshaped to n×1) in f32; everything else is f16.
        let keep_f32 = shape.len() < 2
            || name.ends_with("positional_embedding")
            || name.ends_with("conv1.bias")
            || name.ends_with("conv2.bias");
        if name.ends_with("conv1.bias") || name.ends_with("conv2.bias") {
            shape.push(1);
        }
        self.tensors.push(Tensor {
            name: name.to_owned(),
            shape,
            f16: !keep_f32,
            source: source.to_owned(),
            first_element,
            source_shape,
        });
        Ok(())
    }

    fn whole(&mut self, name: &str, source: &str) -> Result<(), ConvertError> {
        self.push(name, source, 0, 1)
    }

    fn linear(&mut self, name: &str, source: &str) -> Result<(), ConvertError> {
        self.whole(&format!("{name}.weight"), &format!("{source}/weight"))?;
        self.whole(&format!("{name}.bias"), &format!("{source}/bias"))
    }

    fn norm(&mut self, name: &str, source: &str) -> Result<(), ConvertError> {
        self.whole(&format!("{name}.weight"), &format!("{source}/gamma"))?;
        self.whole(&format!("{name}.bias"), &format!("{source}/beta"))
    }

    /// query, key (no bias), value, out — from Q|K|V fused rows (self
    /// attention) or from Q and K|V (cross attention).
    fn attention(&mut self, name: &str, source: &str, cross: bool) -> Result<(), ConvertError> {
        let (q, kv, kv_first, kv_parts, out) = if cross {
            (
                format!("{source}/linear_0"),
                format!("{source}/linear_1"),
                0,
                2,
                "linear_2",
            )
        } else {
            let fused = format!("{source}/linear_0");
            (fused.clone(), fused, 1, 3, "linear_1")
        };
        let q_parts = if cross { 1 } else { 3 };
        self.push(
            &format!("{name}.query.weight"),
            &format!("{q}/weight"),
            0,
            q_parts,
        )?;
        self.push(
            &format!("{name}.query.bias"),
            &format!("{q}/bias"),
            0,
            q_parts,
        )?;
        self.push(
            &format!("{name}.key.weight"),
            &format!("{kv}/weight"),
            kv_first,
            kv_parts,
        )?;
        self.push(
            &format!("{name}.value.weight"),
            &format!("{kv}/weight"),
            kv_first + 1,
            kv_parts,
        )?;
        self.push(
            &format!("{name}.value.bias"),
            &format!("{kv}/bias"),
            kv_first + 1,
            kv_parts,
        )?;
        self.linear(&format!("{name}.out"), &format!("{source}/{out}"))
    }

    fn block(&mut self, name: &str, source: &str, cross: bool) -> Result<(), ConvertError> {
        self.attention(
            &format!("{name}.attn"),
            &format!("{source}/self_attention"),
            false,
        )?;
        self.norm(
            &format!("{name}.attn_ln"),
            &format!("{source}/self_attention/layer_norm"),
        )?;
        if cross {
            self.attention(
                &format!("{name}.cross_attn"),
                &format!("{source}/attention"),
                true,
            )?;
            self.norm(
                &format!("{name}.cross_attn_ln"),
                &format!("{source}/attention/layer_norm"),
            )?;
        }
        self.linear(&format!("{name}.mlp.0"), &format!("{source}/ffn/linear_0"))?;
        self.linear(&format!("{name}.mlp.2"), &format!("{source}/ffn/linear_1"))?;
        self.norm(
            &format!("{name}.mlp_ln"),
            &format!("{source}/ffn/layer_norm"),
        )
    }
}

/// The output tensors in the order of OpenAI's `state_dict`: a module's own
/// parameters and buffers before its submodules, submodules in the order
/// they are created.
fn plan(model: &Ct2Model, hparams: &WhisperHparams) -> Result<Vec<Tensor>, ConvertError> {
    let mut p = Planner {
        model,
        tensors: Vec::new(),
    };
    p.whole(
        "encoder.positional_embedding",
        "encoder/position_encodings/encodings",
    )?;
    p.linear("encoder.conv1", "encoder/conv1")?;
    p.linear("encoder.conv2", "encoder/conv2")?;
    for i in 0..hparams.n_audio_layer {
        p.block(
            &format!("encoder.blocks.{i}"),
            &format!("encoder/layer_{i}"),
            false,
        )?;
    }
    p.norm("encoder.ln_post", "encoder/layer_norm")?;
    p.whole(
        "decoder.positional_embedding",
        "decoder/position_encodings/encodings",
    )?;
    p.whole(
        "decoder.token_embedding.weight",
        "decoder/embeddings/weight",
    )?;
    for i in 0..hparams.n_text_layer {
        p.block(
            &format!("decoder.blocks.{i}"),
            &format!("decoder/layer_{i}"),
            true,
        )?;
    }
    p.norm("decoder.ln", "decoder/layer_norm")?;
    Ok(p.tensors)
}

/// Whisper's key projections have no bias; CTranslate2 fuses them with
/// zeros in their place. Anything else there is a model this converter
/// would silently change.
fn check_key_biases(
    model: &Ct2Model,
    hparams: &WhisperHparams,
    input: &mut File,
) -> Result<(), ConvertError> {
    let mut checks = Vec::new();
    for i in 0..hparams.n_audio_layer {
        checks.push((
            format!("encoder/layer_{i}/self_attention/linear_0/bias"),
            1,
            3,
        ));
    }
    for i in 0..hparams.n_text_layer {
        checks.push((
            format!("decoder/layer_{i}/self_attention/linear_0/bias"),
            1,
            3,
        ));
        checks.push((format!("decoder/layer_{i}/attention/linear_1/bias"), 0, 2));
    }
    for (name, part, parts) in checks {
        let variable: &Variable = model.get(&name)?;
        let len = variable.elements() / parts;
        let size = variable.dtype.size();
        let mut bytes = vec![0u8; len * size as usize];
        input.seek(SeekFrom::Start(
            variable.offset + (part * len) as u64 * size,
        ))?;
        input.read_exact(&mut bytes)?;
        // ±0 in any float format: every bit but the sign clear.
        let nonzero = bytes.chunks_exact(size as usize).any(|value| {
            let mut value = value.to_vec();
            if let Some(last) = value.last_mut() {
                *last &= 0x7f;
            }
            value.iter().any(|b| *b != 0)
        });
        if nonzero {
            return Err(ConvertError::Model(format!(
                "{name}: у проекции ключа ненулевое смещение, такой модели нет в whisper.cpp"
            )));
        }
    }
    Ok(())
}

/// Regular tokens as raw bytes, by id; `<|…|>` specials are left to
/// whisper.cpp, which numbers them itself after the regular ones.
fn read_tokens(path: &Path) -> Result<Vec<Vec<u8>>, ConvertError> {
    let text = std::fs::read(path)?;
    let json: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|error| ConvertError::Tokenizer(format!("не JSON: {error}")))?;
    let vocab = json
        .pointer("/model/vocab")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| ConvertError::Tokenizer("нет словаря model.vocab".into()))?;
    let mut tokens = Vec::with_capacity(vocab.len());
    for (token, id) in vocab {
        if token.len() >= 4 && token.starts_with("<|") && token.ends_with("|>") {
            continue;
        }
        let id = id
            .as_u64()
            .ok_or_else(|| ConvertError::Tokenizer(format!("у токена {token:?} номер не число")))?;
        let bytes = bpe::token_bytes(token).ok_or_else(|| {
            ConvertError::Tokenizer(format!("токен {token:?} не в байтовой кодировке GPT-2"))
        })?;
        tokens.push((id, bytes));
    }
    tokens.sort_unstable_by_key(|(id, _)| *id);
    // whisper.cpp numbers tokens by their position in the file.
    if let Some((position, (id, _))) = tokens
        .iter()
        .enumerate()
        .find(|(position, (id, _))| *id != *position as u64)
    {
        return Err(ConvertError::Tokenizer(format!(
            "номера обычных токенов идут не подряд: на месте {position} номер {id}"
        )));
    }
    Ok(tokens.into_iter().map(|(_, bytes)| bytes).collect())
}

#[cfg(test)]
mod tests;
