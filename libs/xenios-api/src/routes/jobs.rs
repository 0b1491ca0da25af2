use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use xenios_auth::UserContext;
use xenios_contract::envelope::CancelRequest;
use xenios_contract::subjects::{CANCEL_SUBJECT, JOBS_STREAM};
use xenios_contract::{JobError, JobId, JobKind, JobStatus, Progress};
use xenios_store::{CancelOutcome, Created, JobQuery, JobRecord, NewJob, WebhookStatus};

use crate::auth::User;
use crate::correlation::CorrelationId;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::events::{check_resume, sse_response, sse_slot, Relay, Resume, ResumePoint, SseSlot};
use crate::rate_limit::RouteGroup;
use crate::state::AppState;

const PUBLISH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a command the broker refused is sent again before it is left to the sweeper:
/// long enough for a three-node cluster that lost a stream's leader to elect another.
const RESEND_WITHIN: Duration = Duration::from_secs(20);
const MAX_IDEMPOTENCY_KEY: usize = 200;
const MAX_WEBHOOK_URL: usize = 2048;
/// How long a submission waits for DNS to check a `url` input's addresses.
const URL_CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// An event stream silent for this many keep-alives reads its job's status from the store
/// (see `Relay::store_check_after`): once a minute by default, a primary-key read.
const SSE_STORE_CHECK_KEEPALIVES: u32 = 4;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// transcription, extraction, llm or echo.
    kind: String,
    /// The kind's input (see the API description of each kind).
    #[schema(value_type = Object)]
    input: Value,
    /// Where to announce the job once it has finished: a `POST` of
    /// `{"event": "job.<status>", "job": {…}}` signed in `Xenios-Signature:
    /// t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with the server's
    /// `webhooks.secret`, tried again with backoff until it is answered 2xx.
    #[serde(default)]
    webhook_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Links {
    #[serde(rename = "self")]
    self_: String,
    events: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Submitted {
    job_id: Uuid,
    kind: String,
    status: String,
    created_at: DateTime<Utc>,
    links: Links,
}

/// A job as clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    id: Uuid,
    kind: String,
    status: String,
    user_id: Option<String>,
    #[schema(value_type = Object)]
    input: Value,
    /// `percent`, `stage` and `message`, each `null` until the job reports it.
    #[schema(value_type = Object)]
    progress: Progress,
    #[schema(value_type = Option<Object>)]
    result: Option<Value>,
    #[schema(value_type = Option<Object>)]
    error: Option<JobError>,
    attempts: i32,
    correlation_id: String,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    /// Where the announcement at the job's `webhook_url` stands; absent for a job without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<WebhookView>,
}

/// A job's announcement at its `webhook_url`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    url: String,
    /// `pending` (until the job finishes, and between tries), `delivered` (answered 2xx) or
    /// `failed` (the tries ran out, or the receiver answered `410 Gone`).
    state: String,
    /// Tries made so far.
    attempts: i32,
    /// When the next try is due, while one is.
    next_attempt_at: Option<DateTime<Utc>>,
    /// Why the last try failed.
    last_error: Option<String>,
}

impl From<WebhookStatus> for WebhookView {
    fn from(webhook: WebhookStatus) -> Self {
        WebhookView {
            url: webhook.url,
            state: webhook.state,
            attempts: webhook.attempts,
            next_attempt_at: webhook.next_at,
            last_error: webhook.error,
        }
    }
}

impl From<JobRecord> for JobView {
    fn from(job: JobRecord) -> Self {
        JobView {
            id: job.id,
            kind: job.kind.to_string(),
            status: job.status.to_string(),
            user_id: job.user_id,
            input: job.input,
            progress: job.progress.unwrap_or_default(),
            result: job.result,
            error: job.error,
            attempts: job.attempts,
            correlation_id: job.correlation_id,
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            updated_at: job.updated_at,
            webhook: job.webhook.map(WebhookView::from),
        }
    }
}

fn submitted(job: &JobRecord) -> Submitted {
    let path = format!("/api/v1/jobs/{}", job.id);
    Submitted {
        job_id: job.id,
        kind: job.kind.to_string(),
        status: job.status.to_string(),
        created_at: job.created_at,
        links: Links {
            events: format!("{path}/events"),
            self_: path,
        },
    }
}

/// Submit a job. Answers at once; the work happens on a consumer.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs",
    security(("api_key" = [], "bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "same key, user and request → the same job (200); the key with another request → 422")),
    request_body = SubmitJob,
    responses(
        (status = 202, body = Submitted, description = "recorded and queued"),
        (status = 200, body = Submitted, description = "the job this Idempotency-Key already made"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "database down or queue full; Retry-After"),
    ))]
pub async fn submit(
    State(state): State<AppState>,
    user: User,
    CorrelationId(correlation_id): CorrelationId,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SubmitJob>,
) -> Result<Response, ApiError> {
    state
        .limits
        .check(RouteGroup::Jobs, &user.caller.subject())?;
    let kind: JobKind = body
        .kind
        .parse()
        .map_err(|e: xenios_contract::UnknownJobKind| {
            ApiError::invalid_field("kind", e.to_string())
        })?;
    let idempotency_key = match headers.get("idempotency-key") {
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "Idempotency-Key",
                        format!("1 to {MAX_IDEMPOTENCY_KEY} visible characters"),
                    )
                })?;
            Some(key.to_owned())
        }
        None => None,
    };
    // A retry gets the job its key made even when that job could no longer be submitted now
    // (the day's LLM budget spent by that very job, its upload expired): the answer it lost
    // is what it asks for.
    if let Some(key) = &idempotency_key {
        let made = state
            .store
            .replayed_job(Some(&user.user.user_id), key)
            .await?;
        if let Some(job) = made {
            let job = same_request(job, kind, &body.input)?;
            return Ok((StatusCode::OK, located(&job), axum::Json(submitted(&job))).into_response());
        }
    }
    check_new_job(&state, &user, kind, &body.input).await?;
    let webhook_url = check_webhook(&state, body.webhook_url).await?;

    // Kept to compare with the job a reused key made (see below).
    let asked = idempotency_key.as_ref().map(|_| body.input.clone());
    let created = enqueue(
        &state,
        NewJob {
            id: xenios_contract::new_job_id(),
            kind,
            user_id: Some(user.user.user_id.clone()),
            input: body.input,
            correlation_id: correlation_id.clone(),
            idempotency_key,
            webhook_url,
        },
    )
    .await?;
    let (status, job) = match created {
        // Another submission with the key was recorded since the lookup above.
        Created::Existing(job) => (
            StatusCode::OK,
            same_request(job, kind, asked.as_ref().unwrap_or(&Value::Null))?,
        ),
        Created::New(job) => (StatusCode::ACCEPTED, job),
    };
    Ok((status, located(&job), axum::Json(submitted(&job))).into_response())
}

/// The job an idempotency key made, if it was made by the same request. A key reused for
/// another request is a client's mistake, not a retry: answering with the first job would tell
/// it that its new request was taken (as the IETF draft on `Idempotency-Key` has it, 422).
fn same_request(job: JobRecord, kind: JobKind, input: &Value) -> Result<JobRecord, ApiError> {
    if job.kind != kind || &job.input != input {
        return Err(ApiError::invalid_field(
            "Idempotency-Key",
            format!(
                "already used for another request (job {}, kind {}); use a new key",
                job.id, job.kind
            ),
        ));
    }
    Ok(job)
}

/// What a new job must pass before it is recorded, submitted or submitted again: its input,
/// its file or URL, and for an `llm` job the user's budget.
async fn check_new_job(
    state: &AppState,
    user: &User,
    kind: JobKind,
    input: &Value,
) -> Result<(), ApiError> {
    check_input(state, kind, input)?;
    check_source(state, user, kind, input).await?;
    if kind == JobKind::Llm {
        crate::budget::check(state, Some(&user.user)).await?;
    }
    Ok(())
}

/// Checks a job's input for its kind, within the size limit. An `llm` task must be one the
/// routing table names (the API and the consumers share `llm.tasks`).
pub(crate) fn check_input(state: &AppState, kind: JobKind, input: &Value) -> Result<(), ApiError> {
    let input_size = serde_json::to_vec(input).map(|v| v.len()).unwrap_or(0);
    if input_size > state.settings.jobs.max_input_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "input is {input_size} bytes; the limit is {}",
            state.settings.jobs.max_input_bytes
        )));
    }
    xenios_contract::inputs::validate(kind, input)
        .map_err(|e| ApiError::invalid_field(&e.field, e.message))?;
    if kind == JobKind::Llm {
        let task = input["task"].as_str().unwrap_or_default();
        let tasks = &state.settings.llm.tasks;
        if !tasks.contains_key(task) {
            let known: Vec<&str> = tasks.keys().map(String::as_str).collect();
            return Err(ApiError::invalid_field(
                "input.task",
                format!("unknown task `{task}` (known: {})", known.join(", ")),
            ));
        }
    }
    Ok(())
}

/// Refuses a URL that the fetch policy never lets the service reach (not http(s), or a
/// private, loopback or metadata address that is not allow-listed), as `400` naming `field`.
async fn check_public_url(state: &AppState, field: &str, url: &str) -> Result<(), ApiError> {
    let policy = xenios_fetch::FetchPolicy::from(&state.settings.fetch);
    // A resolver that does not answer holds no submission: the fetch, which checks every
    // address again, decides then.
    let checked = tokio::time::timeout(URL_CHECK_TIMEOUT, xenios_fetch::check_url(url, &policy))
        .await
        .unwrap_or(Ok(()));
    // A name that does not resolve now may later; the fetch decides.
    if let Some(refusal) = checked.as_ref().err().and_then(|e| e.refusal()) {
        let message = refusal.to_string();
        return Err(ApiError::InvalidInput {
            status: StatusCode::BAD_REQUEST,
            details: Some(serde_json::json!([{ "field": field, "message": message }])),
            message: format!("{field}: {message}"),
        });
    }
    Ok(())
}

/// The submission's `webhook_url`, checked: webhooks configured, a URL of bounded length that
/// the service may reach.
async fn check_webhook(state: &AppState, url: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(url) = url else {
        return Ok(None);
    };
    if state.settings.webhooks.secret.is_none() {
        return Err(ApiError::invalid_field(
            "webhook_url",
            "webhooks are not configured on this server (webhooks.secret)",
        ));
    }
    if url.len() > MAX_WEBHOOK_URL {
        return Err(ApiError::invalid_field(
            "webhook_url",
            format!("at most {MAX_WEBHOOK_URL} bytes"),
        ));
    }
    check_public_url(state, "webhook_url", &url).await?;
    Ok(Some(url))
}

/// The `url` or `file_id` of an `extraction` or `transcription` input: a URL the fetch policy
/// refuses is a `400`, a file that does not exist (or is another user's) a `422`.
pub(crate) async fn check_source(
    state: &AppState,
    user: &User,
    kind: JobKind,
    input: &Value,
) -> Result<(), ApiError> {
    if kind == JobKind::Llm {
        return check_uploaded_pictures(state, Some(&user.user), input).await;
    }
    if !matches!(kind, JobKind::Extraction | JobKind::Transcription) {
        return Ok(());
    }
    if let Some(url) = input["url"].as_str() {
        check_public_url(state, "input.url", url).await?;
    }
    if let Some(file_id) = input["file_id"].as_str() {
        crate::routes::files::visible_file(state, user, file_id)
            .await
            .map_err(|e| match e {
                ApiError::NotFound(_) => {
                    ApiError::invalid_field("input.file_id", format!("no file `{file_id}`"))
                }
                other => other,
            })?;
    }
    Ok(())
}

/// An `llm` input's uploaded pictures: the caller's, pictures by their sniffed type, and within
/// the sizes the consumer will read, each and together.
pub(crate) async fn check_uploaded_pictures(
    state: &AppState,
    user: Option<&UserContext>,
    input: &Value,
) -> Result<(), ApiError> {
    use xenios_contract::images::{
        IMAGE_TYPES, MAX_UPLOADED_IMAGES_BYTES, MAX_UPLOADED_IMAGE_BYTES,
    };
    let messages = input["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut total = 0u64;
    for (i, message) in messages.iter().enumerate() {
        let images = message["images"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (j, image) in images.iter().enumerate() {
            let Some(file_id) = image["file_id"].as_str() else {
                continue;
            };
            let field = format!("input.messages[{i}].images[{j}].file_id");
            let info = crate::routes::files::file_visible_to(state, user, file_id)
                .await
                .map_err(|e| match e {
                    ApiError::NotFound(_) => {
                        ApiError::invalid_field(&field, format!("no file `{file_id}`"))
                    }
                    other => other,
                })?;
            let content_type = crate::routes::files::content_type_of(&info).unwrap_or_default();
            if !IMAGE_TYPES.contains(&content_type) {
                return Err(ApiError::invalid_field(
                    &field,
                    format!(
                        "the file is `{content_type}`, not a picture of {}",
                        IMAGE_TYPES.join(", ")
                    ),
                ));
            }
            let size = info.size as u64;
            if size > MAX_UPLOADED_IMAGE_BYTES {
                return Err(ApiError::invalid_field(
                    &field,
                    format!("the picture is {size} bytes; the limit is {MAX_UPLOADED_IMAGE_BYTES}"),
                ));
            }
            total += size;
            if total > MAX_UPLOADED_IMAGES_BYTES {
                return Err(ApiError::invalid_field(
                    &field,
                    format!(
                        "the uploaded pictures exceed {MAX_UPLOADED_IMAGES_BYTES} bytes together"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Records a checked job, then publishes it: the one way a job enters the system. A job its
/// idempotency key already made is returned as it is, not published again.
pub(crate) async fn enqueue(state: &AppState, new: NewJob) -> Result<Created, ApiError> {
    let kind = new.kind;
    let recording = Instant::now();
    let created = state.store.create_job(new).await?;
    submit_stage(kind, "record", recording);
    if let Created::New(job) = &created {
        state.hub.track_new_job(job.id, job.user_id.clone());
        if job.webhook.is_some() {
            state.hub.announce_when_finished(job.id);
        }
        let publishing = Instant::now();
        let sent = send(state, &job.command(), &job.correlation_id).await;
        submit_stage(kind, "publish", publishing);
        // Counted once it stands: a refused submission is taken back and never completes.
        settle_send(state, job, sent).await?;
        metrics::counter!("xenios_jobs_submitted_total", "kind" => kind.as_str()).increment(1);
    }
    Ok(created)
}

/// Records and publishes a job together: for a caller that waits for the job's outcome (the
/// LLM gateway), whose first token would otherwise wait for the record before the command
/// even leaves. The consumer waits for a first delivery's job to appear in the store (see the
/// runtime's `RECORD_WAIT`). If the record fails the caller gets the error and the command,
/// already out, is withdrawn (see `withdraw`); no 202 is promised here, so that is the whole
/// departure from "recorded first". For the same reason the record's commit is not waited on
/// to reach the disk (see `Store::create_live_job`).
pub(crate) async fn enqueue_while_recording(
    state: &AppState,
    new: NewJob,
) -> Result<JobRecord, ApiError> {
    let kind = new.kind;
    let command = xenios_contract::JobCommand {
        job_id: new.id,
        kind,
        user_id: new.user_id.clone(),
        input: new.input.clone(),
        submitted_at: Utc::now(),
    };
    let correlation_id = new.correlation_id.clone();
    let job_id = new.id;
    state.hub.track_new_job(new.id, new.user_id.clone());
    let recording = Instant::now();
    let record = async {
        let created = state.store.create_live_job(new).await;
        submit_stage(kind, "record", recording);
        created
    };
    let publish = async {
        let sent = send(state, &command, &correlation_id).await;
        submit_stage(kind, "publish", recording);
        sent
    };
    let (created, sent) = tokio::join!(record, publish);
    let job = match created {
        Ok(created) => created.into_job(),
        Err(e) => {
            if let Ok(sequence) = sent {
                withdraw(state, job_id, sequence).await;
            }
            return Err(e.into());
        }
    };
    settle_send(state, &job, sent).await?;
    metrics::counter!("xenios_jobs_submitted_total", "kind" => kind.as_str()).increment(1);
    Ok(job)
}

/// Takes back the command of a job whose record failed, so no provider call is made (or
/// paid for) on its behalf: removed from `JOBS` if no consumer has it yet, and a consumer
/// that has it, still looking for the record, told on `ctl.jobs.cancel` to stop looking and
/// cancel the call it began. Best effort: what is missed is terminated by the consumer when
/// its wait for the record runs out.
async fn withdraw(state: &AppState, job_id: JobId, sequence: u64) {
    let request = CancelRequest { job_id };
    let _ = state.nats.publish(CANCEL_SUBJECT, request.to_bytes()).await;
    if let Ok(stream) = state.jetstream.get_stream_no_info(JOBS_STREAM).await {
        let _ = tokio::time::timeout(PUBLISH_TIMEOUT, stream.delete_message(sequence)).await;
    }
}

/// Where a submission's time goes: recording the job, then the broker's acknowledgement of
/// its command.
fn submit_stage(kind: JobKind, stage: &'static str, since: Instant) {
    let labels = [("kind", kind.as_str()), ("stage", stage)];
    metrics::histogram!("xenios_job_submit_stage_seconds", &labels)
        .record(since.elapsed().as_secs_f64());
}

fn located(job: &JobRecord) -> [(header::HeaderName, HeaderValue); 1] {
    let location = HeaderValue::from_str(&format!("/api/v1/jobs/{}", job.id))
        .expect("a job path is a valid header value");
    [(header::LOCATION, location)]
}

/// Publishes a job's `queued` event and its command (see
/// [`crate::operations::publish_command`]).
async fn send(
    state: &AppState,
    command: &xenios_contract::JobCommand,
    correlation_id: &str,
) -> Result<u64, String> {
    crate::operations::publish_command(&state.nats, &state.jetstream, command, correlation_id).await
}

/// What a recorded job's publish came to. A full queue refuses the submission: the record
/// is taken back, so the job never existed for the client, whose 503 says to submit again
/// (and whose `Idempotency-Key` then makes a new job rather than return a refused one). Any
/// other broker trouble leaves the job recorded as queued for the sweeper to publish, so the
/// client's 202 holds.
async fn settle_send(
    state: &AppState,
    job: &JobRecord,
    sent: Result<u64, String>,
) -> Result<(), ApiError> {
    let Err(result) = sent else {
        return Ok(());
    };
    if result.contains("maximum messages") || result.contains("maximum bytes") {
        match state.store.delete_unstarted_job(job.id).await {
            Ok(true) => state.hub.forget_refused_job(job.id),
            Ok(false) => {
                // A retry with the job's idempotency key was answered with it meanwhile: the
                // job stands, for the sweeper to publish once the queue has room.
                tracing::warn!(job_id = %job.id, "queue full, but a retry holds the job: left for the sweeper");
                return Ok(());
            }
            Err(e) => {
                // The record most likely stands (the database that just took it is failing):
                // answered 503, a client without an Idempotency-Key would submit the job again
                // and get it twice. So it is accepted, for the sweeper to publish once the
                // queue has room.
                tracing::warn!(job_id = %job.id, error = %e, "queue full and the refused job's record cannot be taken back: left for the sweeper");
                return Ok(());
            }
        }
        metrics::counter!("xenios_jobs_refused_total", "kind" => job.kind.as_str(), "reason" => "queue_full")
            .increment(1);
        return Err(ApiError::Unavailable {
            message: format!("the {} queue is full", job.kind),
            retry_after: Some(Duration::from_secs(5)),
        });
    }
    match state.resends.clone().try_acquire_owned() {
        Ok(permit) => {
            tracing::warn!(job_id = %job.id, error = %result, "command not published now; sending it again");
            let (jetstream, command) = (state.jetstream.clone(), job.command());
            let correlation_id = job.correlation_id.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let sent = crate::operations::resend_command(
                    &jetstream,
                    &command,
                    &correlation_id,
                    RESEND_WITHIN,
                )
                .await;
                if !sent {
                    tracing::warn!(job_id = %command.job_id, "command still not published; the sweeper will publish it");
                }
            });
        }
        Err(_) => {
            tracing::warn!(job_id = %job.id, error = %result, "command not published now; the sweeper will publish it");
        }
    }
    Ok(())
}

/// Loads a job the user may see; someone else's job is "not found".
async fn visible_job(state: &AppState, user: &User, id: Uuid) -> Result<JobRecord, ApiError> {
    match state.store.get_job(id).await? {
        Some(job) if user.can_see(job.user_id.as_deref()) => Ok(job),
        _ => Err(ApiError::NotFound(format!("no job {id}"))),
    }
}

/// One job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    security(("api_key" = [], "bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody)))]
pub async fn get_job(
    State(state): State<AppState>,
    user: User,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<JobView>, ApiError> {
    Ok(axum::Json(visible_job(&state, &user, id).await?.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    kind: Option<String>,
    status: Option<String>,
    /// 1 to 100, default 20. A page also ends before the job that would take its jobs'
    /// inputs and results past 8 MiB (the first job is always listed): follow `next_cursor`.
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<Uuid>)]
    cursor: Option<String>,
}

/// A query parameter's value; an empty one (`?kind=&status=`, as a form or a URL template
/// sends it) is no value.
pub(crate) fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    jobs: Vec<JobView>,
    next_cursor: Option<Uuid>,
}

/// The caller's jobs, newest first (every user's for `service_role`).
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs",
    security(("api_key" = [], "bearer" = [])),
    params(ListParams),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody)))]
pub async fn list_jobs(
    State(state): State<AppState>,
    user: User,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<JobList>, ApiError> {
    let kind = given(&params.kind)
        .map(str::parse::<JobKind>)
        .transpose()
        .map_err(|e| ApiError::invalid_field("kind", e.to_string()))?;
    let status = given(&params.status)
        .map(str::parse::<JobStatus>)
        .transpose()
        .map_err(|e| ApiError::invalid_field("status", e))?;
    let limit = match given(&params.limit) {
        None => 20,
        Some(limit) => limit
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| ApiError::invalid_field("limit", "between 1 and 100"))?,
    };
    let cursor = given(&params.cursor)
        .map(str::parse::<Uuid>)
        .transpose()
        .map_err(|_| ApiError::invalid_field("cursor", "the `next_cursor` of a previous page"))?;
    let page = state
        .store
        .list_jobs(&JobQuery {
            user_id: (!user.user.is_service_role()).then(|| user.user.user_id.clone()),
            kind,
            status,
            limit,
            before: cursor,
            ..JobQuery::default()
        })
        .await?;
    Ok(axum::Json(JobList {
        jobs: page.jobs.into_iter().map(JobView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CancelAccepted {
    job_id: Uuid,
    /// `cancelled` (it was queued and never runs) or `cancelling` (the consumer is told).
    status: &'static str,
}

/// Cancel a job: a queued job never starts, a running one is interrupted.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs",
    security(("api_key" = [], "bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 202, body = CancelAccepted), (status = 404, body = ErrorBody),
               (status = 409, body = ErrorBody, description = "already finished")))]
pub async fn cancel_job(
    State(state): State<AppState>,
    user: User,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    visible_job(&state, &user, id).await?;
    let status = match cancel(&state, id).await? {
        CancelOutcome::Cancelled(_) => "cancelled",
        CancelOutcome::Requested(_) => "cancelling",
        CancelOutcome::AlreadyFinished(job) => {
            return Err(ApiError::Conflict(format!(
                "the job is already {}",
                job.status
            )))
        }
        CancelOutcome::NotFound => return Err(ApiError::NotFound(format!("no job {id}"))),
    };
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(CancelAccepted { job_id: id, status }),
    )
        .into_response())
}

/// Submit a failed or cancelled job again: a new job of the same kind, input, correlation id
/// and webhook, checked as a submission is (its input against today's settings, its file or
/// URL still there, the user's LLM budget); the first job stays as it was.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/resubmit", tag = "jobs",
    security(("api_key" = [], "bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 202, body = Submitted, description = "the new job, recorded and queued"),
               (status = 404, body = ErrorBody),
               (status = 409, body = ErrorBody, description = "the job is not failed or cancelled"),
               (status = 422, body = ErrorBody, description = "its input no longer holds (a file gone)"),
               (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn resubmit_job(
    State(state): State<AppState>,
    user: User,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    state
        .limits
        .check(RouteGroup::Jobs, &user.caller.subject())?;
    let finished = visible_job(&state, &user, id).await?;
    if let Some(why) = crate::operations::not_resubmittable(&finished) {
        return Err(ApiError::Conflict(format!("the job {why}")));
    }
    check_new_job(&state, &user, finished.kind, &finished.input).await?;
    let job = enqueue(&state, crate::operations::resubmission(&finished))
        .await?
        .into_job();
    Ok((
        StatusCode::ACCEPTED,
        located(&job),
        axum::Json(submitted(&job)),
    )
        .into_response())
}

/// Announce a finished job at its `webhook_url` again, its tries counted afresh and the first
/// due at once: for a delivery given up, or one waiting out its backoff, once the receiver
/// is fixed.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/webhook/redeliver", tag = "jobs",
    security(("api_key" = [], "bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 202, body = JobView, description = "the announcement is due again"),
               (status = 404, body = ErrorBody),
               (status = 409, body = ErrorBody, description = "no webhook, or the job has not finished")))]
pub async fn redeliver_webhook(
    State(state): State<AppState>,
    user: User,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    // Each redelivery is an outgoing request: counted like a submission.
    state
        .limits
        .check(RouteGroup::Jobs, &user.caller.subject())?;
    let job = visible_job(&state, &user, id).await?;
    if job.webhook.is_none() {
        return Err(ApiError::Conflict("the job has no webhook_url".into()));
    }
    if !job.status.is_terminal() {
        return Err(ApiError::Conflict(format!(
            "the job is {}: it is announced once it finishes",
            job.status
        )));
    }
    // The job as the redelivery left it: the delivery, due at once, can be made and recorded
    // (by this ring or the webhooks' poll) before a read after it.
    let Some(job) = state.store.redeliver_webhook(id).await? else {
        return Err(ApiError::Conflict("the job has no webhook_url".into()));
    };
    state.hub.webhooks_due().ring();
    Ok((StatusCode::ACCEPTED, axum::Json(JobView::from(job))).into_response())
}

/// Cancels a job (see [`crate::operations::cancel`]).
pub(crate) async fn cancel(state: &AppState, id: JobId) -> Result<CancelOutcome, ApiError> {
    Ok(crate::operations::cancel(&state.store, &state.nats, &state.jetstream, id).await?)
}

/// The job's events as Server-Sent Events: `status`, `progress`, `token`, `result`, `error`,
/// each with an `id:`; ends after the terminal status. `Last-Event-ID` resumes after that event.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", tag = "jobs",
    security(("api_key" = [], "bearer" = [])),
    params(("id" = Uuid, Path), ("Last-Event-ID" = Option<String>, Header)),
    responses((status = 200, content_type = "text/event-stream", body = String),
              (status = 204, description = "`Last-Event-ID` is the job's terminal status: \
                nothing more will come (a browser's EventSource stops reconnecting)"),
              (status = 404, body = ErrorBody)))]
pub async fn job_events(
    State(state): State<AppState>,
    user: User,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // A job this instance just submitted needs no store read: the hub knows its owner.
    let finished = match state.hub.known_owner(id) {
        Some(owner) if user.can_see(owner.as_deref()) => false,
        _ => visible_job(&state, &user, id).await?.status.is_terminal(),
    };
    let point = ResumePoint::parse(headers.get("last-event-id").and_then(|v| v.to_str().ok()));
    match check_resume(&state.jetstream, id, point).await {
        Resume::Ended => Ok(StatusCode::NO_CONTENT.into_response()),
        Resume::From(point) => {
            let slot = sse_slot(&state, &user.caller)?;
            Ok(relay_sse(&state, slot, id, finished, point).into_response())
        }
    }
}

/// Starts a relay task for the events of `job_id` and returns its SSE response.
pub(crate) fn relay_sse(
    state: &AppState,
    slot: SseSlot,
    job_id: JobId,
    finished: bool,
    resume: ResumePoint,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let relay = Relay {
        hub: state.hub.clone(),
        js: state.jetstream.clone(),
        store: state.store.clone(),
        shutdown: state.shutdown.clone(),
        store_check_after: Duration::from_secs(state.settings.api.sse_keepalive_secs.max(1))
            * SSE_STORE_CHECK_KEEPALIVES,
    };
    // The relay runs inside the response's own task rather than a task of its own: a live
    // event then wakes one task on its way to the client, not two, and a client that goes
    // away takes its relay with it.
    let relay = futures::stream::once(relay.run(job_id, finished, resume, tx))
        .filter_map(|()| std::future::ready(None));
    sse_response(
        state,
        slot,
        futures::stream::select(ReceiverStream::new(rx), relay),
    )
}
