//! Group commit for SQLite.
//!
//! SQLite has one writer at a time, and every commit pays the same fixed price: take the write
//! lock, notice that another process changed the file and drop the page cache, read the pages
//! back, append them to the WAL, release. The consumers and the API each issue one small write
//! per job step, from many tasks at once; paying that price once per write made SQLite the
//! largest cost of a job. Here every write of the process goes through one queue: whatever has
//! queued up while the previous batch ran is executed in one transaction and committed once.
//!
//! The queue is served by a thread that owns its connection (rusqlite), not by a task over an
//! sqlx connection: sqlx runs each statement on the connection's own thread and hands it back
//! and forth between that thread and the runtime, and on two busy cores those hand-offs, not
//! SQLite, were most of a batch's time (see bench/results/2026-12-02-experiments). Here a batch
//! costs one hand-off in and one reply per write, and statements stay prepared between batches.
//!
//! The WAL is checkpointed beside the queue, not inside it: SQLite's automatic checkpoint runs
//! in whichever commit crosses its threshold, and its copy and fsync would hold up every write
//! queued behind that commit.
//!
//! A batch is synced before it is answered only if one of its writes needs it
//! (`Commit::Synced`, under `database.sqlite_synchronous = full`): the claims, lease renewals
//! and progress that most batches of a busy consumer hold alone are committed unsynced. In
//! WAL mode that costs no order: a later synced commit makes every earlier one durable with
//! it, so the machine failing can lose only a tail of commits, never a claim beneath a
//! recorded outcome.
//!
//! Each statement keeps its own outcome. If the batch as a whole fails, its statements are run
//! again one by one, so a caller sees exactly the error its own statement would have had alone;
//! only a batch that cannot take the write lock (another process held it through the whole
//! wait) fails whole, every caller told the database is unavailable.

use std::os::raw::c_int;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags, Statement, TransactionBehavior};
use serde_json::Value;
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::db::{
    json_from_text, required, sqlite_time, time_from_text, uuid_from_text, Arg, Commit, Row,
};
use crate::error::StoreError;
use crate::model::SqliteSync;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Statements committed together at most; more wait for the next batch.
const MAX_BATCH: usize = 64;
/// Written statements between two checkpoints (each dirties a few pages; SQLite's own
/// threshold is 1000 pages).
const CHECKPOINT_EVERY: usize = 256;
/// Writes waiting for a batch; a caller beyond this waits to enqueue.
const QUEUE: usize = 1024;
/// Distinct writing statements kept prepared (the store has about twenty).
const PREPARED: usize = 64;

#[derive(Debug, Clone)]
pub(crate) struct SqliteWriter {
    queue: mpsc::Sender<Request>,
}

/// The database the writer opens: the pool's file, or the pool's shared in-memory database.
pub(crate) struct WriterTarget<'a> {
    pub(crate) filename: &'a Path,
    pub(crate) in_memory: bool,
    pub(crate) busy_timeout: Duration,
    pub(crate) sync: SqliteSync,
}

enum Request {
    Write(Write),
    /// Commit what came before, close the connection, then answer.
    Close(oneshot::Sender<()>),
}

struct Write {
    sql: String,
    args: Vec<Arg>,
    returns_row: bool,
    commit: Commit,
    reply: oneshot::Sender<Result<Written>>,
}

/// What a write did: the rows it changed, or its first returned row when one was asked for.
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) rows: u64,
    pub(crate) row: Option<WrittenRow>,
}

impl SqliteWriter {
    /// Opens the writer's connection and starts its thread; the thread ends when the last
    /// handle is dropped. `pool` runs the checkpoints, on the current runtime.
    pub(crate) fn start(target: WriterTarget<'_>, pool: SqlitePool) -> Result<SqliteWriter> {
        let conn = open(&target)?;
        let checkpoints = Checkpoints::new(pool);
        let sync = Syncing::new(target.sync);
        let (queue, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_batches(conn, rx, checkpoints, sync))
            .map_err(|e| StoreError::other(format!("cannot start the SQLite writer: {e}")))?;
        Ok(SqliteWriter { queue })
    }

    /// Runs one writing statement, committed with whatever else is queued. `returns_row`:
    /// fetch its first row (`… RETURNING`) rather than count the rows it changed.
    pub(crate) async fn write(
        &self,
        sql: &str,
        args: Vec<Arg>,
        returns_row: bool,
        commit: Commit,
    ) -> Result<Written> {
        let (reply, answer) = oneshot::channel();
        let write = Write {
            sql: sql.to_owned(),
            args,
            returns_row,
            commit,
            reply,
        };
        let stopped = || StoreError::Unavailable("the SQLite writer has stopped".into());
        self.queue
            .send(Request::Write(write))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Commits the writes queued so far and closes the connection; later writes fail as
    /// unavailable. Returns once the connection is closed.
    pub(crate) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.queue.send(Request::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

fn open(target: &WriterTarget<'_>) -> Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if target.in_memory {
        // sqlx names its in-memory database `file:sqlx-in-memory-N` in shared-cache mode.
        flags |= OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
    }
    let conn = Connection::open_with_flags(target.filename, flags)?;
    conn.busy_timeout(target.busy_timeout)?;
    // The same per-connection settings as the pool's (see `connect_sqlite`).
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {}; PRAGMA wal_autocheckpoint = 0; \
         PRAGMA cache_size = -256; PRAGMA foreign_keys = ON;",
        target.sync.pragma()
    ))?;
    let long_tries = c_int::try_from(target.busy_timeout.as_millis()).unwrap_or(c_int::MAX);
    // SAFETY: `conn` is open and owned here; see `sqlite_lock::install_raw`.
    unsafe { crate::sqlite_lock::install_raw(conn.handle(), long_tries) }.map_err(|rc| {
        StoreError::other(format!(
            "cannot install the SQLite busy handler (code {rc})"
        ))
    })?;
    conn.set_prepared_statement_cache_capacity(PREPARED);
    Ok(conn)
}

fn write_batches(
    mut conn: Connection,
    mut queue: mpsc::Receiver<Request>,
    mut checkpoints: Checkpoints,
    mut sync: Syncing,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut close = None;
    while close.is_none() {
        let Some(first) = queue.blocking_recv() else {
            break;
        };
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Write(write) => batch.push(write),
                Request::Close(done) => close = Some(done),
            }
            if close.is_none() && batch.len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            commit(&mut conn, &mut batch, &mut checkpoints, &mut sync);
        }
    }
    // Writes still queued behind the close are dropped with the queue: their callers hear
    // that the writer stopped.
    drop(queue);
    drop(conn);
    if let Some(done) = close {
        let _ = done.send(());
    }
}

/// Runs `batch` in one transaction and answers each write, emptying `batch`.
fn commit(
    conn: &mut Connection,
    batch: &mut Vec<Write>,
    checkpoints: &mut Checkpoints,
    sync: &mut Syncing,
) {
    checkpoints.after(batch.len());
    if let Err(e) = sync.set_for(conn, batch) {
        let message = format!("cannot set how the SQLite commit is synced: {e}");
        for write in batch.drain(..) {
            let _ = write.reply.send(Err(StoreError::other(message.clone())));
        }
        return;
    }
    if batch.len() > 1 {
        match run_together(conn, batch) {
            Ok(outcomes) => {
                for (write, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = write.reply.send(Ok(outcome));
                }
                return;
            }
            // Another process kept the write lock through the whole wait: each write alone
            // would wait as long again (64 of them, minutes) while the queue stands still.
            Err(Together::NotBegun(e)) => {
                if let StoreError::Unavailable(e) = StoreError::from(e) {
                    let message = e.to_string();
                    for write in batch.drain(..) {
                        let _ = write
                            .reply
                            .send(Err(StoreError::Unavailable(message.clone().into())));
                    }
                    return;
                }
            }
            Err(Together::Failed) => {}
        }
    }
    for write in batch.drain(..) {
        let outcome = sync
            .set_for(conn, std::slice::from_ref(&write))
            .and_then(|()| run(conn, &write))
            .map_err(StoreError::from);
        let _ = write.reply.send(outcome);
    }
}

/// The connection's `PRAGMA synchronous`, changed only between transactions and only when a
/// batch needs otherwise than the last.
struct Syncing {
    configured: SqliteSync,
    current: SqliteSync,
}

impl Syncing {
    /// As `open` left the connection.
    fn new(configured: SqliteSync) -> Syncing {
        Syncing {
            configured,
            current: configured,
        }
    }

    fn needed_by(&self, writes: &[Write]) -> SqliteSync {
        let synced = writes.iter().any(|w| w.commit == Commit::Synced);
        match self.configured {
            SqliteSync::Full if synced => SqliteSync::Full,
            _ => SqliteSync::Normal,
        }
    }

    fn set_for(&mut self, conn: &Connection, writes: &[Write]) -> rusqlite::Result<()> {
        let needed = self.needed_by(writes);
        if needed != self.current {
            conn.execute_batch(&format!("PRAGMA synchronous = {}", needed.pragma()))?;
            self.current = needed;
        }
        Ok(())
    }
}

/// Starts a passive checkpoint on a pool connection every `CHECKPOINT_EVERY` statements,
/// never two at once.
struct Checkpoints {
    pool: SqlitePool,
    runtime: tokio::runtime::Handle,
    written: usize,
    running: Arc<AtomicBool>,
}

impl Checkpoints {
    fn new(pool: SqlitePool) -> Checkpoints {
        Checkpoints {
            pool,
            runtime: tokio::runtime::Handle::current(),
            written: 0,
            running: Arc::default(),
        }
    }

    fn after(&mut self, statements: usize) {
        self.written += statements;
        if self.written < CHECKPOINT_EVERY || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        self.written = 0;
        let (pool, running) = (self.pool.clone(), self.running.clone());
        self.runtime.spawn(async move {
            // A checkpoint that cannot run now (busy, pool closing) is simply the next one's.
            let _ = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await;
            running.store(false, Ordering::Release);
        });
    }
}

/// Why a batch did not commit as one.
enum Together {
    /// Its transaction could not begin: the write lock, most likely.
    NotBegun(rusqlite::Error),
    /// A statement or the commit failed; each write's own outcome is found alone.
    Failed,
}

/// `BEGIN IMMEDIATE`: the write lock is taken (and waited for) before the first statement, so
/// no statement finds its read snapshot stale when it comes to write.
fn run_together(conn: &mut Connection, batch: &[Write]) -> Result<Vec<Written>, Together> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(Together::NotBegun)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for write in batch {
        // An error drops `tx`, which rolls back; the batch is then run one by one.
        outcomes.push(run(&tx, write).map_err(|_| Together::Failed)?);
    }
    tx.commit().map_err(|_| Together::Failed)?;
    Ok(outcomes)
}

fn run(conn: &Connection, write: &Write) -> rusqlite::Result<Written> {
    let mut statement = conn.prepare_cached(&write.sql)?;
    bind(&mut statement, &write.args)?;
    Ok(if write.returns_row {
        let mut rows = statement.raw_query();
        let row = rows.next()?.map(WrittenRow::read).transpose()?;
        // Outside a transaction the statement commits at its last step, and a commit that
        // fails there (a full disk, an I/O error) would otherwise be reset away when `rows`
        // drops, its caller told of a row that was never stored.
        while rows.next()?.is_some() {}
        Written {
            rows: u64::from(row.is_some()),
            row,
        }
    } else {
        let rows = statement.raw_execute()?;
        Written {
            rows: rows as u64,
            row: None,
        }
    })
}

/// Binds `$n` to `args[n - 1]` wherever it appears, as sqlx does: SQLite numbers parameters in
/// order of first appearance, not by their names.
fn bind(statement: &mut Statement<'_>, args: &[Arg]) -> rusqlite::Result<()> {
    for index in 1..=statement.parameter_count() {
        let number = statement
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$').or_else(|| name.strip_prefix('?')))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(index);
        let arg = number
            .checked_sub(1)
            .and_then(|i| args.get(i))
            .ok_or(rusqlite::Error::InvalidParameterCount(number, args.len()))?;
        statement.raw_bind_parameter(index, arg)?;
    }
    Ok(())
}

/// Stored as `bind_sqlite` stores them: uuids, JSON and times as TEXT, booleans as integers.
impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let owned = |v: Option<SqlValue>| ToSqlOutput::Owned(v.unwrap_or(SqlValue::Null));
        Ok(match self {
            Arg::Uuid(v) => owned(v.map(|u| SqlValue::Text(u.hyphenated().to_string()))),
            Arg::Text(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Arg::Text(None) => owned(None),
            Arg::Json(v) => owned(v.as_ref().map(|j| SqlValue::Text(j.to_string()))),
            Arg::Time(v) => owned(v.map(|t| SqlValue::Text(sqlite_time(t)))),
            Arg::Int(v) => owned(v.map(SqlValue::Integer)),
            Arg::Real(v) => owned(v.map(SqlValue::Real)),
            Arg::Bool(v) => owned(Some(SqlValue::Integer(i64::from(*v)))),
        })
    }
}

/// A row a write returned, copied out of the statement so it can cross threads.
#[derive(Debug)]
pub(crate) struct WrittenRow {
    columns: Vec<(String, SqlValue)>,
}

impl WrittenRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<WrittenRow> {
        let statement = row.as_ref();
        let columns = (0..statement.column_count())
            .map(|i| {
                Ok((
                    statement.column_name(i)?.to_owned(),
                    row.get::<_, SqlValue>(i)?,
                ))
            })
            .collect::<rusqlite::Result<_>>()?;
        Ok(WrittenRow { columns })
    }

    fn value(&self, col: &str) -> Result<&SqlValue> {
        self.columns
            .iter()
            .find(|(name, _)| name == col)
            .map(|(_, v)| v)
            .ok_or_else(|| StoreError::other(format!("no column {col} in the returned row")))
    }

    fn mismatch(col: &str, expected: &str) -> StoreError {
        StoreError::other(format!("column {col}: not {expected}"))
    }
}

impl Row for WrittenRow {
    fn uuid(&self, col: &str) -> Result<Option<Uuid>> {
        uuid_from_text(col, self.text(col)?)
    }
    fn text(&self, col: &str) -> Result<Option<String>> {
        match self.value(col)? {
            SqlValue::Null => Ok(None),
            SqlValue::Text(s) => Ok(Some(s.clone())),
            _ => Err(Self::mismatch(col, "text")),
        }
    }
    fn json(&self, col: &str) -> Result<Option<Value>> {
        json_from_text(col, self.text(col)?)
    }
    fn time(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
        time_from_text(col, self.text(col)?)
    }
    fn int(&self, col: &str) -> Result<Option<i64>> {
        match self.value(col)? {
            SqlValue::Null => Ok(None),
            SqlValue::Integer(i) => Ok(Some(*i)),
            _ => Err(Self::mismatch(col, "an integer")),
        }
    }
    fn int4(&self, col: &str) -> Result<i32> {
        i32::try_from(required(col, self.int(col)?)?)
            .map_err(|_| Self::mismatch(col, "a 32-bit integer"))
    }
    fn real(&self, col: &str) -> Result<Option<f64>> {
        match self.value(col)? {
            SqlValue::Null => Ok(None),
            SqlValue::Real(f) => Ok(Some(*f)),
            SqlValue::Integer(i) => Ok(Some(*i as f64)),
            _ => Err(Self::mismatch(col, "a number")),
        }
    }
    fn boolean(&self, col: &str) -> Result<bool> {
        Ok(required(col, self.int(col)?)? != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SubsecRound;

    /// A database file with `schema`, its pool and a writer over it.
    async fn database_with(schema: &str) -> (tempfile::TempDir, SqlitePool, SqliteWriter) {
        database_as(schema, Duration::from_secs(5), SqliteSync::Full).await
    }

    /// `database_with` whose writer waits `busy_timeout` for another connection's lock and
    /// syncs as `sync` says.
    async fn database_as(
        schema: &str,
        busy_timeout: Duration,
        sync: SqliteSync,
    ) -> (tempfile::TempDir, SqlitePool, SqliteWriter) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = SqlitePool::connect(&url).await.unwrap();
        sqlx::query(schema).execute(&pool).await.unwrap();
        let target = WriterTarget {
            filename: &path,
            in_memory: false,
            busy_timeout,
            sync,
        };
        let writer = SqliteWriter::start(target, pool.clone()).unwrap();
        (dir, pool, writer)
    }

    /// The writer makes every commit durable unless told otherwise.
    #[test]
    fn the_writer_syncs_as_configured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sync.db");
        for (sync, pragma) in [(SqliteSync::Full, 2), (SqliteSync::Normal, 1)] {
            let target = WriterTarget {
                filename: &path,
                in_memory: false,
                busy_timeout: Duration::from_secs(1),
                sync,
            };
            let conn = open(&target).unwrap();
            let synchronous: i64 = conn
                .query_row("PRAGMA synchronous", [], |row| row.get(0))
                .unwrap();
            assert_eq!(synchronous, pragma, "{sync:?}");
        }
        assert_eq!(SqliteSync::default(), SqliteSync::Full);
    }

    /// Each write records the `synchronous` its own commit ran under.
    fn recording_sync(
        writer: &SqliteWriter,
        name: &'static str,
        commit: Commit,
    ) -> tokio::task::JoinHandle<Result<i64>> {
        let writer = writer.clone();
        tokio::spawn(async move {
            let written = writer
                .write(
                    "INSERT INTO s (name, synchronous) \
                     SELECT $1, synchronous FROM pragma_synchronous RETURNING synchronous",
                    vec![Arg::Text(Some(name.into()))],
                    true,
                    commit,
                )
                .await?;
            required("synchronous", written.row.unwrap().int("synchronous")?)
        })
    }

    /// A commit is synced when one of its writes asks for it, and only then; a lazy write
    /// batched with a synced one is synced with it.
    #[tokio::test]
    async fn a_batch_is_synced_only_when_one_of_its_writes_needs_it() {
        const FULL: i64 = 2;
        const NORMAL: i64 = 1;
        let (_dir, pool, writer) =
            database_with("CREATE TABLE s (name TEXT, synchronous INTEGER)").await;
        let alone = |name, commit| recording_sync(&writer, name, commit);
        assert_eq!(alone("lazy", Commit::Lazy).await.unwrap().unwrap(), NORMAL);
        assert_eq!(
            alone("synced", Commit::Synced).await.unwrap().unwrap(),
            FULL
        );
        assert_eq!(
            alone("lazy again", Commit::Lazy).await.unwrap().unwrap(),
            NORMAL
        );

        // With the write lock held elsewhere, the first write waits alone and the rest queue
        // up behind it into one batch.
        let mut holder = pool.acquire().await.unwrap();
        let batched = |writes: Vec<(&'static str, Commit)>| {
            let writes: Vec<_> = writes
                .into_iter()
                .map(|(name, commit)| recording_sync(&writer, name, commit))
                .collect();
            async move {
                let mut seen = Vec::new();
                for write in writes {
                    seen.push(write.await.unwrap().unwrap());
                }
                seen
            }
        };
        for (together, expected) in [
            (vec![Commit::Lazy, Commit::Lazy, Commit::Lazy], NORMAL),
            (vec![Commit::Lazy, Commit::Synced, Commit::Lazy], FULL),
        ] {
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *holder)
                .await
                .unwrap();
            let first = recording_sync(&writer, "first", Commit::Synced);
            tokio::time::sleep(Duration::from_millis(50)).await;
            let rest = batched(together.into_iter().map(|c| ("batched", c)).collect());
            let rest = tokio::spawn(rest);
            tokio::time::sleep(Duration::from_millis(50)).await;
            sqlx::query("ROLLBACK").execute(&mut *holder).await.unwrap();
            assert_eq!(first.await.unwrap().unwrap(), FULL);
            assert_eq!(rest.await.unwrap(), vec![expected; 3]);
        }
    }

    /// Under `database.sqlite_synchronous = normal` nothing is synced at commit.
    #[tokio::test]
    async fn nothing_is_synced_when_configured_so() {
        let (_dir, _pool, writer) = database_as(
            "CREATE TABLE s (name TEXT, synchronous INTEGER)",
            Duration::from_secs(5),
            SqliteSync::Normal,
        )
        .await;
        for commit in [Commit::Synced, Commit::Lazy] {
            let seen = recording_sync(&writer, "normal", commit).await.unwrap();
            assert_eq!(seen.unwrap(), 1, "{commit:?}");
        }
    }

    #[tokio::test]
    async fn concurrent_writes_keep_their_own_outcomes() {
        let (_dir, pool, writer) =
            database_with("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE)").await;
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
                        Commit::Synced,
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
            assert!(
                matches!(&error, StoreError::Conflict(m) if m.contains("UNIQUE")),
                "{error}"
            );
        }
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM t")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 100);

        let updated = writer
            .write("UPDATE t SET v = v || '!'", vec![], false, Commit::Synced)
            .await
            .unwrap();
        assert_eq!(updated.rows, 100);
    }

    /// Another process holding the write lock past the wait: a batch that cannot begin fails
    /// whole, at once, rather than each of its writes waiting the whole time again alone.
    #[tokio::test]
    async fn a_batch_that_cannot_take_the_write_lock_fails_whole() {
        let (_dir, pool, writer) = database_as(
            "CREATE TABLE w (v INTEGER)",
            Duration::from_millis(300),
            SqliteSync::Full,
        )
        .await;
        let mut holder = pool.acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *holder)
            .await
            .unwrap();
        let write = |v: i64| {
            let writer = writer.clone();
            tokio::spawn(async move {
                let insert = "INSERT INTO w (v) VALUES ($1)";
                writer
                    .write(insert, vec![Arg::Int(Some(v))], false, Commit::Synced)
                    .await
            })
        };
        // The first write waits for the lock alone, and the others queue up behind it.
        let first = write(0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut batch: futures::stream::FuturesUnordered<_> = (1..=10).map(write).collect();
        let unavailable =
            |outcome: &Result<Written>| matches!(outcome, Err(StoreError::Unavailable(_)));
        let first = first.await.unwrap();
        assert!(unavailable(&first), "{first:?}");
        // The lock is let go once the first of the batch is answered: writes still waiting
        // would take it.
        let mut outcomes = vec![futures::StreamExt::next(&mut batch).await.unwrap().unwrap()];
        sqlx::query("ROLLBACK").execute(&mut *holder).await.unwrap();
        while let Some(outcome) = futures::StreamExt::next(&mut batch).await {
            outcomes.push(outcome.unwrap());
        }
        assert!(outcomes.iter().all(unavailable), "{outcomes:?}");

        writer
            .write(
                "INSERT INTO w (v) VALUES (11)",
                vec![],
                false,
                Commit::Synced,
            )
            .await
            .unwrap();
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM w")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 1);
    }

    /// Outside a transaction SQLite commits a statement at its last step, after the rows it
    /// returns: a deferred foreign key is checked only then, so here the row comes back and the
    /// commit fails.
    #[tokio::test]
    async fn a_returned_row_is_answered_only_once_its_write_committed() {
        let (_dir, pool, writer) = database_with(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY); \
             CREATE TABLE child (id INTEGER PRIMARY KEY, \
             parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
        )
        .await;
        let orphan = writer
            .write(
                "INSERT INTO child (parent) VALUES ($1) RETURNING id",
                vec![Arg::Int(Some(42))],
                true,
                Commit::Synced,
            )
            .await;
        assert!(
            matches!(&orphan, Err(StoreError::Other(e)) if e.to_string().contains("FOREIGN KEY")),
            "{orphan:?}"
        );
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM child")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 0);

        writer
            .write(
                "INSERT INTO parent (id) VALUES (42)",
                vec![],
                false,
                Commit::Synced,
            )
            .await
            .unwrap();
        let child = writer
            .write(
                "INSERT INTO child (parent) VALUES ($1) RETURNING id",
                vec![Arg::Int(Some(42))],
                true,
                Commit::Synced,
            )
            .await
            .unwrap();
        assert_eq!(child.rows, 1);
        assert!(child.row.is_some());
    }

    #[tokio::test]
    async fn parameters_bind_by_number_and_returned_rows_read_back() {
        let (_dir, _pool, writer) = database_with(
            "CREATE TABLE r (id TEXT PRIMARY KEY, body TEXT, at TEXT, n INTEGER, x REAL, \
             flag BOOLEAN NOT NULL, note TEXT)",
        )
        .await;
        let id = Uuid::new_v4();
        let at = Utc::now();
        // `$3` first and `$1` twice: SQLite's own numbering would bind these out of place.
        let written = writer
            .write(
                "INSERT INTO r (note, id, body, at, n, x, flag) \
                 VALUES ($3 || $1, $1, $2, $4, $5, $6, $7) RETURNING *",
                vec![
                    Arg::Uuid(Some(id)),
                    Arg::Json(Some(serde_json::json!({"a": [1, 2]}))),
                    Arg::Text(Some("id:".into())),
                    Arg::Time(Some(at)),
                    Arg::Int(Some(7)),
                    Arg::Real(None),
                    Arg::Bool(true),
                ],
                true,
                Commit::Synced,
            )
            .await
            .unwrap();
        let row = written.row.expect("the returned row");
        assert_eq!(row.uuid("id").unwrap(), Some(id));
        assert_eq!(
            row.json("body").unwrap(),
            Some(serde_json::json!({"a": [1, 2]}))
        );
        assert_eq!(row.time("at").unwrap(), Some(at.trunc_subsecs(6)));
        assert_eq!(row.int("n").unwrap(), Some(7));
        assert_eq!(row.int4("n").unwrap(), 7);
        assert_eq!(row.real("x").unwrap(), None);
        assert!(row.boolean("flag").unwrap());
        assert_eq!(row.text("note").unwrap(), Some(format!("id:{id}")));
        assert!(row.text("n").is_err(), "an integer is not text");
        assert!(row.int("missing").is_err());

        let missing = writer
            .write(
                "UPDATE r SET n = $1 WHERE id = $2",
                vec![Arg::Int(Some(1))],
                false,
                Commit::Synced,
            )
            .await;
        assert!(matches!(missing, Err(StoreError::Other(_))), "{missing:?}");
    }

    #[tokio::test]
    async fn close_commits_what_was_queued_and_refuses_the_rest() {
        let (_dir, pool, writer) = database_with("CREATE TABLE c (v INTEGER NOT NULL)").await;
        let queued: Vec<_> = (0..100)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    writer
                        .write(
                            "INSERT INTO c (v) VALUES ($1)",
                            vec![Arg::Int(Some(i))],
                            false,
                            Commit::Synced,
                        )
                        .await
                })
            })
            .collect();
        // Let every insert reach the queue before the close does.
        tokio::time::sleep(Duration::from_millis(100)).await;
        writer.close().await;
        for write in futures::future::join_all(queued).await {
            assert_eq!(write.unwrap().unwrap().rows, 1);
        }
        let late = writer
            .write(
                "INSERT INTO c (v) VALUES (1)",
                vec![],
                false,
                Commit::Synced,
            )
            .await;
        assert!(matches!(late, Err(StoreError::Unavailable(_))), "{late:?}");
        writer.close().await;
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM c")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 100);
    }
}
