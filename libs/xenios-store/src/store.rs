use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, PgPool, Postgres};
use xenios_contract::{JobError, JobId, JobKind, JobStatus, Progress};

use crate::conns::Conns;
use crate::db::{args, required, Arg, Commit, Pool, Row};
use crate::error::StoreError;
use crate::model::*;
use crate::pg_batch::{Batcher, CreateJobs, Finish, FinishJobs, StartAttempts};
use crate::sqlite_writer::{SqliteWriter, WriterTarget};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The PostgreSQL schema this service owns in the shared (Supabase) database.
pub const PG_SCHEMA: &str = "ai_backend";

const MAX_PAGE: u32 = 100;
/// Tries to start an attempt of a job that keeps turning up `queued` just after each try.
const START_TRIES: usize = 3;

pub(crate) const JOB_COLUMNS: &str =
    "id, kind, status, user_id, input, progress, result, error, attempts, \
     correlation_id, idempotency_key, cancel_requested, published_at, created_at, started_at, \
     finished_at, updated_at, webhook_url, webhook_state, webhook_attempts, webhook_next_at, \
     webhook_error";

/// Users listed in an every-user usage report.
pub const USAGE_TOP_USERS: usize = 100;
/// Task, model and provider of the row that keeps an erased user's spending of the day (for
/// the daily budget): not a task's name, which the routing table's keys are.
pub const ERASED: &str = "(erased)";
/// Jobs one statement of an erasure deletes at most: the SQLite writer is shared with every job.
const ERASE_IDS: usize = 500;

const LOG_COLUMNS: &str = "id, created_at, user_id, job_id, task, model, provider, attempt, \
     input_tokens, output_tokens, latency_ms, ttft_ms, cost_usd, success, error, \
     cache_read_tokens, cache_write_tokens";

/// A handle on the database; clones share one connection pool.
///
/// Every status change is a single conditional `UPDATE … WHERE status IN (…) RETURNING`, so of
/// concurrent writers exactly one wins and the others see the state it left.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    acquire_timeout: Duration,
    /// PostgreSQL only: each job's three writes, batched across concurrent callers.
    batches: Option<Arc<PgBatches>>,
    /// A SQLite file's setup lock: held while migrating (see `Store::migrate`).
    migration_lock: Option<PathBuf>,
}

#[derive(Debug)]
struct PgBatches {
    /// The batched statements' own connections (see `connect_pg`).
    conns: Conns<Postgres>,
    /// The connections of the lazy writes, whose commits are not waited on (`Commit::Lazy`):
    /// the batched claims and LLM gateway's records, and the single lazy writes beside them.
    lazy_conns: Conns<Postgres>,
    create: Batcher<CreateJobs>,
    create_live: Batcher<CreateJobs>,
    start: Batcher<StartAttempts>,
    finish: Batcher<FinishJobs>,
}

impl Store {
    /// `postgres://…`, `postgresql://…`, `sqlite://path` or `sqlite::memory:`. PostgreSQL
    /// connections work in schema `ai_backend`; a SQLite file and its directory are created if
    /// missing.
    pub async fn connect(url: &str, opts: &StoreOptions) -> Result<Store> {
        let mut migration_lock = None;
        let (pool, batches) = if url.starts_with("postgres://") || url.starts_with("postgresql://")
        {
            let (pool, batch_pool, lazy_pool) = connect_pg(url, opts).await?;
            let answer_within =
                (!opts.statement_timeout.is_zero()).then(|| opts.statement_timeout + ANSWER_GRACE);
            let conns = Conns::answering_within(batch_pool, answer_within);
            let lazy_conns = Conns::answering_within(lazy_pool, answer_within);
            let batches = PgBatches {
                create: Batcher::spawn(conns.clone()),
                create_live: Batcher::spawn(lazy_conns.clone()),
                start: Batcher::spawn(lazy_conns.clone()),
                finish: Batcher::spawn(conns.clone()),
                conns,
                lazy_conns: lazy_conns.clone(),
            };
            let pool = Conns::answering_within(pool, answer_within);
            (Pool::Pg(pool, lazy_conns), Some(Arc::new(batches)))
        } else if url.starts_with("sqlite:") {
            let (pool, writer, lock) = connect_sqlite(url, opts).await?;
            migration_lock = lock;
            (Pool::Sqlite(Conns::new(pool), writer), None)
        } else {
            // The URL itself is not echoed: it may hold a password.
            return Err(StoreError::Invalid(
                "unsupported database URL: expected postgres://, postgresql:// or sqlite://".into(),
            ));
        };
        Ok(Store {
            pool,
            acquire_timeout: opts.acquire_timeout,
            batches,
            migration_lock,
        })
    }

    /// Applies the embedded migrations; running it again is a no-op.
    pub async fn migrate(&self) -> Result<()> {
        match &self.pool {
            Pool::Pg(conns, _) => {
                ensure_schema(conns.opener()).await?;
                // Without the statement timeout: building an index over a large table may
                // take longer. The connection is closed after, so that none without a limit
                // serves the store's statements.
                let mut conn = conns.opener().acquire().await?;
                sqlx::query("SET statement_timeout TO 0")
                    .execute(&mut *conn)
                    .await?;
                let migrated = sqlx::migrate!("../../migrations/postgres")
                    .run(&mut *conn)
                    .await;
                let _ = conn.close().await;
                migrated?;
            }
            Pool::Sqlite(conns, _) => {
                // sqlx takes no lock around SQLite's migrations: two processes starting on a
                // new file (an API and a worker) both created its tables, and one failed. An
                // exclusive lock on a file beside it (the kernel's, so a crash lets it go)
                // lets one migrate while the other waits, then finds nothing left to do.
                let _held = match &self.migration_lock {
                    Some(path) => Some(lock_exclusively(path.clone()).await?),
                    None => None,
                };
                sqlx::migrate!("../../migrations/sqlite")
                    .run(conns.opener())
                    .await?
            }
        }
        Ok(())
    }

    /// The versions of this build's migrations that the database has not applied: for a
    /// command that must not migrate (the operator's) to refuse a schema it does not know.
    pub async fn pending_migrations(&self) -> Result<Vec<i64>> {
        const APPLIED: &str = "SELECT version FROM _sqlx_migrations WHERE success";
        let (migrator, applied) = match &self.pool {
            Pool::Pg(conns, _) => (
                sqlx::migrate!("../../migrations/postgres"),
                sqlx::query_scalar::<_, i64>(APPLIED)
                    .fetch_all(conns.opener())
                    .await,
            ),
            Pool::Sqlite(conns, _) => (
                sqlx::migrate!("../../migrations/sqlite"),
                sqlx::query_scalar::<_, i64>(APPLIED)
                    .fetch_all(conns.opener())
                    .await,
            ),
        };
        let applied = match applied {
            Ok(applied) => applied,
            // No table of applied migrations: a database never migrated.
            Err(sqlx::Error::Database(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| m.version)
            .filter(|version| !applied.contains(version))
            .collect())
    }

    /// A real round trip, bounded by the acquire timeout even when the server hangs.
    pub async fn ping(&self) -> Result<()> {
        tokio::time::timeout(self.acquire_timeout, self.pool.execute("SELECT 1", vec![]))
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolTimedOut.into()))??;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Pg(..) => Backend::Postgres,
            Pool::Sqlite(..) => Backend::Sqlite,
        }
    }

    pub async fn close(&self) {
        if let Some(batches) = &self.batches {
            batches.conns.close().await;
            batches.lazy_conns.close().await;
        }
        match &self.pool {
            Pool::Pg(conns, _) => conns.close().await,
            Pool::Sqlite(conns, writer) => {
                writer.close().await;
                conns.close().await;
            }
        }
    }

    /// Records a queued job. A second submission with the same user and idempotency key is
    /// `Existing` (race-safe: the unique index decides). Reusing an existing job id is a
    /// `Conflict`.
    pub async fn create_job(&self, new: NewJob) -> Result<Created> {
        self.create(new, Commit::Synced).await
    }

    /// [`Store::create_job`] for a caller on the line for the job's outcome (the LLM
    /// gateway), whose answer is the outcome itself rather than a promise that the job will
    /// run: its commit is not waited on to reach the disk. Lost with the machine, its command
    /// finds no record and is dropped, rather than run for a caller who is gone with it; any
    /// later synced write (the job's outcome) makes it durable.
    pub async fn create_live_job(&self, new: NewJob) -> Result<Created> {
        self.create(new, Commit::Lazy).await
    }

    async fn create(&self, new: NewJob, commit: Commit) -> Result<Created> {
        let (id, user_id, idempotency_key) =
            (new.id, new.user_id.clone(), new.idempotency_key.clone());
        // A job met on the key can be taken back (see `replayed_job`) before it is read:
        // then the key is free again and the insert is tried anew, from a copy kept for it.
        let mut next = Some(new);
        let mut tries = 0;
        while let Some(new) = next.take() {
            tries += 1;
            if tries < 3 && idempotency_key.is_some() {
                next = Some(new.clone());
            }
            let inserted = match &self.batches {
                Some(batches) if commit == Commit::Lazy => batches.create_live.call(new).await?,
                Some(batches) => batches.create.call(new).await?,
                None => self.insert_job(new, commit).await?,
            };
            if let Some(job) = inserted {
                return Ok(Created::New(job));
            }
            let Some(key) = &idempotency_key else { break };
            if let Some(job) = self.replayed_job(user_id.as_deref(), key).await? {
                return Ok(Created::Existing(job));
            }
        }
        Err(StoreError::Conflict(format!("job {id} already exists")))
    }

    /// The job a user's earlier submission with this idempotency key made, if any, for a
    /// retry to be answered with. A job whose command may still be refused by a full queue
    /// is marked as answered first, so that its submission no longer takes it back (see
    /// [`Store::delete_unstarted_job`]); `None` if it was taken back before that.
    pub async fn replayed_job(
        &self,
        user_id: Option<&str>,
        key: &str,
    ) -> Result<Option<JobRecord>> {
        let Some(job) = self.job_by_idempotency_key(user_id, key).await? else {
            return Ok(None);
        };
        // What `delete_unstarted_job` may still delete.
        let may_be_taken_back = job.status == JobStatus::Queued && job.attempts == 0;
        if !may_be_taken_back {
            return Ok(Some(job));
        }
        let sql = format!("UPDATE jobs SET replayed = TRUE WHERE id = $1 RETURNING {JOB_COLUMNS}");
        self.pool
            .fetch_optional(&sql, args![job.id], job_from_row)
            .await
    }

    /// The job a user's earlier submission with this idempotency key made, if any.
    async fn job_by_idempotency_key(
        &self,
        user_id: Option<&str>,
        key: &str,
    ) -> Result<Option<JobRecord>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs \
             WHERE coalesce(user_id, '') = $1 AND idempotency_key = $2"
        );
        self.pool
            .fetch_optional(
                &sql,
                args![user_id.unwrap_or_default().to_owned(), key.to_owned()],
                job_from_row,
            )
            .await
    }

    async fn insert_job(&self, new: NewJob, commit: Commit) -> Result<Option<JobRecord>> {
        let webhook_state = webhook_state_of(&new);
        let sql = format!(
            "INSERT INTO jobs (id, kind, status, user_id, input, attempts, correlation_id, \
             idempotency_key, cancel_requested, created_at, updated_at, webhook_url, \
             webhook_state) \
             VALUES ($1, $2, 'queued', $3, $4, 0, $5, $6, FALSE, $7, $7, $8, $9) \
             ON CONFLICT DO NOTHING RETURNING {JOB_COLUMNS}"
        );
        self.pool
            .fetch_optional_as(
                commit,
                &sql,
                args![
                    new.id,
                    new.kind.as_str(),
                    new.user_id,
                    new.input,
                    new.correlation_id,
                    new.idempotency_key,
                    now(),
                    new.webhook_url,
                    webhook_state,
                ],
                job_from_row,
            )
            .await
    }

    pub async fn get_job(&self, id: JobId) -> Result<Option<JobRecord>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        self.pool
            .fetch_optional(&sql, args![id], job_from_row)
            .await
    }

    /// Newest first. `next_cursor` is the last job of the page when more jobs match.
    pub async fn list_jobs(&self, q: &JobQuery) -> Result<JobPage> {
        let limit = q.limit.clamp(1, MAX_PAGE);
        let mut conds = Vec::new();
        let mut args: Vec<Arg> = Vec::new();
        let mut filter = |cond: &str, arg: Arg| {
            args.push(arg);
            conds.push(format!("{cond} ${}", args.len()));
        };
        if let Some(user) = &q.user_id {
            filter("user_id =", user.clone().into());
        }
        if let Some(kind) = q.kind {
            filter("kind =", kind.as_str().into());
        }
        if let Some(status) = q.status {
            filter("status =", status.as_str().into());
        }
        if let Some(before) = q.before {
            filter("id <", before.into());
        }
        let mut where_clause = String::new();
        if !conds.is_empty() {
            where_clause.push_str(" WHERE ");
            where_clause.push_str(&conds.join(" AND "));
        }
        args.push((i64::from(limit) + 1).into());
        let size = self.stored_size();
        let sql = format!(
            "SELECT id, {size} AS size FROM jobs{where_clause} ORDER BY id DESC LIMIT ${}",
            args.len()
        );
        // Sizes first, then only the jobs that fit: the rows themselves may be large.
        let found = self
            .pool
            .fetch_all(&sql, args, |r| {
                let size = r.int("size")?.unwrap_or_default();
                Ok((
                    required("id", r.uuid("id")?)?,
                    u64::try_from(size).unwrap_or(0),
                ))
            })
            .await?;
        let mut room = q.max_bytes;
        let mut page = Vec::new();
        for &(id, size) in found.iter().take(limit as usize) {
            if !page.is_empty() && size > room {
                break;
            }
            room = room.saturating_sub(size);
            page.push(Arg::from(id));
        }
        // The first job always fits, so a page is empty only when no job matched.
        let Some(last) = page.len().checked_sub(1) else {
            return Ok(JobPage::default());
        };
        let next_cursor = (found.len() > page.len()).then(|| found[last].0);
        let listed = (1..=page.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id IN ({listed}) ORDER BY id DESC");
        let jobs = self.pool.fetch_all(&sql, page, job_from_row).await?;
        Ok(JobPage { jobs, next_cursor })
    }

    /// SQL for the bytes a job's input and result take as stored (PostgreSQL's after
    /// compression): what loading the row costs, to bound reads of many.
    fn stored_size(&self) -> &'static str {
        match self.backend() {
            Backend::Postgres => {
                "(pg_column_size(input) + coalesce(pg_column_size(result), 0))::bigint"
            }
            Backend::Sqlite => {
                "length(CAST(input AS BLOB)) + coalesce(length(CAST(result AS BLOB)), 0)"
            }
        }
    }

    /// Records that the command reached the broker. Not synced: lost with the machine, it
    /// only makes the sweeper publish the job again.
    pub async fn mark_published(&self, id: JobId) -> Result<()> {
        let n = self
            .pool
            .execute_as(
                Commit::Lazy,
                "UPDATE jobs SET published_at = $2, updated_at = $2 WHERE id = $1",
                args![id, now()],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(id));
        }
        Ok(())
    }

    /// Removes a job that never started: one whose command the broker refused (a full
    /// queue), so the submission itself was refused. `false` if the job has moved on, or a
    /// retry with its idempotency key was already answered with it (see
    /// [`Store::replayed_job`]): then it stands, for the sweeper to publish.
    pub async fn delete_unstarted_job(&self, id: JobId) -> Result<bool> {
        let n = self
            .pool
            .execute(
                "DELETE FROM jobs \
                 WHERE id = $1 AND status = 'queued' AND attempts = 0 AND NOT replayed",
                args![id],
            )
            .await?;
        Ok(n == 1)
    }

    /// Queued jobs of `kinds` whose command was last published or due again (or, never
    /// published, created) before `older_than`, oldest first: the sweeper publishes them again.
    pub async fn jobs_to_republish(
        &self,
        older_than: DateTime<Utc>,
        kinds: &[JobKind],
        limit: u32,
    ) -> Result<Vec<JobRecord>> {
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let kinds = kinds
            .iter()
            .map(|k| format!("'{}'", k.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs \
             WHERE status = 'queued' AND kind IN ({kinds}) \
             AND coalesce(published_at, created_at) < $1 \
             ORDER BY created_at LIMIT $2"
        );
        self.pool
            .fetch_all(&sql, args![older_than, i64::from(limit)], job_from_row)
            .await
    }

    /// Begins an attempt. Queued and running jobs (a redelivery after a lost attempt) become
    /// running with `attempts` + 1; nothing changes in the other cases.
    pub async fn start_attempt(&self, id: JobId) -> Result<StartAttempt> {
        self.start_attempt_with_lease(id, Duration::ZERO).await
    }

    /// Like [`Store::start_attempt`], but a running job whose holder renewed its lease
    /// ([`Store::renew_lease`]) within `lease` is `Busy`: another delivery of its command (a
    /// republished copy, or a redelivery while the holder was cut off from the broker) must
    /// not run it a second time at once. A lease older than that means the holder is gone.
    pub async fn start_attempt_with_lease(
        &self,
        id: JobId,
        lease: Duration,
    ) -> Result<StartAttempt> {
        let now = now();
        // Without a lease every running job is taken over, however recently it was touched.
        let stale_before = if lease.is_zero() {
            chrono::TimeZone::with_ymd_and_hms(&Utc, 9999, 12, 31, 0, 0, 0).unwrap()
        } else {
            now - chrono::Duration::from_std(lease).unwrap_or_default()
        };
        // A job that turns up `queued` after the update missed it was recorded (or put back)
        // in between: the update is tried again rather than the job reported as held.
        for _ in 0..START_TRIES {
            let started = match &self.batches {
                Some(batches) => batches.start.call((id, stale_before)).await?,
                None => {
                    let sql = format!(
                        "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
                         started_at = coalesce(started_at, $2), updated_at = $2 \
                         WHERE id = $1 AND NOT cancel_requested \
                         AND (status = 'queued' OR (status = 'running' AND updated_at <= $3)) \
                         RETURNING {JOB_COLUMNS}"
                    );
                    // Not synced: lost with the machine, the claim is made again when the
                    // broker redelivers the command it never saw acked.
                    let args = args![id, now, stale_before];
                    self.pool
                        .fetch_optional_as(Commit::Lazy, &sql, args, job_from_row)
                        .await?
                }
            };
            if let Some(job) = started {
                return Ok(StartAttempt::Started(job));
            }
            match self.get_job(id).await? {
                None => return Ok(StartAttempt::NotFound),
                Some(job) if job.status.is_terminal() => return Ok(StartAttempt::Finished(job)),
                Some(job) if job.cancel_requested => return Ok(StartAttempt::CancelRequested(job)),
                Some(job) if job.status == JobStatus::Queued => continue,
                Some(job) => return Ok(StartAttempt::Busy(job)),
            }
        }
        Err(StoreError::Conflict(format!(
            "job {id} kept changing while its attempt was started"
        )))
    }

    /// Renews attempt `attempt`'s lease of its running job (the job's `updated_at`) and tells
    /// whether cancellation was requested meanwhile.
    pub async fn renew_lease(&self, id: JobId, attempt: u32) -> Result<AttemptWrite<bool>> {
        // Not synced, like the claim it extends.
        let cancel_requested = self
            .pool
            .fetch_optional_as(
                Commit::Lazy,
                "UPDATE jobs SET updated_at = $2 \
                 WHERE id = $1 AND status = 'running' AND attempts = $3 \
                 RETURNING cancel_requested",
                args![id, now(), i64::from(attempt)],
                |r| r.boolean("cancel_requested"),
            )
            .await?;
        Ok(cancel_requested.map_or(AttemptWrite::Lost, AttemptWrite::Done))
    }

    /// Stores the latest progress of attempt `attempt`; a late progress from an attempt that
    /// no longer holds the job is not an error, only `Lost`.
    pub async fn set_progress(
        &self,
        id: JobId,
        attempt: u32,
        p: &Progress,
    ) -> Result<AttemptWrite<()>> {
        let progress = serde_json::to_value(p)
            .map(without_nul)
            .map_err(|e| StoreError::Other(e.into()))?;
        // Not synced: progress is a hint, and outdated the moment it is stored.
        let n = self
            .pool
            .execute_as(
                Commit::Lazy,
                "UPDATE jobs SET progress = $3, updated_at = $2 \
                 WHERE id = $1 AND status = 'running' AND attempts = $4",
                args![id, now(), progress, i64::from(attempt)],
            )
            .await?;
        Ok(written(n))
    }

    /// Records the job's outcome, once: `Ok(None)` if it already has one (the first outcome
    /// wins). Success clears the last transient error. Allowed per `JobStatus::can_become`; any
    /// other transition (e.g. queued → succeeded) is `Conflict`; an unknown id is `NotFound`.
    /// For an outcome that no attempt of the caller's holds the job for (a cancellation found
    /// before starting); an attempt records its own with [`Store::finish_attempt`].
    pub async fn finish_job(&self, id: JobId, outcome: Outcome) -> Result<Option<JobRecord>> {
        let target = outcome.status();
        if let Some(job) = self.finish(id, None, outcome).await? {
            return Ok(Some(job));
        }
        match self.get_job(id).await? {
            None => Err(StoreError::NotFound(id)),
            Some(job) if job.status.is_terminal() => Ok(None),
            Some(job) => Err(StoreError::Conflict(format!(
                "job {id} is {} and cannot become {target}",
                job.status
            ))),
        }
    }

    /// Records the outcome of attempt `attempt`, if it still holds the job (running under its
    /// number); `Lost` otherwise, the job left as it is. An unknown id is `NotFound`.
    pub async fn finish_attempt(
        &self,
        id: JobId,
        attempt: u32,
        outcome: Outcome,
    ) -> Result<AttemptWrite<JobRecord>> {
        if let Some(job) = self.finish(id, Some(attempt), outcome).await? {
            return Ok(AttemptWrite::Done(job));
        }
        match self.get_job(id).await? {
            None => Err(StoreError::NotFound(id)),
            Some(_) => Ok(AttemptWrite::Lost),
        }
    }

    /// The row `outcome` was written to; `None` if the job's status (and, given `attempt`, its
    /// holder) refused it.
    async fn finish(
        &self,
        id: JobId,
        attempt: Option<u32>,
        outcome: Outcome,
    ) -> Result<Option<JobRecord>> {
        let Some(batches) = &self.batches else {
            return self.finish_one(id, attempt, outcome).await;
        };
        let (result, error) = match &outcome {
            Outcome::Succeeded(result) => (Some(without_nul(result.clone())), None),
            Outcome::Failed(err) => (None, Some(error_json(err)?)),
            Outcome::Cancelled => (None, None),
        };
        let finish = Finish {
            id,
            status: outcome.status(),
            attempt: attempt.map(i64::from),
            result,
            error,
        };
        batches.finish.call(finish).await
    }

    async fn finish_one(
        &self,
        id: JobId,
        attempt: Option<u32>,
        outcome: Outcome,
    ) -> Result<Option<JobRecord>> {
        let mut held = format!("status IN ({})", finishable_from(outcome.status()));
        let mut args = args![id, now()];
        let set = match outcome {
            Outcome::Succeeded(result) => {
                args.push(without_nul(result).into());
                "status = 'succeeded', result = $3, error = NULL"
            }
            Outcome::Failed(err) => {
                args.push(error_json(&err)?.into());
                "status = 'failed', error = $3"
            }
            Outcome::Cancelled => "status = 'cancelled'",
        };
        if let Some(attempt) = attempt {
            args.push(i64::from(attempt).into());
            held = format!("status = 'running' AND attempts = ${}", args.len());
        }
        let sql = format!(
            "UPDATE jobs SET {set}, finished_at = $2, updated_at = $2 \
             WHERE id = $1 AND {held} RETURNING {JOB_COLUMNS}"
        );
        self.pool.fetch_optional(&sql, args, job_from_row).await
    }

    /// Puts attempt `attempt`'s job back to queued after a transient failure, keeping `err` as
    /// its last error. The command stays in the broker (NAK with delay), delivered again in
    /// `redelivered_in`: `published_at` is set to then, so the sweeper's clock starts when the
    /// command is due, instead of a copy going out before it.
    pub async fn retry_job(
        &self,
        id: JobId,
        attempt: u32,
        err: &JobError,
        redelivered_in: Duration,
    ) -> Result<AttemptWrite<()>> {
        let now = now();
        let due = now + chrono::Duration::from_std(redelivered_in).unwrap_or_default();
        let n = self
            .pool
            .execute(
                "UPDATE jobs SET status = 'queued', error = $3, published_at = $4, \
                 updated_at = $2 WHERE id = $1 AND status = 'running' AND attempts = $5",
                args![id, now, error_json(err)?, due, i64::from(attempt)],
            )
            .await?;
        Ok(written(n))
    }

    /// Running jobs whose lease nobody renewed since `stale_before`, oldest first. Their
    /// consumer is gone, and so is their command if the broker has not delivered it again
    /// since: its deliveries were spent on a consumer that kept dying, or the broker lost it.
    pub async fn abandoned_jobs(
        &self,
        stale_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<JobRecord>> {
        self.pool
            .fetch_all(
                &abandoned_jobs_sql(),
                args![stale_before, i64::from(limit)],
                job_from_row,
            )
            .await
    }

    /// Settles a job found by [`Store::abandoned_jobs`], if its lease is still lapsed (a
    /// consumer may have taken it over meanwhile): back to queued with `error` as its last
    /// error, its command to be published again, or failed once it has had its tries.
    /// `None` if the job moved on.
    pub async fn settle_abandoned(
        &self,
        id: JobId,
        stale_before: DateTime<Utc>,
        error: &JobError,
        give_up: bool,
    ) -> Result<Option<JobRecord>> {
        // `published_at` cleared: should the publish that follows fail, the sweeper's pass
        // over queued jobs takes the job up again at once.
        let set = if give_up {
            "status = 'failed', error = $3, finished_at = $2"
        } else {
            "status = 'queued', error = $3, published_at = NULL"
        };
        let sql = format!(
            "UPDATE jobs SET {set}, updated_at = $2 \
             WHERE id = $1 AND status = 'running' AND updated_at < $4 RETURNING {JOB_COLUMNS}"
        );
        self.pool
            .fetch_optional(
                &sql,
                args![id, now(), error_json(error)?, stale_before],
                job_from_row,
            )
            .await
    }

    /// A queued job is cancelled at once; a running one gets `cancel_requested` and keeps its
    /// status until its consumer records the outcome. One statement, so it cannot interleave
    /// with `start_attempt`.
    pub async fn cancel_job(&self, id: JobId) -> Result<CancelOutcome> {
        let sql = format!(
            "UPDATE jobs SET \
             status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END, \
             finished_at = CASE WHEN status = 'queued' THEN $2 ELSE finished_at END, \
             cancel_requested = CASE WHEN status = 'running' THEN TRUE ELSE cancel_requested END, \
             updated_at = $2 \
             WHERE id = $1 AND status IN ('queued', 'running') RETURNING {JOB_COLUMNS}"
        );
        if let Some(job) = self
            .pool
            .fetch_optional(&sql, args![id, now()], job_from_row)
            .await?
        {
            return Ok(match job.status {
                JobStatus::Cancelled => CancelOutcome::Cancelled(job),
                _ => CancelOutcome::Requested(job),
            });
        }
        Ok(match self.get_job(id).await? {
            None => CancelOutcome::NotFound,
            Some(job) => CancelOutcome::AlreadyFinished(job),
        })
    }

    /// Every (kind, status) pair that has jobs, with its count.
    pub async fn count_jobs_by_status(&self) -> Result<Vec<(JobKind, JobStatus, i64)>> {
        self.pool
            .fetch_all(
                "SELECT kind, status, count(*) AS n FROM jobs \
                 GROUP BY kind, status ORDER BY kind, status",
                vec![],
                |r| Ok((kind_of(r)?, status_of(r)?, required("n", r.int("n")?)?)),
            )
            .await
    }

    /// Records one provider call of an attempt; to be written before the attempt's outcome or
    /// retry, whose synced commit makes it durable.
    pub async fn insert_inference_log(&self, log: &InferenceLog) -> Result<()> {
        let sql = format!(
            "INSERT INTO inference_logs ({LOG_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        );
        // Not synced: the attempt whose call it records ends in a synced write (its outcome or
        // its retry), which carries it; lost with the machine before that, the attempt is lost
        // with it and runs again.
        self.pool
            .execute_as(
                Commit::Lazy,
                &sql,
                args![
                    log.id,
                    log.created_at,
                    log.user_id.clone(),
                    log.job_id,
                    log.task.as_str(),
                    log.model.as_str(),
                    log.provider.as_str(),
                    i64::from(log.attempt),
                    log.input_tokens,
                    log.output_tokens,
                    log.latency_ms,
                    log.ttft_ms,
                    log.cost_usd,
                    log.success,
                    log.error
                        .as_deref()
                        .map(|e| text_without_nul(e).into_owned()),
                    log.cache_read_tokens,
                    log.cache_write_tokens,
                ],
            )
            .await
            .map(drop)
    }

    /// Oldest first.
    pub async fn inference_logs_for_job(&self, job_id: JobId) -> Result<Vec<InferenceLog>> {
        let sql = format!(
            "SELECT {LOG_COLUMNS} FROM inference_logs WHERE job_id = $1 \
             ORDER BY created_at, id"
        );
        self.pool.fetch_all(&sql, args![job_id], log_from_row).await
    }

    /// The provider calls of `q` summed, in all and per task and model. The total is a query
    /// of its own: its `requests` count distinct jobs, which the groups cannot add up (a
    /// fallback's job has calls under two models).
    pub async fn llm_usage(&self, q: &UsageQuery) -> Result<UsageReport> {
        let total = self.llm_usage_total(q).await?;
        let (filter, args) = usage_filter(q);
        let sql = format!(
            "SELECT task, model, {USAGE_SUMS} FROM inference_logs WHERE {filter} \
             GROUP BY task, model ORDER BY cost_usd DESC, calls DESC, task, model"
        );
        let by_model = self
            .pool
            .fetch_all(&sql, args, |r| {
                Ok(ModelUsage {
                    task: required("task", r.text("task")?)?,
                    model: required("model", r.text("model")?)?,
                    counts: usage_counts_from_row(r)?,
                })
            })
            .await?;
        let by_user = match q.user_id {
            Some(_) => Vec::new(),
            None => {
                let sql = format!(
                    "SELECT user_id, {USAGE_SUMS} FROM inference_logs WHERE {filter} \
                     GROUP BY user_id \
                     ORDER BY cost_usd DESC, calls DESC, user_id IS NULL, user_id \
                     LIMIT {USAGE_TOP_USERS}"
                );
                let (_, args) = usage_filter(q);
                self.pool
                    .fetch_all(&sql, args, |r| {
                        Ok(UserUsage {
                            user_id: r.text("user_id")?,
                            counts: usage_counts_from_row(r)?,
                        })
                    })
                    .await?
            }
        };
        Ok(UsageReport {
            total,
            by_model,
            by_user,
        })
    }

    /// The provider calls of `q` summed in all.
    pub async fn llm_usage_total(&self, q: &UsageQuery) -> Result<UsageCounts> {
        let (filter, args) = usage_filter(q);
        let sql = format!("SELECT {USAGE_SUMS} FROM inference_logs WHERE {filter}");
        Ok(self
            .pool
            .fetch_all(&sql, args, usage_counts_from_row)
            .await?
            .pop()
            .unwrap_or_default())
    }

    /// Claims up to `limit` announcements of finished jobs that are due at `now`, oldest job
    /// first, and no more than their jobs' inputs and results fit in `max_bytes` (the first
    /// always comes): each is counted as a try and leased until `lease_until`, so that another
    /// API does not take it meanwhile (a crashed try is taken again once its lease ends).
    pub async fn claim_webhooks(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        max_bytes: u64,
    ) -> Result<Vec<WebhookDue>> {
        let finished = status_list(JobStatus::ALL.into_iter().filter(|s| s.is_terminal()));
        let due =
            "webhook_state = 'pending' AND (webhook_next_at IS NULL OR webhook_next_at <= $1)";
        let size = self.stored_size();
        // The jobs come whole (their announcements carry input and result): past `max_bytes`
        // together the rest wait for the next claim, though the first job always comes.
        let sql = format!(
            "UPDATE jobs SET webhook_attempts = webhook_attempts + 1, webhook_next_at = $2 \
             WHERE id IN (SELECT id FROM (\
               SELECT id, row_number() OVER (ORDER BY id) AS n, \
                 sum({size}) OVER (ORDER BY id) AS upto \
               FROM jobs WHERE {due} AND status IN ({finished}) ORDER BY id LIMIT $3\
             ) AS claimed WHERE n = 1 OR upto <= $4) AND {due} \
             RETURNING {JOB_COLUMNS}"
        );
        let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        self.pool
            .fetch_all(
                &sql,
                args![now, lease_until, i64::from(limit), max_bytes],
                |r| {
                    let job = job_from_row(r)?;
                    let webhook = required("webhook_url", job.webhook.as_ref())?;
                    Ok(WebhookDue {
                        url: webhook.url.clone(),
                        attempt: webhook.attempts,
                        job,
                    })
                },
            )
            .await
    }

    /// Records a claimed announcement's try `attempt`: delivered (`Ok`), or failed with its
    /// error and either the time of the next try or (`None`) none: given up. A try whose lease
    /// ran out may report after a later one was claimed: its failure is then not the
    /// announcement's to record (it would move the later try's lease, or give up while that
    /// try runs), but a delivery by any try is one, even after a later try gave up.
    pub async fn finish_webhook(
        &self,
        id: JobId,
        attempt: i32,
        outcome: std::result::Result<(), (String, Option<DateTime<Utc>>)>,
    ) -> Result<()> {
        let (sql, args) = match outcome {
            Ok(()) => (
                "UPDATE jobs SET webhook_state = 'delivered', webhook_next_at = NULL, \
                 webhook_error = NULL \
                 WHERE id = $1 AND webhook_state IN ('pending', 'failed')",
                args![id],
            ),
            Err((error, next_at)) => (
                "UPDATE jobs SET webhook_state = $3, webhook_next_at = $4, webhook_error = $5 \
                 WHERE id = $1 AND webhook_state = 'pending' AND webhook_attempts = $2",
                args![
                    id,
                    i64::from(attempt),
                    if next_at.is_some() {
                        "pending"
                    } else {
                        "failed"
                    },
                    next_at,
                    error
                ],
            ),
        };
        self.pool.execute(sql, args).await.map(drop)
    }

    /// Starts job `id`'s announcement over (its tries counted from 0, due at once): an
    /// operator's second chance for a delivery given up, once its receiver is fixed. The job as
    /// this left it, read in the same write (the delivery, due at once, may be under way before
    /// a later read); `None` for a job without a webhook.
    pub async fn redeliver_webhook(&self, id: JobId) -> Result<Option<JobRecord>> {
        let sql = format!(
            "UPDATE jobs SET webhook_state = 'pending', webhook_attempts = 0, \
             webhook_next_at = NULL, webhook_error = NULL \
             WHERE id = $1 AND webhook_url IS NOT NULL RETURNING {JOB_COLUMNS}"
        );
        self.pool
            .fetch_optional(&sql, args![id], job_from_row)
            .await
    }

    /// Deletes up to `limit` finished jobs submitted before `before`, oldest first, and
    /// returns how many. A job's age is its id's (UUIDv7 time order), so the scan is a range
    /// of the primary key: no index of its own on the path every job's writes take.
    pub async fn purge_finished_jobs(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        let finished = status_list(JobStatus::ALL.into_iter().filter(|s| s.is_terminal()));
        let sql = format!(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs \
             WHERE id < $1 AND status IN ({finished}) ORDER BY id LIMIT $2)"
        );
        self.pool
            .execute(
                &sql,
                args![xenios_contract::first_job_id_at(before), i64::from(limit)],
            )
            .await
    }

    /// Deletes up to `limit` inference logs written before `before`, oldest first.
    pub async fn purge_inference_logs(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        self.pool
            .execute(
                "DELETE FROM inference_logs WHERE id IN (SELECT id FROM inference_logs \
                 WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
                args![before, i64::from(limit)],
            )
            .await
    }

    /// Deletes up to `limit` cached extractions last used before `before`, least recently
    /// used first.
    pub async fn purge_extraction_cache(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        self.pool
            .execute(
                "DELETE FROM extraction_cache WHERE cache_key IN (SELECT cache_key \
                 FROM extraction_cache WHERE last_used_at < $1 ORDER BY last_used_at LIMIT $2)",
                args![before, i64::from(limit)],
            )
            .await
    }

    /// Up to `limit` of `user_id`'s jobs, newest first, without inputs and results.
    pub async fn user_jobs(&self, user_id: &str, limit: u32) -> Result<Vec<UserJob>> {
        // `->>` reads a JSON member as text in PostgreSQL and in SQLite (3.38 and later).
        self.pool
            .fetch_all(
                "SELECT id, status, updated_at, result->>'sha256' AS document_sha256 \
                 FROM jobs WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
                args![user_id, i64::from(limit)],
                |r| {
                    Ok(UserJob {
                        id: required("id", r.uuid("id")?)?,
                        status: status_of(r)?,
                        updated_at: required("updated_at", r.time("updated_at")?)?,
                        document_sha256: r.text("document_sha256")?,
                    })
                },
            )
            .await
    }

    /// Deletes those of `ids` that are `user_id`'s and finished, and returns how many. Only
    /// the jobs the caller saw finished: one that finished since may have written events, a
    /// dead letter or a cached extraction after the caller erased those, and must stay until
    /// a later erasure finds it finished.
    pub async fn erase_finished_jobs(&self, user_id: &str, ids: &[JobId]) -> Result<u64> {
        let finished = status_list(JobStatus::ALL.into_iter().filter(|s| s.is_terminal()));
        let listed = (0..ERASE_IDS)
            .map(|n| format!("${}", n + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "DELETE FROM jobs WHERE user_id = $1 AND status IN ({finished}) AND id IN ({listed})"
        );
        let mut deleted = 0;
        for chunk in ids.chunks(ERASE_IDS) {
            // Padded with its own first id, so that every chunk is the one prepared statement.
            let padded = chunk.iter().chain(std::iter::repeat(&chunk[0]));
            let mut args = args![user_id];
            args.extend(padded.take(ERASE_IDS).map(|id| Arg::from(*id)));
            deleted += self.pool.execute(&sql, args).await?;
        }
        Ok(deleted)
    }

    /// Erases `user_id`'s rows of the LLM audit trail but for what their daily budget needs:
    /// the rows since `today` (the budget's day) become one that holds only their summed cost
    /// and the user (no job, model, tokens or time of call), and every other row goes, `batch`
    /// per statement. Returns how many rows of calls were erased.
    pub async fn erase_inference_logs_of(
        &self,
        user_id: &str,
        today: DateTime<Utc>,
        batch: u32,
    ) -> Result<u64> {
        let calls = self
            .pool
            .fetch_all(
                "SELECT count(*) AS calls FROM inference_logs WHERE user_id = $1 AND task <> $2",
                args![user_id, ERASED],
                |r| Ok(r.int("calls")?.unwrap_or(0)),
            )
            .await?;
        // One statement, so that the day's sum is never counted twice nor lost whatever
        // stops the erasure: the kept row (the one already kept today, else any) takes the
        // sum, the others' cost goes. A concurrent erasure of the same user finds the kept
        // row by what it holds, whatever its new id.
        let kept = format!("(task = '{ERASED}' AND cost_usd IS NOT NULL)");
        let is_kept = format!("(inference_logs.id = day.kept OR {kept})");
        let fold = format!(
            "UPDATE inference_logs SET \
             id = CASE WHEN {is_kept} THEN $3 ELSE inference_logs.id END, \
             cost_usd = CASE WHEN {is_kept} THEN day.total ELSE NULL END, \
             created_at = $4, job_id = NULL, task = '{ERASED}', model = '{ERASED}', \
             provider = '{ERASED}', attempt = 0, input_tokens = 0, output_tokens = 0, \
             cache_read_tokens = 0, cache_write_tokens = 0, latency_ms = 0, ttft_ms = NULL, \
             success = TRUE, error = NULL \
             FROM (SELECT sum(cost_usd) AS total, (SELECT id FROM inference_logs \
             WHERE user_id = $1 AND created_at >= $2 \
             ORDER BY CASE WHEN {kept} THEN 0 ELSE 1 END, id LIMIT 1) AS kept \
             FROM inference_logs WHERE user_id = $1 AND created_at >= $2) AS day \
             WHERE inference_logs.user_id = $1 AND inference_logs.created_at >= $2"
        );
        self.pool
            .execute(&fold, args![user_id, today, uuid::Uuid::now_v7(), now()])
            .await?;
        // A call logged since the fold is left for the next erasure: its job is still there.
        let delete = format!(
            "DELETE FROM inference_logs WHERE id IN (SELECT id FROM inference_logs \
             WHERE user_id = $1 AND (created_at < $2 OR (task = '{ERASED}' AND cost_usd IS NULL)) \
             LIMIT $3)"
        );
        loop {
            let deleted = self
                .pool
                .execute(&delete, args![user_id, today, i64::from(batch)])
                .await?;
            if deleted < u64::from(batch) {
                break;
            }
        }
        Ok(calls.first().copied().unwrap_or(0).max(0) as u64)
    }

    /// Deletes what the extraction cache holds of the document with this `sha256`, in every
    /// output format.
    pub async fn erase_cached_extractions(&self, sha256: &str) -> Result<u64> {
        self.pool
            .execute(
                "DELETE FROM extraction_cache WHERE sha256 = $1",
                args![sha256],
            )
            .await
    }

    /// A cached extraction result, counting the hit.
    pub async fn cached_extraction(&self, cache_key: &str) -> Result<Option<Value>> {
        self.pool
            .fetch_optional(
                "UPDATE extraction_cache SET hits = hits + 1, last_used_at = $2 \
                 WHERE cache_key = $1 RETURNING result",
                args![cache_key, now()],
                |r| required("result", r.json("result")?),
            )
            .await
    }

    /// Stores (or replaces) the result for `cache_key`.
    pub async fn put_extraction(
        &self,
        cache_key: &str,
        sha256: &str,
        result: &Value,
    ) -> Result<()> {
        self.pool
            .execute(
                "INSERT INTO extraction_cache (cache_key, sha256, result, hits, created_at, \
                 last_used_at) VALUES ($1, $2, $3, 0, $4, $4) \
                 ON CONFLICT (cache_key) DO UPDATE SET sha256 = excluded.sha256, \
                 result = excluded.result, created_at = excluded.created_at, \
                 last_used_at = excluded.last_used_at",
                args![cache_key, sha256, result.clone(), now()],
            )
            .await
            .map(drop)
    }
}

/// Every API's sweeper runs it every 15 s: it reads the partial index of running jobs
/// (`jobs_running`, migration 0007), not every job kept.
fn abandoned_jobs_sql() -> String {
    format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'running' AND updated_at < $1 \
         ORDER BY updated_at LIMIT $2"
    )
}

/// An attempt's single-row write: done if it changed its job.
fn written(rows: u64) -> AttemptWrite<()> {
    if rows == 1 {
        AttemptWrite::Done(())
    } else {
        AttemptWrite::Lost
    }
}

/// Microseconds: what timestamptz keeps, so a value reads back exactly as written on both
/// backends.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The statuses an outcome may be recorded from (`JobStatus::can_become`), as an SQL list.
pub(crate) fn finishable_from(target: JobStatus) -> String {
    status_list(JobStatus::ALL.into_iter().filter(|s| s.can_become(target)))
}

fn status_list(statuses: impl Iterator<Item = JobStatus>) -> String {
    statuses
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn error_json(err: &JobError) -> Result<Value> {
    serde_json::to_value(err)
        .map(without_nul)
        .map_err(|e| StoreError::Other(e.into()))
}

/// PostgreSQL refuses U+0000 in `text` and `jsonb`, so what a handler or a provider produced
/// is stored with it replaced (U+FFFD), on both databases alike, rather than lost to a write
/// that can never succeed. A job's input is refused at the API instead: its client can mend it.
fn without_nul(value: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Cow::Owned(clean) = text_without_nul(s) {
                    *s = clean;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            Value::Object(map) => {
                if map.keys().any(|k| k.contains('\0')) {
                    *map = std::mem::take(map)
                        .into_iter()
                        .map(|(k, v)| (text_without_nul(&k).into_owned(), v))
                        .collect();
                }
                map.values_mut().for_each(walk);
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    let mut value = value;
    walk(&mut value);
    value
}

fn text_without_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// One statement of each batched shape is in flight at a time (`pg_batch.rs`): one
/// connection each for the records and the outcomes, and in a pool of their own one each for
/// the claims and the LLM gateway's records, and one for the single lazy writes (lease
/// renewals, progress, LLM calls' audit rows; see `connect_pg`).
const BATCH_CONNECTIONS: u32 = 2;
const LAZY_CONNECTIONS: u32 = 3;

/// How long past the statement timeout the store still waits for a statement's answer: the
/// server's own cancellation arrives first from a live connection.
const ANSWER_GRACE: Duration = Duration::from_secs(2);

/// The pool for reads, single-row writes and migrations, and the batched statements' own.
///
/// The first keeps PostgreSQL's default planning: a statement is planned anew for its first
/// executions, then its generic plan is kept if it costs no more. The batched statements'
/// connections plan every execution for the table as it is now: a generic plan cached while
/// `jobs` was young (a fresh deployment) joins their `unnest` by hashing the whole table, and
/// would go on scanning every job at each batch as the table grows (psql: 1.42 ms vs 0.08 ms
/// per execution at 6600 rows). Those are opened on the first batch, so commands that never
/// write a job (`xenios migrate`, `streams apply`) do not open them.
///
/// The lazy writes (the batched claims and LLM gateway's records, lease renewals, progress, the
/// LLM calls' audit rows) have a pool of their own whose commits return before the server
/// flushes them (`synchronous_commit = off`, see `Commit::Lazy`): PostgreSQL's WAL is flushed
/// in order, so the outcome's synced commit flushes the claim and audit rows beneath it too.
/// Its single writes are planned anew each time like the batches: a primary-key update costs
/// little to plan.
async fn connect_pg(url: &str, opts: &StoreOptions) -> Result<(PgPool, PgPool, PgPool)> {
    let connect = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Invalid(format!("bad PostgreSQL URL: {e}")))?
        // sqlx asks for it at login, and a pooler (PgBouncer as it ships) refuses a login
        // with a startup parameter it does not know. Only text results would differ, and
        // the store reads binary ones.
        .extra_float_digits(None);
    let options = |max_connections: u32, session: String| {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(opts.acquire_timeout)
            // The pool opens connections and `Conns` keeps them (see conns.rs): a connection
            // comes out of it fresh or after migrations only, so a ping before handing it out
            // buys nothing.
            .test_before_acquire(false)
            // Session settings rather than startup options: they also work through poolers,
            // and sqlx's own _sqlx_migrations table lands in the schema too.
            .after_connect(move |conn, _| {
                let session = session.clone();
                Box::pin(async move { conn.execute(session.as_str()).await.map(drop) })
            })
    };
    let base = format!(
        "SET search_path TO {PG_SCHEMA}; SET statement_timeout TO {}",
        opts.statement_timeout.as_millis()
    );
    let pool = options(opts.max_connections, base.clone())
        .connect_with(connect.clone())
        .await?;
    let batched = format!("{base}; SET plan_cache_mode TO force_custom_plan");
    let batches = options(BATCH_CONNECTIONS, batched.clone()).connect_lazy_with(connect.clone());
    let lazy = options(
        LAZY_CONNECTIONS,
        format!("{batched}; SET synchronous_commit TO off"),
    )
    .connect_lazy_with(connect);
    Ok((pool, batches, lazy))
}

/// Waits for an exclusive lock on `path` (created if missing); the lock lasts as long as the
/// returned file is open.
async fn lock_exclusively(path: PathBuf) -> Result<std::fs::File> {
    let locked = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|e| StoreError::Other(e.into()))?;
    locked.map_err(|e| StoreError::other(format!("cannot lock the migrations: {e}")))
}

/// The pool serves reads and the migrations; every later write goes through the writer. With
/// them, the lock file of the database's setup, unless it is in memory.
async fn connect_sqlite(
    url: &str,
    opts: &StoreOptions,
) -> Result<(sqlx::SqlitePool, SqliteWriter, Option<PathBuf>)> {
    let mut connect = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Invalid(format!("bad SQLite URL: {e}")))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match opts.sqlite_sync {
            SqliteSync::Full => SqliteSynchronous::Full,
            SqliteSync::Normal => SqliteSynchronous::Normal,
        })
        // SQLite's own handler covers opening the file; `sqlite_lock` replaces it after.
        .busy_timeout(opts.acquire_timeout)
        // The writer queue checkpoints beside itself (`sqlite_writer`).
        .pragma("wal_autocheckpoint", "0")
        // A WAL connection drops its whole page cache whenever another connection (the other
        // process, or another of this pool) has written since its last read, which here is
        // nearly always: a big cache per connection buys no hits, only resident memory.
        .pragma("cache_size", "-256")
        .foreign_keys(true);
    let busy_timeout = opts.acquire_timeout;
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut pool = SqlitePoolOptions::new()
        .max_connections(opts.max_connections)
        .acquire_timeout(opts.acquire_timeout)
        // As for PostgreSQL: the pool only opens connections for `Conns`.
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            Box::pin(async move { crate::sqlite_lock::install(conn, busy_timeout).await })
        });
    if in_memory {
        // The database lives only while a connection holds it: keep exactly one, forever.
        // It shares its cache with the writer's connection, and shared-cache readers would
        // otherwise fail at once (SQLITE_LOCKED, no busy wait) while the writer commits; the
        // price is that a read may see a batch before its commit (an in-memory database is
        // for trials and tests).
        pool = pool
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
        connect = connect.pragma("read_uncommitted", "true");
    } else if let Some(dir) = Path::new(connect.get_filename()).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Invalid(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
    }
    let filename = connect.get_filename().to_owned();
    let setup_lock = (!in_memory).then(|| {
        let mut lock = filename.clone().into_os_string();
        lock.push(".migrate-lock");
        PathBuf::from(lock)
    });
    // A new file's first connection turns it to WAL, which takes an exclusive lock that SQLite
    // does not wait for: two processes opening a new file at once (an API and a worker) had
    // one fail with "database is locked". They open it one at a time.
    let setup = match &setup_lock {
        Some(path) => Some(lock_exclusively(path.clone()).await?),
        None => None,
    };
    let pool = pool.connect_with(connect).await?;
    drop(setup);
    let target = WriterTarget {
        filename: &filename,
        in_memory,
        busy_timeout,
        sync: opts.sqlite_sync,
    };
    let writer = SqliteWriter::start(target, pool.clone())?;
    Ok((pool, writer, setup_lock))
}

/// Creates the schema only when it is missing: on a shared database the role may own its
/// schema without being allowed to create schemas.
async fn ensure_schema(pool: &PgPool) -> Result<()> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(PG_SCHEMA)
            .fetch_one(pool)
            .await?;
    if !exists {
        match pool
            .execute(format!("CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}").as_str())
            .await
        {
            // Another instance created it at the same moment.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}

fn kind_of(r: &dyn Row) -> Result<JobKind> {
    required("kind", r.text("kind")?)?
        .parse()
        .map_err(|e| StoreError::Other(Box::new(e)))
}

fn status_of(r: &dyn Row) -> Result<JobStatus> {
    required("status", r.text("status")?)?
        .parse()
        .map_err(StoreError::other)
}

pub(crate) fn job_from_row(r: &dyn Row) -> Result<JobRecord> {
    fn decode<T: serde::de::DeserializeOwned>(col: &str, v: Option<Value>) -> Result<Option<T>> {
        v.map(serde_json::from_value)
            .transpose()
            .map_err(|e| StoreError::other(format!("column {col}: {e}")))
    }
    Ok(JobRecord {
        id: required("id", r.uuid("id")?)?,
        kind: kind_of(r)?,
        status: status_of(r)?,
        user_id: r.text("user_id")?,
        input: required("input", r.json("input")?)?,
        progress: decode("progress", r.json("progress")?)?,
        result: r.json("result")?,
        error: decode("error", r.json("error")?)?,
        attempts: r.int4("attempts")?,
        correlation_id: required("correlation_id", r.text("correlation_id")?)?,
        idempotency_key: r.text("idempotency_key")?,
        cancel_requested: r.boolean("cancel_requested")?,
        published_at: r.time("published_at")?,
        created_at: required("created_at", r.time("created_at")?)?,
        started_at: r.time("started_at")?,
        finished_at: r.time("finished_at")?,
        updated_at: required("updated_at", r.time("updated_at")?)?,
        webhook: webhook_from_row(r)?,
    })
}

fn webhook_from_row(r: &dyn Row) -> Result<Option<WebhookStatus>> {
    let Some(url) = r.text("webhook_url")? else {
        return Ok(None);
    };
    Ok(Some(WebhookStatus {
        url,
        state: required("webhook_state", r.text("webhook_state")?)?,
        attempts: r.int4("webhook_attempts")?,
        next_at: r.time("webhook_next_at")?,
        error: r.text("webhook_error")?,
    }))
}

/// The sums of a usage report, cast back to bigint: PostgreSQL sums a bigint column as numeric.
const USAGE_SUMS: &str = "count(DISTINCT job_id) AS requests, count(*) AS calls, \
     CAST(coalesce(sum(CASE WHEN success THEN 0 ELSE 1 END), 0) AS BIGINT) AS failed_calls, \
     CAST(coalesce(sum(input_tokens), 0) AS BIGINT) AS input_tokens, \
     CAST(coalesce(sum(output_tokens), 0) AS BIGINT) AS output_tokens, \
     CAST(coalesce(sum(cache_read_tokens), 0) AS BIGINT) AS cache_read_tokens, \
     CAST(coalesce(sum(cache_write_tokens), 0) AS BIGINT) AS cache_write_tokens, \
     coalesce(sum(cost_usd), 0.0) AS cost_usd";

/// A new job's announcement starts pending; a job without a webhook has none.
pub(crate) fn webhook_state_of(new: &NewJob) -> Option<&'static str> {
    new.webhook_url.as_ref().map(|_| "pending")
}

fn usage_filter(q: &UsageQuery) -> (String, Vec<Arg>) {
    let mut args = args![q.since, q.until];
    let mut filter = "created_at >= $1 AND created_at < $2".to_owned();
    if let Some(user) = &q.user_id {
        args.push(user.clone().into());
        filter.push_str(" AND user_id = $3");
    }
    (filter, args)
}

fn usage_counts_from_row(r: &dyn Row) -> Result<UsageCounts> {
    let int = |col| -> Result<i64> { Ok(r.int(col)?.unwrap_or(0)) };
    Ok(UsageCounts {
        requests: int("requests")?,
        calls: int("calls")?,
        failed_calls: int("failed_calls")?,
        input_tokens: int("input_tokens")?,
        output_tokens: int("output_tokens")?,
        cache_read_tokens: int("cache_read_tokens")?,
        cache_write_tokens: int("cache_write_tokens")?,
        cost_usd: r.real("cost_usd")?.unwrap_or(0.0),
    })
}

fn log_from_row(r: &dyn Row) -> Result<InferenceLog> {
    Ok(InferenceLog {
        id: required("id", r.uuid("id")?)?,
        created_at: required("created_at", r.time("created_at")?)?,
        user_id: r.text("user_id")?,
        job_id: r.uuid("job_id")?,
        task: required("task", r.text("task")?)?,
        model: required("model", r.text("model")?)?,
        provider: required("provider", r.text("provider")?)?,
        attempt: r.int4("attempt")?,
        input_tokens: required("input_tokens", r.int("input_tokens")?)?,
        output_tokens: required("output_tokens", r.int("output_tokens")?)?,
        latency_ms: required("latency_ms", r.int("latency_ms")?)?,
        ttft_ms: r.int("ttft_ms")?,
        cost_usd: r.real("cost_usd")?,
        success: r.boolean("success")?,
        error: r.text("error")?,
        cache_read_tokens: required("cache_read_tokens", r.int("cache_read_tokens")?)?,
        cache_write_tokens: required("cache_write_tokens", r.int("cache_write_tokens")?)?,
    })
}

#[cfg(test)]
mod tests {
    use crate::db::sqlite_time;

    use super::*;

    /// The sweeper's query, as planned on a migrated database.
    async fn plan_of_abandoned_jobs(store: &Store) -> Vec<String> {
        let explain = |prefix: &str| format!("{prefix} {}", abandoned_jobs_sql());
        match &store.pool {
            Pool::Sqlite(conns, _) => {
                sqlx::query_as::<_, (i64, i64, i64, String)>(&explain("EXPLAIN QUERY PLAN"))
                    .bind(sqlite_time(now()))
                    .bind(500_i64)
                    .fetch_all(conns.opener())
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|row| row.3)
                    .collect()
            }
            Pool::Pg(conns, _) => {
                let mut conn = conns.opener().acquire().await.unwrap();
                // A test's table is small enough to read whole: the planner is asked for any
                // other way, which exists only with an index.
                sqlx::query("SET enable_seqscan TO off")
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                let plan = sqlx::query_scalar(&explain("EXPLAIN"))
                    .bind(now())
                    .bind(500_i64)
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                plan
            }
        }
    }

    async fn assert_abandoned_jobs_use_their_index(url: &str) {
        let store = Store::connect(url, &StoreOptions::default()).await.unwrap();
        store.migrate().await.unwrap();
        let plan = plan_of_abandoned_jobs(&store).await;
        assert!(
            plan.iter().any(|line| line.contains("jobs_running")),
            "{plan:#?}"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn abandoned_jobs_are_found_by_their_index_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        assert_abandoned_jobs_use_their_index(&url).await;
    }

    #[tokio::test]
    async fn abandoned_jobs_are_found_by_their_index_on_postgres() {
        let url = xenios_devstack::test_database_url().await.unwrap();
        assert_abandoned_jobs_use_their_index(&url).await;
    }

    /// The lazy writes alone commit without waiting for the flush, batched or not; the records
    /// and outcomes keep the server's setting (the test server's own is off, so the source of
    /// the setting is what tells).
    #[tokio::test]
    async fn only_the_lazy_writes_commit_unsynced_on_postgres() {
        let url = xenios_devstack::test_database_url().await.unwrap();
        let store = Store::connect(&url, &StoreOptions::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let batches = store.batches.clone().unwrap();
        // Connections are opened on first use and kept once their statement is done: a
        // gateway's record and a claim are written, and only the lazy pool has one.
        let opened = |conns: &Conns<Postgres>| conns.idle_count();
        let new = NewJob {
            id: xenios_contract::new_job_id(),
            kind: JobKind::Llm,
            user_id: None,
            input: serde_json::json!({}),
            correlation_id: "lazy".into(),
            idempotency_key: None,
            webhook_url: None,
        };
        let id = new.id;
        store.create_live_job(new).await.unwrap();
        assert!(matches!(
            store.start_attempt(id).await.unwrap(),
            StartAttempt::Started(_)
        ));
        assert_eq!(opened(&batches.conns), 0);
        assert!(opened(&batches.lazy_conns) > 0);
        store.finish_job(id, Outcome::Cancelled).await.unwrap();
        assert!(opened(&batches.conns) > 0, "an outcome is synced");
        let setting = |conns: Conns<Postgres>| async move {
            sqlx::query_as::<_, (String, String)>(
                "SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'",
            )
            .fetch_one(conns.opener())
            .await
            .unwrap()
        };
        assert_eq!(
            setting(batches.lazy_conns.clone()).await,
            ("off".to_owned(), "session".to_owned())
        );
        let (_, source) = setting(batches.conns.clone()).await;
        assert_ne!(source, "session");
        // The single writes (lease renewals, progress, audit rows) by their commit.
        let source_for = |commit| {
            store.pool.fetch_optional_as(
                commit,
                "SELECT source FROM pg_settings WHERE name = 'synchronous_commit'",
                args![],
                |r| required("source", r.text("source")?),
            )
        };
        let lazy = source_for(Commit::Lazy).await.unwrap();
        assert_eq!(lazy.as_deref(), Some("session"));
        let synced = source_for(Commit::Synced).await.unwrap();
        assert_ne!(synced.as_deref(), Some("session"));
        store.close().await;
    }
}
