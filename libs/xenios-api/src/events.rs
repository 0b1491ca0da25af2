//! The events relay. One ordered JetStream consumer per API instance follows `events.>` and
//! fans each event out to the SSE clients of its job (no JetStream consumer per client); a
//! client's history comes from the instance's memory for a job it submitted itself (see
//! `HubState::recent`), otherwise from the stream with direct gets. SSE ids are the events'
//! stream sequences, so `Last-Event-ID` resumes exactly, on any API instance.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::push::OrderedConfig, consumer::DeliverPolicy};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use xenios_contract::envelope::{header, JobEvent, JobsErased};
use xenios_contract::subjects::{
    events_subject, job_of_events_subject, EVENTS_STREAM, JOBS_ERASED_SUBJECT,
};
use xenios_contract::{JobId, JobStatus};
use xenios_store::{JobRecord, Store};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Live events buffered per client before it counts as lagging and resynchronises from the
/// stream.
const CLIENT_BUFFER: usize = 1024;
/// How long a client waits for the terminal event of a job the store already shows finished
/// before it is told the outcome from the store instead (events past retention).
pub(crate) const TERMINAL_GRACE: Duration = Duration::from_secs(3);
/// Bound on one job's replayed history, so a runaway job cannot hold a relay forever.
const MAX_REPLAYED: usize = 100_000;
/// What a client is told to wait before reconnecting when the relay cannot read its job's
/// events (EventSource's `retry`).
const RECONNECT_AFTER_OUTAGE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: Arc<JobEvent>,
    /// Payload bytes, for the hub's memory bound.
    pub size: usize,
}

/// How many recently submitted jobs keep their events in memory, and how many bytes of
/// event payload all of them together may hold. A job past either bound is read from the
/// stream instead. Clients ask for a job's events moments after submitting it: a thousand
/// jobs is most of a second at full load, and each kept event costs several times its payload
/// once parsed, so larger bounds only add resident memory.
const RECENT_JOBS: usize = 1024;
const RECENT_BYTES: usize = 1 << 20;
/// A job with more events than this (an LLM stream's tokens) stops being kept.
const RECENT_EVENTS_PER_JOB: usize = 64;
/// Unfinished jobs with a webhook whose end this instance watches for; past it, the webhooks'
/// poll finds the rest.
const ANNOUNCING_JOBS: usize = 4096;

struct Recent {
    owner: Option<String>,
    events: Vec<StoredEvent>,
}

#[derive(Default)]
struct HubState {
    subscribers: HashMap<JobId, Vec<mpsc::Sender<StoredEvent>>>,
    /// Jobs this instance submitted while its follower ran, with every event since, so that
    /// a client that asks for a job's events moments after submitting it costs no reads.
    recent: HashMap<JobId, Recent>,
    /// `recent` in submission order, for eviction.
    recent_order: VecDeque<JobId>,
    recent_bytes: usize,
    /// The follower is delivering every event stored since it started.
    following: bool,
    /// Jobs this instance submitted with a webhook: their terminal event rings `webhooks_due`.
    announcing: HashSet<JobId>,
}

impl HubState {
    fn forget_recent(&mut self, job_id: JobId) {
        if let Some(recent) = self.recent.remove(&job_id) {
            self.recent_bytes -= recent.events.iter().map(|e| e.size).sum::<usize>();
        }
    }

    fn evict_recent(&mut self) {
        while self.recent.len() > RECENT_JOBS || self.recent_bytes > RECENT_BYTES {
            let Some(oldest) = self.recent_order.pop_front() else {
                break;
            };
            self.forget_recent(oldest);
        }
        // Ids of jobs already forgotten for size would otherwise pile up in the order.
        if self.recent_order.len() > 2 * RECENT_JOBS {
            let recent = &self.recent;
            self.recent_order.retain(|id| recent.contains_key(id));
        }
    }
}

/// Fans live events out to the SSE clients of this instance.
#[derive(Clone, Default)]
pub struct EventHub {
    state: Arc<Mutex<HubState>>,
    webhooks_due: WebhooksDue,
}

/// Rung when a finished job's announcement may be due, so that the webhooks' delivery runs then
/// rather than at its next poll. A ring while a pass runs is kept for the pass after.
#[derive(Clone, Default, Debug)]
pub struct WebhooksDue(Arc<tokio::sync::Notify>);

impl WebhooksDue {
    pub fn ring(&self) {
        self.0.notify_one();
    }

    pub async fn rung(&self) {
        self.0.notified().await;
    }
}

impl EventHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().expect("hub lock")
    }

    /// Subscribes to `job_id`'s live events and, if the hub holds the job's whole history,
    /// returns the part of it after `after`, taken atomically with the subscription (no gap,
    /// no duplicate); `None` means the history must be read from the stream.
    pub fn subscribe_after(
        &self,
        job_id: JobId,
        after: u64,
    ) -> (mpsc::Receiver<StoredEvent>, Option<VecDeque<StoredEvent>>) {
        let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
        let mut state = self.lock();
        state.subscribers.entry(job_id).or_default().push(tx);
        let history = state.recent.get(&job_id).map(|recent| {
            recent
                .events
                .iter()
                .filter(|e| e.seq > after)
                .cloned()
                .collect()
        });
        (rx, history)
    }

    /// Starts keeping the events of a job this instance is about to publish for the first
    /// time. Only while the follower runs: then it will deliver every one of them.
    pub fn track_new_job(&self, job_id: JobId, owner: Option<String>) {
        let mut state = self.lock();
        if !state.following {
            return;
        }
        let events = Vec::new();
        state.recent.insert(job_id, Recent { owner, events });
        state.recent_order.push_back(job_id);
        state.evict_recent();
    }

    /// Rings [`WebhooksDue`] once the follower sees the job finish: a job just submitted here
    /// with a `webhook_url`.
    pub fn announce_when_finished(&self, job_id: JobId) {
        let mut state = self.lock();
        if !state.following {
            return;
        }
        if state.announcing.len() >= ANNOUNCING_JOBS {
            // Jobs whose end this instance will never see (finished elsewhere after a
            // restart of the follower, erased) would otherwise fill the set: start afresh,
            // and let a pass look for whatever is due among those forgotten.
            state.announcing.clear();
            self.webhooks_due.ring();
        }
        state.announcing.insert(job_id);
    }

    /// Forgets a job this instance tracked but whose command the broker refused (its record
    /// taken back): no event of it will ever come.
    pub fn forget_refused_job(&self, job_id: JobId) {
        let mut state = self.lock();
        state.forget_recent(job_id);
        state.announcing.remove(&job_id);
    }

    /// Forgets the events this instance keeps of jobs that were erased: a client asking for
    /// them is then answered from the store and the stream, which no longer hold them.
    pub fn forget_erased(&self, job_ids: &[JobId]) {
        let mut state = self.lock();
        for job_id in job_ids {
            state.forget_recent(*job_id);
            state.announcing.remove(job_id);
        }
    }

    /// Forgets the jobs every erasure names on `ctl.jobs.erased` (another instance's, the
    /// operator's CLI's), until `stop`.
    pub async fn forget_erased_jobs(self, nats: async_nats::Client, stop: CancellationToken) {
        // Subscribing only fails on a closed client; a reconnect subscribes again by itself.
        let Ok(mut erasures) = nats.subscribe(JOBS_ERASED_SUBJECT).await else {
            return;
        };
        loop {
            let erased = tokio::select! {
                erased = erasures.next() => erased,
                _ = stop.cancelled() => break,
            };
            let Some(erased) = erased else { break };
            match JobsErased::from_slice(&erased.payload) {
                Ok(erased) => self.forget_erased(&erased.job_ids),
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed erasure"),
            }
        }
        let _ = erasures.unsubscribe().await;
    }

    pub fn webhooks_due(&self) -> WebhooksDue {
        self.webhooks_due.clone()
    }

    fn dispatch(&self, job_id: JobId, event: StoredEvent) {
        let mut state = self.lock();
        if !state.announcing.is_empty()
            && event.event.is_terminal()
            && state.announcing.remove(&job_id)
        {
            self.webhooks_due.ring();
        }
        if let Some(recent) = state.recent.get_mut(&job_id) {
            if recent.events.len() < RECENT_EVENTS_PER_JOB {
                let size = event.size;
                recent.events.push(event.clone());
                state.recent_bytes += size;
                state.evict_recent();
            } else {
                state.forget_recent(job_id);
            }
        }
        let Some(senders) = state.subscribers.get_mut(&job_id) else {
            return;
        };
        // A closed or full sender is dropped: its client resynchronises from the stream.
        senders.retain(|tx| tx.try_send(event.clone()).is_ok());
        if senders.is_empty() {
            state.subscribers.remove(&job_id);
        }
    }

    /// Drops the job's closed subscriptions: a job with no further events would otherwise
    /// keep them forever.
    fn forget_closed(&self, job_id: JobId) {
        let mut state = self.lock();
        if let Some(senders) = state.subscribers.get_mut(&job_id) {
            senders.retain(|tx| !tx.is_closed());
            if senders.is_empty() {
                state.subscribers.remove(&job_id);
            }
        }
    }

    /// Every client resynchronises from the stream, and nothing kept is trusted any more
    /// (the follower had to start over, or is about to). `following` says whether the
    /// follower now delivers everything stored from here on.
    fn resync_all(&self, following: bool) {
        let mut state = self.lock();
        state.subscribers.clear();
        state.recent.clear();
        state.recent_order.clear();
        state.recent_bytes = 0;
        state.following = following;
        // Ends missed while the follower was away are found by a pass now.
        if !state.announcing.is_empty() {
            state.announcing.clear();
            self.webhooks_due.ring();
        }
    }

    /// The owner of a job this instance submitted and still keeps; `None` if it does not
    /// know the job.
    pub fn known_owner(&self, job_id: JobId) -> Option<Option<String>> {
        self.lock().recent.get(&job_id).map(|r| r.owner.clone())
    }

    pub fn clients(&self) -> usize {
        self.lock().subscribers.values().map(Vec::len).sum()
    }

    /// Follows `events.>` until `stop`, re-creating the ordered consumer whenever it fails.
    pub async fn follow(
        self,
        js: jetstream::Context,
        client: async_nats::Client,
        stop: CancellationToken,
    ) {
        let mut first = true;
        while !stop.is_cancelled() {
            match self.follow_once(&js, &client, &stop).await {
                Ok(()) => return,
                Err(e) => {
                    if first {
                        tracing::debug!(error = %e, "events follower not ready yet");
                    } else {
                        tracing::warn!(error = %e, "events follower restarting");
                    }
                }
            }
            first = false;
            self.resync_all(false);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    async fn follow_once(
        &self,
        js: &jetstream::Context,
        client: &async_nats::Client,
        stop: &CancellationToken,
    ) -> Result<(), async_nats::Error> {
        let stream = js.get_stream(EVENTS_STREAM).await?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_subject: client.new_inbox(),
                filter_subject: "events.>".into(),
                deliver_policy: DeliverPolicy::New,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        // Looked up once: this loop runs for every event of every job.
        let relay_delay = metrics::histogram!("xenios_events_relay_delay_seconds");
        // Clients that subscribed before this follower existed may have missed events.
        self.resync_all(true);
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                _ = stop.cancelled() => return Ok(()),
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(e)) => return Err(e.into()),
                None => return Err("events follower ended".into()),
            };
            let Some(job_id) = job_of_events_subject(message.subject.as_str()) else {
                continue;
            };
            let Ok(info) = message.info() else { continue };
            let seq = info.stream_sequence;
            // Stored → here: the broker's share of every live event's way to its clients.
            let relayed = time::OffsetDateTime::now_utc() - info.published;
            relay_delay.record(relayed.as_seconds_f64().max(0.0));
            match JobEvent::from_slice(&message.payload) {
                Ok(event) => self.dispatch(
                    job_id,
                    StoredEvent {
                        seq,
                        event: Arc::new(event),
                        size: message.payload.len(),
                    },
                ),
                Err(e) => tracing::warn!(error = %e, seq, "malformed job event"),
            }
        }
    }
}

/// Reads a job's stored events after `after` from `JOB_EVENTS`, oldest first.
pub struct History {
    stream: jetstream::stream::Stream<()>,
}

impl History {
    /// Costs no round trip: direct gets need only the stream's name.
    pub async fn open(js: &jetstream::Context) -> Result<History, async_nats::Error> {
        Ok(History {
            stream: js.get_stream_no_info(EVENTS_STREAM).await?,
        })
    }

    /// The last stored event of `job_id`, if the stream still holds any.
    pub async fn last(&self, job_id: JobId) -> Result<Option<StoredEvent>, async_nats::Error> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        let message = match self
            .stream
            .direct_get_last_for_subject(events_subject(job_id))
            .await
        {
            Ok(message) => message,
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(Some(StoredEvent {
            seq: message.sequence,
            event: Arc::new(JobEvent::from_slice(&message.payload)?),
            size: message.payload.len(),
        }))
    }

    /// The next stored event of `job_id` with a sequence above `after`, if any.
    pub async fn next(
        &self,
        job_id: JobId,
        after: u64,
    ) -> Result<Option<StoredEvent>, async_nats::Error> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        let subject = events_subject(job_id);
        let message = match self
            .stream
            .direct_get_next_for_subject(&subject, Some(after.saturating_add(1)))
            .await
        {
            Ok(message) => message,
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let seq = header(message.headers.as_ref(), "Nats-Sequence")
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or("direct get answer without Nats-Sequence")?;
        let event = JobEvent::from_slice(&message.payload).unwrap_or_else(|e| {
            tracing::warn!(error = %e, seq, "skipping a malformed stored event");
            JobEvent::Error(xenios_contract::JobError {
                code: "malformed_event".into(),
                message: "an event of this job could not be read".into(),
                retryable: false,
            })
        });
        Ok(Some(StoredEvent {
            seq,
            event: Arc::new(event),
            size: message.payload.len(),
        }))
    }
}

/// Where a client resumes, from its `Last-Event-ID`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResumePoint {
    /// The stream sequence of the last event it saw; 0 for the beginning.
    pub seq: u64,
    /// Which of the outcome events the store told it after `seq` it saw last (ids
    /// `<seq>.<n>`, see [`OutcomeEvent`]), when the job's events were past retention.
    pub from_store: u8,
}

impl ResumePoint {
    pub fn parse(value: Option<&str>) -> ResumePoint {
        let Some(value) = value else {
            return ResumePoint::default();
        };
        let (seq, from_store) = value.trim().split_once('.').unwrap_or((value.trim(), ""));
        match seq.parse() {
            Ok(seq) => ResumePoint {
                seq,
                from_store: from_store.parse().unwrap_or(0),
            },
            Err(_) => ResumePoint::default(),
        }
    }

    fn has_final_status_from_store(&self) -> bool {
        self.from_store >= OutcomeEvent::Status as u8
    }
}

/// How a resumed client's request stands against what the stream holds for the job.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// The client already has the terminal status: nothing more will ever come.
    Ended,
    /// Relay from here: the client's point, or the job's last stored event if the client
    /// claimed to be past it.
    From(ResumePoint),
}

/// Checks a client's resume point against the job's last stored event. A client that saw the
/// terminal status is told so rather than kept waiting for events that will never come (or
/// sent the outcome again from the store). An id past the job's last event (none of its
/// events can have it yet) is taken as the job's last event: followed as it stands, it would
/// skip the events still to come, the terminal status among them, and never end.
pub async fn check_resume(js: &jetstream::Context, job_id: JobId, point: ResumePoint) -> Resume {
    if point.has_final_status_from_store() {
        return Resume::Ended;
    }
    if point.seq == 0 {
        return Resume::From(point);
    }
    let last = match History::open(js).await {
        Ok(history) => history.last(job_id).await,
        Err(e) => Err(e),
    };
    match last {
        Ok(Some(last)) if point.seq >= last.seq => {
            if last.event.is_terminal() {
                Resume::Ended
            } else {
                Resume::From(ResumePoint {
                    seq: last.seq,
                    from_store: 0,
                })
            }
        }
        // Still to come, past retention, or unknown for now: the relay sorts it out.
        Ok(_) => Resume::From(point),
        Err(e) => {
            tracing::debug!(error = %e, %job_id, "cannot check a resume point");
            Resume::From(point)
        }
    }
}

fn sse(id: String, event: &JobEvent) -> SseEvent {
    SseEvent::default()
        .id(id)
        .event(event.event_type())
        .data(event.sse_data())
}

/// Open streams by user id. Only users with a stream open have an entry, so it is bounded by
/// the instance's limit.
type StreamsPerUser = Arc<Mutex<HashMap<String, usize>>>;

/// The event streams an instance holds open (`api.max_sse_clients`), and how many of them
/// each user holds (`api.max_sse_clients_per_user`), so that one user cannot take them all.
#[derive(Clone)]
pub struct SseSlots {
    instance: Arc<tokio::sync::Semaphore>,
    per_user: StreamsPerUser,
    max_per_user: usize,
}

impl SseSlots {
    pub fn new(max: usize, max_per_user: usize) -> Self {
        SseSlots {
            instance: Arc::new(tokio::sync::Semaphore::new(max)),
            per_user: Arc::default(),
            max_per_user,
        }
    }
}

/// A place for one more event stream: `429` when the caller's user holds
/// `api.max_sse_clients_per_user` already, `503` when the instance holds `api.max_sse_clients`.
/// Taken before any work for the stream is done (an LLM call is not started for a client that
/// cannot be served).
pub(crate) fn sse_slot(state: &AppState, caller: &Caller) -> Result<SseSlot, ApiError> {
    let slots = &state.sse_slots;
    let user = caller
        .user
        .as_ref()
        .filter(|user| !user.is_service_role())
        .map(|user| user.user_id.clone());
    let mut per_user = slots.per_user.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(user) = &user {
        if per_user.get(user).copied().unwrap_or(0) >= slots.max_per_user {
            return Err(ApiError::LimitReached {
                message: format!(
                    "you have {} event streams open, as many as a user may; close one first",
                    slots.max_per_user
                ),
                retry_after: Duration::from_secs(5),
            });
        }
    }
    let permit = slots
        .instance
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Unavailable {
            message: "this instance has as many event streams open as it may".into(),
            retry_after: Some(Duration::from_secs(5)),
        })?;
    if let Some(user) = &user {
        *per_user.entry(user.clone()).or_default() += 1;
    }
    Ok(SseSlot {
        _permit: permit,
        user: user.map(|user| (user, slots.per_user.clone())),
    })
}

/// Held by the response for as long as its stream is open.
pub(crate) struct SseSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    user: Option<(String, StreamsPerUser)>,
}

impl Drop for SseSlot {
    fn drop(&mut self) {
        let Some((user, per_user)) = self.user.take() else {
            return;
        };
        let mut per_user = per_user.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = per_user.get_mut(&user) {
            *open -= 1;
            if *open == 0 {
                per_user.remove(&user);
            }
        }
    }
}

/// An SSE response that holds its slot and counts in `xenios_sse_clients` while it is open,
/// and flushes each event as it is produced.
pub(crate) fn sse_response<S>(
    state: &AppState,
    slot: SseSlot,
    events: S,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>>
where
    S: Stream<Item = Result<SseEvent, Infallible>> + Send + 'static,
{
    let client = (SseClient::new(), slot);
    let events = events.map(move |event| {
        let _ = &client;
        event
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(
        state.settings.api.sse_keepalive_secs.max(1),
    )))
}

struct SseClient(metrics::Gauge);

impl SseClient {
    fn new() -> Self {
        let gauge = metrics::gauge!("xenios_sse_clients");
        gauge.increment(1.0);
        SseClient(gauge)
    }
}

impl Drop for SseClient {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// What a relay needs, taken from the app state for one SSE response.
pub struct Relay {
    pub hub: EventHub,
    pub js: jetstream::Context,
    pub store: Store,
    pub shutdown: CancellationToken,
    /// After this long without an event the job's status is read from the store: a job can
    /// end without its terminal event reaching the stream (its consumer killed between
    /// recording the outcome and announcing it), and its client would otherwise wait for ever.
    pub store_check_after: Duration,
}

impl Relay {
    /// Sends a job's events to `tx` from after `after` until its terminal status: history
    /// from the stream first, then live events, with no gap and no duplicate between the two.
    /// `finished`: the job was already finished when the client came.
    pub async fn run(
        self,
        job_id: JobId,
        finished: bool,
        resume: ResumePoint,
        tx: mpsc::Sender<Result<SseEvent, Infallible>>,
    ) {
        let mut last_sent = resume.seq;
        let Err(e) = self
            .relay(job_id, finished, resume, &mut last_sent, &tx)
            .await
        else {
            return;
        };
        tracing::warn!(error = %e, %job_id, "event relay failed");
        // An `error` event would be the job's own failure. A finished job's outcome is in the
        // store; otherwise the client is asked to come back, resuming where it was.
        match self.store.get_job(job_id).await {
            Ok(Some(job)) if job.status.is_terminal() => {
                let seen = if last_sent == resume.seq {
                    resume.from_store
                } else {
                    0
                };
                send_outcome_from_store(&job, last_sent, seen, &tx).await;
            }
            _ => {
                let again = SseEvent::default()
                    .comment("events are unavailable right now; reconnect with Last-Event-ID")
                    .retry(RECONNECT_AFTER_OUTAGE);
                let _ = tx.send(Ok(again)).await;
            }
        }
    }

    /// `last_sent`: the stream sequence of the last event sent, for [`Relay::run`] to go on
    /// from should the relay fail.
    async fn relay(
        &self,
        job_id: JobId,
        finished_at_start: bool,
        resume: ResumePoint,
        last_sent: &mut u64,
        tx: &mpsc::Sender<Result<SseEvent, Infallible>>,
    ) -> Result<(), async_nats::Error> {
        let mut feed = JobFeed::replay(self.hub.clone(), self.js.clone(), job_id, resume.seq);
        let mut finished: Option<JobRecord> = None;
        let mut deadline = None;
        let mut replayed = 0;
        // One timer for the whole stream, not one per event: an event only notes the time.
        let mut heard_at = tokio::time::Instant::now();
        let store_check = tokio::time::sleep(self.store_check_after);
        tokio::pin!(store_check);
        loop {
            let item = tokio::select! {
                item = feed.next() => item?,
                _ = self.shutdown.cancelled() => return Ok(()),
                _ = &mut store_check, if deadline.is_none() => {
                    let due = heard_at + self.store_check_after;
                    if tokio::time::Instant::now() < due {
                        store_check.as_mut().reset(due);
                        continue;
                    }
                    store_check.as_mut().reset(due + self.store_check_after);
                    heard_at = due;
                    if let Ok(Some(current)) = self.store.get_job(job_id).await {
                        if current.status.is_terminal() {
                            // Its terminal event may still be on its way.
                            finished = Some(current);
                            deadline = Some(tokio::time::Instant::now() + TERMINAL_GRACE);
                        }
                    }
                    continue;
                }
                _ = sleep_until(deadline) => {
                    let current = finished.as_ref().expect("deadline only with a finished job");
                    // What the store told this client before still counts if no event of
                    // the stream came since.
                    let seen = if feed.after() == resume.seq { resume.from_store } else { 0 };
                    send_outcome_from_store(current, feed.after(), seen, tx).await;
                    return Ok(());
                }
            };
            heard_at = tokio::time::Instant::now();
            let stored = match item {
                FeedItem::Event(stored) => stored,
                FeedItem::CaughtUp => {
                    replayed = 0;
                    // A job still running when the client came will announce its end live;
                    // only one that had already finished may have outlived its events.
                    if !finished_at_start {
                        continue;
                    }
                    finished = match self.store.get_job(job_id).await {
                        Ok(Some(current)) if current.status.is_terminal() => Some(current),
                        _ => None,
                    };
                    deadline = finished
                        .as_ref()
                        .map(|_| tokio::time::Instant::now() + TERMINAL_GRACE);
                    continue;
                }
            };
            // A result too large for an event comes from the store, under the event's id.
            let from_store = match &*stored.event {
                JobEvent::ResultStored(_) => match self.store.get_job(job_id).await? {
                    Some(JobRecord {
                        result: Some(result),
                        ..
                    }) => Some(JobEvent::Result(result)),
                    _ => None,
                },
                _ => None,
            };
            let event = match (&*stored.event, &from_store) {
                (_, Some(result)) => result,
                // Recorded before it was announced, so not missing; should it be, the
                // reference is no result to show.
                (JobEvent::ResultStored(_), None) => continue,
                (event, None) => event,
            };
            if tx
                .send(Ok(sse(stored.seq.to_string(), event)))
                .await
                .is_err()
                || stored.event.is_terminal()
            {
                return Ok(());
            }
            *last_sent = stored.seq;
            if feed.is_replaying() {
                replayed += 1;
                if replayed >= MAX_REPLAYED {
                    return Ok(());
                }
            }
        }
    }
}

impl Drop for JobFeed {
    fn drop(&mut self) {
        self.live.close();
        self.hub.forget_closed(self.job_id);
    }
}

/// What a [`JobFeed`] yields.
#[derive(Debug)]
pub enum FeedItem {
    Event(StoredEvent),
    /// Every stored event up to now has been yielded; live ones follow. Comes at the start
    /// of a replaying feed and after every resynchronisation.
    CaughtUp,
}

/// A job's events in stream order: the stored history after a sequence, then live events
/// from the hub, with no gap and no duplicate between the two. A subscriber that lagged, or
/// whose follower restarted, reads the history again from the last event it yielded.
pub struct JobFeed {
    hub: EventHub,
    js: jetstream::Context,
    history: Option<History>,
    job_id: JobId,
    after: u64,
    live: mpsc::Receiver<StoredEvent>,
    replaying: bool,
    /// While replaying: the history the hub held, read instead of the stream's.
    known: Option<VecDeque<StoredEvent>>,
}

impl JobFeed {
    /// Everything stored after `after`, then live events.
    pub fn replay(hub: EventHub, js: jetstream::Context, job_id: JobId, after: u64) -> JobFeed {
        // Subscribed before the history is read: whatever is stored after the read arrives
        // live.
        JobFeed::new(hub, js, job_id, after, true)
    }

    /// Live events only, for a job nothing has been published about yet: made before the
    /// job is published, it misses nothing and costs no history read.
    pub fn live(hub: EventHub, js: jetstream::Context, job_id: JobId) -> JobFeed {
        JobFeed::new(hub, js, job_id, 0, false)
    }

    fn new(
        hub: EventHub,
        js: jetstream::Context,
        job_id: JobId,
        after: u64,
        replaying: bool,
    ) -> JobFeed {
        let (live, known) = hub.subscribe_after(job_id, after);
        JobFeed {
            live,
            hub,
            js,
            history: None,
            job_id,
            after,
            replaying,
            known,
        }
    }

    /// The stream sequence of the last event yielded.
    pub fn after(&self) -> u64 {
        self.after
    }

    /// Whether the feed is reading stored history (rather than waiting for live events).
    pub fn is_replaying(&self) -> bool {
        self.replaying
    }

    /// The next event. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Result<FeedItem, async_nats::Error> {
        loop {
            if self.replaying {
                if let Some(known) = &mut self.known {
                    if let Some(stored) = known.pop_front() {
                        self.after = stored.seq;
                        return Ok(FeedItem::Event(stored));
                    }
                    self.known = None;
                    self.replaying = false;
                    return Ok(FeedItem::CaughtUp);
                }
                if self.history.is_none() {
                    self.history = Some(History::open(&self.js).await?);
                }
                let history = self.history.as_ref().expect("opened above");
                if let Some(stored) = history.next(self.job_id, self.after).await? {
                    self.after = stored.seq;
                    return Ok(FeedItem::Event(stored));
                }
                self.replaying = false;
                return Ok(FeedItem::CaughtUp);
            }
            match self.live.recv().await {
                Some(stored) if stored.seq <= self.after => continue,
                Some(stored) => {
                    self.after = stored.seq;
                    return Ok(FeedItem::Event(stored));
                }
                None => {
                    // Lagged, or the follower restarted: read history again from `after`.
                    (self.live, self.known) = self.hub.subscribe_after(self.job_id, self.after);
                    self.replaying = true;
                }
            }
        }
    }
}

pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The outcome events the store can tell, in order; their number is the suffix of their SSE
/// id (`<seq>.<n>`), so a client that resumes from one of them is sent only the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OutcomeEvent {
    Result = 1,
    Error = 2,
    Status = 3,
}

/// The events of a finished job are past retention: its result and final status from the
/// store, those after the `seen`-th. Their ids continue the last stream sequence the client
/// saw (`<seq>.<n>`, see [`OutcomeEvent`]).
async fn send_outcome_from_store(
    job: &JobRecord,
    after: u64,
    seen: u8,
    tx: &mpsc::Sender<Result<SseEvent, Infallible>>,
) {
    let mut events = Vec::new();
    if let Some(result) = &job.result {
        events.push((OutcomeEvent::Result, JobEvent::Result(result.clone())));
    }
    if let Some(error) = &job.error {
        if job.status == JobStatus::Failed {
            events.push((OutcomeEvent::Error, JobEvent::Error(error.clone())));
        }
    }
    let at = job.finished_at.unwrap_or(job.updated_at);
    let attempt = u32::try_from(job.attempts).unwrap_or(0);
    events.push((
        OutcomeEvent::Status,
        JobEvent::status(job.status, attempt, at),
    ));
    for (which, event) in events.iter().filter(|(which, _)| *which as u8 > seen) {
        if tx
            .send(Ok(sse(format!("{after}.{}", *which as u8), event)))
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_subscriptions_are_forgotten() {
        let hub = EventHub::default();
        let job = xenios_contract::new_job_id();
        let (mut gone, _) = hub.subscribe_after(job, 0);
        let (kept, _) = hub.subscribe_after(job, 0);
        gone.close();
        hub.forget_closed(job);
        assert_eq!(hub.clients(), 1);
        drop(kept);
        hub.forget_closed(job);
        assert_eq!(hub.clients(), 0);
        assert!(hub.lock().subscribers.is_empty());
    }

    fn stored(seq: u64) -> StoredEvent {
        StoredEvent {
            seq,
            event: Arc::new(JobEvent::status(JobStatus::Running, 1, chrono::Utc::now())),
            size: 100,
        }
    }

    #[test]
    fn a_watched_job_finishing_rings_the_webhooks() {
        use futures::FutureExt;
        let hub = EventHub::default();
        let due = hub.webhooks_due();
        let (watched, other) = (xenios_contract::new_job_id(), xenios_contract::new_job_id());
        hub.announce_when_finished(watched);
        assert!(
            hub.lock().announcing.is_empty(),
            "not while nothing follows"
        );
        hub.resync_all(true);
        hub.announce_when_finished(watched);
        let finished = StoredEvent {
            event: Arc::new(JobEvent::status(
                JobStatus::Succeeded,
                1,
                chrono::Utc::now(),
            )),
            ..stored(2)
        };
        hub.dispatch(watched, stored(1));
        hub.dispatch(other, finished.clone());
        assert!(
            due.rung().now_or_never().is_none(),
            "running, or not watched"
        );
        hub.dispatch(watched, finished.clone());
        assert!(due.rung().now_or_never().is_some());
        hub.dispatch(watched, finished.clone());
        assert!(due.rung().now_or_never().is_none(), "rung once");
        assert!(hub.lock().announcing.is_empty());

        // A job the broker refused never finishes: it is not watched for.
        let refused = xenios_contract::new_job_id();
        hub.announce_when_finished(refused);
        hub.forget_refused_job(refused);
        assert!(hub.lock().announcing.is_empty());
        hub.dispatch(refused, finished);
        assert!(due.rung().now_or_never().is_none());
    }

    fn known_seqs(history: Option<VecDeque<StoredEvent>>) -> Option<Vec<u64>> {
        history.map(|events| events.iter().map(|e| e.seq).collect())
    }

    #[test]
    fn history_of_jobs_submitted_here_is_kept_while_following() {
        let hub = EventHub::default();
        let job = xenios_contract::new_job_id();
        // No follower yet: nothing it would deliver can be trusted to be complete.
        hub.track_new_job(job, None);
        assert!(known_seqs(hub.subscribe_after(job, 0).1).is_none());

        hub.resync_all(true);
        hub.track_new_job(job, Some("u1".into()));
        hub.dispatch(job, stored(3));
        hub.dispatch(job, stored(7));
        let (mut live, start) = hub.subscribe_after(job, 3);
        assert_eq!(known_seqs(start), Some(vec![7]));
        assert_eq!(hub.known_owner(job), Some(Some("u1".into())));
        hub.dispatch(job, stored(9));
        assert_eq!(live.try_recv().unwrap().seq, 9);

        // Another instance's job, or one whose history outgrew the bound: read the stream.
        assert!(known_seqs(hub.subscribe_after(xenios_contract::new_job_id(), 0).1).is_none());
        for seq in 10..10 + RECENT_EVENTS_PER_JOB as u64 {
            hub.dispatch(job, stored(seq));
        }
        assert!(known_seqs(hub.subscribe_after(job, 0).1).is_none());

        // A follower restart forgets everything kept.
        let other = xenios_contract::new_job_id();
        hub.track_new_job(other, None);
        hub.resync_all(true);
        assert!(known_seqs(hub.subscribe_after(other, 0).1).is_none());
    }

    #[test]
    fn kept_history_is_bounded() {
        let hub = EventHub::default();
        hub.resync_all(true);
        let first = xenios_contract::new_job_id();
        hub.track_new_job(first, None);
        hub.dispatch(first, stored(1));
        for _ in 0..RECENT_JOBS {
            hub.track_new_job(xenios_contract::new_job_id(), None);
        }
        assert!(known_seqs(hub.subscribe_after(first, 0).1).is_none());
        let state = hub.lock();
        assert_eq!(state.recent.len(), RECENT_JOBS);
        assert_eq!(state.recent_bytes, 0);
    }

    #[test]
    fn last_event_id_parsing() {
        let point = |seq, from_store| ResumePoint { seq, from_store };
        assert_eq!(ResumePoint::parse(None), point(0, 0));
        assert_eq!(ResumePoint::parse(Some("42")), point(42, 0));
        assert_eq!(ResumePoint::parse(Some(" 42.3 ")), point(42, 3));
        assert_eq!(ResumePoint::parse(Some("42.x")), point(42, 0));
        assert_eq!(ResumePoint::parse(Some("garbage")), point(0, 0));
        assert_eq!(
            ResumePoint::parse(Some("99999999999999999999")),
            point(0, 0)
        );
        assert!(point(0, 3).has_final_status_from_store());
        assert!(!point(7, 1).has_final_status_from_store());
    }
}
