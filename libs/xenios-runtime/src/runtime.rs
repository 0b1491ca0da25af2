use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde_json::Value;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use xenios_config::{KindSettings, Settings};
use xenios_contract::envelope::{header, CancelRequest, DeadLetter, JobCommand, JobEvent};
use xenios_contract::subjects::{
    consumer_name, events_subject, CANCEL_SUBJECT, CORRELATION_ID_HEADER, JOBS_STREAM,
};
use xenios_contract::{JobError, JobId, JobKind, JobStatus};
use xenios_store::{AttemptWrite, JobRecord, Outcome, StartAttempt, Store};

use crate::dead_letter;
use crate::echo::EchoHandler;
use crate::handler::{Admission, Handler, HandlerError, HandlerResult, JobContext};
use crate::publish;
use crate::workers;

/// Tries at publishing a dead letter before the job is left to the sweeper.
const DEAD_LETTER_TRIES: u32 = 3;
/// How long a job's outcome events are sent again to a `JOB_EVENTS` that does not confirm
/// them: long enough for a three-node cluster that lost the stream's leader to elect another
/// (several seconds), and within the command's 30 s `ack_wait`.
const OUTCOME_EVENTS_WITHIN: Duration = Duration::from_secs(20);
/// Delay before a command is offered again when the store could not be reached.
const STORE_DOWN_DELAY: Duration = Duration::from_secs(2);
/// How long a handler may run on after the drain's grace period released it.
const RELEASE_WAIT: Duration = Duration::from_secs(5);
/// In-progress acks and lease renewals go out at most this far apart (well inside the
/// consumers' 30 s `ack_wait`), and three times per lease at least.
const PROGRESS_ACK_EVERY: Duration = Duration::from_secs(10);
/// How long work started before its claim failed may take to end once cancelled.
const EARLY_WORK_STOP: Duration = Duration::from_secs(5);
/// How long the first delivery of a command whose handler starts early waits for its job to
/// appear in the store: the LLM gateway publishes such a command while it records the job.
/// Longer than the API's wait for a store connection, so a record that is only slow is not
/// taken for one that failed.
const RECORD_WAIT: Duration = Duration::from_secs(10);
/// Pauses between looks for a job not recorded yet, from the first to the longest.
const RECORD_POLL_FIRST: Duration = Duration::from_millis(1);
const RECORD_POLL_MAX: Duration = Duration::from_millis(50);
/// Pause before pulling again after the broker failed a pull.
const PULL_RETRY_DELAY: Duration = Duration::from_millis(500);
/// How long past its `expires` a pull may go without the server's end-of-pull status before
/// it is taken for lost and another one sent.
const PULL_END_GRACE: Duration = Duration::from_millis(100);
/// How long a pull given up on is still drained (its late messages handed back).
const PULL_DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no handler for any job kind")]
    NothingToServe,
}

/// A consumer process: serves the kinds of its handlers (and `echo`, unless configured off)
/// from their durable pull consumers until told to stop, then drains.
pub struct Runtime {
    shared: Arc<Shared>,
    binary: String,
    handlers: HashMap<JobKind, Arc<dyn Handler>>,
}

/// What every job attempt of this process needs.
pub(crate) struct Shared {
    pub(crate) settings: Arc<Settings>,
    pub(crate) store: Store,
    pub(crate) nats: async_nats::Client,
    pub(crate) jetstream: jetstream::Context,
    running: Mutex<Running>,
    pub(crate) in_flight: AtomicU64,
    /// Fired when the grace period is over: running handlers are interrupted and released.
    abandon: CancellationToken,
}

impl Runtime {
    pub fn new(settings: Settings, store: Store, nats: async_nats::Client, binary: &str) -> Self {
        let serve_echo = settings.consumer.serve_echo;
        let runtime = Runtime {
            shared: Arc::new(Shared {
                jetstream: jetstream::new(nats.clone()),
                settings: Arc::new(settings),
                store,
                nats,
                running: Mutex::default(),
                in_flight: AtomicU64::new(0),
                abandon: CancellationToken::new(),
            }),
            binary: binary.to_owned(),
            handlers: HashMap::new(),
        };
        if serve_echo {
            runtime.with_handler(EchoHandler)
        } else {
            runtime
        }
    }

    pub fn with_handler(mut self, handler: impl Handler) -> Self {
        self.handlers.insert(handler.kind(), Arc::new(handler));
        self
    }

    pub fn kinds(&self) -> Vec<JobKind> {
        let mut kinds: Vec<JobKind> = self.handlers.keys().copied().collect();
        kinds.sort_by_key(|k| k.as_str());
        kinds
    }

    /// Serves until `shutdown` resolves; then stops pulling, lets running jobs finish within
    /// `consumer.shutdown_grace_secs`, releases (NAKs) what is still running, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), RuntimeError> {
        if self.handlers.is_empty() {
            return Err(RuntimeError::NothingToServe);
        }
        let kinds = self.kinds();
        xenios_telemetry::register_job_series(kinds.iter().map(|k| k.as_str()));
        let shared = self.shared;
        let stop_pulling = CancellationToken::new();
        let jobs = TaskTracker::new();
        let background = TaskTracker::new();

        background.spawn(listen_for_cancels(shared.clone(), stop_pulling.clone()));
        background.spawn(workers::register(
            shared.clone(),
            self.binary.clone(),
            kinds.clone(),
            stop_pulling.clone(),
        ));
        for (kind, handler) in self.handlers {
            background.spawn(pull_loop(
                shared.clone(),
                kind,
                handler,
                stop_pulling.clone(),
                jobs.clone(),
            ));
        }
        tracing::info!(kinds = ?kinds, "consumer runtime started");

        shutdown.await;
        tracing::info!("stopping: no more pulls; draining running jobs");
        // The grace period counts from the signal, whatever the broker's pace: a supervisor
        // waits that long (and a little more) before it kills the process.
        let grace = Duration::from_secs(shared.settings.consumer.shutdown_grace_secs);
        let grace_over = tokio::time::Instant::now() + grace;
        stop_pulling.cancel();
        background.close();
        if tokio::time::timeout_at(grace_over, background.wait())
            .await
            .is_err()
        {
            tracing::warn!("the broker is slow to let go of the pulls; draining jobs anyway");
        }
        jobs.close();
        if tokio::time::timeout_at(grace_over, jobs.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over: releasing running jobs to other consumers");
            shared.abandon.cancel();
            jobs.wait().await;
        }
        tracing::info!("drained");
        Ok(())
    }
}

/// Why a running handler was told to stop; the first reason wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Cancelled,
    TimedOut,
    Released,
    /// The attempt no longer holds the job (see `AttemptWrite::Lost`).
    Lost,
}

struct Interrupt {
    token: CancellationToken,
    reason: OnceLock<Reason>,
}

impl Interrupt {
    fn new() -> Self {
        Interrupt {
            token: CancellationToken::new(),
            reason: OnceLock::new(),
        }
    }

    fn fire(&self, reason: Reason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }
}

async fn listen_for_cancels(shared: Arc<Shared>, stop: CancellationToken) {
    let mut subscription = loop {
        match shared.nats.subscribe(CANCEL_SUBJECT).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to cancellations; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(PULL_RETRY_DELAY) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    };
    loop {
        let message = tokio::select! {
            m = subscription.next() => m,
            _ = stop.cancelled() => break,
        };
        let Some(message) = message else { break };
        match CancelRequest::from_slice(&message.payload) {
            Ok(request) => shared.interrupt(request.job_id, Reason::Cancelled),
            Err(e) => tracing::warn!(error = %e, "ignoring a malformed cancel request"),
        }
    }
    let _ = subscription.unsubscribe().await;
}

/// A job's interrupt registered for cancellations (`ctl.jobs.cancel`, found by job id) until
/// dropped. Another delivery of the same job in this process (a duplicate that finds it busy)
/// registers beside it, not in its place: a cancellation reaches both.
struct Listening<'s> {
    shared: &'s Shared,
    job_id: JobId,
    interrupt: Arc<Interrupt>,
}

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        let mut running = self.shared.running.lock().expect("running-jobs lock");
        running.forget(self.job_id, &self.interrupt);
    }
}

/// The interrupts of the jobs this process holds, and the last cancellations that named a job
/// it did not hold yet: one may come just before its command's attempt starts listening (the
/// LLM gateway withdraws a command whose record failed at once), and is heard then.
#[derive(Default)]
struct Running {
    interrupts: HashMap<JobId, Vec<Arc<Interrupt>>>,
    cancelled_early: VecDeque<JobId>,
}

/// Cancellations of jobs not held here that are remembered; every consumer hears every
/// cancellation, so most name jobs held elsewhere.
const CANCELLED_EARLY: usize = 1024;

impl Running {
    fn listen(&mut self, job_id: JobId, interrupt: &Arc<Interrupt>) {
        if self.cancelled_early.contains(&job_id) {
            interrupt.fire(Reason::Cancelled);
        }
        self.interrupts
            .entry(job_id)
            .or_default()
            .push(interrupt.clone());
    }

    fn forget(&mut self, job_id: JobId, interrupt: &Arc<Interrupt>) {
        if let Some(listening) = self.interrupts.get_mut(&job_id) {
            listening.retain(|i| !Arc::ptr_eq(i, interrupt));
            if listening.is_empty() {
                self.interrupts.remove(&job_id);
            }
        }
    }

    fn interrupt(&mut self, job_id: JobId, reason: Reason) {
        if let Some(listening) = self.interrupts.get(&job_id) {
            tracing::info!(%job_id, ?reason, "interrupting job");
            listening
                .iter()
                .for_each(|interrupt| interrupt.fire(reason));
        } else if reason == Reason::Cancelled {
            if self.cancelled_early.len() == CANCELLED_EARLY {
                self.cancelled_early.pop_front();
            }
            self.cancelled_early.push_back(job_id);
        }
    }
}

impl Shared {
    fn listen(&self, job_id: JobId, interrupt: &Arc<Interrupt>) -> Listening<'_> {
        let mut running = self.running.lock().expect("running-jobs lock");
        running.listen(job_id, interrupt);
        drop(running);
        Listening {
            shared: self,
            job_id,
            interrupt: interrupt.clone(),
        }
    }

    fn interrupt(&self, job_id: JobId, reason: Reason) {
        let mut running = self.running.lock().expect("running-jobs lock");
        running.interrupt(job_id, reason);
    }

    /// How long a running job stays ours without a renewal (see `Store::renew_lease`).
    fn lease(&self) -> Duration {
        Duration::from_secs(self.settings.consumer.lease_secs.max(1))
    }

    fn kind_settings(&self, kind: JobKind) -> KindSettings {
        self.settings
            .jobs
            .kind(kind.as_str())
            .copied()
            .unwrap_or_default()
    }
}

/// The longest a failure's own `retry_after` holds its job back, jitter aside; a provider that
/// wants more is asked again then, and may say so again. A NAKed command keeps one of its
/// consumer's `max_ack_pending` places meanwhile.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Delay before try `attempt + 1`: the configured backoff, or the wait the failure asked for
/// (at most `MAX_RETRY_AFTER`) if longer, since a try within a provider's `Retry-After` is
/// refused again; with up to a fifth of jitter, so a burst of failures does not come back as
/// a burst.
fn retry_delay(delays_ms: &[u64], attempt: u32, retry_after: Option<Duration>) -> Duration {
    let index = (attempt.saturating_sub(1) as usize).min(delays_ms.len().saturating_sub(1));
    let backoff = Duration::from_millis(delays_ms.get(index).copied().unwrap_or(1000));
    let wait = backoff.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
    let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    wait + Duration::from_millis(rand::random::<u64>() % (wait_ms / 5 + 1))
}

async fn get_consumer(
    js: &jetstream::Context,
    kind: JobKind,
) -> Result<PullConsumer, async_nats::Error> {
    let stream = js.get_stream_no_info(JOBS_STREAM).await?;
    stream.get_consumer(consumer_name(kind)).await
}

/// Pulls commands of one kind while there are free handler slots, one batch at a time, so a
/// message is only ever delivered to this process when a slot is waiting for it.
async fn pull_loop(
    shared: Arc<Shared>,
    kind: JobKind,
    handler: Arc<dyn Handler>,
    stop: CancellationToken,
    jobs: TaskTracker,
) {
    let concurrency = shared.kind_settings(kind).concurrency;
    let slots = Arc::new(Semaphore::new(concurrency));
    let expires = Duration::from_millis(shared.settings.consumer.pull_expires_ms.max(100));
    // At start the streams are usually being applied concurrently: only a consumer that stays
    // missing for a few seconds is worth a warning.
    let mut misses = 0u32;
    let mut pulls = PullHealth::default();
    'connect: while !stop.is_cancelled() {
        let consumer = match get_consumer(&shared.jetstream, kind).await {
            Ok(c) => {
                misses = 0;
                c
            }
            Err(e) => {
                misses += 1;
                if misses > 6 {
                    tracing::warn!(%kind, error = %e, "consumer not available yet; retrying");
                } else {
                    tracing::debug!(%kind, error = %e, "consumer not available yet; retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(PULL_RETRY_DELAY) => continue 'connect,
                    _ = stop.cancelled() => break 'connect,
                }
            }
        };
        let limits = Arc::new(ConsumerLimits::from_consumer(&consumer, &shared));
        loop {
            // Stop first: after a pull ends, a free slot is always ready too, and an unbiased
            // choice between the two sent another pull half the time, each holding up the
            // drain by a whole `expires`.
            let first = tokio::select! {
                biased;
                _ = stop.cancelled() => break 'connect,
                permit = slots.clone().acquire_owned() => permit.expect("semaphore never closed"),
            };
            let mut permits = vec![first];
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                permits.push(permit);
            }
            let batch = consumer
                .batch()
                .max_messages(permits.len())
                .expires(expires)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    pulls.failed(kind, &e);
                    tokio::select! {
                        _ = tokio::time::sleep(PULL_RETRY_DELAY) => continue 'connect,
                        _ = stop.cancelled() => break 'connect,
                    }
                }
            };
            // The server ends a pull at `expires` with a status message, but not always:
            // nats-server 2.9 was seen to let a pull lapse without one while commands queued
            // behind it (2.5–5 s of queue wait for a whole cohort of LLM streams), and a server
            // may vanish without saying so. Past the deadline the pull is taken for lost and
            // another one sent; whatever the old one still brings is handed straight back.
            let deadline = tokio::time::Instant::now() + expires + PULL_END_GRACE;
            loop {
                let next = tokio::select! {
                    next = batch.next() => next,
                    _ = tokio::time::sleep_until(deadline) => {
                        metrics::counter!("xenios_pulls_lapsed_total", "kind" => kind.as_str())
                            .increment(1);
                        tokio::spawn(hand_back(batch, limits.clone()));
                        break;
                    }
                };
                let message = match next {
                    Some(Ok(message)) => {
                        pulls.worked(kind);
                        message
                    }
                    // The broker refused or cut the pull (409: consumer deleted, leadership
                    // change, a limit of the consumer's; 503: no JetStream to answer). The
                    // cause outlasts the pull, so pulling again at once would only spin:
                    // wait, and look the consumer up again.
                    Some(Err(e)) => {
                        pulls.failed(kind, &e);
                        tokio::select! {
                            _ = tokio::time::sleep(PULL_RETRY_DELAY) => continue 'connect,
                            _ = stop.cancelled() => break 'connect,
                        }
                    }
                    None => {
                        pulls.worked(kind);
                        break;
                    }
                };
                let permit = match permits.pop() {
                    Some(permit) if !stop.is_cancelled() => permit,
                    _ => {
                        // Stopping (or more than asked for): hand it straight to another consumer.
                        give_back(&message, None, &limits).await;
                        continue;
                    }
                };
                let shared = shared.clone();
                let handler = handler.clone();
                let limits = limits.clone();
                jobs.spawn(async move {
                    process(shared, kind, handler, limits, message).await;
                    drop(permit);
                });
            }
        }
    }
}

/// Whether a kind's pulls are failing: the first failure of an episode is worth a warning,
/// the rest of it (one every `PULL_RETRY_DELAY`) only a debug line.
#[derive(Default)]
struct PullHealth {
    failing: bool,
}

impl PullHealth {
    fn failed(&mut self, kind: JobKind, error: &dyn std::fmt::Display) {
        if std::mem::replace(&mut self.failing, true) {
            tracing::debug!(%kind, %error, "pull failed again; retrying");
        } else {
            tracing::warn!(%kind, %error, "pull failed; retrying every {PULL_RETRY_DELAY:?}");
        }
    }

    fn worked(&mut self, kind: JobKind) {
        if std::mem::replace(&mut self.failing, false) {
            tracing::info!(%kind, "pulls work again");
        }
    }
}

/// Drains a pull given up on: a message it still delivers has no slot waiting, so it goes
/// back to the stream at once (NAK) for the next pull, instead of waiting out `ack_wait`.
async fn hand_back(
    mut batch: async_nats::jetstream::consumer::pull::Batch,
    limits: Arc<ConsumerLimits>,
) {
    let until = tokio::time::Instant::now() + PULL_DRAIN;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, batch.next()).await {
        give_back(&message, None, &limits).await;
    }
}

/// Offers a command again after `delay` (NAK), or terminates it on its last delivery: a work
/// queue keeps a command past `max_deliver` but never delivers it again, so it would count
/// against `JOBS`'s limits (submissions answered "queue full") until its `max_age`. The store
/// holds the job either way: a queued one is published again by the sweeper, a running one
/// is taken up once its lease lapses.
async fn give_back(message: &jetstream::Message, delay: Option<Duration>, limits: &ConsumerLimits) {
    let delivered = message.info().map_or(0, |info| info.delivered);
    let answer = if limits.is_last_delivery(delivered) {
        tracing::warn!(
            delivered,
            "the command's last delivery: terminating it rather than leaving it in the queue"
        );
        AckKind::Term
    } else {
        AckKind::Nak(delay)
    };
    if let Err(e) = message.ack_with(answer).await {
        tracing::warn!(error = %e, "cannot answer the broker; the command may be redelivered");
    }
}

/// Per-consumer facts read once from the server: how many tries a job gets, and how many
/// deliveries a command.
struct ConsumerLimits {
    max_attempts: u32,
    /// `None`: unlimited.
    max_deliver: Option<u32>,
}

impl ConsumerLimits {
    fn from_consumer(consumer: &PullConsumer, shared: &Shared) -> Self {
        let config = &consumer.cached_info().config;
        let max_deliver = u32::try_from(config.max_deliver).ok().filter(|&n| n > 0);
        let configured = shared.settings.consumer.max_attempts.max(1);
        ConsumerLimits {
            max_attempts: max_deliver.map_or(configured, |n| configured.min(n)),
            max_deliver,
        }
    }

    fn is_last_delivery(&self, delivered: i64) -> bool {
        self.max_deliver
            .is_some_and(|max| delivered >= i64::from(max))
    }
}

async fn process(
    shared: Arc<Shared>,
    kind: JobKind,
    handler: Arc<dyn Handler>,
    limits: Arc<ConsumerLimits>,
    message: jetstream::Message,
) {
    let (delivered, published) = match message.info() {
        Ok(info) => (info.delivered, info.published),
        Err(e) => {
            tracing::warn!(error = %e, "message without JetStream metadata; dropping");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let command = match JobCommand::from_slice(&message.payload) {
        Ok(command) => command,
        Err(e) => {
            tracing::error!(error = %e, "malformed command; terminating it");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let correlation_id = header(message.headers.as_ref(), CORRELATION_ID_HEADER)
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!(
        "job",
        job_id = %command.job_id,
        kind = %kind,
        correlation_id = %correlation_id,
        attempt = tracing::field::Empty,
    );
    let labels = [("kind", kind.as_str())];
    if delivered <= 1 {
        let waited = time::OffsetDateTime::now_utc() - published;
        metrics::histogram!("xenios_job_queue_wait_seconds", &labels)
            .record(waited.as_seconds_f64().max(0.0));
    } else {
        metrics::counter!("xenios_job_redeliveries_total", &labels).increment(1);
    }
    let attempt = Attempt {
        shared,
        kind,
        limits,
        message,
        command,
        correlation_id,
        first_delivery: delivered <= 1,
    };
    attempt.run(handler).instrument(span).await;
}

/// One delivery of one command, from start to ack.
struct Attempt {
    shared: Arc<Shared>,
    kind: JobKind,
    limits: Arc<ConsumerLimits>,
    message: jetstream::Message,
    command: JobCommand,
    correlation_id: String,
    /// The broker's first delivery of this command (no earlier attempt can hold the job).
    first_delivery: bool,
}

/// A recorded attempt, its interrupt, its handler's work, and (for an early start) the sender
/// that lets the work's events out.
type ClaimedAttempt<'h> = (
    JobRecord,
    Arc<Interrupt>,
    BoxFuture<'h, HandlerResult>,
    Option<watch::Sender<bool>>,
);

fn attempt_of(record: &JobRecord) -> u32 {
    u32::try_from(record.attempts).unwrap_or(u32::MAX)
}

/// The failure of a job claimed for a try past its last: what ended the last one, if known.
fn out_of_tries(record: &JobRecord, max_attempts: u32) -> JobError {
    let message = match &record.error {
        Some(last) => format!(
            "the job had its {max_attempts} tries; the last ended with {}: {}",
            last.code, last.message
        ),
        None => format!("the job had its {max_attempts} tries"),
    };
    JobError {
        code: "attempts_exhausted".into(),
        message,
        retryable: false,
    }
}

/// What the runtime does with a finished attempt.
enum Decision {
    Succeed(Value),
    Cancel,
    Retry {
        error: JobError,
        retry_after: Option<Duration>,
    },
    Fail {
        error: JobError,
        dead_letter: bool,
    },
    Release,
    /// Another attempt holds the job: record nothing, and let this delivery go.
    Lost,
}

impl Attempt {
    fn job_id(&self) -> JobId {
        self.command.job_id
    }

    async fn run(self, handler: Arc<dyn Handler>) {
        let (record, interrupt, work, admit) =
            if self.first_delivery && handler.starts_before_recorded() {
                match self.claim_while_working(&handler).await {
                    Some(claimed) => claimed,
                    None => return,
                }
            } else {
                let Some(record) = self.claim().await else {
                    return;
                };
                let interrupt = Arc::new(Interrupt::new());
                let context = self.context(attempt_of(&record), &interrupt, Admission::open());
                (record, interrupt, guarded(handler.handle(context)), None)
            };
        let attempt = attempt_of(&record);
        tracing::Span::current().record("attempt", attempt);
        // `decide` caps the tries of attempts that fail; one that ended otherwise (released by a
        // drain, lost with its consumer and requeued) may have been the last, and must not
        // buy the job another run.
        if attempt > self.limits.max_attempts {
            let error = out_of_tries(&record, self.limits.max_attempts);
            let decision = Decision::Fail {
                error,
                dead_letter: true,
            };
            return self.settle(decision, attempt).await;
        }
        self.publish(&JobEvent::status(
            JobStatus::Running,
            attempt,
            chrono::Utc::now(),
        ))
        .await;
        // Only now may an early start's events go out: after `running`, in order.
        if let Some(admit) = admit {
            let _ = admit.send(true);
        }

        if record.cancel_requested {
            interrupt.fire(Reason::Cancelled);
        }
        let listening = self.shared.listen(self.job_id(), &interrupt);
        let gauge = metrics::gauge!("xenios_jobs_in_flight", "kind" => self.kind.as_str());
        gauge.increment(1.0);
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();

        let result = self.supervise(work, &interrupt, attempt).await;

        drop(listening);
        gauge.decrement(1.0);
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        metrics::histogram!("xenios_job_duration_seconds", "kind" => self.kind.as_str())
            .record(started.elapsed().as_secs_f64());

        let decision = self.decide(result, interrupt.reason.get().copied(), attempt);
        self.settle(decision, attempt).await;
    }

    /// Records the attempt's start (the job's lease). `None`: not this consumer's to run; the
    /// command has been answered.
    async fn claim(&self) -> Option<JobRecord> {
        self.claim_within(Duration::ZERO, None).await
    }

    /// `claim`, a job the store does not hold being looked for again until `record_wait`
    /// has passed or, once `withdrawn` fires, one last time.
    async fn claim_within(
        &self,
        record_wait: Duration,
        withdrawn: Option<CancellationToken>,
    ) -> Option<JobRecord> {
        // No token: one that never fires.
        let withdrawn = withdrawn.unwrap_or_default();
        let recording = Instant::now();
        let mut pause = RECORD_POLL_FIRST;
        let started = loop {
            let started = self
                .shared
                .store
                .start_attempt_with_lease(self.job_id(), self.shared.lease())
                .await;
            if !matches!(started, Ok(StartAttempt::NotFound))
                || recording.elapsed() >= record_wait
                || withdrawn.is_cancelled()
            {
                break started;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = withdrawn.cancelled() => {}
            }
            pause = (pause * 2).min(RECORD_POLL_MAX);
        };
        match started {
            Ok(StartAttempt::Started(record)) => {
                // The store write every attempt waits for before its handler runs (or, for a
                // handler that starts early, before its events go out).
                metrics::histogram!("xenios_job_start_seconds", "kind" => self.kind.as_str())
                    .record(recording.elapsed().as_secs_f64());
                Some(record)
            }
            Ok(StartAttempt::Finished(record)) => {
                tracing::debug!(status = %record.status, "job already finished; skipping redelivery");
                self.ack(AckKind::Ack).await;
                None
            }
            Ok(StartAttempt::CancelRequested(_)) => {
                self.settle(Decision::Cancel, 0).await;
                None
            }
            Ok(StartAttempt::Busy(_)) => {
                tracing::info!("another consumer holds the job; offering this copy again later");
                self.give_back(Some(self.shared.lease())).await;
                None
            }
            Ok(StartAttempt::NotFound) => {
                tracing::warn!("command for a job the store does not hold; terminating it");
                self.ack(AckKind::Term).await;
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "store unavailable; offering the command again later");
                self.give_back(Some(STORE_DOWN_DELAY)).await;
                None
            }
        }
    }

    /// A handler that starts before its attempt is recorded: its work and the claim run
    /// together, its events held back until the claim succeeds. If the claim fails, the work
    /// is cancelled and given a moment to end, so a provider call it began is aborted and
    /// still logged; its events never go out. The work assumed a first attempt; should the
    /// store count otherwise, it is cancelled the same way and starts again with the right
    /// number. The job itself may not be recorded yet (see `RECORD_WAIT`).
    async fn claim_while_working<'h>(
        &self,
        handler: &'h Arc<dyn Handler>,
    ) -> Option<ClaimedAttempt<'h>> {
        let interrupt = Arc::new(Interrupt::new());
        // Reachable by `ctl.jobs.cancel` while the job is looked for: the gateway withdraws a
        // command it published when the job's record failed, so the call and the wait end now.
        let _listening = self.shared.listen(self.job_id(), &interrupt);
        let (admit, admission) = watch::channel(false);
        let context = self.context(1, &interrupt, Admission::after(admission));
        let mut work = futures::future::maybe_done(guarded(handler.handle(context)));
        let claim = self.claim_within(RECORD_WAIT, Some(interrupt.token.clone()));
        tokio::pin!(claim);
        let claimed = std::future::poll_fn(|cx| {
            // Done work keeps its result inside `work` until the claim is settled.
            let _ = std::pin::Pin::new(&mut work).poll(cx);
            claim.as_mut().poll(cx)
        })
        .await;
        let record = match claimed {
            Some(record) if attempt_of(&record) == 1 => record,
            other => {
                drop(admit);
                interrupt.fire(Reason::Cancelled);
                let _ = tokio::time::timeout(EARLY_WORK_STOP, &mut work).await;
                let record = other?;
                let interrupt = Arc::new(Interrupt::new());
                let context = self.context(attempt_of(&record), &interrupt, Admission::open());
                return Some((record, interrupt, guarded(handler.handle(context)), None));
            }
        };
        let work: BoxFuture<'h, HandlerResult> = Box::pin(async move {
            (&mut work).await;
            std::pin::Pin::new(&mut work)
                .take_output()
                .expect("the work was polled to its end")
        });
        Some((record, interrupt, work, Some(admit)))
    }

    fn context(&self, attempt: u32, interrupt: &Interrupt, admission: Admission) -> JobContext {
        JobContext {
            job_id: self.job_id(),
            kind: self.kind,
            user_id: self.command.user_id.clone(),
            input: self.command.input.clone(),
            attempt,
            correlation_id: self.correlation_id.clone(),
            cancel: interrupt.token.clone(),
            store: self.shared.store.clone(),
            nats: self.shared.nats.clone(),
            jetstream: self.shared.jetstream.clone(),
            admission,
        }
    }

    /// Runs the handler under the kind's time limits, keeping the command alive with
    /// in-progress acks and watching for a cancellation the broadcast may have missed.
    /// `None` means the handler was abandoned: at the hard limit, or when it did not stop
    /// within `RELEASE_WAIT` of being released at the end of a drain.
    async fn supervise(
        &self,
        work: futures::future::BoxFuture<'_, HandlerResult>,
        interrupt: &Interrupt,
        attempt: u32,
    ) -> Option<HandlerResult> {
        let limits = self.shared.kind_settings(self.kind);
        let soft = tokio::time::sleep(limits.soft_limit());
        let hard = tokio::time::sleep(limits.hard_limit());
        // Not `interval` + a first `tick().await`: that first tick waits for the timer wheel's
        // next millisecond, which every job would pay before its handler starts.
        let every = PROGRESS_ACK_EVERY.min(self.shared.lease() / 3);
        let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tokio::pin!(work, soft, hard);
        let mut soft_fired = false;
        let abandon = self.shared.abandon.clone();
        let mut released_until = None;
        loop {
            tokio::select! {
                result = &mut work => return Some(result),
                _ = sleep_until(released_until) => {
                    tracing::error!("the handler did not stop when released; abandoning it");
                    return None;
                }
                _ = &mut soft, if !soft_fired => {
                    soft_fired = true;
                    tracing::warn!("soft time limit reached; cancelling the handler");
                    interrupt.fire(Reason::TimedOut);
                }
                _ = &mut hard => {
                    tracing::error!("hard time limit reached; abandoning the handler");
                    return None;
                }
                // The drain's grace is over: the handler gets a moment to stop, whatever it
                // was told before, so a handler that does not listen cannot hold the process
                // past its stop timeout.
                _ = abandon.cancelled(), if released_until.is_none() => {
                    interrupt.fire(Reason::Released);
                    released_until = Some(tokio::time::Instant::now() + RELEASE_WAIT);
                }
                _ = keepalive.tick() => {
                    let _ = self.message.ack_with(AckKind::Progress).await;
                    match self.shared.store.renew_lease(self.job_id(), attempt).await {
                        Ok(AttemptWrite::Done(true)) => interrupt.fire(Reason::Cancelled),
                        // Cut off from the database past its lease, the attempt was taken over
                        // (or the job settled by the sweeper): both must not run at once.
                        Ok(AttemptWrite::Lost) => {
                            tracing::warn!("the job is no longer this attempt's; stopping it");
                            interrupt.fire(Reason::Lost);
                        }
                        Ok(AttemptWrite::Done(false)) | Err(_) => {}
                    }
                }
            }
        }
    }

    fn decide(
        &self,
        result: Option<HandlerResult>,
        reason: Option<Reason>,
        attempt: u32,
    ) -> Decision {
        let timeout = || JobError {
            code: "timeout".into(),
            message: "the job exceeded its time limit".into(),
            retryable: true,
        };
        let transient = |error: JobError, retry_after: Option<Duration>| {
            if attempt >= self.limits.max_attempts {
                Decision::Fail {
                    error,
                    dead_letter: true,
                }
            } else {
                Decision::Retry { error, retry_after }
            }
        };
        match (reason, result) {
            (Some(Reason::Lost), _) => Decision::Lost,
            (Some(Reason::Cancelled), _) => Decision::Cancel,
            (Some(Reason::Released), Some(Ok(value))) => Decision::Succeed(value),
            (Some(Reason::Released), _) => Decision::Release,
            (Some(Reason::TimedOut), _) | (None, None) => transient(timeout(), None),
            (None, Some(Ok(value))) => Decision::Succeed(value),
            (None, Some(Err(HandlerError::Transient { error, retry_after }))) => {
                transient(error, retry_after)
            }
            (None, Some(Err(HandlerError::Permanent(error)))) => Decision::Fail {
                error,
                dead_letter: false,
            },
        }
    }

    /// Stores the outcome, tells the watchers, and only then answers the broker. `attempt`:
    /// the attempt whose outcome it is; 0 for a delivery that started none (a cancellation
    /// found as it claimed the job).
    async fn settle(&self, decision: Decision, attempt: u32) {
        let store = &OwnedOutcome {
            store: &self.shared.store,
            attempt,
        };
        let id = self.job_id();
        let kind = self.kind.as_str();
        let now = chrono::Utc::now();
        match decision {
            Decision::Succeed(value) => {
                match store
                    .finish_job(id, Outcome::Succeeded(value.clone()))
                    .await
                {
                    Ok(Some(_)) => {
                        self.publish_confirmed(&[
                            result_event(value),
                            JobEvent::status(JobStatus::Succeeded, attempt, now).to_bytes(),
                        ])
                        .await;
                        completed(kind, "succeeded");
                    }
                    Ok(None) => tracing::info!("job was already finished; result not recorded"),
                    Err(e) => return self.store_failed(e).await,
                }
                self.ack(AckKind::Ack).await;
            }
            Decision::Cancel => {
                match store.finish_job(id, Outcome::Cancelled).await {
                    Ok(Some(_)) => {
                        self.publish_confirmed(&[JobEvent::status(
                            JobStatus::Cancelled,
                            attempt,
                            now,
                        )
                        .to_bytes()])
                            .await;
                        completed(kind, "cancelled");
                    }
                    Ok(None) => {}
                    Err(e) => return self.store_failed(e).await,
                }
                self.ack(AckKind::Term).await;
            }
            Decision::Retry { error, retry_after } => {
                let delays = &self.shared.settings.consumer.retry_delays_ms;
                let delay = retry_delay(delays, attempt, retry_after);
                tracing::warn!(code = %error.code, message = %error.message, ?delay, "attempt failed; will retry");
                match self
                    .shared
                    .store
                    .retry_job(id, attempt, &error, delay)
                    .await
                {
                    Ok(AttemptWrite::Done(())) => {
                        self.publish(&JobEvent::Error(error)).await;
                        self.publish(&JobEvent::status(JobStatus::Queued, attempt, now))
                            .await;
                    }
                    Ok(AttemptWrite::Lost) => return self.lost().await,
                    Err(e) => return self.store_failed(e).await,
                }
                self.give_back(Some(delay)).await;
            }
            Decision::Fail { error, dead_letter } => {
                tracing::warn!(code = %error.code, message = %error.message, "job failed");
                // No letter for an attempt that was taken over: the job is not its to fail.
                if dead_letter
                    && matches!(
                        self.shared.store.renew_lease(id, attempt).await,
                        Ok(AttemptWrite::Lost)
                    )
                {
                    return self.lost().await;
                }
                if dead_letter && !self.dead_letter(&error, attempt).await {
                    // Not recorded as failed: a failed job with no letter would be lost to the
                    // operator. Left running, its lease lapses and the sweeper dead-letters it.
                    // The command is done with either way: a redelivery would only run the job
                    // past its last try.
                    tracing::error!(
                        "cannot publish the dead letter; the sweeper will take the job up"
                    );
                    return self.ack(AckKind::Term).await;
                }
                match store.finish_job(id, Outcome::Failed(error.clone())).await {
                    Ok(Some(_)) => {
                        self.publish_confirmed(&[
                            JobEvent::Error(error).to_bytes(),
                            JobEvent::status(JobStatus::Failed, attempt, now).to_bytes(),
                        ])
                        .await;
                        completed(kind, "failed");
                    }
                    Ok(None) => {}
                    Err(e) => return self.store_failed(e).await,
                }
                self.ack(AckKind::Term).await;
            }
            Decision::Release => {
                let error = JobError {
                    code: "released".into(),
                    message: "the consumer stopped; another one takes over".into(),
                    retryable: true,
                };
                match self
                    .shared
                    .store
                    .retry_job(id, attempt, &error, Duration::ZERO)
                    .await
                {
                    Ok(AttemptWrite::Done(())) => {
                        self.publish(&JobEvent::status(JobStatus::Queued, attempt, now))
                            .await;
                    }
                    Ok(AttemptWrite::Lost) => return self.lost().await,
                    Err(e) => return self.store_failed(e).await,
                }
                self.give_back(None).await;
            }
            Decision::Lost => self.lost().await,
        }
    }

    /// The attempt no longer holds the job: another one took it over (or the sweeper settled
    /// it) and records its outcome. Nothing is recorded or told here, and this delivery is
    /// done with: the holder has its own, or the sweeper publishes the job again.
    async fn lost(&self) {
        tracing::warn!("the job is no longer this attempt's; nothing recorded");
        self.ack(AckKind::Ack).await;
    }

    /// The outcome could not be stored, so the broker must keep the command: it comes back.
    async fn store_failed(&self, e: xenios_store::StoreError) {
        tracing::error!(error = %e, "cannot store the outcome; the command will be redelivered");
        self.give_back(Some(STORE_DOWN_DELAY)).await;
    }

    /// `true` once `JOBS_DLQ` holds the letter. A few tries, well within the command's
    /// `ack_wait`, so a broker that reconnects meanwhile does not leave the job to the sweeper.
    async fn dead_letter(&self, error: &JobError, attempts: u32) -> bool {
        let letter = DeadLetter {
            command: self.command.clone(),
            error: error.clone(),
            attempts,
            failed_at: chrono::Utc::now(),
        };
        dead_letter::send(
            &self.shared.jetstream,
            &letter,
            &self.correlation_id,
            DEAD_LETTER_TRIES,
            Duration::from_secs(1),
        )
        .await
    }

    async fn give_back(&self, delay: Option<Duration>) {
        give_back(&self.message, delay, &self.limits).await;
    }

    async fn ack(&self, kind: AckKind) {
        if let Err(e) = self.message.ack_with(kind).await {
            tracing::warn!(error = %e, "cannot answer the broker; the command may be redelivered");
        }
    }

    /// Not confirmed (see `JobContext::publish`): only terminal events must outlive a crash.
    async fn publish(&self, event: &JobEvent) {
        let subject = events_subject(self.job_id());
        if let Err(e) = self.shared.nats.publish(subject, event.to_bytes()).await {
            tracing::warn!(error = %e, "cannot publish job event");
        }
    }

    /// Publishes in order and waits for the stream to hold every one: terminal events must
    /// outlive a crash that follows the ack, and a broker's failover (see
    /// `publish::all_confirmed`). Called once per job, for the outcome this attempt recorded,
    /// which names them. Should the stream not take them, watchers are told the outcome from
    /// the store, after a silence (see the API's relay).
    async fn publish_confirmed(&self, events: &[bytes::Bytes]) {
        let held = publish::all_confirmed(
            &self.shared.jetstream,
            &events_subject(self.job_id()),
            &format!("{}.outcome", self.job_id()),
            events,
            OUTCOME_EVENTS_WITHIN,
        )
        .await;
        if !held {
            tracing::warn!(
                "the outcome's events are not in the stream; watchers get it from the store"
            );
        }
    }
}

/// The store as `settle` sees it: an outcome the job's current state refuses (another
/// delivery of the same command already moved it on, another attempt holds it) is "not ours to
/// record", like a job that already finished, rather than a failure to retry.
struct OwnedOutcome<'a> {
    store: &'a Store,
    /// The attempt the outcome is recorded for; 0: none (see `Attempt::settle`).
    attempt: u32,
}

impl OwnedOutcome<'_> {
    async fn finish_job(
        &self,
        id: JobId,
        outcome: Outcome,
    ) -> Result<Option<xenios_store::JobRecord>, xenios_store::StoreError> {
        if self.attempt > 0 {
            return match self.store.finish_attempt(id, self.attempt, outcome).await? {
                AttemptWrite::Done(job) => Ok(Some(job)),
                AttemptWrite::Lost => {
                    tracing::warn!("outcome not recorded: the job is no longer this attempt's");
                    Ok(None)
                }
            };
        }
        match self.store.finish_job(id, outcome).await {
            Err(xenios_store::StoreError::Conflict(reason)) => {
                tracing::warn!(%reason, "outcome not recorded: the job moved on");
                Ok(None)
            }
            other => other,
        }
    }
}

fn completed(kind: &'static str, outcome: &'static str) {
    metrics::counter!("xenios_jobs_completed_total", "kind" => kind, "outcome" => outcome)
        .increment(1);
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Results larger than this go to the job's watchers as a reference to the store, not as the
/// event itself: the broker refuses messages past its `max_payload` (1 MiB by default), and
/// the API's relay keeps recent events in memory.
const MAX_RESULT_EVENT_BYTES: usize = 256 * 1024;

/// The event that tells a job's watchers its result, serialized.
fn result_event(value: Value) -> bytes::Bytes {
    let event = JobEvent::Result(value).to_bytes();
    if event.len() <= MAX_RESULT_EVENT_BYTES {
        return event;
    }
    let bytes = u64::try_from(event.len()).unwrap_or(u64::MAX);
    JobEvent::ResultStored(xenios_contract::StoredResult { bytes }).to_bytes()
}

/// A handler's panic is its attempt's transient failure (retried, then failed and
/// dead-lettered), not a command left unanswered until the broker redelivers it, which spends
/// the command's deliveries without recording a try.
fn guarded(work: BoxFuture<'_, HandlerResult>) -> BoxFuture<'_, HandlerResult> {
    Box::pin(
        std::panic::AssertUnwindSafe(work)
            .catch_unwind()
            .map(|caught| {
                caught.unwrap_or_else(|panic| {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(panic = %message, "the handler panicked");
                    Err(HandlerError::transient(
                        "internal",
                        "the job's handler failed unexpectedly",
                    ))
                })
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A duplicate delivery of a running job, in the same process, registers beside the running
    /// attempt; when it goes, the running attempt still hears a cancellation at once.
    #[test]
    fn a_cancellation_reaches_an_attempt_whose_duplicate_has_come_and_gone() {
        let mut running = Running::default();
        let job_id = xenios_contract::new_job_id();
        let (first, duplicate) = (Arc::new(Interrupt::new()), Arc::new(Interrupt::new()));
        running.listen(job_id, &first);
        running.listen(job_id, &duplicate);
        running.forget(job_id, &duplicate);
        running.interrupt(job_id, Reason::Cancelled);
        assert!(first.token.is_cancelled());
        assert_eq!(first.reason.get(), Some(&Reason::Cancelled));
        running.forget(job_id, &first);
        assert!(running.interrupts.is_empty(), "nothing left behind");

        // A cancellation that came first is heard when the attempt starts listening.
        let early = xenios_contract::new_job_id();
        running.interrupt(early, Reason::Cancelled);
        let late = Arc::new(Interrupt::new());
        running.listen(early, &late);
        assert!(late.token.is_cancelled());
    }

    const DELAYS: [u64; 4] = [1000, 5000, 15000, 30000];

    fn within_jitter(delay: Duration, base_ms: u64) -> bool {
        let base = Duration::from_millis(base_ms);
        delay >= base && delay <= base + base / 5
    }

    #[test]
    fn a_retry_waits_out_the_backoff_of_its_try() {
        for (attempt, base) in [(1, 1000), (2, 5000), (4, 30000), (9, 30000)] {
            let delay = retry_delay(&DELAYS, attempt, None);
            assert!(within_jitter(delay, base), "attempt {attempt}: {delay:?}");
        }
    }

    #[test]
    fn a_retry_waits_out_a_longer_retry_after() {
        let delay = retry_delay(&DELAYS, 1, Some(Duration::from_secs(90)));
        assert!(within_jitter(delay, 90_000), "{delay:?}");
    }

    #[test]
    fn a_shorter_retry_after_leaves_the_backoff() {
        let delay = retry_delay(&DELAYS, 2, Some(Duration::from_secs(2)));
        assert!(within_jitter(delay, 5000), "{delay:?}");
    }

    #[test]
    fn a_retry_after_past_the_ceiling_waits_the_ceiling() {
        let delay = retry_delay(&DELAYS, 1, Some(Duration::from_secs(24 * 3600)));
        assert!(within_jitter(delay, 600_000), "{delay:?}");
    }

    #[test]
    fn a_configured_backoff_past_the_ceiling_stands() {
        let delay = retry_delay(&[3_600_000], 1, Some(Duration::from_secs(24 * 3600)));
        assert!(within_jitter(delay, 3_600_000), "{delay:?}");
    }
}
