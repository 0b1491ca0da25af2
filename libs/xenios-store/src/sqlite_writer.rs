//! Group commit for SQLite.
//!
//! SQLite has one writer at a time, and every commit pays the same fixed price: take the write
//! lock, notice that another process changed the file and drop the page cache, read the pages
//! back, append them to the WAL, release. The consumers and the API each issue one small write
//! per job step, from many tasks at once; paying that price once per write made SQLite the
//! largest cost of a job. Here every write of the process goes through one queue: whatever has
//! queued up while the previous batch ran is executed in one transaction and committed once.
//!
//! The WAL is checkpointed beside the queue, not inside it: SQLite's automatic checkpoint runs
//! in whichever commit crosses its threshold, and its copy and fsync would hold up every write
//! queued behind that commit.
//!
//! Each statement keeps its own outcome (SQLite rolls back only a failing statement, not the
//! transaction). If the batch as a whole fails, its statements are run again one by one, so a
//! caller sees exactly the error its own statement would have had alone.

use sqlx::sqlite::SqliteRow;
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use crate::db::{bind_sqlite, Arg};

/// Statements committed together at most; more wait for the next batch.
const MAX_BATCH: usize = 64;
/// Written statements between two checkpoints (each dirties a few pages; SQLite's own
/// threshold is 1000 pages).
const CHECKPOINT_EVERY: usize = 256;
/// Writes waiting for a batch; a caller beyond this waits to enqueue.
const QUEUE: usize = 1024;

#[derive(Debug, Clone)]
pub(crate) struct SqliteWriter {
    queue: mpsc::Sender<Write>,
}

struct Write {
    sql: String,
    args: Vec<Arg>,
    returns_row: bool,
    reply: oneshot::Sender<Result<Written, sqlx::Error>>,
}

/// What a write did: the rows it changed, or its first returned row when one was asked for.
pub(crate) struct Written {
    pub(crate) rows: u64,
    pub(crate) row: Option<SqliteRow>,
}

impl SqliteWriter {
    /// Starts the writer task on the current runtime; it ends when the last handle is dropped.
    pub(crate) fn start(pool: SqlitePool) -> SqliteWriter {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(pool, rx));
        SqliteWriter { queue }
    }

    /// Runs one writing statement, committed with whatever else is queued. `returns_row`:
    /// fetch its first row (`… RETURNING`) rather than count the rows it changed.
    pub(crate) async fn write(
        &self,
        sql: &str,
        args: Vec<Arg>,
        returns_row: bool,
    ) -> Result<Written, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        let write = Write {
            sql: sql.to_owned(),
            args,
            returns_row,
            reply,
        };
        self.queue
            .send(write)
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answer.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

async fn write_batches(pool: SqlitePool, mut queue: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut checkpoints = Checkpoints::default();
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        checkpoints.after(&pool, batch.len());
        if batch.len() > 1 {
            if let Ok(outcomes) = run_together(&pool, &batch).await {
                for (write, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = write.reply.send(Ok(outcome));
                }
                continue;
            }
        }
        for write in batch.drain(..) {
            let outcome = run(&pool, &write).await;
            let _ = write.reply.send(outcome);
        }
    }
}

/// Starts a passive checkpoint on another connection every `CHECKPOINT_EVERY` statements,
/// never two at once.
#[derive(Default)]
struct Checkpoints {
    written: usize,
    running: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Checkpoints {
    fn after(&mut self, pool: &SqlitePool, statements: usize) {
        use std::sync::atomic::Ordering;
        self.written += statements;
        if self.written < CHECKPOINT_EVERY || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        self.written = 0;
        let (pool, running) = (pool.clone(), self.running.clone());
        tokio::spawn(async move {
            // A checkpoint that cannot run now (busy, pool closing) is simply the next one's.
            let _ = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await;
            running.store(false, Ordering::Release);
        });
    }
}

async fn run_together(pool: &SqlitePool, batch: &[Write]) -> Result<Vec<Written>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for write in batch {
        // An error leaves `tx` to roll back when dropped; the batch is then run one by one.
        outcomes.push(run(&mut *tx, write).await?);
    }
    tx.commit().await?;
    Ok(outcomes)
}

async fn run<'c, E>(executor: E, write: &Write) -> Result<Written, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    let query = bind_sqlite(sqlx::query(&write.sql), &write.args);
    Ok(if write.returns_row {
        let row = query.fetch_optional(executor).await?;
        Written {
            rows: u64::from(row.is_some()),
            row,
        }
    } else {
        let rows = query.execute(executor).await?.rows_affected();
        Written { rows, row: None }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Arg;

    #[tokio::test]
    async fn concurrent_writes_keep_their_own_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/w.db?mode=rwc", dir.path().display());
        let pool = SqlitePool::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE)")
            .execute(&pool)
            .await
            .unwrap();
        let writer = SqliteWriter::start(pool.clone());
        // Every value twice: one of each pair breaks the unique constraint, whichever batch
        // it lands in, and must fail alone.
        let writes = (0..200).map(|i| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .write(
                        "INSERT INTO t (v) VALUES ($1) RETURNING v",
                        vec![Arg::Text(Some(format!("v{}", i / 2)))],
                        true,
                    )
                    .await
            })
        });
        let outcomes = futures::future::join_all(writes).await;
        let (ok, failed): (Vec<_>, Vec<_>) = outcomes
            .into_iter()
            .map(|joined| joined.unwrap())
            .partition(Result::is_ok);
        assert_eq!(ok.len(), 100);
        assert_eq!(failed.len(), 100);
        for written in ok {
            assert!(written.unwrap().row.is_some());
        }
        for error in failed {
            let error = error.err().unwrap();
            let db = error.as_database_error().expect("a database error");
            assert!(db.is_unique_violation(), "{db}");
        }
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM t")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 100);

        let updated = writer
            .write("UPDATE t SET v = v || '!'", vec![], false)
            .await
            .unwrap();
        assert_eq!(updated.rows, 100);
    }
}
