//! The JetStream layout: the streams and consumers defined in `streams/` (the same JSON the
//! `nats` CLI takes), plus the `FILES` object store and the `WORKERS` key-value bucket.
//! [`apply`] creates or updates them idempotently; [`check`] reports drift.
//!
//! The files are the single source of truth: they are embedded here verbatim, parsed into
//! async-nats configurations, and only the [`StreamSettings`] knobs are laid on top.
//!
//! Architecture Invariant: the consumer files set no `backoff`. The delay between tries is the
//! runtime's NAK delay (`consumer.retry_delays_ms`); an attempt lost to a crash comes back
//! after `ack_wait`. A server-side backoff would replace `ack_wait` with `backoff[0]` and add
//! `backoff[n-1] - backoff[0]` to every NAK delay (nats-server 2.9), which would make the
//! retry schedule two things at once.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
use async_nats::jetstream::{self, stream, ErrorCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ContractError;
use crate::subjects::{DLQ_STREAM, EVENTS_STREAM, FILES_BUCKET, JOBS_STREAM, WORKERS_BUCKET};

/// One JSON file of `streams/`, embedded at build time.
#[derive(Debug, Clone, Copy)]
pub struct DefinitionFile {
    /// The stream the file defines, or the stream its consumer belongs to.
    pub stream: &'static str,
    /// Path from the repository root.
    pub path: &'static str,
    pub json: &'static str,
}

macro_rules! definition {
    ($stream:expr, $path:literal) => {
        DefinitionFile {
            stream: $stream,
            path: $path,
            json: include_str!(concat!("../../../", $path)),
        }
    };
}

pub const STREAM_FILES: [DefinitionFile; 3] = [
    definition!(JOBS_STREAM, "streams/JOBS.json"),
    definition!(EVENTS_STREAM, "streams/JOB_EVENTS.json"),
    definition!(DLQ_STREAM, "streams/JOBS_DLQ.json"),
];

pub const CONSUMER_FILES: [DefinitionFile; 4] = [
    definition!(JOBS_STREAM, "streams/consumers/JOBS/transcription.json"),
    definition!(JOBS_STREAM, "streams/consumers/JOBS/extraction.json"),
    definition!(JOBS_STREAM, "streams/consumers/JOBS/llm.json"),
    definition!(JOBS_STREAM, "streams/consumers/JOBS/echo.json"),
];

/// Heartbeats older than this vanish from `WORKERS`, so a dead instance drops off on its own.
pub const WORKERS_TTL: Duration = Duration::from_secs(30);
/// SPEC §3: uploaded files are kept 24 h unless configured otherwise.
pub const DEFAULT_FILES_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// `files.max_total_bytes` by default.
pub const DEFAULT_FILES_MAX_BYTES: i64 = 10_000_000_000;

/// Server fields that hold durations in nanoseconds, shown as `1h`, `30s` in reports.
const DURATION_FIELDS: [&str; 6] = [
    "max_age",
    "duplicate_window",
    "ack_wait",
    "backoff",
    "inactive_threshold",
    "max_expires",
];

/// The deployment-specific knobs laid over the files: a 3-node cluster sets `replicas: 3`.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    /// Replicas of every stream and bucket; consumers inherit their stream's.
    pub replicas: usize,
    pub jobs_max_msgs: i64,
    pub jobs_max_bytes: i64,
    pub events_max_age: Duration,
    pub dlq_max_age: Duration,
    pub files_ttl: Duration,
    /// Bytes the `FILES` object store may hold in all.
    pub files_max_bytes: i64,
}

impl Default for StreamSettings {
    /// The values the files hold.
    fn default() -> Self {
        let streams =
            parse_streams().expect("the embedded stream files parse (tested in this crate)");
        let find = |name: &str| {
            streams
                .iter()
                .find(|d| d.config.name == name)
                .map(|d| &d.config)
                .expect("every stream has a file")
        };
        let jobs = find(JOBS_STREAM);
        StreamSettings {
            replicas: jobs.num_replicas,
            jobs_max_msgs: jobs.max_messages,
            jobs_max_bytes: jobs.max_bytes,
            events_max_age: find(EVENTS_STREAM).max_age,
            dlq_max_age: find(DLQ_STREAM).max_age,
            files_ttl: DEFAULT_FILES_TTL,
            files_max_bytes: DEFAULT_FILES_MAX_BYTES,
        }
    }
}

/// Something `apply` manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Stream(String),
    Consumer { stream: String, name: String },
    KeyValue(String),
    ObjectStore(String),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Stream(name) => write!(f, "stream {name}"),
            Resource::Consumer { stream, name } => write!(f, "consumer {stream} > {name}"),
            Resource::KeyValue(name) => write!(f, "key-value bucket {name}"),
            Resource::ObjectStore(name) => write!(f, "object store {name}"),
        }
    }
}

/// One configuration field whose value on the server is not the desired one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDiff {
    pub field: String,
    pub actual: String,
    pub expected: String,
}

impl fmt::Display for FieldDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {}, expected {}",
            self.field, self.actual, self.expected
        )
    }
}

/// A difference between the server and the definitions, as `xenios streams check` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    Missing(Resource),
    Differs { resource: Resource, diff: FieldDiff },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::Missing(resource) => write!(f, "{resource}: missing"),
            Drift::Differs { resource, diff } => write!(f, "{resource}: {diff}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created(Resource),
    Updated {
        resource: Resource,
        diffs: Vec<FieldDiff>,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Created(resource) => write!(f, "created {resource}"),
            Change::Updated { resource, diffs } => {
                write!(f, "updated {resource}:")?;
                for (i, d) in diffs.iter().enumerate() {
                    let sep = if i == 0 { " " } else { "; " };
                    write!(f, "{sep}{} {} -> {}", d.field, d.actual, d.expected)?;
                }
                Ok(())
            }
        }
    }
}

/// What `apply` changed on the server; empty when everything already matched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub changes: Vec<Change>,
}

impl ApplyReport {
    pub fn is_unchanged(&self) -> bool {
        self.changes.is_empty()
    }
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return f.write_str("no change");
        }
        for (i, change) in self.changes.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{change}")?;
        }
        Ok(())
    }
}

/// A desired configuration and the fields `check` compares: those its file sets.
#[derive(Debug, Clone)]
pub struct Desired<T> {
    pub config: T,
    pub fields: Vec<String>,
}

/// Everything `apply` puts on a server, built from the files and the settings.
#[derive(Debug, Clone)]
pub struct Layout {
    pub streams: Vec<Desired<stream::Config>>,
    /// Each with the stream it belongs to.
    pub consumers: Vec<(String, Desired<pull::Config>)>,
    /// The stream behind the `WORKERS` key-value bucket (`KV_WORKERS`).
    pub workers: stream::Config,
    /// The stream behind the `FILES` object store (`OBJ_FILES`).
    pub files: stream::Config,
}

impl Layout {
    pub fn new(settings: &StreamSettings) -> Result<Layout, ContractError> {
        let replicas = settings.replicas.max(1);
        let mut streams = parse_streams()?;
        for d in &mut streams {
            let c = &mut d.config;
            c.num_replicas = replicas;
            match c.name.as_str() {
                JOBS_STREAM => {
                    c.max_messages = settings.jobs_max_msgs;
                    c.max_bytes = settings.jobs_max_bytes;
                }
                EVENTS_STREAM => c.max_age = settings.events_max_age,
                DLQ_STREAM => c.max_age = settings.dlq_max_age,
                _ => {}
            }
            fit_duplicate_window(c);
        }
        let consumers = CONSUMER_FILES
            .iter()
            .map(|f| Ok((f.stream.to_owned(), parse(f)?)))
            .collect::<Result<_, ContractError>>()?;
        Ok(Layout {
            streams,
            consumers,
            workers: key_value_stream(
                WORKERS_BUCKET,
                "Consumer instances online: one key per instance, kept alive by heartbeats",
                WORKERS_TTL,
                replicas,
            ),
            files: object_store_stream(
                FILES_BUCKET,
                "Uploaded files, by file_id",
                settings.files_ttl,
                settings.files_max_bytes,
                replicas,
            ),
        })
    }

    /// The buckets with their backing streams; `check` and `apply` hold those to the fields a
    /// deployment may tune, and leave the bucket mechanics alone.
    fn buckets(&self) -> [(Resource, Desired<stream::Config>); 2] {
        let fields = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        [
            (
                Resource::KeyValue(WORKERS_BUCKET.to_owned()),
                Desired {
                    config: self.workers.clone(),
                    fields: fields(&["max_age", "max_msgs_per_subject", "storage", "num_replicas"]),
                },
            ),
            (
                Resource::ObjectStore(FILES_BUCKET.to_owned()),
                Desired {
                    config: self.files.clone(),
                    fields: fields(&["max_age", "max_bytes", "storage", "num_replicas"]),
                },
            ),
        ]
    }
}

/// Creates every stream, consumer and bucket that is missing and updates those whose fields
/// differ from the definitions. Safe to run at every start, from any number of processes.
pub async fn apply(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<ApplyReport, ContractError> {
    let layout = Layout::new(settings)?;
    let mut changes = Vec::new();

    for desired in &layout.streams {
        let resource = Resource::Stream(desired.config.name.clone());
        match stream_config(js, &desired.config.name, &resource).await? {
            None => {
                js.create_stream(desired.config.clone())
                    .await
                    .map_err(|e| server_error("create", &resource, e))?;
                changes.push(Change::Created(resource));
            }
            Some(actual) => {
                let diffs = diff_fields(&actual, &desired.config, &desired.fields);
                if !diffs.is_empty() {
                    js.update_stream(&desired.config)
                        .await
                        .map_err(|e| server_error("update", &resource, e))?;
                    changes.push(Change::Updated { resource, diffs });
                }
            }
        }
    }

    for (stream_name, desired) in &layout.consumers {
        let resource = consumer_resource(stream_name, &desired.config);
        let name = durable_name(&desired.config);
        match consumer_config(js, stream_name, name, &resource).await? {
            None => {
                js.create_consumer_on_stream(desired.config.clone(), stream_name.as_str())
                    .await
                    .map_err(|e| server_error("create", &resource, e))?;
                changes.push(Change::Created(resource));
            }
            Some(actual) => {
                let diffs = diff_fields(&actual, &desired.config, &desired.fields);
                if !diffs.is_empty() {
                    js.update_consumer_on_stream(desired.config.clone(), stream_name.as_str())
                        .await
                        .map_err(|e| server_error("update", &resource, e))?;
                    changes.push(Change::Updated { resource, diffs });
                }
            }
        }
    }

    for (resource, desired) in layout.buckets() {
        match stream_config(js, &desired.config.name, &resource).await? {
            None => {
                js.create_stream(desired.config.clone())
                    .await
                    .map_err(|e| server_error("create", &resource, e))?;
                changes.push(Change::Created(resource));
            }
            Some(actual) => {
                let diffs = diff_fields(&actual, &desired.config, &desired.fields);
                if !diffs.is_empty() {
                    let merged = merge_fields(&actual, &desired.config, &desired.fields)
                        .map_err(|e| server_error("update", &resource, e))?;
                    js.update_stream(&merged)
                        .await
                        .map_err(|e| server_error("update", &resource, e))?;
                    changes.push(Change::Updated { resource, diffs });
                }
            }
        }
    }

    Ok(ApplyReport { changes })
}

/// Compares the server with the definitions on the fields the definitions set. A missing
/// stream, consumer or bucket is drift too. Changes nothing.
pub async fn check(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<Vec<Drift>, ContractError> {
    let layout = Layout::new(settings)?;
    let mut drift = Vec::new();
    let mut record = |resource: Resource, diffs: Option<Vec<FieldDiff>>| match diffs {
        None => drift.push(Drift::Missing(resource)),
        Some(diffs) => drift.extend(diffs.into_iter().map(|diff| Drift::Differs {
            resource: resource.clone(),
            diff,
        })),
    };

    for desired in &layout.streams {
        let resource = Resource::Stream(desired.config.name.clone());
        let actual = stream_config(js, &desired.config.name, &resource).await?;
        let diffs = actual.map(|a| diff_fields(&a, &desired.config, &desired.fields));
        record(resource, diffs);
    }
    for (stream_name, desired) in &layout.consumers {
        let resource = consumer_resource(stream_name, &desired.config);
        let name = durable_name(&desired.config);
        let actual = consumer_config(js, stream_name, name, &resource).await?;
        let diffs = actual.map(|a| diff_fields(&a, &desired.config, &desired.fields));
        record(resource, diffs);
    }
    for (resource, desired) in layout.buckets() {
        let actual = stream_config(js, &desired.config.name, &resource).await?;
        let diffs = actual.map(|a| diff_fields(&a, &desired.config, &desired.fields));
        record(resource, diffs);
    }
    Ok(drift)
}

/// The stream a key-value bucket is made of, as every NATS client lays it out (`KV_<bucket>`,
/// subjects `$KV.<bucket>.>`), so `nats kv` and `Context::get_key_value` see a bucket. Built
/// here because async-nats' `create_key_value` first reads the account info in a shape that
/// nats-server 2.9 does not send; both buckets are built the same way for one code path.
fn key_value_stream(
    bucket: &str,
    description: &str,
    ttl: Duration,
    replicas: usize,
) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.to_owned()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age: ttl,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        ..Default::default()
    }
}

/// The stream an object store is made of, as every NATS client lays it out (`OBJ_<bucket>`,
/// chunks on `$O.<bucket>.C.>`, metadata on `$O.<bucket>.M.>`).
fn object_store_stream(
    bucket: &str,
    description: &str,
    ttl: Duration,
    max_bytes: i64,
    replicas: usize,
) -> stream::Config {
    stream::Config {
        name: format!("OBJ_{bucket}"),
        description: Some(description.to_owned()),
        subjects: vec![format!("$O.{bucket}.C.>"), format!("$O.{bucket}.M.>")],
        max_age: ttl,
        max_bytes,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        allow_direct: true,
        ..Default::default()
    }
}

fn durable_name(config: &pull::Config) -> &str {
    config.durable_name.as_deref().unwrap_or_default()
}

fn consumer_resource(stream: &str, config: &pull::Config) -> Resource {
    Resource::Consumer {
        stream: stream.to_owned(),
        name: durable_name(config).to_owned(),
    }
}

async fn stream_config(
    js: &jetstream::Context,
    name: &str,
    resource: &Resource,
) -> Result<Option<stream::Config>, ContractError> {
    match js.get_stream(name).await {
        Ok(stream) => Ok(Some(stream.cached_info().config.clone())),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(api)
                if api.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            _ => Err(server_error("read", resource, e)),
        },
    }
}

async fn consumer_config(
    js: &jetstream::Context,
    stream_name: &str,
    name: &str,
    resource: &Resource,
) -> Result<Option<jetstream::consumer::Config>, ContractError> {
    let stream = js
        .get_stream_no_info(stream_name)
        .await
        .map_err(|e| server_error("read", resource, e))?;
    match stream.consumer_info(name).await {
        Ok(info) => Ok(Some(info.config)),
        Err(e) => match e.kind() {
            ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound => Ok(None),
            _ => Err(server_error("read", resource, e)),
        },
    }
}

fn server_error(
    action: &'static str,
    resource: &Resource,
    source: impl Into<async_nats::Error>,
) -> ContractError {
    ContractError::JetStream {
        action,
        resource: resource.clone(),
        source: source.into(),
    }
}

fn parse_streams() -> Result<Vec<Desired<stream::Config>>, ContractError> {
    STREAM_FILES.iter().map(parse).collect()
}

fn parse<T: DeserializeOwned>(file: &DefinitionFile) -> Result<Desired<T>, ContractError> {
    let invalid = |source| ContractError::Definition {
        file: file.path,
        source,
    };
    let raw: Map<String, Value> = serde_json::from_str(file.json).map_err(invalid)?;
    let config = serde_json::from_str(file.json).map_err(invalid)?;
    Ok(Desired {
        config,
        fields: raw.keys().cloned().collect(),
    })
}

/// Compares two configurations as the JetStream API spells them, on `fields` only: the server
/// fills in defaults for everything a definition leaves out, and that is not drift.
fn diff_fields<A: Serialize, D: Serialize>(
    actual: &A,
    desired: &D,
    fields: &[String],
) -> Vec<FieldDiff> {
    let actual = as_object(actual);
    let desired = as_object(desired);
    fields
        .iter()
        .filter(|f| actual.get(*f) != desired.get(*f))
        .map(|f| FieldDiff {
            field: f.clone(),
            actual: show(f, actual.get(f)),
            expected: show(f, desired.get(f)),
        })
        .collect()
}

fn merge_fields(
    actual: &stream::Config,
    desired: &stream::Config,
    fields: &[String],
) -> Result<stream::Config, serde_json::Error> {
    let mut merged = as_object(actual);
    let desired = as_object(desired);
    for f in fields {
        match desired.get(f) {
            Some(v) => merged.insert(f.clone(), v.clone()),
            None => merged.remove(f),
        };
    }
    let mut merged: stream::Config = serde_json::from_value(Value::Object(merged))?;
    fit_duplicate_window(&mut merged);
    Ok(merged)
}

/// The server refuses a duplicate window longer than the retention.
fn fit_duplicate_window(config: &mut stream::Config) {
    if !config.max_age.is_zero() && config.duplicate_window > config.max_age {
        config.duplicate_window = config.max_age;
    }
}

fn as_object<T: Serialize>(value: &T) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        _ => unreachable!("async-nats configurations serialize to JSON objects"),
    }
}

/// A field value for humans: durations as `1h`, lists of them as `[1s, 5s]`; a field the
/// serializer left out (its default) as `unset`.
fn show(field: &str, value: Option<&Value>) -> String {
    let duration = DURATION_FIELDS.contains(&field);
    match value {
        None | Some(Value::Null) => "unset".to_owned(),
        Some(Value::Number(n)) if duration => n.as_u64().map_or(n.to_string(), format_nanos),
        Some(Value::Array(items)) if duration => {
            let items: Vec<String> = items.iter().map(|v| show(field, Some(v))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn format_nanos(nanos: u64) -> String {
    const UNITS: [(&str, u64); 6] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("ns", 1),
    ];
    if nanos == 0 {
        return "0s".to_owned();
    }
    let mut rest = nanos;
    let mut out = String::new();
    for (unit, size) in UNITS {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::job::JobKind;
    use crate::subjects::{consumer_name, jobs_subject};

    #[test]
    fn every_file_parses_and_names_its_stream() {
        let layout = Layout::new(&StreamSettings::default()).unwrap();
        let names: Vec<&str> = layout
            .streams
            .iter()
            .map(|d| d.config.name.as_str())
            .collect();
        assert_eq!(names, [JOBS_STREAM, EVENTS_STREAM, DLQ_STREAM]);
        for (file, d) in STREAM_FILES.iter().zip(&layout.streams) {
            assert_eq!(file.stream, d.config.name);
            assert!(d.fields.contains(&"max_age".to_owned()), "{}", file.path);
        }
    }

    #[test]
    fn streams_match_the_spec() {
        let layout = Layout::new(&StreamSettings::default()).unwrap();
        let get = |name: &str| {
            &layout
                .streams
                .iter()
                .find(|d| d.config.name == name)
                .unwrap()
                .config
        };
        let jobs = get(JOBS_STREAM);
        assert_eq!(jobs.subjects, ["jobs.>"]);
        assert_eq!(jobs.retention, stream::RetentionPolicy::WorkQueue);
        assert_eq!(jobs.storage, stream::StorageType::File);
        assert_eq!(jobs.discard, stream::DiscardPolicy::New);
        assert_eq!(jobs.duplicate_window, Duration::from_secs(120));
        assert!(jobs.max_messages > 0 && jobs.max_bytes > 0 && jobs.max_message_size > 0);

        let events = get(EVENTS_STREAM);
        assert_eq!(events.subjects, ["events.>"]);
        assert_eq!(events.retention, stream::RetentionPolicy::Limits);
        assert_eq!(events.max_age, Duration::from_secs(3600));
        assert!(
            events.allow_direct,
            "the API replays events with direct get"
        );

        let dlq = get(DLQ_STREAM);
        assert_eq!(dlq.subjects, ["dlq.jobs.>"]);
        assert_eq!(dlq.retention, stream::RetentionPolicy::Limits);
        assert_eq!(dlq.max_age, Duration::from_secs(14 * 24 * 3600));
    }

    #[test]
    fn one_consumer_per_kind_with_explicit_ack_and_no_server_backoff() {
        let layout = Layout::new(&StreamSettings::default()).unwrap();
        let kinds: HashSet<&str> = JobKind::ALL.iter().map(|k| consumer_name(*k)).collect();
        let mut seen = HashSet::new();
        for (stream_name, d) in &layout.consumers {
            let c = &d.config;
            let name = c.durable_name.as_deref().unwrap();
            let kind: JobKind = name.parse().unwrap();
            assert_eq!(stream_name, JOBS_STREAM);
            assert_eq!(c.filter_subject, jobs_subject(kind));
            assert_eq!(c.ack_policy, jetstream::consumer::AckPolicy::Explicit);
            assert_eq!(c.deliver_policy, jetstream::consumer::DeliverPolicy::All);
            assert_eq!(c.replay_policy, jetstream::consumer::ReplayPolicy::Instant);
            assert_eq!(c.ack_wait, Duration::from_secs(30));
            assert_eq!(c.max_deliver, 5);
            assert!(c.max_ack_pending > 0);
            assert!(
                c.backoff.is_empty(),
                "{name}: retries are paced by NAK delays"
            );
            seen.insert(name);
        }
        assert_eq!(seen, kinds);
    }

    #[test]
    fn settings_override_the_files() {
        let defaults = StreamSettings::default();
        assert_eq!(defaults.replicas, 1);
        assert_eq!(defaults.events_max_age, Duration::from_secs(3600));
        assert_eq!(defaults.files_ttl, DEFAULT_FILES_TTL);

        let settings = StreamSettings {
            replicas: 3,
            jobs_max_msgs: 42,
            jobs_max_bytes: 4242,
            events_max_age: Duration::from_secs(60),
            dlq_max_age: Duration::from_secs(7200),
            files_ttl: Duration::from_secs(600),
            files_max_bytes: 1 << 30,
        };
        let layout = Layout::new(&settings).unwrap();
        for d in &layout.streams {
            assert_eq!(d.config.num_replicas, 3, "{}", d.config.name);
            match d.config.name.as_str() {
                JOBS_STREAM => {
                    assert_eq!(d.config.max_messages, 42);
                    assert_eq!(d.config.max_bytes, 4242);
                }
                EVENTS_STREAM => {
                    assert_eq!(d.config.max_age, Duration::from_secs(60));
                    assert_eq!(d.config.duplicate_window, Duration::from_secs(60));
                }
                _ => assert_eq!(d.config.max_age, Duration::from_secs(7200)),
            }
        }
        assert_eq!(layout.workers.num_replicas, 3);
        assert_eq!(layout.workers.name, "KV_WORKERS");
        assert_eq!(layout.workers.subjects, ["$KV.WORKERS.>"]);
        assert_eq!(layout.workers.max_messages_per_subject, 1);
        assert_eq!(layout.workers.max_age, WORKERS_TTL);
        assert_eq!(layout.files.num_replicas, 3);
        assert_eq!(layout.files.name, "OBJ_FILES");
        assert_eq!(layout.files.max_age, Duration::from_secs(600));
        assert_eq!(layout.files.max_bytes, 1 << 30);
    }

    #[test]
    fn diffs_only_the_given_fields_and_show_durations() {
        let desired = stream::Config {
            name: "JOB_EVENTS".into(),
            max_age: Duration::from_secs(3600),
            max_messages: 10,
            allow_direct: true,
            ..Default::default()
        };
        let actual = stream::Config {
            max_messages: 99,
            max_age: Duration::ZERO,
            ..desired.clone()
        };
        let fields = ["name", "max_age", "allow_direct"].map(String::from);
        let diffs = diff_fields(&actual, &desired, &fields);
        assert_eq!(diffs.len(), 1, "max_msgs is not a checked field: {diffs:?}");
        let drift = Drift::Differs {
            resource: Resource::Stream("JOB_EVENTS".into()),
            diff: diffs[0].clone(),
        };
        assert_eq!(
            drift.to_string(),
            "stream JOB_EVENTS: max_age is 0s, expected 1h"
        );

        let off = stream::Config {
            allow_direct: false,
            ..desired.clone()
        };
        assert_eq!(
            diff_fields(&off, &desired, &fields)[0].to_string(),
            "allow_direct is unset, expected true"
        );
        assert_eq!(
            Drift::Missing(Resource::Consumer {
                stream: "JOBS".into(),
                name: "llm".into()
            })
            .to_string(),
            "consumer JOBS > llm: missing"
        );
    }

    #[test]
    fn backoff_lists_show_as_durations() {
        let backoff: Value = serde_json::json!([30_000_000_000u64, 90_000_000_000u64]);
        assert_eq!(show("backoff", Some(&backoff)), "[30s, 1m30s]");
        assert_eq!(format_nanos(14 * 86_400_000_000_000), "14d");
        assert_eq!(format_nanos(1_500_000_000), "1s500ms");
        assert_eq!(show("max_msgs", Some(&serde_json::json!(-1))), "-1");
        assert_eq!(
            show("retention", Some(&serde_json::json!("limits"))),
            "limits"
        );
    }

    #[test]
    fn merging_keeps_the_other_fields() {
        let actual = stream::Config {
            name: "KV_WORKERS".into(),
            subjects: vec!["$KV.WORKERS.>".into()],
            allow_rollup: true,
            max_age: Duration::from_secs(600),
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        let desired = stream::Config {
            max_age: Duration::from_secs(30),
            ..Default::default()
        };
        let merged = merge_fields(&actual, &desired, &["max_age".into()]).unwrap();
        assert_eq!(merged.max_age, Duration::from_secs(30));
        assert_eq!(merged.duplicate_window, Duration::from_secs(30));
        assert_eq!(merged.name, "KV_WORKERS");
        assert!(merged.allow_rollup);
    }
}
