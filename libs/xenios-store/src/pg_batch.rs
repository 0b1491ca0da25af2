//! PostgreSQL's group commit for the three statements every job makes: its record, the start
//! of an attempt, its outcome.
//!
//! Each statement is a round trip to a server process and a wake-up of it, and under load that
//! kernel work, more than SQL, is most of the server's CPU (bench/results/2026-12-03-experiments).
//! So callers that arrive while a statement of their shape is in flight are collected and sent
//! as one multi-row statement over `unnest` of arrays: one round trip and one commit for all,
//! each caller's outcome read back from `RETURNING` by job id. Nothing waits for a timer: a
//! lone caller goes out at once, alone. A statement the server rejects as a whole (one row's
//! bad value) is run again row by row, so every caller gets the outcome its own statement would
//! have had. The same job twice in one batch goes in separate statements, in arrival order,
//! so the second sees what the first did, as with one statement per caller.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres};
use tokio::sync::{mpsc, oneshot};
use xenios_contract::{JobId, JobStatus};

use crate::conns::Conns;
use crate::error::{leaves_connection_usable, StoreError};
use crate::model::{JobRecord, NewJob};
use crate::store::{finishable_from, job_from_row, now, JOB_COLUMNS};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Rows in one statement at most; more callers wait for the next one.
const MAX_BATCH: usize = 128;

/// One statement shape run for many callers.
pub(crate) trait BatchOp: Send + Sync + 'static {
    type Req: Send + Sync + 'static;

    fn job_id(req: &Self::Req) -> JobId;

    /// One statement for all of `reqs`: the rows of the jobs it wrote.
    fn run<'a>(
        conn: &'a mut PgConnection,
        reqs: &'a [&'a Self::Req],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<PgRow>, sqlx::Error>> + Send + 'a;
}

struct Pending<Req> {
    req: Req,
    reply: oneshot::Sender<Result<Option<JobRecord>>>,
}

/// Collects callers of one [`BatchOp`]; clones share the collector.
pub(crate) struct Batcher<Op: BatchOp> {
    tx: mpsc::Sender<Pending<Op::Req>>,
}

impl<Op: BatchOp> std::fmt::Debug for Batcher<Op> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl<Op: BatchOp> Batcher<Op> {
    /// Starts the collector on the current runtime; it ends when the last handle is dropped.
    ///
    /// One statement of a shape at a time: callers that arrive meanwhile wait for it (a
    /// fraction of a millisecond) and go together in the next. With two in flight most
    /// statements still carried a single row at 1300 jobs/s, and the A/B showed little of the
    /// gain one gives (1246 vs 1515 jobs/s, medians of 4, bench/results/2026-12-03-experiments).
    pub(crate) fn spawn(conns: Conns<Postgres>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Pending<Op::Req>>(4 * MAX_BATCH);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (reqs, replies): (Vec<_>, Vec<_>) =
                    batch.into_iter().map(|p| (p.req, p.reply)).unzip();
                let outcomes = run_batch::<Op>(&conns, &reqs).await;
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // A caller that went away no longer needs its answer.
                    let _ = reply.send(outcome);
                }
            }
        });
        Batcher { tx }
    }

    /// The row the statement wrote for `req`, or `None` if its conditions left the job alone.
    pub(crate) async fn call(&self, req: Op::Req) -> Result<Option<JobRecord>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { req, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn gone() -> StoreError {
    StoreError::Unavailable("the store is closed".into())
}

/// How a statement failed: rejected by the server (its connection fine, its rows may be run
/// one by one) or anything else (the answer for every row).
enum Failure {
    Rejected(StoreError),
    Failed(StoreError),
}

async fn statement<Op: BatchOp>(
    conns: &Conns<Postgres>,
    reqs: &[&Op::Req],
) -> Result<HashMap<JobId, JobRecord>, Failure> {
    let mut conn = conns.checkout().await.map_err(Failure::Failed)?;
    // Given up after the statement timeout as a failure of the whole batch: its callers, and
    // every write of this shape queued behind them, would otherwise wait on a dead connection.
    let rows = conns.bounded(Op::run(conn.raw(), reqs, now())).await;
    let rows = conn.settle(rows).map_err(|e| {
        if leaves_connection_usable(&e) {
            Failure::Rejected(e.into())
        } else {
            Failure::Failed(e.into())
        }
    })?;
    rows.iter()
        .map(|row| job_from_row(row).map(|job| (job.id, job)))
        .collect::<Result<_>>()
        .map_err(Failure::Failed)
}

async fn alone<Op: BatchOp>(conns: &Conns<Postgres>, req: &Op::Req) -> Result<Option<JobRecord>> {
    match statement::<Op>(conns, &[req]).await {
        Ok(mut rows) => Ok(rows.remove(&Op::job_id(req))),
        Err(Failure::Rejected(e) | Failure::Failed(e)) => Err(e),
    }
}

async fn run_batch<Op: BatchOp>(
    conns: &Conns<Postgres>,
    reqs: &[Op::Req],
) -> Vec<Result<Option<JobRecord>>> {
    let mut seen = HashSet::new();
    let (firsts, repeats): (Vec<usize>, Vec<usize>) =
        (0..reqs.len()).partition(|&i| seen.insert(Op::job_id(&reqs[i])));
    let mut outcomes: Vec<Option<Result<Option<JobRecord>>>> =
        std::iter::repeat_with(|| None).take(reqs.len()).collect();

    let together: Vec<&Op::Req> = firsts.iter().map(|&i| &reqs[i]).collect();
    let mut unreachable = None;
    match statement::<Op>(conns, &together).await {
        Ok(mut rows) => {
            for &i in &firsts {
                outcomes[i] = Some(Ok(rows.remove(&Op::job_id(&reqs[i]))));
            }
        }
        Err(Failure::Rejected(_)) if firsts.len() > 1 => {
            for &i in &firsts {
                outcomes[i] = Some(alone::<Op>(conns, &reqs[i]).await);
            }
        }
        Err(Failure::Rejected(e)) => outcomes[firsts[0]] = Some(Err(e)),
        Err(Failure::Failed(e)) => {
            for &i in &firsts {
                outcomes[i] = Some(Err(copy_of(&e)));
            }
            // The database is out of reach: the repeats would each wait for it again.
            unreachable = Some(e);
        }
    }
    for &i in &repeats {
        outcomes[i] = Some(match &unreachable {
            Some(e) => Err(copy_of(e)),
            None => alone::<Op>(conns, &reqs[i]).await,
        });
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every request has an outcome"))
        .collect()
}

/// The same error for another caller of the failed statement.
fn copy_of(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(source) => StoreError::Unavailable(source.to_string().into()),
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::Invalid(m) => StoreError::Invalid(m.clone()),
        StoreError::NotFound(id) => StoreError::NotFound(*id),
        StoreError::Other(source) => StoreError::Other(source.to_string().into()),
    }
}

/// One bound array of a batched statement: a field of every request, in request order.
fn column<'a, R, T>(reqs: &[&'a R], field: impl Fn(&'a R) -> T) -> Vec<T> {
    reqs.iter().map(|r| field(r)).collect()
}

/// Records queued jobs (`Store::create_job`): no row back for a job whose id or idempotency key
/// is taken.
pub(crate) struct CreateJobs;

static CREATE_JOBS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO jobs (id, kind, status, user_id, input, attempts, correlation_id, \
         idempotency_key, cancel_requested, created_at, updated_at, webhook_url, \
         webhook_state) \
         SELECT b.id, b.kind, 'queued', b.user_id, b.input, 0, b.correlation_id, \
         b.idempotency_key, FALSE, $7, $7, b.webhook_url, b.webhook_state \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::text[], \
         $8::text[], $9::text[]) \
         AS b(id, kind, user_id, input, correlation_id, idempotency_key, webhook_url, \
         webhook_state) \
         ON CONFLICT DO NOTHING RETURNING {JOB_COLUMNS}"
    )
});

impl BatchOp for CreateJobs {
    type Req = NewJob;

    fn job_id(req: &NewJob) -> JobId {
        req.id
    }

    fn run<'a>(
        conn: &'a mut PgConnection,
        reqs: &'a [&'a NewJob],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<PgRow>, sqlx::Error>> + Send + 'a {
        sqlx::query(&CREATE_JOBS)
            .bind(column(reqs, |r| r.id))
            .bind(column(reqs, |r| r.kind.as_str()))
            .bind(column(reqs, |r| r.user_id.as_deref()))
            .bind(column(reqs, |r| Json(&r.input)))
            .bind(column(reqs, |r| r.correlation_id.as_str()))
            .bind(column(reqs, |r| r.idempotency_key.as_deref()))
            .bind(now)
            .bind(column(reqs, |r| r.webhook_url.as_deref()))
            .bind(column(reqs, crate::store::webhook_state_of))
            .fetch_all(conn)
    }
}

/// Begins attempts (`Store::start_attempt_with_lease`): the job id and the time before which
/// a running job's lease counts as lapsed.
pub(crate) struct StartAttempts;

static START_ATTEMPTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
         started_at = coalesce(started_at, $2), updated_at = $2 \
         FROM unnest($1::uuid[], $3::timestamptz[]) AS b(job_id, stale_before) \
         WHERE id = b.job_id AND NOT cancel_requested \
         AND (status = 'queued' OR (status = 'running' AND updated_at <= b.stale_before)) \
         RETURNING {JOB_COLUMNS}"
    )
});

impl BatchOp for StartAttempts {
    type Req = (JobId, DateTime<Utc>);

    fn job_id(req: &Self::Req) -> JobId {
        req.0
    }

    fn run<'a>(
        conn: &'a mut PgConnection,
        reqs: &'a [&'a Self::Req],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<PgRow>, sqlx::Error>> + Send + 'a {
        sqlx::query(&START_ATTEMPTS)
            .bind(column(reqs, |r| r.0))
            .bind(now)
            .bind(column(reqs, |r| r.1))
            .fetch_all(conn)
    }
}

/// What `Store::finish_job` writes: the terminal status and, per status, the result or error.
pub(crate) struct Finish {
    pub(crate) id: JobId,
    pub(crate) status: JobStatus,
    /// The attempt that must still hold the job (running under this count), if any.
    pub(crate) attempt: Option<i64>,
    pub(crate) result: Option<Value>,
    pub(crate) error: Option<Value>,
}

/// Records outcomes (`Store::finish_job`, `Store::finish_attempt`), each only from a status that
/// may become it and, for an attempt's, only while that attempt holds the job.
pub(crate) struct FinishJobs;

static FINISH_JOBS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs SET status = b.to_status, \
         result = CASE WHEN b.to_status = 'succeeded' THEN b.to_result ELSE result END, \
         error = CASE b.to_status WHEN 'succeeded' THEN NULL WHEN 'failed' THEN b.to_error \
                 ELSE error END, \
         finished_at = $2, updated_at = $2 \
         FROM unnest($1::uuid[], $3::text[], $4::jsonb[], $5::jsonb[], $6::int8[]) \
         AS b(job_id, to_status, to_result, to_error, attempt) \
         WHERE id = b.job_id AND CASE b.to_status \
           WHEN 'succeeded' THEN status IN ({succeeded}) \
           WHEN 'failed' THEN status IN ({failed}) \
           WHEN 'cancelled' THEN status IN ({cancelled}) END \
         AND (b.attempt IS NULL OR (status = 'running' AND attempts = b.attempt)) \
         RETURNING {JOB_COLUMNS}",
        succeeded = finishable_from(JobStatus::Succeeded),
        failed = finishable_from(JobStatus::Failed),
        cancelled = finishable_from(JobStatus::Cancelled),
    )
});

impl BatchOp for FinishJobs {
    type Req = Finish;

    fn job_id(req: &Finish) -> JobId {
        req.id
    }

    fn run<'a>(
        conn: &'a mut PgConnection,
        reqs: &'a [&'a Finish],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<PgRow>, sqlx::Error>> + Send + 'a {
        sqlx::query(&FINISH_JOBS)
            .bind(column(reqs, |r| r.id))
            .bind(now)
            .bind(column(reqs, |r| r.status.as_str()))
            .bind(column(reqs, |r| r.result.as_ref().map(Json)))
            .bind(column(reqs, |r| r.error.as_ref().map(Json)))
            .bind(column(reqs, |r| r.attempt))
            .fetch_all(conn)
    }
}
