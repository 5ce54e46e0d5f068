//! Group commit for call inserts. With `synchronous=FULL` every commit waits
//! for an fsync; uploads that arrive together share one transaction (and one
//! fsync) instead of queueing for one each. Each call gets its own savepoint,
//! so a duplicate `call_id` fails only its own upload.

use rop_domain::store::StoreResult;
use rop_domain::{NewCall, StoreError};
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use crate::rows::backend;

/// Upper bound on calls in one transaction, to bound each commit's latency.
const MAX_BATCH: usize = 128;

type Reply = oneshot::Sender<StoreResult<()>>;

#[derive(Clone)]
pub(crate) struct CallInserter {
    queue: mpsc::Sender<(NewCall, Reply)>,
}

impl CallInserter {
    pub(crate) fn start(writer: SqlitePool) -> StoreResult<Self> {
        let (queue, requests) = mpsc::channel(1024);
        // The writer loop gets a thread and a small runtime of its own: the
        // compiler cannot prove its sqlx transaction future `Send` for
        // `tokio::spawn`, and a dedicated thread suits the single writer
        // anyway. It ends when the store (the last sender) is dropped.
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(run(writer, requests)),
                    Err(error) => tracing::error!(%error, "cannot start the SQLite writer"),
                }
            })
            .map_err(backend)?;
        Ok(Self { queue })
    }

    pub(crate) async fn insert(&self, call: NewCall) -> StoreResult<()> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Backend("the SQLite writer has stopped".into());
        self.queue
            .send((call, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(writer: SqlitePool, mut requests: mpsc::Receiver<(NewCall, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match write_batch(&writer, &batch).await {
            Ok(results) => {
                for ((_, reply), result) in batch.drain(..).zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(error) => {
                // Nothing of the batch is stored; every upload hears why.
                tracing::error!(%error, calls = batch.len(), "call batch not stored");
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(StoreError::Backend(error.to_string().into())));
                }
            }
        }
    }
}

/// Per-call results, or the error that lost the whole transaction.
async fn write_batch(
    writer: &SqlitePool,
    batch: &[(NewCall, Reply)],
) -> Result<Vec<StoreResult<()>>, sqlx::Error> {
    let mut tx = writer.begin().await?;
    let mut results = Vec::with_capacity(batch.len());
    for (call, _) in batch {
        sqlx::query("SAVEPOINT call_insert")
            .execute(&mut *tx)
            .await?;
        let result = crate::insert_call_in(&mut tx, call).await;
        let end = if result.is_ok() {
            "RELEASE call_insert"
        } else {
            "ROLLBACK TO call_insert; RELEASE call_insert"
        };
        sqlx::raw_sql(end).execute(&mut *tx).await?;
        results.push(result);
    }
    tx.commit().await?;
    Ok(results)
}
