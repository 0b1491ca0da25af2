//! File intake (SPEC §3 "Files"): a multipart upload streamed into the `FILES` object store,
//! hashed and counted on the way, never held whole in memory. The content type is sniffed
//! from the first bytes; what the client declares is ignored.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::jetstream::object_store::{ObjectInfo, ObjectMetadata, ObjectStore};
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::{Instant, Sleep};
use tokio_util::io::StreamReader;
use utoipa::{IntoParams, ToSchema};
use xenios_auth::UserContext;
use xenios_contract::subjects::FILES_BUCKET;

use crate::auth::User;
use crate::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use crate::rate_limit::RouteGroup;
use crate::routes::jobs::given;
use crate::state::AppState;

/// Enough of a file to tell its format: the text heuristics look at 64 KiB, and an office
/// document names its main part in the first local headers of the zip.
const SNIFF_BYTES: usize = 64 * 1024;
const MAX_FILENAME: usize = 255;
/// Object metadata keys the consumers read (`xenios-documents` names the same ones).
const FILENAME_KEY: &str = "filename";
const OWNER_KEY: &str = "user_id";
const CONTENT_TYPE_KEY: &str = "content_type";
/// How long the object store may take to finish a put after the upload's own time is up,
/// before the upload gives up on it: its stream has ended by then, so only a broker that
/// stopped answering takes longer.
const PUT_GRACE: Duration = Duration::from_secs(30);

/// The multipart request body of an upload.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The file; its content type is sniffed from the bytes.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// A stored upload: name it as `file_id` in an `extraction` or `transcription` job.
#[derive(Debug, Serialize, ToSchema)]
pub struct Uploaded {
    pub file_id: String,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    pub size: u64,
    /// Sniffed from the bytes: a document or audio type, else `application/octet-stream`.
    pub content_type: String,
    pub filename: Option<String>,
}

/// Upload a file (multipart field `file`) for later jobs. Kept for the files TTL.
#[utoipa::path(post, path = "/api/v1/files", tag = "files",
    security(("api_key" = [], "bearer" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, body = Uploaded, description = "stored"),
        (status = 400, body = ErrorBody,
         description = "an unreadable body, or one that stalled for `files.upload_idle_timeout_secs` \
                        or took longer than `files.upload_timeout_secs`"),
        (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody, description = "larger than `files.max_bytes`"),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn upload(
    State(state): State<AppState>,
    user: User,
    headers: axum::http::HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    state
        .limits
        .check(RouteGroup::Jobs, &user.caller.subject())?;
    let mut multipart = multipart.map_err(|_| {
        ApiError::UnsupportedMediaType(
            "expected `Content-Type: multipart/form-data` with a `file` field".into(),
        )
    })?;
    let limit = state.settings.files.max_bytes;
    let pace = Pace::new(&state.settings.files);
    // A part before `file` is skipped by reading it through within one idle limit: such
    // parts are small form fields.
    let mut field = loop {
        match pace
            .within(multipart.next_field())
            .await?
            .map_err(multipart_error)?
        {
            Some(field) if field.name() == Some("file") => break field,
            Some(_) => continue,
            None => {
                return Err(ApiError::invalid_field(
                    "file",
                    "the multipart body has no `file` field",
                ))
            }
        }
    };
    let filename = field.file_name().and_then(clean_filename);

    let mut upload = Upload::new(limit, pace);
    let head = upload.read_head(&mut field).await?;
    let content_type = sniff(&head).to_owned();

    let bucket = files_bucket(&state).await?;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(head.len() as u64);
    ensure_room(&state, declared).await?;
    let file_id = uuid::Uuid::now_v7().to_string();
    let mut metadata = HashMap::from([
        (OWNER_KEY.to_owned(), user.user.user_id.clone()),
        (CONTENT_TYPE_KEY.to_owned(), content_type.clone()),
    ]);
    if let Some(name) = &filename {
        metadata.insert(FILENAME_KEY.to_owned(), name.clone());
    }
    let meta = ObjectMetadata {
        name: file_id.clone(),
        metadata,
        ..Default::default()
    };
    upload.head = Some(head);
    let mut reader = StreamReader::new(UploadStream {
        upload,
        field: &mut field,
        idle: None,
        deadline: Box::pin(tokio::time::sleep_until(pace.deadline)),
    });
    let stored =
        tokio::time::timeout_at(pace.deadline + PUT_GRACE, bucket.put(meta, &mut reader)).await;
    let upload = reader.into_inner().upload;
    // The stream ends early (as if complete) on a broken, oversized or stalled body, so the
    // object store never leaves orphaned chunks behind: what it stored is deleted as a whole.
    // Only a put abandoned halfway (a broker that stopped answering) leaves chunks for the
    // bucket's TTL.
    let failure = match (stored, upload.stop) {
        (Ok(Ok(_)), None) => None,
        (_, Some(stop)) => Some(stop),
        (Ok(Err(e)), None) => Some(ApiError::unavailable(format!(
            "the file cannot be stored: {e}"
        ))),
        (Err(_), None) => Some(ApiError::unavailable(
            "the file store did not take the upload in time",
        )),
    };
    if let Some(error) = failure {
        if let Err(e) = bucket.delete(&file_id).await {
            tracing::debug!(error = %e, "no partial upload to delete");
        }
        return Err(error);
    }
    let body = Uploaded {
        file_id,
        sha256: hex::encode(upload.hasher.finalize()),
        size: upload.size,
        content_type,
        filename,
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// A stored file, as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileView {
    pub file_id: String,
    /// Hex SHA-256 of the bytes.
    pub sha256: Option<String>,
    pub size: u64,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub uploaded_at: Option<DateTime<Utc>>,
    /// When the files TTL removes it.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A stored file's description; someone else's file is "not found" (except to
/// `service_role`).
#[utoipa::path(get, path = "/api/v1/files/{file_id}", tag = "files",
    security(("api_key" = [], "bearer" = [])),
    params(("file_id" = String, Path)),
    responses((status = 200, body = FileView), (status = 404, body = ErrorBody),
               (status = 503, body = ErrorBody)))]
pub async fn get_file(
    State(state): State<AppState>,
    user: User,
    ApiPath(file_id): ApiPath<String>,
) -> Result<axum::Json<FileView>, ApiError> {
    let info = visible_file(&state, &user, &file_id).await?;
    Ok(axum::Json(FileView::new(info, files_ttl(&state))))
}

impl FileView {
    fn new(info: ObjectInfo, ttl: chrono::Duration) -> FileView {
        let uploaded_at = info
            .modified
            .and_then(|t| DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()));
        FileView {
            sha256: info.digest.as_deref().and_then(hex_sha256),
            size: info.size as u64,
            content_type: info.metadata.get(CONTENT_TYPE_KEY).cloned(),
            filename: info.metadata.get(FILENAME_KEY).cloned(),
            expires_at: uploaded_at.and_then(|t| t.checked_add_signed(ttl)),
            uploaded_at,
            file_id: info.name,
        }
    }
}

fn files_ttl(state: &AppState) -> chrono::Duration {
    chrono::Duration::seconds(
        i64::try_from(state.settings.files.ttl_secs).unwrap_or(i64::MAX / 1000),
    )
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FileListParams {
    /// 1 to 1000, default 100.
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileList {
    files: Vec<FileView>,
    /// The next page's `cursor`; null on the last page.
    next_cursor: Option<String>,
}

/// The caller's stored files, newest first (every user's for `service_role`): those the files
/// TTL has not removed and no one deleted, a page of `limit` at a time.
#[utoipa::path(get, path = "/api/v1/files", tag = "files",
    security(("api_key" = [], "bearer" = [])),
    params(FileListParams),
    responses((status = 200, body = FileList), (status = 422, body = ErrorBody),
               (status = 503, body = ErrorBody)))]
pub async fn list_files(
    State(state): State<AppState>,
    user: User,
    ApiQuery(params): ApiQuery<FileListParams>,
) -> Result<axum::Json<FileList>, ApiError> {
    use futures::StreamExt;
    let limit = match given(&params.limit) {
        None => 100,
        Some(limit) => limit
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| ApiError::invalid_field("limit", "between 1 and 1000"))?,
    };
    // File ids are UUIDv7s: in upload order, and as text in the same order.
    let cursor = given(&params.cursor)
        .map(|c| c.parse::<uuid::Uuid>().map(|id| id.to_string()))
        .transpose()
        .map_err(|_| ApiError::invalid_field("cursor", "the `next_cursor` of a previous page"))?;
    let unavailable = |e: &dyn std::fmt::Display| {
        ApiError::unavailable(format!("the file store is unavailable: {e}"))
    };
    // The bucket's index is every object's metadata, oldest first: keep the newest `limit` (and
    // one more, to know there is a next page) of the caller's past the cursor as they go by, so
    // memory stays bounded by the answer.
    let mut listed = files_bucket(&state)
        .await?
        .list()
        .await
        .map_err(|e| unavailable(&e))?;
    let keep = limit + 1;
    let mut newest: Vec<ObjectInfo> = Vec::with_capacity(keep + 1);
    while let Some(info) = listed.next().await {
        let info = info.map_err(|e| unavailable(&e))?;
        let past_cursor = cursor.as_ref().is_none_or(|c| info.name < *c);
        if past_cursor && visible(&info, Some(&user.user)) {
            newest.push(info);
            if newest.len() > 2 * keep {
                keep_newest(&mut newest, keep);
            }
        }
    }
    keep_newest(&mut newest, keep);
    let next_cursor = match newest.len() > limit {
        true => {
            newest.truncate(limit);
            newest.last().map(|last| last.name.clone())
        }
        false => None,
    };
    let ttl = files_ttl(&state);
    let files = newest.into_iter().map(|i| FileView::new(i, ttl)).collect();
    Ok(axum::Json(FileList { files, next_cursor }))
}

fn keep_newest(files: &mut Vec<ObjectInfo>, limit: usize) {
    files.sort_by(|a, b| b.name.cmp(&a.name));
    files.truncate(limit);
}

/// Delete a stored file before its TTL does; jobs that read it keep their results.
#[utoipa::path(delete, path = "/api/v1/files/{file_id}", tag = "files",
    security(("api_key" = [], "bearer" = [])),
    params(("file_id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody),
               (status = 503, body = ErrorBody)))]
pub async fn delete_file(
    State(state): State<AppState>,
    user: User,
    ApiPath(file_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    visible_file(&state, &user, &file_id).await?;
    files_bucket(&state)
        .await?
        .delete(&file_id)
        .await
        .map_err(|e| ApiError::unavailable(format!("the file store is unavailable: {e}")))?;
    Ok(StatusCode::NO_CONTENT)
}

/// A file the user may see: theirs (any, for `service_role`), not deleted (a deleted object
/// keeps its name, marked deleted); anything else is "not found".
pub(crate) async fn visible_file(
    state: &AppState,
    user: &User,
    file_id: &str,
) -> Result<ObjectInfo, ApiError> {
    file_visible_to(state, Some(&user.user), file_id).await
}

/// [`visible_file`] for a caller that may have no user: a service call with the API key
/// alone, which sees every file.
pub(crate) async fn file_visible_to(
    state: &AppState,
    viewer: Option<&UserContext>,
    file_id: &str,
) -> Result<ObjectInfo, ApiError> {
    use async_nats::jetstream::object_store::InfoErrorKind;
    let missing = || ApiError::NotFound(format!("no file {file_id}"));
    let info = files_bucket(state)
        .await?
        .info(file_id)
        .await
        .map_err(|e| match e.kind() {
            InfoErrorKind::NotFound | InfoErrorKind::InvalidName => missing(),
            _ => ApiError::unavailable(format!("the file store is unavailable: {e}")),
        })?;
    match visible(&info, viewer) {
        true => Ok(info),
        false => Err(missing()),
    }
}

fn visible(info: &ObjectInfo, viewer: Option<&UserContext>) -> bool {
    let allowed = viewer
        .is_none_or(|user| user.is_service_role() || owner_of(info) == Some(user.user_id.as_str()));
    !info.deleted && allowed
}

/// The file's type as the upload sniffed it.
pub(crate) fn content_type_of(info: &ObjectInfo) -> Option<&str> {
    info.metadata.get(CONTENT_TYPE_KEY).map(String::as_str)
}

/// The user who uploaded the file.
pub(crate) fn owner_of(info: &ObjectInfo) -> Option<&str> {
    info.metadata.get(OWNER_KEY).map(String::as_str)
}

/// The object store's digest (`SHA-256=<base64url>`) as hex, like the upload's answer.
fn hex_sha256(digest: &str) -> Option<String> {
    use base64::Engine;
    let encoded = digest.strip_prefix("SHA-256=")?;
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(encoded)
        .ok()?;
    Some(hex::encode(bytes))
}

/// Refuses an upload the file store has no room for (`files.max_total_bytes`) before any of
/// it is stored: a put the stream refuses halfway leaves its first chunks behind, with no
/// object to delete them by, until they expire.
async fn ensure_room(state: &AppState, upload_bytes: u64) -> Result<(), ApiError> {
    let Ok(mut stream) = state
        .jetstream
        .get_stream(format!("OBJ_{FILES_BUCKET}"))
        .await
    else {
        return Ok(());
    };
    let Ok(info) = stream.info().await else {
        return Ok(());
    };
    let Ok(max) = u64::try_from(info.config.max_bytes) else {
        return Ok(()); // -1: unbounded
    };
    // Chunk headers and the metadata entry: a little over the bytes themselves.
    let needed = upload_bytes.saturating_add(upload_bytes / 50 + 4096);
    if info.state.bytes.saturating_add(needed) > max {
        return Err(ApiError::Unavailable {
            message: "the file store is full; stored files expire after files.ttl_secs".into(),
            retry_after: Some(std::time::Duration::from_secs(60)),
        });
    }
    Ok(())
}

pub(crate) async fn files_bucket(state: &AppState) -> Result<ObjectStore, ApiError> {
    state
        .jetstream
        .get_object_store(FILES_BUCKET)
        .await
        .map_err(|e| ApiError::unavailable(format!("the file store is unavailable: {e}")))
}

/// The media type of a file whose first bytes are `head`.
fn sniff(head: &[u8]) -> &'static str {
    if let Some(format) = xenios_extract::sniff(head) {
        return format.mime_type();
    }
    // A GIF, which no document reader takes, may still be shown to a model. Before the audio
    // sniffer: MPEG audio is told by frame headers, which a picture's bytes can look like.
    if let Some(picture) = xenios_contract::images::image_type(head) {
        return picture;
    }
    if let Some(format) = xenios_transcribe::sniff_audio(head) {
        return format.mime_type();
    }
    // The zip's directory is at its end; the local headers at its start name the parts.
    if head.starts_with(b"PK\x03\x04") {
        let has = |name: &[u8]| head.windows(name.len()).any(|w| w == name);
        if has(b"[Content_Types].xml") && has(b"word/") {
            return xenios_extract::DocumentFormat::Docx.mime_type();
        }
        if has(b"[Content_Types].xml") && has(b"xl/") {
            return xenios_extract::DocumentFormat::Xlsx.mime_type();
        }
        if has(b"[Content_Types].xml") && has(b"ppt/") {
            return xenios_extract::DocumentFormat::Pptx.mime_type();
        }
        return "application/zip";
    }
    "application/octet-stream"
}

/// The last path component, without control characters, at most 255 characters.
fn clean_filename(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = base
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FILENAME)
        .collect();
    let clean = clean.trim();
    (!clean.is_empty()).then(|| clean.to_owned())
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(e.body_text())
    } else {
        ApiError::invalid(format!("unreadable multipart body: {}", e.body_text()))
    }
}

/// How long an upload may wait for its client's next bytes (`files.upload_idle_timeout_secs`)
/// and when it must be over (`files.upload_timeout_secs` from its start).
#[derive(Clone, Copy)]
struct Pace {
    idle: Duration,
    deadline: Instant,
    total: Duration,
}

impl Pace {
    fn new(files: &xenios_config::FilesSettings) -> Pace {
        let total = Duration::from_secs(files.upload_timeout_secs);
        Pace {
            idle: Duration::from_secs(files.upload_idle_timeout_secs),
            deadline: Instant::now() + total,
            total,
        }
    }

    /// `read`, unless the client sends nothing for the idle limit or the upload's time is up.
    async fn within<T>(&self, read: impl Future<Output = T>) -> Result<T, ApiError> {
        let until = (Instant::now() + self.idle).min(self.deadline);
        tokio::time::timeout_at(until, read)
            .await
            .map_err(|_| self.stalled())
    }

    /// A body that does not come in time is refused like one that is broken (`400`): the
    /// request is at fault, not the service.
    fn stalled(&self) -> ApiError {
        if Instant::now() >= self.deadline {
            ApiError::invalid(format!(
                "the upload took longer than {} s (files.upload_timeout_secs)",
                self.total.as_secs()
            ))
        } else {
            ApiError::invalid(format!(
                "the upload stalled: no data for {} s (files.upload_idle_timeout_secs)",
                self.idle.as_secs()
            ))
        }
    }
}

/// What has gone through so far.
struct Upload {
    hasher: Sha256,
    size: u64,
    limit: u64,
    pace: Pace,
    /// Sniffed before the object is created, then sent first.
    head: Option<Bytes>,
    /// Why the stream ended before the body did.
    stop: Option<ApiError>,
}

impl Upload {
    fn new(limit: u64, pace: Pace) -> Upload {
        Upload {
            hasher: Sha256::new(),
            size: 0,
            limit,
            pace,
            head: None,
            stop: None,
        }
    }

    /// Counts and hashes a chunk; false (with `stop` set) once past the limit.
    fn take(&mut self, chunk: &[u8]) -> bool {
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            self.stop = Some(ApiError::PayloadTooLarge(format!(
                "the file exceeds the limit of {} bytes",
                self.limit
            )));
            return false;
        }
        self.hasher.update(chunk);
        true
    }

    async fn read_head(&mut self, field: &mut Field<'_>) -> Result<Bytes, ApiError> {
        let mut head = BytesMut::new();
        while head.len() < SNIFF_BYTES {
            match self
                .pace
                .within(field.chunk())
                .await?
                .map_err(multipart_error)?
            {
                Some(chunk) => {
                    if !self.take(&chunk) {
                        return Err(self.stop.take().unwrap_or_else(|| {
                            ApiError::PayloadTooLarge("the file is too large".into())
                        }));
                    }
                    head.extend_from_slice(&chunk);
                }
                None => break,
            }
        }
        Ok(head.freeze())
    }
}

/// The upload's bytes for the object store: the head, then the rest of the field. A body
/// that breaks, passes the limit or does not come in time ends the stream, with the reason
/// kept in `stop`.
struct UploadStream<'f, 'a> {
    upload: Upload,
    field: &'f mut Field<'a>,
    /// Set while waiting for the client, not while the object store takes a chunk: a slow
    /// broker is no stalled client.
    idle: Option<Pin<Box<Sleep>>>,
    deadline: Pin<Box<Sleep>>,
}

impl Stream for UploadStream<'_, '_> {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(head) = this.upload.head.take() {
            if !head.is_empty() {
                return Poll::Ready(Some(Ok(head)));
            }
        }
        if this.upload.stop.is_some() {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut *this.field).poll_next(cx);
        if !polled.is_pending() {
            this.idle = None;
        }
        match polled {
            Poll::Pending => {
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(this.upload.pace.idle)));
                let late = idle.as_mut().poll(cx).is_ready();
                if late || this.deadline.as_mut().poll(cx).is_ready() {
                    this.upload.stop = Some(this.upload.pace.stalled());
                    return Poll::Ready(None);
                }
                Poll::Pending
            }
            Poll::Ready(None) => Poll::Ready(None),
            // A client sending steadily is still bounded by the upload's time.
            Poll::Ready(Some(Ok(_))) if Instant::now() >= this.upload.pace.deadline => {
                this.upload.stop = Some(this.upload.pace.stalled());
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(chunk))) => match this.upload.take(&chunk) {
                true => Poll::Ready(Some(Ok(chunk))),
                false => Poll::Ready(None),
            },
            Poll::Ready(Some(Err(e))) => {
                this.upload.stop = Some(multipart_error(e));
                Poll::Ready(None)
            }
        }
    }
}
