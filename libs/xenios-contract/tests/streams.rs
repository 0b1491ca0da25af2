//! The NATS contract against a real, private nats-server.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use xenios_contract::envelope::header;
use xenios_contract::streams::{
    apply, check, Change, Resource, StreamSettings, CONSUMER_FILES, STREAM_FILES,
};
use xenios_contract::subjects::{
    events_subject, CORRELATION_ID_HEADER, EVENTS_STREAM, FILES_BUCKET, JOBS_STREAM, MSG_ID_HEADER,
    REPLY_HEADER, WORKERS_BUCKET,
};
use xenios_contract::{new_job_id, Drift, JobCommand, JobEvent, JobKind, JobStatus};
use xenios_devstack::NatsServer;

async fn connect(nats: &NatsServer) -> (async_nats::Client, jetstream::Context) {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    (client, js)
}

/// What the JetStream API answered, failing the test on an `error` answer.
async fn api(client: &async_nats::Client, subject: String, body: String) -> Value {
    let reply = client.request(subject.clone(), body.into()).await.unwrap();
    let answer: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(
        answer.get("error").is_none(),
        "{subject} refused the file: {answer}"
    );
    answer
}

#[tokio::test]
async fn the_files_are_accepted_verbatim_by_the_jetstream_api() {
    let nats = NatsServer::start().unwrap();
    let (client, _) = connect(&nats).await;

    for file in STREAM_FILES {
        let subject = format!("$JS.API.STREAM.CREATE.{}", file.stream);
        let answer = api(&client, subject, file.json.to_owned()).await;
        assert_eq!(answer["config"]["name"], file.stream, "{}", file.path);
    }
    for file in CONSUMER_FILES {
        let config: Value = serde_json::from_str(file.json).unwrap();
        let name = config["durable_name"].as_str().unwrap();
        // As `nats consumer add JOBS --config FILE` sends it.
        let subject = format!("$JS.API.CONSUMER.DURABLE.CREATE.{}.{name}", file.stream);
        let body = format!(
            r#"{{"stream_name":"{}","config":{}}}"#,
            file.stream, file.json
        );
        let answer = api(&client, subject, body).await;
        let created = &answer["config"];
        assert_eq!(created["durable_name"], name);
        // The server keeps what the file asks for: nothing is silently rewritten.
        for field in ["ack_wait", "max_deliver", "backoff", "filter_subject"] {
            assert_eq!(created[field], config[field], "{}: {field}", file.path);
        }
    }
}

#[tokio::test]
async fn apply_creates_everything_once_and_check_finds_no_drift() {
    let nats = NatsServer::start().unwrap();
    let (_, js) = connect(&nats).await;
    let settings = StreamSettings::default();

    let report = apply(&js, &settings).await.unwrap();
    let created: Vec<String> = report
        .changes
        .iter()
        .map(|c| match c {
            Change::Created(r) => r.to_string(),
            other => panic!("a fresh server only needs creating, got {other}"),
        })
        .collect();
    assert_eq!(
        created,
        [
            "stream JOBS",
            "stream JOB_EVENTS",
            "stream JOBS_DLQ",
            "consumer JOBS > transcription",
            "consumer JOBS > extraction",
            "consumer JOBS > llm",
            "consumer JOBS > echo",
            "key-value bucket WORKERS",
            "object store FILES",
        ]
    );

    let again = apply(&js, &settings).await.unwrap();
    assert!(again.is_unchanged(), "second apply changed: {again}");
    assert_eq!(again.to_string(), "no change");
    assert_eq!(check(&js, &settings).await.unwrap(), []);

    let workers = js.get_key_value(WORKERS_BUCKET).await.unwrap();
    workers.put("consumer-1", "alive".into()).await.unwrap();
    assert_eq!(
        workers.get("consumer-1").await.unwrap(),
        Some(Bytes::from("alive"))
    );
    let status = workers.status().await.unwrap();
    assert_eq!(status.history(), 1);
    assert_eq!(status.max_age(), Duration::from_secs(30));

    let files = js.get_object_store(FILES_BUCKET).await.unwrap();
    let mut upload: &[u8] = b"%PDF-1.7 tiny";
    files.put("file-1", &mut upload).await.unwrap();
    let mut object = files.get("file-1").await.unwrap();
    let mut body = Vec::new();
    object.read_to_end(&mut body).await.unwrap();
    assert_eq!(body, b"%PDF-1.7 tiny");
    let info = js.get_stream("OBJ_FILES").await.unwrap();
    assert_eq!(
        info.cached_info().config.max_age,
        Duration::from_secs(24 * 3600)
    );
}

#[tokio::test]
async fn check_reports_hand_made_changes_and_apply_repairs_them() {
    let nats = NatsServer::start().unwrap();
    let (_, js) = connect(&nats).await;
    let settings = StreamSettings::default();
    apply(&js, &settings).await.unwrap();

    // An operator's edits: events kept forever, a consumer deleted, another throttled, the
    // worker TTL shortened.
    let mut events = js
        .get_stream(EVENTS_STREAM)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    events.max_age = Duration::ZERO;
    js.update_stream(&events).await.unwrap();
    js.get_stream(JOBS_STREAM)
        .await
        .unwrap()
        .delete_consumer("echo")
        .await
        .unwrap();
    let mut llm = js
        .get_stream(JOBS_STREAM)
        .await
        .unwrap()
        .consumer_info("llm")
        .await
        .unwrap()
        .config;
    llm.max_ack_pending = 10;
    js.update_consumer_on_stream(llm, JOBS_STREAM)
        .await
        .unwrap();
    let mut workers = js
        .get_stream("KV_WORKERS")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    workers.max_age = Duration::from_secs(5);
    workers.duplicate_window = Duration::from_secs(5);
    js.update_stream(&workers).await.unwrap();

    let drift: Vec<String> = check(&js, &settings)
        .await
        .unwrap()
        .iter()
        .map(Drift::to_string)
        .collect();
    assert_eq!(
        drift,
        [
            "stream JOB_EVENTS: max_age is 0s, expected 1h",
            "consumer JOBS > llm: max_ack_pending is 10, expected 256",
            "consumer JOBS > echo: missing",
            "key-value bucket WORKERS: max_age is 5s, expected 30s",
        ]
    );

    let report = apply(&js, &settings).await.unwrap();
    let lines: Vec<String> = report.changes.iter().map(Change::to_string).collect();
    assert_eq!(
        lines,
        [
            "updated stream JOB_EVENTS: max_age 0s -> 1h",
            "updated consumer JOBS > llm: max_ack_pending 10 -> 256",
            "created consumer JOBS > echo",
            "updated key-value bucket WORKERS: max_age 5s -> 30s",
        ]
    );
    assert_eq!(check(&js, &settings).await.unwrap(), []);
    // The bucket is still a working bucket after its stream was updated.
    let kv = js.get_key_value(WORKERS_BUCKET).await.unwrap();
    kv.put("consumer-2", "alive".into()).await.unwrap();
}

#[tokio::test]
async fn new_settings_are_drift_until_applied() {
    let nats = NatsServer::start().unwrap();
    let (_, js) = connect(&nats).await;
    apply(&js, &StreamSettings::default()).await.unwrap();

    let settings = StreamSettings {
        events_max_age: Duration::from_secs(2 * 3600),
        jobs_max_msgs: 500,
        files_ttl: Duration::from_secs(3600),
        ..StreamSettings::default()
    };
    let drift: Vec<String> = check(&js, &settings)
        .await
        .unwrap()
        .iter()
        .map(Drift::to_string)
        .collect();
    assert_eq!(
        drift,
        [
            "stream JOBS: max_msgs is 100000, expected 500",
            "stream JOB_EVENTS: max_age is 1h, expected 2h",
            "object store FILES: max_age is 1d, expected 1h",
        ]
    );
    let report = apply(&js, &settings).await.unwrap();
    assert_eq!(report.changes.len(), 3, "{report}");
    assert!(report
        .changes
        .iter()
        .all(|c| matches!(c, Change::Updated { .. })));
    assert_eq!(check(&js, &settings).await.unwrap(), []);
    assert!(matches!(
        &check(&js, &StreamSettings::default()).await.unwrap()[..],
        [
            Drift::Differs {
                resource: Resource::Stream(_),
                ..
            },
            ..
        ]
    ));
}

#[tokio::test]
async fn a_command_travels_with_the_spec_headers_once() {
    let nats = NatsServer::start().unwrap();
    let (_, js) = connect(&nats).await;
    apply(&js, &StreamSettings::default()).await.unwrap();

    let command = JobCommand {
        job_id: new_job_id(),
        kind: JobKind::Echo,
        user_id: Some("user-1".into()),
        input: json!({"message": "ping"}),
        submitted_at: Utc::now(),
    };
    for _ in 0..2 {
        js.publish_with_headers(
            command.subject(),
            command.headers("corr-42"),
            command.to_bytes(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let mut jobs = js.get_stream(JOBS_STREAM).await.unwrap();
    assert_eq!(
        jobs.info().await.unwrap().state.messages,
        1,
        "the duplicate window drops the second publish of the same job"
    );

    let consumer: PullConsumer = jobs.get_consumer("echo").await.unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    let msg = batch.next().await.unwrap().unwrap();
    let headers = msg.headers.as_ref();
    let job_id = command.job_id.to_string();
    assert_eq!(header(headers, MSG_ID_HEADER), Some(job_id.as_str()));
    assert_eq!(header(headers, CORRELATION_ID_HEADER), Some("corr-42"));
    let reply = events_subject(command.job_id);
    assert_eq!(header(headers, REPLY_HEADER), Some(reply.as_str()));
    assert_eq!(JobCommand::from_slice(&msg.payload).unwrap(), command);
    msg.ack().await.unwrap();

    // The consumer's answer comes back on the reply subject and can be replayed by direct get.
    let event = JobEvent::status(JobStatus::Succeeded, 1, Utc::now());
    js.publish(reply.clone(), event.to_bytes())
        .await
        .unwrap()
        .await
        .unwrap();
    let events = js.get_stream(EVENTS_STREAM).await.unwrap();
    let stored = events.direct_get_last_for_subject(&reply).await.unwrap();
    assert_eq!(JobEvent::from_slice(&stored.payload).unwrap(), event);
}

#[tokio::test]
async fn the_layout_and_queued_commands_survive_a_broker_restart() {
    let mut nats = NatsServer::start().unwrap();
    let (_, js) = connect(&nats).await;
    let settings = StreamSettings::default();
    apply(&js, &settings).await.unwrap();
    js.publish("jobs.llm", Bytes::from_static(b"{}"))
        .await
        .unwrap()
        .await
        .unwrap();

    let port = nats.port();
    nats.stop();
    nats.start_again().unwrap();
    assert_eq!(nats.port(), port);
    let (_, js) = connect(&nats).await;
    assert_eq!(check(&js, &settings).await.unwrap(), []);

    nats.kill();
    nats.start_again().unwrap();
    let (_, js) = connect(&nats).await;
    assert!(apply(&js, &settings).await.unwrap().is_unchanged());
    let mut jobs = js.get_stream(JOBS_STREAM).await.unwrap();
    assert_eq!(jobs.info().await.unwrap().state.messages, 1);
}
