//! The job pipeline end to end: HTTP in, JetStream, consumers, store, SSE out — with real
//! nats-server, real databases and, where a crash matters, real processes.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use xenios_contract::envelope::{DeadLetter, JobCommand};
use xenios_contract::subjects::{DLQ_STREAM, EVENTS_STREAM, JOBS_STREAM};
use xenios_contract::JobKind;

async fn lifecycle(db: Db) {
    let stack = Stack::start(db).await;
    let response = stack
        .post("/api/v1/jobs")
        .json(&json!({"kind": "echo", "input": {"message": {"hello": "world"}, "progress_steps": 3, "delay_ms": 150}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let id = body["job_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/v1/jobs/{id}"));
    assert_eq!(body["status"], "queued");
    assert_eq!(body["kind"], "echo");
    assert_eq!(body["links"]["events"], format!("/api/v1/jobs/{id}/events"));

    let events = stack.events(&id, None, Duration::from_secs(20)).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        kinds,
        ["status", "status", "progress", "progress", "progress", "result", "status"],
        "{events:?}"
    );
    let statuses: Vec<Value> = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("status"))
        .map(|e| e.json()["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [json!("queued"), json!("running"), json!("succeeded")]
    );
    assert_eq!(events[4].json()["percent"], 100.0);
    assert_eq!(events[5].json(), json!({"message": {"hello": "world"}}));
    let ids: Vec<u64> = events
        .iter()
        .map(|e| e.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

    let job = stack.job(&id).await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["result"], json!({"message": {"hello": "world"}}));
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["user_id"], USER);
    assert!(job["started_at"].is_string() && job["finished_at"].is_string());
    assert_eq!(job["progress"]["percent"], 100.0);

    // Resuming after the third event gives exactly the later ones.
    let resumed = stack
        .events(&id, events[2].id.as_deref(), Duration::from_secs(10))
        .await;
    let resumed_ids: Vec<&str> = resumed.iter().map(|e| e.id.as_deref().unwrap()).collect();
    let expected: Vec<&str> = events[3..]
        .iter()
        .map(|e| e.id.as_deref().unwrap())
        .collect();
    assert_eq!(resumed_ids, expected);

    // A client arriving after the end gets the whole story replayed.
    let replay = stack.events(&id, None, Duration::from_secs(10)).await;
    assert_eq!(replay.len(), events.len());
    assert_eq!(replay.last().unwrap().json()["status"], "succeeded");

    // The list shows it, newest first, with a working cursor.
    let second = stack.submit("echo", json!({"message": 2})).await;
    let page: Value = stack
        .get("/api/v1/jobs?limit=1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["jobs"][0]["id"], second);
    let cursor = page["next_cursor"].as_str().unwrap();
    let page: Value = stack
        .get(&format!("/api/v1/jobs?limit=1&cursor={cursor}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["jobs"][0]["id"], id);
    let filtered: Value = stack
        .get("/api/v1/jobs?status=succeeded&kind=echo")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(filtered["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["status"] == "succeeded"));
    let bad = stack
        .get("/api/v1/jobs?status=sleeping")
        .send()
        .await
        .unwrap();
    error_body(bad, 422, "invalid_input").await;
    // Empty parameters, as a URL template leaves them, filter nothing.
    let all = stack
        .get("/api/v1/jobs?kind=&status=&limit=&cursor=")
        .send()
        .await
        .unwrap();
    assert_eq!(all.status(), 200);
    let all: Value = all.json().await.unwrap();
    assert_eq!(all["jobs"].as_array().unwrap().len(), 2);
    for (query, field) in [
        ("limit=many", "limit"),
        ("limit=0", "limit"),
        ("cursor=x", "cursor"),
    ] {
        let bad = stack
            .get(&format!("/api/v1/jobs?{query}"))
            .send()
            .await
            .unwrap();
        let body = error_body(bad, 422, "invalid_input").await;
        assert_eq!(
            body["error"]["details"][0]["field"], field,
            "{query}: {body}"
        );
    }

    let metrics = stack.metrics().await;
    for name in [
        "xenios_jobs_submitted_total",
        "xenios_jobs_completed_total",
        "xenios_job_duration_seconds",
        "xenios_job_queue_wait_seconds",
        "xenios_job_submit_stage_seconds_count{kind=\"echo\",stage=\"record\"}",
        "xenios_job_submit_stage_seconds_count{kind=\"echo\",stage=\"publish\"}",
        "xenios_job_start_seconds_count{kind=\"echo\"}",
        "xenios_jobs_in_flight",
        // Series of kinds nothing ran yet exist at zero, for alerts on their increase.
        "xenios_dead_letters_total{kind=\"extraction\"}",
        "xenios_jobs_completed_total{kind=\"transcription\",outcome=\"failed\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
}

#[tokio::test]
async fn echo_lifecycle_on_sqlite() {
    lifecycle(Db::Sqlite).await;
}

#[tokio::test]
async fn echo_lifecycle_on_postgres() {
    lifecycle(Db::Postgres).await;
}

/// A job can end without its terminal event reaching the stream (its consumer killed between
/// recording the outcome and announcing it): a client following it is told the outcome from
/// the store once the stream has been silent for a few keep-alives, rather than kept waiting.
#[tokio::test]
async fn a_job_that_ends_unannounced_still_ends_its_event_stream() {
    let stack = Stack::start_with(Db::Sqlite, &[("api.sse_keepalive_secs", "1")], 0).await;
    let id = stack
        .submit("echo", json!({"message": "unannounced"}))
        .await;
    let response = stack
        .get(&format!("/api/v1/jobs/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let job_id = id.parse().unwrap();
    stack.store.start_attempt(job_id).await.unwrap();
    stack
        .store
        .finish_job(
            job_id,
            xenios_store::Outcome::Succeeded(json!({"message": "unannounced"})),
        )
        .await
        .unwrap()
        .expect("recorded");
    let events = read_sse(response, Duration::from_secs(20)).await;
    let last = events.last().expect("events");
    assert_eq!(last.event.as_deref(), Some("status"), "{events:?}");
    assert_eq!(last.json()["status"], "succeeded");
    let result = events.iter().find(|e| e.event.as_deref() == Some("result"));
    assert_eq!(result.unwrap().json()["message"], "unannounced");
}

/// What `Last-Event-ID` does at and past a job's end. A browser's EventSource reconnects with
/// the last id it saw whenever a stream ends, so the answer to "I have the terminal status"
/// must be `204` (which stops it), not a stream that never ends or the outcome once more.
#[tokio::test]
async fn resuming_at_or_past_the_end_of_a_job() {
    let stack = Stack::start(Db::Sqlite).await;
    let id = stack.submit("echo", json!({"message": "done"})).await;
    let events = stack.events(&id, None, Duration::from_secs(10)).await;
    let terminal = events.last().unwrap();
    assert_eq!(terminal.json()["status"], "succeeded");
    let resume = |api: &Api, last: &str| {
        api.get(&format!("/api/v1/jobs/{id}/events"))
            .header("Last-Event-ID", last)
            .timeout(Duration::from_secs(10))
            .send()
    };
    let answer = resume(&stack.api, terminal.id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(answer.status(), 204);

    // An id past the job's last event, while it runs: the events still to come arrive, and
    // the stream ends with the terminal status.
    let running = stack
        .submit("echo", json!({"message": "later", "delay_ms": 800}))
        .await;
    let response = stack
        .get(&format!("/api/v1/jobs/{running}/events"))
        .header("Last-Event-ID", "999999999")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let later = read_sse(response, Duration::from_secs(10)).await;
    assert_eq!(later.last().unwrap().json()["status"], "succeeded", "ends");

    // Past retention, another instance (whose memory holds nothing of the job) tells the
    // outcome from the store, ids `<seq>.<n>`; resuming from one of those sends only the rest.
    let events_stream = jetstream::new(stack.nats_client.clone())
        .get_stream("JOB_EVENTS")
        .await
        .unwrap();
    events_stream
        .purge()
        .filter(format!("events.{id}"))
        .await
        .unwrap();
    let other = Api::new(serve_api(&stack.settings).await);
    let told = other.events(&id, None, Duration::from_secs(10)).await;
    let told: Vec<(&str, &str)> = told
        .iter()
        .map(|e| (e.id.as_deref().unwrap(), e.event.as_deref().unwrap()))
        .collect();
    assert_eq!(told, [("0.1", "result"), ("0.3", "status")]);
    let rest = other
        .events(&id, Some("0.1"), Duration::from_secs(10))
        .await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id.as_deref(), Some("0.3"));
    assert_eq!(rest[0].json()["status"], "succeeded");
    let answer = resume(&other, "0.3").await.unwrap();
    assert_eq!(answer.status(), 204);
}

#[tokio::test]
async fn idempotency_key_and_duplicate_commands_run_once() {
    let stack = Stack::start(Db::Sqlite).await;
    let submit = |user: &'static str| {
        stack
            .authed(stack.http.post(stack.url("/api/v1/jobs")), user)
            .header("Idempotency-Key", "order-42")
            .json(&json!({"kind": "echo", "input": {"message": "once"}}))
            .send()
    };
    let first = submit(USER).await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again = submit(USER).await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["job_id"], again["job_id"]);
    let other = submit(OTHER_USER).await.unwrap();
    assert_eq!(other.status(), 202);
    let other: Value = other.json().await.unwrap();
    assert_ne!(other["job_id"], first["job_id"]);
    // The key with another request is refused, and makes nothing.
    let reused = stack
        .authed(stack.http.post(stack.url("/api/v1/jobs")), USER)
        .header("Idempotency-Key", "order-42")
        .json(&json!({"kind": "echo", "input": {"message": "twice"}}))
        .send()
        .await
        .unwrap();
    let error = error_body(reused, 422, "invalid_input").await;
    assert_eq!(
        error["error"]["details"][0]["field"], "Idempotency-Key",
        "{error}"
    );

    let id = first["job_id"].as_str().unwrap();
    stack
        .wait_for(id, &["succeeded"], Duration::from_secs(20))
        .await;

    // The same command published again (same Nats-Msg-Id) is dropped or skipped.
    let job = stack
        .store
        .get_job(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let command = JobCommand {
        job_id: job.id,
        kind: JobKind::Echo,
        user_id: job.user_id.clone(),
        input: job.input.clone(),
        submitted_at: job.created_at,
    };
    let js = jetstream::new(stack.nats_client.clone());
    for _ in 0..3 {
        let ack = js
            .publish_with_headers(
                command.subject(),
                command.headers("dup"),
                command.to_bytes(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(ack.duplicate, "the duplicate window drops it");
    }
    // Even past the window, a command for a finished job is acked and skipped.
    let mut headers = command.headers("late");
    // Parsed, so it replaces the command's own (a name given as text is a second header).
    let msg_id: async_nats::header::HeaderName = "Nats-Msg-Id".parse().unwrap();
    headers.insert(msg_id, format!("{}-late", job.id).as_str());
    js.publish_with_headers(command.subject(), headers, command.to_bytes())
        .await
        .unwrap()
        .await
        .unwrap();
    eventually(Duration::from_secs(10), || {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream(JOBS_STREAM).await.unwrap();
            stream.info().await.unwrap().state.messages == 0
        }
    })
    .await;
    let job = stack.job(id).await;
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["status"], "succeeded");

    // A bad key is refused.
    let long = "k".repeat(300);
    let r = stack
        .post("/api/v1/jobs")
        .header("Idempotency-Key", long)
        .json(&json!({"kind": "echo", "input": {"message": 1}}))
        .send()
        .await
        .unwrap();
    error_body(r, 422, "invalid_input").await;
}

/// A full queue refuses a submission with 503 and `Retry-After`, and keeps nothing of it: the
/// same `Idempotency-Key` submitted again once there is room makes the job.
#[tokio::test]
async fn a_full_queue_refuses_submissions_until_there_is_room() {
    let mut stack = Stack::start_with(Db::Sqlite, &[("nats.jobs_max_msgs", "2")], 0).await;
    let submit = |api: &Api| {
        api.post("/api/v1/jobs")
            .header("Idempotency-Key", "retry-me")
            .json(&json!({"kind": "echo", "input": {"message": "later"}}))
            .send()
    };
    let queued = [
        stack.submit("echo", json!({"message": 1})).await,
        stack.submit("echo", json!({"message": 2})).await,
    ];
    for _ in 0..2 {
        let refused = submit(&stack.api).await.unwrap();
        assert_eq!(refused.headers()["retry-after"], "5");
        error_body(refused, 503, "unavailable").await;
    }
    let page = stack.get_json("/api/v1/jobs").await;
    assert_eq!(
        page["jobs"].as_array().unwrap().len(),
        2,
        "nothing kept: {page}"
    );
    // A refused submission is not one that will ever complete, so it is not counted as
    // submitted. Of a kind no other test of this binary submits: the registry is the
    // process's, shared with the tests running beside this one.
    let refused = stack
        .post("/api/v1/jobs")
        .json(&json!({"kind": "transcription", "input": {"url": "http://no-such-host.invalid/a.mp3"}}))
        .send()
        .await
        .unwrap();
    error_body(refused, 503, "unavailable").await;
    let metrics = stack.metrics().await;
    assert!(
        metrics.contains("xenios_jobs_submitted_total{kind=\"transcription\"} 0\n"),
        "{metrics}"
    );

    stack.start_worker().await;
    for id in &queued {
        stack
            .wait_for(id, &["succeeded"], Duration::from_secs(20))
            .await;
    }
    let accepted = submit(&stack.api).await.unwrap();
    assert_eq!(accepted.status(), 202);
    let id = accepted.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = stack
        .wait_for(&id, &["succeeded"], Duration::from_secs(20))
        .await;
    assert_eq!(job["result"], json!({"message": "later"}));
}

/// No consumer, a sweeper quick to act once started, and a queue of two commands, full.
async fn stack_with_a_full_queue() -> Stack {
    let stack = Stack::start_with(
        Db::Sqlite,
        &[
            ("nats.jobs_max_msgs", "2"),
            ("consumer.sweeper_delay_secs", "1"),
            ("consumer.sweeper_interval_secs", "1"),
        ],
        0,
    )
    .await;
    stack.submit("echo", json!({"message": 1})).await;
    stack.submit("echo", json!({"message": 2})).await;
    stack
}

/// Retries of one submission racing a full queue: the first makes the job, its command is
/// refused and its record taken back, while the others look the job up or meet it inserting.
/// Whatever each is told, a job any of them was answered with runs; none is named and then
/// gone (a take-back after a retry was answered with the job would be).
#[tokio::test]
async fn a_job_a_retry_was_answered_with_runs_though_the_queue_refused_it() {
    let mut stack = stack_with_a_full_queue().await;
    let mut named = std::collections::BTreeSet::new();
    for round in 0..5 {
        let tries = (0..12).map(|_| {
            stack
                .post("/api/v1/jobs")
                .header("Idempotency-Key", format!("race-{round}"))
                .json(&json!({"kind": "echo", "input": {"message": round}}))
                .send()
        });
        for response in futures::future::join_all(tries).await {
            let response = response.unwrap();
            match response.status().as_u16() {
                503 => {}
                200 | 202 => {
                    let body: Value = response.json().await.unwrap();
                    named.insert((round, body["job_id"].as_str().unwrap().to_owned()));
                }
                other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
            }
        }
    }
    for (round, id) in &named {
        let job = stack.job(id).await;
        assert_eq!(job["input"]["message"], *round, "{job}");
    }
    stack.start_worker().await;
    stack.start_sweeper();
    for (_, id) in &named {
        stack
            .wait_for(id, &["succeeded"], Duration::from_secs(30))
            .await;
    }
    let rounds: std::collections::BTreeSet<_> = named.iter().map(|(round, _)| round).collect();
    assert_eq!(rounds.len(), named.len(), "one job per key: {named:?}");
}

/// A full queue's refusal whose take-back the database fails: the record stands, so the
/// submission is accepted (`202`; a `503` would have a client without an `Idempotency-Key`
/// submit it again and get it twice), and the sweeper publishes it once there is room.
#[tokio::test]
async fn a_refused_job_the_database_cannot_take_back_is_accepted_and_runs() {
    let mut stack = stack_with_a_full_queue().await;
    refuse_jobs_with(&stack.db_url, JobWrite::Removal, "$.message", "stays").await;
    let accepted = stack
        .post("/api/v1/jobs")
        .json(&json!({"kind": "echo", "input": {"message": "stays"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let id = accepted.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(stack.job(&id).await["status"], "queued");
    // A refusal the database does take back still keeps nothing.
    let refused = stack
        .post("/api/v1/jobs")
        .json(&json!({"kind": "echo", "input": {"message": "gone"}}))
        .send()
        .await
        .unwrap();
    error_body(refused, 503, "unavailable").await;
    let page = stack.get_json("/api/v1/jobs").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 3, "{page}");

    stack.start_worker().await;
    stack.start_sweeper();
    let job = stack
        .wait_for(&id, &["succeeded"], Duration::from_secs(30))
        .await;
    assert_eq!(job["result"], json!({"message": "stays"}));
}

#[tokio::test]
async fn cancel_queued_running_and_finished_jobs() {
    let mut stack = Stack::start_with(Db::Sqlite, &[], 0).await;
    // No consumer yet: the job stays queued, and a cancelled queued job never starts.
    let queued = stack.submit("echo", json!({"message": "never"})).await;
    let r = stack.cancel(&queued).await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");
    stack.start_worker().await;
    let done = stack.submit("echo", json!({"message": "after"})).await;
    stack
        .wait_for(&done, &["succeeded"], Duration::from_secs(20))
        .await;
    let job = stack.job(&queued).await;
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["attempts"], 0, "a cancelled queued job never runs");
    // The job object's shape holds before any progress is reported.
    assert_eq!(
        job["progress"],
        json!({"percent": null, "stage": null, "message": null})
    );
    let events = stack.events(&queued, None, Duration::from_secs(10)).await;
    assert_eq!(events.last().unwrap().json()["status"], "cancelled");

    // A running job is interrupted.
    let running = stack
        .submit(
            "echo",
            json!({"message": "long", "delay_ms": 60000, "progress_steps": 60}),
        )
        .await;
    stack
        .wait_for(&running, &["running"], Duration::from_secs(20))
        .await;
    let r = stack.cancel(&running).await;
    assert_eq!(r.status(), 202);
    let job = stack
        .wait_for(&running, &["cancelled"], Duration::from_secs(10))
        .await;
    assert_eq!(job["attempts"], 1);

    // Finished jobs cannot be cancelled.
    let r = stack.cancel(&done).await;
    error_body(r, 409, "conflict").await;
    let r = stack.cancel(&queued).await;
    error_body(r, 409, "conflict").await;
    let r = stack.cancel("00000000-0000-7000-8000-000000000000").await;
    error_body(r, 404, "not_found").await;
}

async fn dead_letters(stack: &Stack) -> Vec<DeadLetter> {
    let js = jetstream::new(stack.nats_client.clone());
    let stream = js.get_stream(DLQ_STREAM).await.unwrap();
    let mut letters = Vec::new();
    let mut seq = 0;
    while let Ok(message) = stream
        .direct_get_next_for_subject("dlq.jobs.>", Some(seq + 1))
        .await
    {
        seq = xenios_contract::envelope::header(message.headers.as_ref(), "Nats-Sequence")
            .unwrap()
            .parse()
            .unwrap();
        letters.push(DeadLetter::from_slice(&message.payload).unwrap());
    }
    letters
}

#[tokio::test]
async fn failures_retry_dead_letter_and_time_out() {
    let stack = Stack::start_with(
        Db::Sqlite,
        &[
            ("jobs.echo.soft_limit_secs", "1"),
            ("jobs.echo.hard_limit_secs", "3"),
        ],
        1,
    )
    .await;

    // Transient twice, then fine: retried with backoff and succeeds on the third try.
    let flaky = stack
        .submit(
            "echo",
            json!({"message": "flaky", "fail": "transient", "fail_attempts": 2}),
        )
        .await;
    let job = stack
        .wait_for(&flaky, &["succeeded", "failed"], Duration::from_secs(30))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 3);
    let events = stack.events(&flaky, None, Duration::from_secs(10)).await;
    let errors = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("error"))
        .count();
    assert_eq!(errors, 2, "each failed try is reported: {events:?}");

    // Permanent: not retried.
    let broken = stack
        .submit("echo", json!({"message": "no", "fail": "permanent"}))
        .await;
    let job = stack
        .wait_for(&broken, &["failed"], Duration::from_secs(20))
        .await;
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["error"]["code"], "echo_permanent");
    assert_eq!(job["error"]["retryable"], false);

    // Always transient: five tries, then failed with a dead letter.
    let hopeless = stack
        .submit("echo", json!({"message": "never", "fail": "transient"}))
        .await;
    let job = stack
        .wait_for(&hopeless, &["failed"], Duration::from_secs(30))
        .await;
    assert_eq!(job["attempts"], 5);
    assert_eq!(job["error"]["code"], "echo_transient");
    let letters = dead_letters(&stack).await;
    let letter = letters
        .iter()
        .find(|l| l.command.job_id.to_string() == hopeless)
        .expect("a dead letter for the job");
    assert_eq!(letter.error.code, "echo_transient");
    assert_eq!(letter.attempts, 5);
    assert!(letters
        .iter()
        .all(|l| l.command.job_id.to_string() != broken));

    // Past the soft limit the attempt fails as `timeout`.
    let slow = stack
        .authed(stack.http.post(stack.url("/api/v1/jobs")), USER)
        .json(&json!({"kind": "echo", "input": {"message": "slow", "delay_ms": 20000}}))
        .send()
        .await
        .unwrap();
    let slow: Value = slow.json().await.unwrap();
    let slow = slow["job_id"].as_str().unwrap();
    let events = stack.events(slow, None, Duration::from_secs(8)).await;
    let first_error = events
        .iter()
        .find(|e| e.event.as_deref() == Some("error"))
        .unwrap_or_else(|| panic!("a timeout error event: {events:?}"));
    assert_eq!(first_error.json()["code"], "timeout");
    let metrics = stack.metrics().await;
    assert!(metrics.contains("xenios_dead_letters_total"), "{metrics}");
    assert!(
        metrics.contains("xenios_job_redeliveries_total"),
        "{metrics}"
    );
}

/// A job recorded in the store and never published (as a crash between the two leaves it).
async fn record_only(store: &xenios_store::Store, kind: JobKind, input: Value) -> uuid::Uuid {
    let id = xenios_contract::new_job_id();
    store
        .create_job(xenios_store::NewJob {
            id,
            kind,
            user_id: Some(USER.into()),
            input,
            correlation_id: "recorded-only".into(),
            idempotency_key: None,
            webhook_url: None,
        })
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn the_sweeper_publishes_a_recorded_but_unpublished_job() {
    let stack = Stack::start(Db::Sqlite).await;
    let id = record_only(&stack.store, JobKind::Echo, json!({"message": "swept"})).await;
    // Recorded, never published: nothing happens until the sweeper runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack.job(&id.to_string()).await["status"], "queued");
    let js = jetstream::new(stack.nats_client.clone());
    let published = xenios_runtime::sweeper::sweep_once(&stack.store, &js, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(published, 1);
    let job = stack
        .wait_for(&id.to_string(), &["succeeded"], Duration::from_secs(20))
        .await;
    assert_eq!(job["result"], json!({"message": "swept"}));
    assert_eq!(job["correlation_id"], "recorded-only");
    // Finished jobs are not swept again.
    assert_eq!(
        xenios_runtime::sweeper::sweep_once(&stack.store, &js, Duration::ZERO)
            .await
            .unwrap(),
        0
    );
}

/// A command gone from `JOBS` within the duplicate window of its first publish (terminated on
/// its last delivery, or lost) is published again, not dropped as a duplicate of itself.
#[tokio::test]
async fn the_sweeper_publishes_a_job_whose_command_vanished_within_the_duplicate_window() {
    let mut stack = Stack::start_with(Db::Sqlite, &[], 0).await;
    let js = jetstream::new(stack.nats_client.clone());
    let mut commands = js.get_stream(JOBS_STREAM).await.unwrap();
    // Several: a copy carrying two `Nats-Msg-Id`s, the job id among them, is dropped about
    // half the time.
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(stack.submit("echo", json!({"message": i})).await);
        let command = commands.info().await.unwrap().state.last_sequence;
        assert!(commands.delete_message(command).await.unwrap());
    }

    let published = xenios_runtime::sweeper::sweep_once(&stack.store, &js, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(published, ids.len());
    let held = commands.info().await.unwrap().state.messages;
    assert_eq!(held, ids.len() as u64, "copies stored");
    stack.start_worker().await;
    for id in &ids {
        stack
            .wait_for(id, &["succeeded"], Duration::from_secs(20))
            .await;
    }
}

/// Jobs waiting in a backlog are not published again: their commands may be in the stream,
/// and copies would pile up once the duplicate window is past. Jobs of a kind without one are.
#[tokio::test]
async fn the_sweeper_leaves_a_backlog_alone() {
    let mut stack = Stack::start_with(Db::Sqlite, &[], 0).await;
    for i in 0..3 {
        stack.submit("echo", json!({"message": i})).await;
    }
    record_only(
        &stack.store,
        JobKind::Extraction,
        json!({"file_id": "gone"}),
    )
    .await;
    let js = jetstream::new(stack.nats_client.clone());
    let published = xenios_runtime::sweeper::sweep_once(&stack.store, &js, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(published, 1, "the extraction job only");
    let mut jobs = js.get_stream(JOBS_STREAM).await.unwrap();
    assert_eq!(jobs.info().await.unwrap().state.messages, 4);

    // Once the backlog is worked off, nothing of it is left to publish.
    stack.start_worker().await;
    eventually(Duration::from_secs(20), || async {
        let page = stack
            .get_json("/api/v1/jobs?kind=echo&status=succeeded")
            .await;
        page["jobs"].as_array().unwrap().len() == 3
    })
    .await;
}

/// A running job whose consumer is gone and whose command the broker will not deliver again
/// (its deliveries spent, or lost) is queued and run again, or failed and dead-lettered once
/// it has had its tries; a job whose consumer still renews its lease is left alone.
async fn abandoned_running_jobs_are_taken_up(db: Db) {
    let mut stack = Stack::start_with(db, &[], 0).await;
    let js = jetstream::new(stack.nats_client.clone());
    let running = |attempts: usize| {
        let store = stack.store.clone();
        async move {
            let id = record_only(&store, JobKind::Echo, json!({"message": "taken up"})).await;
            for _ in 0..attempts {
                store.start_attempt(id).await.unwrap();
            }
            id
        }
    };
    let again = running(1).await;
    let spent = running(5).await;
    let held = running(1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        stack.store.renew_lease(held, 1).await.unwrap(),
        xenios_store::AttemptWrite::Done(false)
    );

    let policy = xenios_runtime::sweeper::SweepPolicy {
        republish_after: Duration::from_secs(60),
        abandoned_after: Duration::from_secs(1),
        max_attempts: 5,
    };
    let reaped = xenios_runtime::sweeper::reap_abandoned(&stack.store, &js, policy)
        .await
        .unwrap();
    assert_eq!(
        reaped,
        xenios_runtime::sweeper::Reaped {
            requeued: 1,
            failed: 1
        }
    );

    let job = stack.job(&spent.to_string()).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "abandoned");
    assert_eq!(job["attempts"], 5);
    let letters = dead_letters(&stack).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].command.job_id, spent);
    assert_eq!(letters[0].error.code, "abandoned");
    let events = stack
        .events(&spent.to_string(), None, Duration::from_secs(10))
        .await;
    assert_eq!(events.last().unwrap().json()["status"], "failed");

    assert_eq!(stack.job(&again.to_string()).await["status"], "queued");
    stack.start_worker().await;
    let job = stack
        .wait_for(&again.to_string(), &["succeeded"], Duration::from_secs(20))
        .await;
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["result"], json!({"message": "taken up"}));

    assert_eq!(stack.job(&held.to_string()).await["status"], "running");
}

#[tokio::test]
async fn abandoned_running_jobs_are_taken_up_on_sqlite() {
    abandoned_running_jobs_are_taken_up(Db::Sqlite).await;
}

#[tokio::test]
async fn abandoned_running_jobs_are_taken_up_on_postgres() {
    abandoned_running_jobs_are_taken_up(Db::Postgres).await;
}

/// A consumer cut off from the database past its lease, whose job was meanwhile taken over
/// (the store counts another attempt, as when the sweeper requeued it and a consumer started
/// it), stops at its next renewal and records nothing: not its success over the new attempt's,
/// nor a retry that would put the new attempt's job back to queued for a third copy to run.
#[tokio::test]
async fn an_attempt_taken_over_stops_and_records_nothing() {
    let stack = Stack::start(Db::Sqlite).await;
    let js = jetstream::new(stack.nats_client.clone());
    let mut consumer = js
        .get_stream(JOBS_STREAM)
        .await
        .unwrap()
        .get_consumer::<jetstream::consumer::pull::Config>("echo")
        .await
        .unwrap();
    let mut ids = Vec::new();
    for fail in [None, Some("transient")] {
        let input = json!({"message": "first", "delay_ms": 8000, "fail": fail});
        let id = stack.submit("echo", input).await;
        stack
            .wait_for(&id, &["running"], Duration::from_secs(10))
            .await;
        let taken = stack
            .store
            .start_attempt(id.parse().unwrap())
            .await
            .unwrap();
        assert!(
            matches!(&taken, xenios_store::StartAttempt::Started(job) if job.attempts == 2),
            "{taken:?}"
        );
        ids.push(id);
    }
    // The tests' 6 s lease is renewed every 2 s: well before the handlers' 8 s are up, the
    // consumer lets both deliveries go.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let info = consumer.info().await.unwrap();
        if (info.num_pending, info.num_ack_pending) == (0, 0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries still held: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &ids {
        let job = stack.job(id).await;
        assert_eq!(job["status"], "running", "{job}");
        assert_eq!(job["attempts"], 2, "{job}");
        assert!(job["result"].is_null() && job["error"].is_null(), "{job}");
    }
}

#[tokio::test]
async fn two_hundred_jobs_survive_a_broker_restart() {
    let mut stack = Stack::start_with(Db::Sqlite, &[("consumer.sweeper_delay_secs", "2")], 2).await;
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(
            stack
                .submit("echo", json!({"message": i, "delay_ms": 300}))
                .await,
        );
    }
    stack.nats.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.nats.start_again().unwrap();
    stack.start_sweeper();
    for id in &ids {
        let job = stack
            .wait_for(id, &["succeeded", "failed"], Duration::from_secs(90))
            .await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
}

#[tokio::test]
async fn a_database_outage_refuses_submissions_and_publishes_nothing() {
    let mut pg = xenios_devstack::PgServer::start().unwrap();
    let nats = xenios_devstack::NatsServer::start().unwrap();
    let settings = settings(&nats.url(), &pg.url(), &[]);
    let store = xenios_cli::connect_store(&settings).await.unwrap();
    let client = xenios_cli::connect_nats(&settings, "test").await.unwrap();
    let js = jetstream::new(client.clone());
    let desired = xenios_cli::stream_settings(&settings);
    eventually(Duration::from_secs(20), || {
        let js = js.clone();
        let desired = desired.clone();
        async move {
            matches!(xenios_contract::streams::check(&js, &desired).await, Ok(d) if d.is_empty())
        }
    })
    .await;
    let runtime =
        xenios_runtime::Runtime::new(settings.clone(), store.clone(), client.clone(), "t");
    tokio::spawn(runtime.run(std::future::pending()));
    let app = xenios_api::Application::build(settings, store, client.clone())
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run(std::future::pending()));
    let http = reqwest::Client::new();
    let submit = || {
        http.post(format!("{base}/api/v1/jobs"))
            .header("X-API-Key", API_KEY)
            .bearer_auth(token_for(USER, "authenticated"))
            .json(&json!({"kind": "echo", "input": {"message": "db"}}))
            .send()
    };
    assert_eq!(submit().await.unwrap().status(), 202);
    let mut stream = js.get_stream(JOBS_STREAM).await.unwrap();
    let before = stream.info().await.unwrap().state.last_sequence;

    pg.stop();
    let r = submit().await.unwrap();
    assert!(r.headers().contains_key("retry-after"));
    error_body(r, 503, "unavailable").await;
    assert_eq!(
        stream.info().await.unwrap().state.last_sequence,
        before,
        "nothing published"
    );

    pg.start_again().unwrap();
    let mut accepted = None;
    for _ in 0..100 {
        let r = submit().await.unwrap();
        if r.status() == 202 {
            accepted = Some(r.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let accepted = accepted.expect("submissions work again after the database returns");
    let id = accepted["job_id"].as_str().unwrap();
    let url = format!("{base}/api/v1/jobs/{id}");
    eventually(Duration::from_secs(20), || {
        let request = http
            .get(&url)
            .header("X-API-Key", API_KEY)
            .bearer_auth(token_for(USER, "authenticated"));
        async move {
            let job: Value = request.send().await.unwrap().json().await.unwrap();
            job["status"] == "succeeded"
        }
    })
    .await;
}

/// A submission whose record fails is answered with the error and leaves nothing behind: no
/// command queued or held by a consumer, no event, no job.
#[tokio::test]
async fn a_submission_whose_record_fails_leaves_nothing_behind() {
    let stack = Stack::start(Db::Sqlite).await;
    refuse_jobs_with(&stack.db_url, JobWrite::Record, "$.message", "refused").await;
    let js = jetstream::new(stack.nats_client.clone());
    let mut commands = js.get_stream(JOBS_STREAM).await.unwrap();
    let mut events = js.get_stream(EVENTS_STREAM).await.unwrap();
    let mut consumer = commands
        .get_consumer::<jetstream::consumer::pull::Config>("echo")
        .await
        .unwrap();

    for _ in 0..3 {
        let refused = stack
            .post("/api/v1/jobs")
            .json(&json!({"kind": "echo", "input": {"message": "refused"}}))
            .send()
            .await
            .unwrap();
        assert!(refused.status().is_server_error(), "{}", refused.status());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = (
            commands.info().await.unwrap().state.messages,
            consumer.info().await.unwrap().num_ack_pending,
            events.info().await.unwrap().state.subjects_count,
        );
        if left == (0, 0, 0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "commands, unacked, jobs with events: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = stack.submit("echo", json!({"message": "kept"})).await;
    stack
        .wait_for(&id, &["succeeded"], Duration::from_secs(10))
        .await;
    let jobs = stack.store.count_jobs_by_status().await.unwrap();
    assert_eq!(
        jobs,
        [(JobKind::Echo, xenios_contract::JobStatus::Succeeded, 1)]
    );
}

/// A `xenios worker` process against the stack's NATS and database.
/// A child process that is killed if the test ends (or panics) while it still runs.
struct Reaped(Child);

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn worker_process(stack: &Stack) -> Reaped {
    let child = Command::new(env!("CARGO_BIN_EXE_xenios"))
        .args(["worker", "--kind", "echo", "--config", "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &stack.db_url)
        .env("NATS_URL", stack.nats.url())
        .env("XENIOS_METRICS_ADDR", "127.0.0.1:0")
        .env("XENIOS__CONSUMER__RETRY_DELAYS_MS", "50,100")
        .env("XENIOS__CONSUMER__SHUTDOWN_GRACE_SECS", "10")
        .env("XENIOS__CONSUMER__PULL_EXPIRES_MS", "500")
        .env("XENIOS__CONSUMER__LEASE_SECS", "6")
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("xenios worker starts");
    Reaped(child)
}

/// `xenios <args>` against the stack's database and broker: exit success, stdout, stderr.
fn xenios_cli(stack: &Stack, args: &[&str]) -> (bool, String, String) {
    xenios_cli_on(&stack.db_url, &stack.nats.url(), args)
}

/// `xenios <args>` against the database at `db_url` and the broker at `nats_url`.
fn xenios_cli_on(db_url: &str, nats_url: &str, args: &[&str]) -> (bool, String, String) {
    xenios_cli_with(db_url, nats_url, &[], args)
}

/// [`xenios_cli_on`] with more of the environment.
fn xenios_cli_with(
    db_url: &str,
    nats_url: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_xenios"))
        .args(["--config", "/dev/null"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .env("NATS_URL", nats_url)
        .env("LOG_LEVEL", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("xenios runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_consumer_whose_metrics_address_is_taken_does_not_start() {
    let stack = Stack::start_with(Db::Sqlite, &[], 0).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_xenios"))
        .args(["worker", "--kind", "echo", "--config", "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &stack.db_url)
        .env("NATS_URL", stack.nats.url())
        .env("XENIOS_METRICS_ADDR", &addr)
        .env("LOG_LEVEL", "warn")
        .output()
        .expect("xenios runs");
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("XENIOS_METRICS_ADDR"), "{said}");
}

/// `xenios jobs cancel` of a running job interrupts it at once, through `ctl.jobs.cancel`,
/// not at the lease's next renewal (the longest lease here: renewed 9.7 s after the start).
#[tokio::test]
async fn the_operator_cli_interrupts_a_running_job() {
    let stack = Stack::start_with(Db::Sqlite, &[("consumer.lease_secs", "29")], 1).await;
    let id = stack
        .submit("echo", json!({"message": "long", "delay_ms": 60000}))
        .await;
    stack
        .wait_for(&id, &["running"], Duration::from_secs(10))
        .await;
    let (ok, said, why) = xenios_cli(&stack, &["jobs", "cancel", &id]);
    assert!(ok && said.contains("is running"), "{said} {why}");
    stack
        .wait_for(&id, &["cancelled"], Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn the_operator_cli_lists_shows_cancels_and_resubmits_jobs() {
    let mut stack = Stack::start_with(Db::Sqlite, &[], 0).await;
    let first = stack.submit("echo", json!({"message": "first"})).await;
    let second = stack.submit("echo", json!({"message": "second"})).await;

    let (ok, listed, _) = xenios_cli(&stack, &["jobs", "list", "--status", "queued"]);
    assert!(ok);
    assert!(
        listed.contains(&first) && listed.contains(&second),
        "{listed}"
    );
    let (ok, newest, _) = xenios_cli(&stack, &["jobs", "list", "--json", "--limit", "1"]);
    assert!(ok);
    let lines: Vec<Value> = newest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], second.as_str());
    let (ok, _, _) = xenios_cli(&stack, &["jobs", "list", "--limit", "500"]);
    assert!(!ok, "a limit past 100 is refused");

    let (ok, said, _) = xenios_cli(&stack, &["jobs", "cancel", &first]);
    assert!(ok && said.contains("cancelled"), "{said}");
    assert_eq!(stack.job(&first).await["status"], "cancelled");
    let (ok, _, why) = xenios_cli(&stack, &["jobs", "cancel", &first]);
    assert!(!ok && why.contains("already cancelled"), "{why}");
    let (ok, _, why) = xenios_cli(&stack, &["jobs", "resubmit", &second]);
    assert!(!ok && why.contains("queued"), "{why}");

    let (ok, new_id, why) = xenios_cli(&stack, &["jobs", "resubmit", &first]);
    assert!(ok, "{why}");
    let new_id = new_id.trim().to_owned();
    assert_ne!(new_id, first);
    stack.start_worker().await;
    let job = stack
        .wait_for(&new_id, &["succeeded"], Duration::from_secs(20))
        .await;
    assert_eq!(job["result"], json!({"message": "first"}));
    assert_eq!(job["user_id"], USER);
    assert_eq!(stack.job(&first).await["status"], "cancelled");

    let (ok, shown, _) = xenios_cli(&stack, &["jobs", "show", &new_id]);
    assert!(ok);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["status"], "succeeded");
    assert_eq!(shown["inference_logs"], json!([]));
    let (ok, _, why) = xenios_cli(
        &stack,
        &["jobs", "show", "00000000-0000-7000-8000-000000000000"],
    );
    assert!(!ok && why.contains("no job"), "{why}");

    let (ok, counts, _) = xenios_cli(&stack, &["jobs", "counts"]);
    assert!(ok);
    let cancelled = counts
        .lines()
        .find(|l| l.contains("echo") && l.contains("cancelled"))
        .unwrap_or_else(|| panic!("{counts}"));
    assert!(cancelled.trim_end().ends_with(" 1"), "{counts}");

    // Erasing a user takes every job of theirs; a queued one is cancelled first.
    stack.stop_workers().await;
    let queued = stack.submit("echo", json!({"message": "x"})).await;
    let (ok, said, why) = xenios_cli(&stack, &["users", "erase", USER]);
    assert!(ok, "{said} {why}");
    let erased: Value = serde_json::from_str(&said).unwrap();
    assert_eq!(erased["complete"], true, "{erased}");
    assert_eq!(erased["jobs_deleted"], 4, "{erased}");
    assert_eq!(erased["jobs_cancelled"], 1, "{erased}");
    assert_eq!(stack.store.user_jobs(USER, 10).await.unwrap(), vec![]);
    let gone = stack
        .get(&format!("/api/v1/jobs/{queued}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

/// `GET /api/v1/jobs/{id}/events` as the test user: its status alone.
async fn events_status(api: &Api, id: &str) -> u16 {
    let response = api
        .get(&format!("/api/v1/jobs/{id}/events"))
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

/// An erased job's events are gone from every API instance, the memory of the one that
/// submitted it included: the instance that erases forgets them at once, the others (and all
/// of them when the operator's CLI erases) once told on `ctl.jobs.erased`.
#[tokio::test]
async fn an_erased_jobs_events_are_forgotten_by_every_api() {
    let stack = Stack::start(Db::Sqlite).await;
    let other = Api::new(serve_api(&stack.settings).await);
    let warm_up = other.submit("echo", json!({"message": "up"})).await;
    other
        .wait_for(&warm_up, &["succeeded"], Duration::from_secs(20))
        .await;
    let here = stack.submit("echo", json!({"message": "here"})).await;
    let there = other.submit("echo", json!({"message": "there"})).await;
    for (api, id) in [(&stack.api, &here), (&other, &there)] {
        api.wait_for(id, &["succeeded"], Duration::from_secs(20))
            .await;
        assert_eq!(events_status(api, id).await, 200);
    }

    let (status, _) = stack.erase_user(USER, USER).await;
    assert_eq!(status, 200);
    assert_eq!(events_status(&stack, &here).await, 404);
    eventually(Duration::from_secs(20), || async {
        events_status(&other, &there).await == 404
    })
    .await;

    let next = stack.submit("echo", json!({"message": "next"})).await;
    stack
        .wait_for(&next, &["succeeded"], Duration::from_secs(20))
        .await;
    assert_eq!(events_status(&stack, &next).await, 200);
    let (ok, said, why) = xenios_cli(&stack, &["users", "erase", USER]);
    assert!(ok, "{said} {why}");
    eventually(Duration::from_secs(20), || async {
        events_status(&stack, &next).await == 404
    })
    .await;
}

/// Erasing a user takes the commands of their jobs that no consumer has taken yet out of
/// `JOBS`, inputs and all: a queued job's (cancelled by the erasure) and a job's cancelled
/// before; another user's stays.
#[tokio::test]
async fn an_erased_users_waiting_commands_leave_the_queue() {
    let stack = Stack::start_with(Db::Sqlite, &[], 0).await;
    let queued = stack.submit("echo", json!({"message": "waiting"})).await;
    let called_off = stack.submit("echo", json!({"message": "called off"})).await;
    assert_eq!(stack.cancel(&called_off).await.status(), 202);
    let theirs = stack
        .submit_as(OTHER_USER, "echo", json!({"message": "mine"}))
        .await;
    let js = jetstream::new(stack.nats_client.clone());
    let mut commands = js.get_stream(JOBS_STREAM).await.unwrap();
    assert_eq!(commands.info().await.unwrap().state.messages, 3);

    let (status, erased) = stack.erase_user(USER, USER).await;
    assert_eq!(status, 200);
    assert_eq!(erased["jobs_cancelled"], 1, "{erased}");
    assert_eq!(erased["job_commands_deleted"], 2, "{erased}");
    assert_eq!(erased["complete"], true, "{erased}");
    let gone = stack
        .get(&format!("/api/v1/jobs/{queued}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(commands.info().await.unwrap().state.messages, 1);
    let left = commands
        .get_first_raw_message_by_subject("jobs.>", 0)
        .await
        .unwrap();
    let left = JobCommand::from_slice(&left.payload).unwrap();
    assert_eq!(left.job_id.to_string(), theirs);
}

/// `xenios jobs purge` runs the retention pass at once: a job finished 40 days ago goes, the
/// ones of today stay.
#[tokio::test]
async fn the_operator_cli_purges_expired_records() {
    let stack = Stack::start_with(Db::Sqlite, &[], 1).await;
    let today = stack.submit("echo", json!({"message": "today"})).await;
    stack
        .wait_for(&today, &["succeeded"], Duration::from_secs(20))
        .await;
    let old = seed_finished_job(&stack.store, chrono::Duration::days(40)).await;

    let (ok, said, why) = xenios_cli(&stack, &["jobs", "purge"]);
    assert!(ok, "{why}");
    let jobs_line = said
        .lines()
        .find(|l| l.starts_with("jobs "))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(jobs_line.trim_end().ends_with(" 1"), "{said}");
    assert_eq!(stack.store.get_job(old).await.unwrap(), None);
    assert_eq!(stack.job(&today).await["status"], "succeeded");
}

/// `xenios jobs usage` sums the audit log per task and model, for everyone or one user.
#[tokio::test]
async fn the_operator_cli_reports_llm_usage() {
    let stack = Stack::start_with(Db::Sqlite, &[], 1).await;
    for (user, model, cost) in [
        (Some(USER), "anthropic/claude-opus-4-20250514", 0.25),
        (Some(USER), "anthropic/claude-opus-4-20250514", 0.5),
        (None, "openai/gpt-4o-mini", 0.125),
    ] {
        let log = xenios_store::InferenceLog {
            id: uuid::Uuid::now_v7(),
            created_at: chrono::Utc::now() - chrono::Duration::hours(2),
            user_id: user.map(str::to_owned),
            job_id: Some(uuid::Uuid::now_v7()),
            task: "chat".into(),
            model: model.into(),
            provider: "openrouter".into(),
            attempt: 1,
            input_tokens: 1000,
            output_tokens: 50,
            cache_read_tokens: 800,
            cache_write_tokens: 0,
            latency_ms: 900,
            ttft_ms: Some(300),
            cost_usd: Some(cost),
            success: true,
            error: None,
        };
        stack.store.insert_inference_log(&log).await.unwrap();
    }

    let (ok, said, why) = xenios_cli(&stack, &["jobs", "usage"]);
    assert!(ok, "{why}");
    let row = |name: &str| {
        said.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no `{name}` row in:\n{said}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let opus = row("chat                   anthropic/claude-opus-4-20250514");
    assert_eq!(
        opus[2..],
        ["2", "2", "0", "2000", "1600", "0", "100", "0.7500"],
        "{said}"
    );
    assert_eq!(
        row("total")[1..],
        ["3", "3", "0", "3000", "2400", "0", "150", "0.8750"]
    );
    // Every user's report also lists the users, costliest first, service calls named.
    assert_eq!(
        row(USER)[1..],
        ["2", "2", "0", "2000", "1600", "0", "100", "0.7500"]
    );
    assert!(said.contains("(no user: service calls)"), "{said}");

    let (ok, said, why) = xenios_cli(&stack, &["jobs", "usage", "--user", USER, "--json"]);
    assert!(ok, "{why}");
    let report: Value = serde_json::from_str(&said).unwrap();
    assert_eq!(report["total"]["calls"], 2, "{report}");
    assert_eq!(report["by_model"][0]["cache_read_tokens"], 1600);

    let (ok, _, why) = xenios_cli(&stack, &["jobs", "usage", "--days", "0"]);
    assert!(!ok, "a window of 0 days is refused");
    assert!(why.contains("--days"), "{why}");
}

/// Records an echo job of the test user as submitted `ago` (its `Idempotency-Key`
/// `seeded-<id>`), and runs it to success.
async fn seed_finished_job(store: &xenios_store::Store, ago: chrono::Duration) -> uuid::Uuid {
    let at = chrono::Utc::now() - ago;
    let id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        u64::try_from(at.timestamp()).unwrap(),
        0,
    ));
    let new = xenios_store::NewJob {
        id,
        kind: JobKind::Echo,
        user_id: Some(USER.into()),
        input: json!({"message": "seeded"}),
        correlation_id: "seeded".into(),
        idempotency_key: Some(format!("seeded-{id}")),
        webhook_url: None,
    };
    store.create_job(new).await.unwrap();
    store.start_attempt(id).await.unwrap();
    store
        .finish_job(
            id,
            xenios_store::Outcome::Succeeded(json!({"message": "seeded"})),
        )
        .await
        .unwrap();
    id
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "process did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_consumer_killed_mid_job_is_replaced_and_the_job_finishes_once() {
    let stack = Stack::start_with(Db::Sqlite, &[], 0).await;
    let mut first = worker_process(&stack);
    let id = stack
        .submit(
            "echo",
            json!({"message": "survivor", "delay_ms": 3000, "progress_steps": 3}),
        )
        .await;
    stack
        .wait_for(&id, &["running"], Duration::from_secs(30))
        .await;
    signal(&first, "KILL");
    wait_exit(&mut first, Duration::from_secs(10)).await;

    let mut second = worker_process(&stack);
    // Redelivery comes after the consumer's ack_wait (30 s).
    let job = stack
        .wait_for(&id, &["succeeded", "failed"], Duration::from_secs(75))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2);
    let events = stack.events(&id, None, Duration::from_secs(10)).await;
    let terminal = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("status"))
        .filter(|e| {
            ["succeeded", "failed", "cancelled"].contains(&e.json()["status"].as_str().unwrap())
        })
        .count();
    assert_eq!(terminal, 1, "{events:?}");
    signal(&second, "TERM");
    assert!(wait_exit(&mut second, Duration::from_secs(20))
        .await
        .success());
}

#[tokio::test]
async fn sigterm_drains_in_flight_jobs_and_exits_zero() {
    let stack = Stack::start_with(Db::Sqlite, &[], 0).await;
    let mut worker = worker_process(&stack);
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(
            stack
                .submit("echo", json!({"message": i, "delay_ms": 1500}))
                .await,
        );
    }
    for id in &ids {
        stack
            .wait_for(id, &["running", "succeeded"], Duration::from_secs(30))
            .await;
    }
    signal(&worker, "TERM");
    let status = wait_exit(&mut worker, Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status:?}");
    for id in &ids {
        let job = stack.job(id).await;
        assert_eq!(
            job["status"], "succeeded",
            "finished within the grace period: {job}"
        );
    }
    // The worker deregistered itself.
    let js = jetstream::new(stack.nats_client.clone());
    let kv = js.get_key_value("WORKERS").await.unwrap();
    let keys: Vec<String> = kv.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
    assert!(keys.is_empty(), "{keys:?}");
}

/// A consumer that is told to stop sends no more pulls. Once a pull ends, a free slot is
/// ready as well as the stop; were the slot taken, each kind's drain would wait out another
/// pull (half the time, for each kind, before the stop won).
/// A handler that does not listen: it goes on for a minute whatever it is told.
struct Deaf;

impl xenios_runtime::Handler for Deaf {
    fn kind(&self) -> JobKind {
        JobKind::Echo
    }

    fn handle(
        &self,
        _job: xenios_runtime::JobContext,
    ) -> futures::future::BoxFuture<'_, xenios_runtime::HandlerResult> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(json!({}))
        })
    }
}

/// A handler with a bug.
struct Panicky;

impl xenios_runtime::Handler for Panicky {
    fn kind(&self) -> JobKind {
        JobKind::Echo
    }

    fn handle(
        &self,
        _job: xenios_runtime::JobContext,
    ) -> futures::future::BoxFuture<'_, xenios_runtime::HandlerResult> {
        Box::pin(async { panic!("index out of bounds: secret detail") })
    }
}

#[tokio::test]
async fn a_panicking_handler_fails_its_tries_and_the_job_is_dead_lettered() {
    let stack = Stack::start_with(Db::Sqlite, &[], 0).await;
    let client = xenios_cli::connect_nats(&stack.settings, "panicky")
        .await
        .unwrap();
    let runtime = xenios_runtime::Runtime::new(
        stack.settings.clone(),
        stack.store.clone(),
        client,
        "panicky",
    )
    .with_handler(Panicky);
    tokio::spawn(runtime.run(std::future::pending()));
    let id = stack.submit("echo", json!({"message": "boom"})).await;
    let job = stack
        .wait_for(&id, &["failed"], Duration::from_secs(30))
        .await;
    assert_eq!(job["attempts"], 5);
    assert_eq!(job["error"]["code"], "internal");
    assert!(!job.to_string().contains("secret detail"), "{job}");
    let letters = dead_letters(&stack).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].command.job_id.to_string(), id);
}

/// A work queue keeps a command that reached the consumer's `max_deliver` but never delivers it
/// again: NAKed on its last delivery, it would count against the stream's limits until its
/// `max_age` (a week). Here the store refuses to start the job, so every delivery is given back
/// without a try counted; the last one is terminated instead, the job stays queued in the store,
/// and once the store is back the sweeper publishes it again.
#[tokio::test]
async fn a_command_given_back_on_its_last_delivery_leaves_the_queue() {
    let stack = Stack::start(Db::Sqlite).await;
    refuse_jobs_with(&stack.db_url, JobWrite::Change, "$.message", "stuck").await;
    let id = stack.submit("echo", json!({"message": "stuck"})).await;
    let js = jetstream::new(stack.nats_client.clone());
    let mut commands = js.get_stream(JOBS_STREAM).await.unwrap();
    // Five deliveries, two seconds apart.
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    while commands.info().await.unwrap().state.messages > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the command is still in JOBS"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let job = stack.job(&id).await;
    assert_eq!(job["status"], "queued", "{job}");
    assert_eq!(job["attempts"], 0, "{job}");

    stop_refusing(&stack.db_url, JobWrite::Change).await;
    let published = xenios_runtime::sweeper::sweep_once(&stack.store, &js, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(published, 1);
    let job = stack
        .wait_for(&id, &["succeeded"], Duration::from_secs(20))
        .await;
    assert_eq!(job["attempts"], 1, "{job}");
}

/// A job fails only once its dead letter is held: with `JOBS_DLQ` gone, the last try leaves
/// the job running (rather than failed with no letter), and once the stream is back the
/// sweeper dead-letters and fails it.
#[tokio::test]
async fn a_dead_letter_the_broker_cannot_take_is_not_lost() {
    // No process applies the streams at its start (the harness does, once): the worker's
    // apply, still under way in the background when its first job is done, could make
    // `JOBS_DLQ` again behind the test.
    let settings = [
        ("consumer.max_attempts", "1"),
        ("nats.apply_streams_on_start", "false"),
    ];
    let stack = Stack::start_with(Db::Sqlite, &settings, 1).await;
    let js = jetstream::new(stack.nats_client.clone());
    js.delete_stream(DLQ_STREAM).await.unwrap();

    let id = stack
        .submit("echo", json!({"message": "nowhere", "fail": "transient"}))
        .await;
    stack
        .wait_for(&id, &["running"], Duration::from_secs(10))
        .await;
    // The consumer's three tries at the letter, a second apart, and its NAK.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let job = stack.job(&id).await;
    assert_eq!(job["status"], "running", "{job}");
    assert_eq!(job["attempts"], 1);
    // Its command is done with (the store holds the job): no redelivery runs it again.
    let mut jobs = js.get_stream(JOBS_STREAM).await.unwrap();
    assert_eq!(jobs.info().await.unwrap().state.messages, 0);

    let policy = xenios_runtime::sweeper::SweepPolicy {
        republish_after: Duration::from_secs(60),
        abandoned_after: Duration::from_secs(1),
        max_attempts: 1,
    };
    let reaped = xenios_runtime::sweeper::reap_abandoned(&stack.store, &js, policy)
        .await
        .unwrap();
    assert_eq!(reaped, xenios_runtime::sweeper::Reaped::default());
    assert_eq!(stack.job(&id).await["status"], "running");

    xenios_contract::streams::apply(&js, &xenios_cli::stream_settings(&stack.settings))
        .await
        .unwrap();
    let reaped = xenios_runtime::sweeper::reap_abandoned(&stack.store, &js, policy)
        .await
        .unwrap();
    assert_eq!(reaped.failed, 1);
    let job = stack.job(&id).await;
    assert_eq!(job["status"], "failed", "{job}");
    let letters = dead_letters(&stack).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].command.job_id.to_string(), id);
}

#[tokio::test]
async fn a_drain_lets_go_of_a_handler_that_does_not_stop() {
    let stack = Stack::start_with(Db::Sqlite, &[("consumer.shutdown_grace_secs", "1")], 0).await;
    let client = xenios_cli::connect_nats(&stack.settings, "deaf")
        .await
        .unwrap();
    let runtime =
        xenios_runtime::Runtime::new(stack.settings.clone(), stack.store.clone(), client, "deaf")
            .with_handler(Deaf);
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let drain =
        tokio::spawn(async move { runtime.run(async move { stopped.cancelled().await }).await });
    let id = stack.submit("echo", json!({"message": "deaf"})).await;
    stack
        .wait_for(&id, &["running"], Duration::from_secs(10))
        .await;
    stop.cancel();
    // The grace period and a moment after it, not the handler's minute (nor the kind's
    // ten-minute hard limit, which was the bound before).
    tokio::time::timeout(Duration::from_secs(30), drain)
        .await
        .expect("the drain ends")
        .unwrap()
        .unwrap();
    let job = stack.job(&id).await;
    assert_eq!(job["status"], "queued", "{job}");
    assert_eq!(job["error"]["code"], "released");
}

/// A job released by a drain on its last try is not run again: the next consumer's claim
/// finds it out of tries, fails it and dead-letters it without calling the handler.
#[tokio::test]
async fn a_job_released_on_its_last_try_fails_instead_of_running_again() {
    let mut stack = Stack::start_with(
        Db::Sqlite,
        &[
            ("consumer.max_attempts", "1"),
            ("consumer.shutdown_grace_secs", "1"),
        ],
        1,
    )
    .await;
    let id = stack
        .submit("echo", json!({"message": "last", "delay_ms": 5000}))
        .await;
    stack
        .wait_for(&id, &["running"], Duration::from_secs(10))
        .await;
    stack.stop_workers().await;
    let job = stack.job(&id).await;
    assert_eq!(job["status"], "queued", "{job}");
    assert_eq!(job["error"]["code"], "released", "{job}");

    stack.start_worker().await;
    let job = stack
        .wait_for(&id, &["failed", "succeeded"], Duration::from_secs(20))
        .await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "attempts_exhausted", "{job}");
    let letters = dead_letters(&stack).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].command.job_id.to_string(), id);
    assert_eq!(letters[0].error.code, "attempts_exhausted");
    let js = jetstream::new(stack.nats_client.clone());
    let mut commands = js.get_stream(JOBS_STREAM).await.unwrap();
    assert_eq!(commands.info().await.unwrap().state.messages, 0);
}

#[tokio::test]
async fn a_draining_consumer_asks_for_no_more_commands() {
    // Pulls long enough that none of the first ones ends before the stop, even on a slow
    // machine: any pull seen after the stop is one the draining consumer sent.
    let mut stack = Stack::start_with(Db::Sqlite, &[("consumer.pull_expires_ms", "3000")], 0).await;
    let pulls_subject = format!("$JS.API.CONSUMER.MSG.NEXT.{JOBS_STREAM}.>");
    let mut pulls = stack.nats_client.subscribe(pulls_subject).await.unwrap();
    stack.nats_client.flush().await.unwrap();
    stack.start_worker().await;
    let mut pulling = std::collections::HashSet::new();
    while pulling.len() < JobKind::ALL.len() {
        let pull = tokio::time::timeout(Duration::from_secs(20), pulls.next())
            .await
            .expect("every kind's consumer pulls")
            .unwrap();
        pulling.insert(pull.subject.to_string());
    }
    // Each kind's first pull is out and far from its end: stop now.
    stack.stop_workers().await;
    // The server sent whatever it had for us before it answers the flush.
    stack.nats_client.flush().await.unwrap();
    let mut later = Vec::new();
    while let Ok(Some(pull)) = tokio::time::timeout(Duration::from_millis(200), pulls.next()).await
    {
        later.push(pull.subject.to_string());
    }
    assert!(later.is_empty(), "pulls after the stop: {later:?}");
}

/// A pull the broker fails is not sent again at once. Here the durable consumer is remade
/// with a `max_expires` below the consumers' pulls, so the broker refuses each one at once
/// (409, as it ends pulls of a deleted consumer or at a leadership change; a broker without
/// JetStream answers 503): the consumer waits between tries instead of flooding the broker,
/// and serves again once its consumer is right.
#[tokio::test]
async fn a_failed_pull_is_not_sent_again_at_once() {
    // No process applies the streams at its start, so none repairs the consumer behind the test.
    let settings = [("nats.apply_streams_on_start", "false")];
    let stack = Stack::start_with(Db::Sqlite, &settings, 0).await;
    let client = xenios_cli::connect_nats(&stack.settings, "puller")
        .await
        .unwrap();
    let runtime = xenios_runtime::Runtime::new(
        stack.settings.clone(),
        stack.store.clone(),
        client.clone(),
        "puller",
    );
    tokio::spawn(runtime.run(std::future::pending()));
    let first = stack.submit("echo", json!({"message": "first"})).await;
    stack
        .wait_for(&first, &["succeeded"], Duration::from_secs(20))
        .await;

    let js = jetstream::new(stack.nats_client.clone());
    let commands = js.get_stream(JOBS_STREAM).await.unwrap();
    let mut echo = commands
        .get_consumer::<jetstream::consumer::pull::Config>("echo")
        .await
        .unwrap();
    let mut refusing = echo.info().await.unwrap().config.clone();
    refusing.max_expires = Duration::from_millis(100);
    commands.delete_consumer("echo").await.unwrap();
    commands.create_consumer(refusing).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let statistics = client.statistics();
    let sent = || {
        statistics
            .out_messages
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = sent();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let meanwhile = sent() - before;
    // A pull and a look at the consumer every half second, and the heartbeats: a handful.
    assert!(meanwhile < 40, "{meanwhile} messages sent in 2 s");

    commands.delete_consumer("echo").await.unwrap();
    xenios_contract::streams::apply(&js, &xenios_cli::stream_settings(&stack.settings))
        .await
        .unwrap();
    let second = stack.submit("echo", json!({"message": "second"})).await;
    stack
        .wait_for(&second, &["succeeded"], Duration::from_secs(20))
        .await;
}

/// `xenios serve --kind echo` on the SQLite file `db` and the broker at `nats_url`, with
/// the API on `addr`; `env` adds to its environment.
fn serve_process(db: &std::path::Path, nats_url: &str, addr: &str, env: &[(&str, &str)]) -> Reaped {
    let child = Command::new(env!("CARGO_BIN_EXE_xenios"))
        .args(["serve", "--kind", "echo", "--config", "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("NATS_URL", nats_url)
        .env("XENIOS_API_ADDR", addr)
        .env("XENIOS_BACKEND_API_KEY", API_KEY)
        .env("SUPABASE_JWT_SECRET", JWT_SECRET)
        .env("LOG_LEVEL", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("xenios serve starts");
    Reaped(child)
}

async fn ready(api: &Api) {
    eventually(Duration::from_secs(30), || {
        let ready = api.http.get(api.url("/health/ready")).send();
        async move { matches!(ready.await, Ok(r) if r.status() == 200) }
    })
    .await;
}

/// What a webhook receiver was sent: the `Xenios-Signature` header and the body.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A webhook receiver on 127.0.0.1 answering each `POST` with the next of `statuses` (then
/// 200), keeping what it was sent.
async fn webhook_receiver(statuses: Vec<u16>) -> (String, Received) {
    use axum::http::{HeaderMap, StatusCode};
    let received: Received = Default::default();
    let answers = std::sync::Arc::new(std::sync::Mutex::new(statuses));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let received = received.clone();
            move |headers: HeaderMap, body: axum::body::Bytes| async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default()
                };
                received.lock().unwrap().push((
                    header("xenios-signature"),
                    header("xenios-event"),
                    body.to_vec(),
                ));
                let mut answers = answers.lock().unwrap();
                let status = if answers.is_empty() {
                    200
                } else {
                    answers.remove(0)
                };
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// A `xenios serve` with webhooks on (`secret`, tries `backoff_ms` apart, the poll every
/// `poll_ms`) and a receiver answering with `statuses` first.
struct WebhookStack {
    dir: tempfile::TempDir,
    nats: xenios_devstack::NatsServer,
    _serve: Reaped,
    api: Api,
    hook: String,
    received: Received,
}

impl WebhookStack {
    async fn start(secret: &str, statuses: Vec<u16>, poll_ms: &str, backoff_ms: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let nats = xenios_devstack::NatsServer::start().expect("nats-server starts");
        let addr = format!("127.0.0.1:{}", xenios_devstack::free_port());
        let (hook, received) = webhook_receiver(statuses).await;
        let serve = serve_process(
            &dir.path().join("xenios.db"),
            &nats.url(),
            &addr,
            &[
                ("XENIOS__WEBHOOKS__SECRET", secret),
                ("XENIOS__WEBHOOKS__POLL_INTERVAL_MS", poll_ms),
                ("XENIOS__WEBHOOKS__INITIAL_BACKOFF_MS", backoff_ms),
                ("XENIOS_FETCH_ALLOW_HOSTS", "127.0.0.1"),
            ],
        );
        let api = Api::new(format!("http://{addr}"));
        ready(&api).await;
        WebhookStack {
            dir,
            nats,
            _serve: serve,
            api,
            hook,
            received,
        }
    }
}

/// A job submitted with a `webhook_url` is announced there once finished: a signed POST of the
/// job as the API shows it, tried again after a failed answer; the store records the delivery.
/// A URL the service may not reach, or a server without a webhook secret, refuses the job.
#[tokio::test]
async fn a_finished_job_is_announced_at_its_webhook() {
    const SECRET: &str = "whsec-test-0123456789";
    let stack = WebhookStack::start(SECRET, vec![500], "50", "200").await;
    let (api, hook, received, nats) = (&stack.api, &stack.hook, &stack.received, &stack.nats);
    let db = stack.dir.path().join("xenios.db");

    let submitted: Value = api
        .post("/api/v1/jobs")
        .json(&json!({"kind": "echo", "input": {"message": "done"}, "webhook_url": hook}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = submitted["job_id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(20), || {
        let n = received.lock().unwrap().len();
        async move { n >= 2 }
    })
    .await;
    let sent = received.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "a failed answer, then one try more");
    for (signature, event, body) in &sent {
        assert_eq!(event, "job.succeeded");
        let t: i64 = signature
            .strip_prefix("t=")
            .and_then(|rest| rest.split(',').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (chrono::Utc::now().timestamp() - t).abs() < 60,
            "{signature}"
        );
        assert_eq!(
            *signature,
            xenios_api::webhooks::signature(SECRET, t, body),
            "signed with the secret"
        );
        let payload: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(payload["event"], "job.succeeded");
        assert_eq!(payload["job"]["id"], id.as_str());
        assert_eq!(payload["job"]["status"], "succeeded");
        assert_eq!(payload["job"]["result"], json!({"message": "done"}));
    }

    let db_url = format!("sqlite://{}", db.display());
    let cli_ok = |args: &[&str]| {
        let (ok, stdout, stderr) = xenios_cli_on(&db_url, &nats.url(), args);
        assert!(ok, "xenios {args:?}: {stderr}");
        stdout
    };

    // The job shows where its announcement stands; the announcement itself does not.
    for (_, _, body) in &sent {
        let payload: Value = serde_json::from_slice(body).unwrap();
        assert!(payload["job"].get("webhook").is_none(), "{payload}");
    }
    let path = format!("/api/v1/jobs/{id}");
    let webhook_of = |job: Value| job["webhook"].clone();
    eventually(Duration::from_secs(10), || {
        let job = api.get_json(&path);
        async move { webhook_of(job.await)["state"] == "delivered" }
    })
    .await;
    let webhook = webhook_of(api.get_json(&path).await);
    assert_eq!(webhook["url"], hook.as_str());
    assert_eq!(webhook["attempts"], 2);
    assert_eq!(webhook["last_error"], Value::Null);

    // The owner's second chance: due at once, its tries counted afresh.
    let redeliver = format!("/api/v1/jobs/{id}/webhook/redeliver");
    let answer = api.post(&redeliver).send().await.unwrap();
    assert_eq!(answer.status(), 202);
    let job: Value = answer.json().await.unwrap();
    assert_eq!(job["webhook"]["state"], "pending");
    assert_eq!(job["webhook"]["attempts"], 0);
    eventually(Duration::from_secs(20), || {
        let n = received.lock().unwrap().len();
        async move { n == 3 }
    })
    .await;

    // And the operator's, from the command line.
    cli_ok(&["jobs", "redeliver", &id]);
    eventually(Duration::from_secs(20), || {
        let n = received.lock().unwrap().len();
        async move { n == 4 }
    })
    .await;

    // Nothing to redeliver: a job without a webhook, or one that has not finished.
    let plain: Value = api
        .post("/api/v1/jobs")
        .json(&json!({"kind": "echo", "input": {"message": "plain"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let plain = plain["job_id"].as_str().unwrap();
    assert!(api
        .get_json(&format!("/api/v1/jobs/{plain}"))
        .await
        .get("webhook")
        .is_none());
    let answer = api
        .post(&format!("/api/v1/jobs/{plain}/webhook/redeliver"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 409);
    let slow: Value = api
        .post("/api/v1/jobs")
        .json(
            &json!({"kind": "echo", "input": {"message": "slow", "delay_ms": 60000},
                      "webhook_url": hook}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let slow = slow["job_id"].as_str().unwrap().to_owned();
    let answer = api
        .post(&format!("/api/v1/jobs/{slow}/webhook/redeliver"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 409);
    let error: Value = answer.json().await.unwrap();
    assert_eq!(error["error"]["code"], "conflict");

    // A cancelled job submitted again is announced where the first would have been.
    let answer = api
        .post(&format!("/api/v1/jobs/{slow}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let slow_path = format!("/api/v1/jobs/{slow}");
    eventually(Duration::from_secs(20), || {
        let job = api.get_json(&slow_path);
        async move { job.await["status"] == "cancelled" }
    })
    .await;
    let again = cli_ok(&["jobs", "resubmit", &slow]);
    let again = again.trim();
    let resubmitted = api.get_json(&format!("/api/v1/jobs/{again}")).await;
    assert_eq!(resubmitted["webhook"]["url"], hook.as_str());
    assert_eq!(resubmitted["webhook"]["state"], "pending");

    // The owner resubmits through the API too: a new job, the same input and webhook; only a
    // failed or cancelled job, and only one's own.
    let resubmit = |job: &str| api.post(&format!("/api/v1/jobs/{job}/resubmit"));
    let answer = resubmit(&slow).send().await.unwrap();
    assert_eq!(answer.status(), 202);
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = answer.json().await.unwrap();
    let third = body["job_id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/jobs/{third}"));
    assert_ne!(third, slow);
    let third = api.get_json(&location).await;
    assert_eq!(third["input"]["message"], "slow");
    assert_eq!(third["webhook"]["url"], hook.as_str());
    let answer = resubmit(&id).send().await.unwrap();
    assert_eq!(answer.status(), 409, "a succeeded job");
    let theirs = api.authed(
        api.http
            .post(api.url(&format!("/api/v1/jobs/{slow}/resubmit"))),
        OTHER_USER,
    );
    assert_eq!(theirs.send().await.unwrap().status(), 404);

    // Not reachable by policy: a private address that is not allow-listed.
    refused_webhook(api.post("/api/v1/jobs"), "http://10.1.2.3/hook", 400).await;
}

/// The webhooks' poll is only the fallback: a job submitted through this API is announced as
/// soon as it finishes, a try that failed again when its backoff ends (even if another
/// announcement went out meanwhile), and a redelivery at once, from the API or the command
/// line, as is a job the command line submits again; all with the poll a minute apart.
#[tokio::test]
async fn announcements_do_not_wait_for_the_poll() {
    let stack = WebhookStack::start("whsec-test-0123456789", vec![503], "60000", "1500").await;
    let (api, hook, received) = (&stack.api, &stack.hook, &stack.received);
    // The first pass, at start, is over once the API answers; the next poll is a minute away.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let submit = |input: Value| {
        let post = api
            .post("/api/v1/jobs")
            .json(&json!({"kind": "echo", "input": input, "webhook_url": hook}));
        async move {
            let body: Value = post.send().await.unwrap().json().await.unwrap();
            body["job_id"].as_str().unwrap().to_owned()
        }
    };
    let sent = || received.lock().unwrap().clone();
    let tries = |n: usize| {
        let received = received.clone();
        eventually(Duration::from_secs(20), move || {
            let sent = received.lock().unwrap().len();
            async move { sent >= n }
        })
    };
    let first = submit(json!({"message": "first"})).await;
    tries(1).await;
    // Refused (503): tried again in 1.5 s. Another job finishes meanwhile and is announced.
    submit(json!({"message": "second"})).await;
    tries(3).await;
    let mut messages: Vec<String> = sent()
        .iter()
        .map(|(_, _, body)| {
            let body: Value = serde_json::from_slice(body).unwrap();
            body["job"]["input"]["message"].as_str().unwrap().to_owned()
        })
        .collect();
    // In the order ["first", "second", "first"] unless the second took over 1.5 s.
    messages.sort();
    assert_eq!(messages, ["first", "first", "second"]);
    let path = format!("/api/v1/jobs/{first}");
    eventually(Duration::from_secs(10), || {
        let job = api.get_json(&path);
        async move { job.await["webhook"]["state"] == "delivered" }
    })
    .await;
    assert_eq!(api.get_json(&path).await["webhook"]["attempts"], 2);

    let answer = api
        .post(&format!("/api/v1/jobs/{first}/webhook/redeliver"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    tries(4).await;
    assert_eq!(sent().len(), 4);
    assert!(sent().iter().all(|(_, event, _)| event == "job.succeeded"));

    // The operator's command line tells the APIs too: a redelivery goes out at once, and a
    // job submitted again is announced when it ends.
    let db_url = format!("sqlite://{}", stack.dir.path().join("xenios.db").display());
    let cli = |args: &[&str]| {
        let (ok, stdout, stderr) = xenios_cli_on(&db_url, &stack.nats.url(), args);
        assert!(ok, "xenios {args:?}: {stderr}");
        stdout.trim().to_owned()
    };
    cli(&["jobs", "redeliver", &first]);
    tries(5).await;
    let doomed = submit(json!({"message": "doomed", "fail": "permanent"})).await;
    tries(6).await;
    let again = cli(&["jobs", "resubmit", &doomed]);
    tries(7).await;
    let sent = sent();
    assert_eq!(sent.len(), 7);
    let (_, event, body) = &sent[6];
    assert_eq!(event, "job.failed");
    let body: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(body["job"]["id"], again.as_str(), "{body}");
}

/// Submits an echo job asking for a webhook at `url`; asserts it is refused with `status`,
/// the error naming `webhook_url`, and returns the error body.
async fn refused_webhook(post: reqwest::RequestBuilder, url: &str, status: u16) -> Value {
    let response = post
        .json(&json!({"kind": "echo", "input": {"message": "x"}, "webhook_url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["details"][0]["field"], "webhook_url",
        "{body}"
    );
    body
}

/// Without `webhooks.secret` a job asking for a webhook is refused: it would never be announced.
#[tokio::test]
async fn a_webhook_needs_a_configured_secret() {
    let stack = Stack::start_with(Db::Sqlite, &[], 0).await;
    let post = stack.post("/api/v1/jobs");
    let body = refused_webhook(post, "https://hooks.example.com/x", 422).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("webhooks.secret"), "{message}");
}

/// `xenios serve`: the API and the echo consumer in one process on SQLite (the embedded
/// default's single-host layout, and what `xenios dev` runs): a job goes through it end to
/// end, its events come back over SSE, and SIGTERM ends the process cleanly.
#[tokio::test]
async fn one_process_serves_the_api_and_its_consumers() {
    let dir = tempfile::tempdir().unwrap();
    let nats = xenios_devstack::NatsServer::start().expect("nats-server starts");
    let addr = format!("127.0.0.1:{}", xenios_devstack::free_port());
    let mut serve = serve_process(&dir.path().join("xenios.db"), &nats.url(), &addr, &[]);
    let api = Api::new(format!("http://{addr}"));
    ready(&api).await;

    let id = api
        .submit(
            "echo",
            json!({"message": "one process", "progress_steps": 2}),
        )
        .await;
    let events = api.events(&id, None, Duration::from_secs(30)).await;
    let statuses: Vec<String> = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("status"))
        .map(|e| e.json()["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("succeeded"),
        "{events:?}"
    );
    let job = api.job(&id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"], json!({"message": "one process"}), "{job}");
    assert_eq!(job["attempts"], 1);

    signal(&serve, "TERM");
    let status = wait_exit(&mut serve, Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn workers_register_and_status_shows_the_queues() {
    let stack = Stack::start(Db::Sqlite).await;
    let status_url = stack.url("/api/v1/status");
    eventually(Duration::from_secs(10), || {
        let request = stack.http.get(&status_url).header("X-API-Key", API_KEY);
        async move {
            let body: Value = request.send().await.unwrap().json().await.unwrap();
            body["queues"]
                .as_array()
                .unwrap()
                .iter()
                .any(|q| q["kind"] == "echo" && q["consumers_online"] == 1)
        }
    })
    .await;
}

/// Records past their retention are deleted by the pass beside the API (`retention.*`): a
/// finished job submitted 40 days ago goes, and its `Idempotency-Key` with it, as does a
/// year-old LLM audit row; a recent job and a recent audit row stay.
#[tokio::test]
async fn the_api_deletes_records_past_their_retention() {
    use xenios_store::{InferenceLog, StoreOptions};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("xenios.db");
    let store = xenios_store::Store::connect(
        &format!("sqlite://{}", db.display()),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let now = chrono::Utc::now();
    let old = seed_finished_job(&store, chrono::Duration::days(40)).await;
    let recent = seed_finished_job(&store, chrono::Duration::days(2)).await;
    for (job_id, days) in [(old, 400), (recent, 2)] {
        let log = InferenceLog {
            id: uuid::Uuid::now_v7(),
            created_at: now - chrono::Duration::days(days),
            user_id: Some(USER.into()),
            job_id: Some(job_id),
            task: "chat".into(),
            model: "openai/gpt-4o-mini".into(),
            provider: "openai".into(),
            attempt: 1,
            input_tokens: 12,
            output_tokens: 3,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            latency_ms: 250,
            ttft_ms: Some(80),
            cost_usd: None,
            success: true,
            error: None,
        };
        store.insert_inference_log(&log).await.unwrap();
    }

    let nats = xenios_devstack::NatsServer::start().expect("nats-server starts");
    let addr = format!("127.0.0.1:{}", xenios_devstack::free_port());
    let serve = serve_process(
        &db,
        &nats.url(),
        &addr,
        &[("XENIOS__RETENTION__INTERVAL_SECS", "1")],
    );
    let api = Api::new(format!("http://{addr}"));
    ready(&api).await;
    eventually(Duration::from_secs(20), || {
        let gone = api.get(&format!("/api/v1/jobs/{old}")).send();
        async move { matches!(gone.await, Ok(r) if r.status() == 404) }
    })
    .await;
    assert_eq!(api.job(&recent.to_string()).await["status"], "succeeded");
    eventually(Duration::from_secs(10), || {
        let store = store.clone();
        async move { store.inference_logs_for_job(old).await.unwrap().is_empty() }
    })
    .await;
    assert_eq!(store.inference_logs_for_job(recent).await.unwrap().len(), 1);
    let metrics = api.metrics().await;
    assert!(
        metrics.contains(r#"xenios_records_purged_total{table="jobs"} 1"#),
        "{metrics}"
    );

    // The old job's key is free again: the same request makes a new job.
    let key = format!("seeded-{old}");
    let again = api
        .post("/api/v1/jobs")
        .header("Idempotency-Key", key)
        .json(&json!({"kind": "echo", "input": {"message": "seeded"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 202);
    drop(serve);
}

/// When the relay itself cannot read a job's events (here `JOB_EVENTS` is gone), the client is
/// told to come back, not sent an `error` event: that type is the job's own failure, and a
/// client would take the job for failed.
#[tokio::test]
async fn a_relay_outage_ends_the_stream_without_a_job_error() {
    let stack = Stack::start(Db::Sqlite).await;
    let id = stack.submit("echo", json!({"message": "hi"})).await;
    stack
        .wait_for(&id, &["succeeded"], Duration::from_secs(20))
        .await;
    jetstream::new(stack.nats_client.clone())
        .delete_stream(EVENTS_STREAM)
        .await
        .unwrap();
    // Another instance: nothing of the job in its memory, so it must read the stream (which
    // it does not make again).
    let mut settings = stack.settings.clone();
    settings.nats.apply_streams_on_start = false;
    let other = Api::new(serve_api(&settings).await);
    // The whole stream, which must end.
    let events_of = |id: String| {
        let response = other.get(&format!("/api/v1/jobs/{id}/events")).send();
        async move {
            let response = response.await.unwrap();
            assert_eq!(response.status(), 200);
            tokio::time::timeout(Duration::from_secs(20), response.text())
                .await
                .expect("the stream ends")
                .unwrap()
        }
    };
    let text = events_of(id).await;
    // Finished: its outcome from the store, as past retention.
    assert!(!text.contains("event: error"), "{text}");
    assert!(text.contains("event: result"), "{text}");
    assert!(text.contains("\"status\":\"succeeded\""), "{text}");

    // Not finished: asked to come back, resuming where it was.
    let running = stack
        .submit("echo", json!({"message": "later", "delay_ms": 60000}))
        .await;
    stack
        .wait_for(&running, &["running"], Duration::from_secs(20))
        .await;
    let text = events_of(running).await;
    assert!(!text.contains("event:"), "{text}");
    assert!(text.contains("retry: 2000"), "{text}");
}

/// The operator's commands never migrate: a newer CLI run during a rollout must not change
/// the schema under the running release. Behind this build's schema, they say what to do.
#[test]
fn operator_commands_do_not_migrate_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}/fresh.db", dir.path().display());
    let no_broker = "nats://127.0.0.1:1";
    for args in [&["jobs", "list"][..], &["users", "erase", USER][..]] {
        let (ok, _, why) = xenios_cli_on(&db_url, no_broker, args);
        assert!(!ok, "{args:?}");
        assert!(
            why.contains("run `xenios migrate` first"),
            "{args:?}: {why}"
        );
    }
    let (ok, _, why) = xenios_cli_on(&db_url, no_broker, &["migrate"]);
    assert!(ok, "{why}");
    let (ok, _, why) = xenios_cli_on(&db_url, no_broker, &["jobs", "list"]);
    assert!(ok, "{why}");
}

/// A broker as a deployment runs it: TLS only, a certificate wanted of every client, and a
/// user and password (in the URLs, as `NATS_URL` lists them, the password percent-encoded).
/// The API and the consumer reach it with the CA and the certificate their settings name, and
/// a job runs end to end. The broker does refuse a client short of any of the three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_through_a_broker_that_requires_tls_and_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = xenios_devstack::TestPki::generate(dir.path()).expect("openssl makes the files");
    let nats = xenios_devstack::NatsServer::start_with(xenios_devstack::ServerOptions {
        tls: Some(xenios_devstack::ServerTls {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            client_ca: Some(pki.ca_cert.clone()),
        }),
        user: Some(("xenios".into(), "s3cret/p@ss".into())),
        ..Default::default()
    })
    .expect("nats-server starts with TLS");
    let url = nats.url();
    assert!(url.starts_with("tls://"), "{url}");
    // The same server twice, by address and by name (its certificate has both), as NATS_URL
    // lists a cluster's nodes.
    let url_with_password = format!(
        "{},{}",
        url.replace("tls://", "tls://xenios:s3cret%2Fp%40ss@"),
        url.replace("tls://127.0.0.1", "tls://xenios:s3cret%2Fp%40ss@localhost")
    );
    let (ca, cert, key) = (
        pki.ca_cert.display().to_string(),
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string(),
    );
    let tls = [
        ("nats.url", url_with_password.as_str()),
        ("nats.tls_ca_file", ca.as_str()),
        ("nats.tls_cert_file", cert.as_str()),
        ("nats.tls_key_file", key.as_str()),
    ];
    let stack = Stack::start_on(nats, Db::Sqlite, &tls, 1).await;

    let id = stack
        .submit("echo", json!({"message": "over TLS", "progress_steps": 2}))
        .await;
    let events = stack.events(&id, None, Duration::from_secs(20)).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        kinds,
        ["status", "status", "progress", "progress", "result", "status"],
        "{events:?}"
    );
    assert_eq!(events[4].json(), json!({"message": "over TLS"}));
    assert_eq!(events[5].json()["status"], "succeeded");
    assert_eq!(stack.job(&id).await["status"], "succeeded");

    let password = || {
        async_nats::ConnectOptions::with_user_and_password("xenios".into(), "s3cret/p@ss".into())
    };
    password()
        .add_root_certificates(pki.ca_cert.clone())
        .add_client_certificate(pki.client_cert.clone(), pki.client_key.clone())
        .connect(&url)
        .await
        .expect("what the settings name is enough");
    let wrong_password =
        async_nats::ConnectOptions::with_user_and_password("xenios".into(), "guess".into())
            .add_root_certificates(pki.ca_cert.clone())
            .add_client_certificate(pki.client_cert.clone(), pki.client_key.clone())
            .connect(&url)
            .await;
    assert!(wrong_password.is_err(), "a wrong password was let in");
    let without_certificate = password()
        .add_root_certificates(pki.ca_cert.clone())
        .connect(&url)
        .await;
    assert!(
        without_certificate.is_err(),
        "a client without a certificate was let in"
    );
    let without_ca = password()
        .add_client_certificate(pki.client_cert.clone(), pki.client_key.clone())
        .connect(&url)
        .await;
    assert!(
        without_ca.is_err(),
        "a client that does not trust the CA connected"
    );
}

/// The database as a hosted PostgreSQL serves it (Supabase's): TLS only, a password for every
/// login, and a connection pooler in session mode in front (Supabase's session pooler; here
/// PgBouncer as Debian ships it). The URLs check the server's certificate
/// (`sslmode=verify-full` with `sslrootcert`), and a job runs end to end straight to the
/// server and through the pooler. The server does refuse a client without TLS, and one with
/// a wrong password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_against_postgres_over_tls_and_through_a_session_pooler() {
    use sqlx::{Connection, Executor};
    let dir = tempfile::tempdir().unwrap();
    let pki = xenios_devstack::TestPki::generate(dir.path()).expect("openssl makes the files");
    let tls = Some((pki.server_cert.clone(), pki.server_key.clone()));
    let pg = tokio::task::spawn_blocking(move || {
        xenios_devstack::PgServer::start_with(xenios_devstack::PgOptions {
            tls,
            ..Default::default()
        })
    })
    .await
    .unwrap()
    .expect("postgres starts with TLS");
    let mut admin = sqlx::PgConnection::connect(&pg.socket_url()).await.unwrap();
    for statement in [
        "CREATE ROLE xenios LOGIN PASSWORD 's3cret/p@ss'",
        "CREATE DATABASE direct OWNER xenios",
        "CREATE DATABASE pooled OWNER xenios",
    ] {
        admin.execute(statement).await.unwrap();
    }
    let bouncer = xenios_devstack::Pgbouncer::start(&xenios_devstack::PgbouncerOptions {
        server_port: pg.port(),
        users: vec![("xenios".into(), "s3cret/p@ss".into())],
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        server_ca: pki.ca_cert.clone(),
    })
    .expect("pgbouncer starts");
    let url = |port: u16, database: &str, password: &str, tls: &str| {
        format!("postgres://xenios:{password}@127.0.0.1:{port}/{database}?{tls}")
    };
    let verified = format!("sslmode=verify-full&sslrootcert={}", pki.ca_cert.display());
    let password = "s3cret%2Fp%40ss";

    let mut bouncer = bouncer;
    let mut stacks = Vec::new();
    for (port, database) in [(pg.port(), "direct"), (bouncer.port(), "pooled")] {
        let db_url = url(port, database, password, &verified);
        let nats = xenios_devstack::NatsServer::start().unwrap();
        let stack = Stack::start_on_database(nats, db_url, &[], 1).await;
        let id = stack
            .submit("echo", json!({"message": database, "progress_steps": 1}))
            .await;
        let events = stack.events(&id, None, Duration::from_secs(20)).await;
        let last = events.last().expect("events").json();
        assert_eq!(last["status"], "succeeded", "{database}: {events:?}");
        let job = stack.job(&id).await;
        assert_eq!(job["result"], json!({"message": database}), "{job}");
        let (ok, listed, why) =
            xenios_cli_on(&stack.db_url, "nats://127.0.0.1:1", &["jobs", "list"]);
        assert!(ok && listed.contains(&id), "{database}: {why}");
        stacks.push(stack);
    }
    assert!(
        bouncer
            .log()
            .contains("login attempt: db=pooled user=xenios tls="),
        "the pooled stack went through the pooler: {}",
        bouncer.log()
    );

    // The pooler restarts (a hosted one's maintenance), cutting every connection: while it
    // is away a submission is refused and nothing is queued; once it is back the connections
    // are made again and work goes on.
    let pooled = &stacks[1];
    bouncer.stop();
    let submit = || {
        pooled
            .post("/api/v1/jobs")
            .json(&json!({"kind": "echo", "input": {"message": "after the restart"}}))
            .send()
    };
    let mut commands = jetstream::new(pooled.nats_client.clone())
        .get_stream(JOBS_STREAM)
        .await
        .unwrap();
    let queued = commands.info().await.unwrap().state.last_sequence;
    error_body(submit().await.unwrap(), 503, "unavailable").await;
    let after = commands.info().await.unwrap().state.last_sequence;
    assert_eq!(after, queued, "a refused submission queued a command");
    bouncer.start_again().expect("pgbouncer starts again");
    let mut accepted = None;
    for _ in 0..100 {
        let response = submit().await.unwrap();
        if response.status() == 202 {
            accepted = Some(response.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let accepted = accepted.expect("submissions are taken again once the pooler is back");
    let id = accepted["job_id"].as_str().unwrap();
    let job = pooled
        .wait_for(id, &["succeeded", "failed"], Duration::from_secs(30))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");

    let refused = |db_url: String| {
        let (ok, _, why) = xenios_cli_on(&db_url, "nats://127.0.0.1:1", &["migrate"]);
        assert!(!ok, "{db_url} was let in");
        why
    };
    // As the Ansible role sets it up: the URL names no TLS, the environment does (sqlx reads
    // PGSSLMODE and PGSSLROOTCERT), and only the server's own CA is trusted.
    let bare = format!(
        "postgres://xenios:{password}@127.0.0.1:{}/direct",
        pg.port()
    );
    let verify_with = |ca: &std::path::Path| {
        let ca = ca.display().to_string();
        let env = [("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", ca.as_str())];
        xenios_cli_with(&bare, "nats://127.0.0.1:1", &env, &["migrate"])
    };
    let (ok, _, why) = verify_with(&pki.ca_cert);
    assert!(ok, "{why}");
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other = xenios_devstack::TestPki::generate(&other_dir).unwrap();
    let (ok, _, why) = verify_with(&other.ca_cert);
    assert!(
        !ok && why.contains("invalid peer certificate"),
        "a server another CA signed was trusted: {why}"
    );

    let plain = refused(url(pg.port(), "direct", password, "sslmode=disable"));
    assert!(plain.contains("no encryption"), "{plain}");
    let wrong = refused(url(pg.port(), "direct", "guess", &verified));
    assert!(wrong.contains("password authentication failed"), "{wrong}");
    assert!(!wrong.contains("guess"), "the password is echoed: {wrong}");
}

/// A broker in operator mode (decentralised JWT authentication, as NGS and Synadia Cloud run):
/// the API and the consumer log in with the `.creds` file `NATS_CREDS` names, their streams
/// and buckets live in its account, and a job runs end to end. The broker does refuse a client
/// without credentials and one whose account the operator never issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_through_a_broker_in_operator_mode_with_a_credentials_file() {
    let dir = tempfile::tempdir().unwrap();
    let operator = xenios_devstack::TestOperator::generate(dir.path()).expect("the JWTs are made");
    let nats = xenios_devstack::NatsServer::start_with(xenios_devstack::ServerOptions {
        config: Some(operator.server_config.clone()),
        ..Default::default()
    })
    .expect("nats-server starts in operator mode");
    let url = nats.url();
    let creds = operator.user_creds.display().to_string();
    let stack = Stack::start_on(nats, Db::Sqlite, &[("nats.creds", creds.as_str())], 1).await;

    let id = stack
        .submit(
            "echo",
            json!({"message": "with credentials", "progress_steps": 1}),
        )
        .await;
    let events = stack.events(&id, None, Duration::from_secs(20)).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        kinds,
        ["status", "status", "progress", "result", "status"],
        "{events:?}"
    );
    assert_eq!(events[3].json(), json!({"message": "with credentials"}));
    assert_eq!(stack.job(&id).await["status"], "succeeded");

    let anonymous = async_nats::ConnectOptions::new().connect(&url).await;
    assert!(
        anonymous.is_err(),
        "a client without credentials was let in"
    );
    let stranger = async_nats::ConnectOptions::with_credentials_file(&operator.stranger_creds)
        .await
        .expect("the stranger's file parses")
        .connect(&url)
        .await;
    assert!(
        stranger.is_err(),
        "a user of an account the operator never issued was let in"
    );
}

/// Credentials rotated under running services, as short-lived ones are: the user JWT they
/// started with expires (the broker then disconnects them), the file by then holds a new
/// user's, and every connection (the API's, the consumer's) logs in with it at its reconnect,
/// without a restart. Read once at the start, the expired JWT would be refused for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_nats_credentials_are_read_at_the_next_reconnect() {
    const LIFETIME: Duration = Duration::from_secs(5);
    let dir = tempfile::tempdir().unwrap();
    let operator = xenios_devstack::TestOperator::generate(dir.path()).expect("the JWTs are made");
    let creds = dir.path().join("rotating.creds");
    operator
        .write_user_creds(&creds, "first", Some(LIFETIME))
        .unwrap();
    let expired_by = tokio::time::Instant::now() + LIFETIME;
    let nats = xenios_devstack::NatsServer::start_with(xenios_devstack::ServerOptions {
        config: Some(operator.server_config.clone()),
        ..Default::default()
    })
    .expect("nats-server starts in operator mode");
    let creds_setting = creds.display().to_string();
    let stack = Stack::start_on(nats, Db::Sqlite, &[("nats.creds", &creds_setting)], 1).await;
    let echo = |message: &'static str| {
        let stack = &stack;
        async move {
            let id = stack.submit("echo", json!({"message": message})).await;
            let done = stack
                .wait_for(&id, &["succeeded"], Duration::from_secs(20))
                .await;
            assert_eq!(done["result"], json!({"message": message}), "{done}");
        }
    };
    echo("with the first user").await;

    operator.write_user_creds(&creds, "second", None).unwrap();
    tokio::time::sleep_until(expired_by + Duration::from_secs(2)).await;
    let connects = || {
        stack
            .nats_client
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    eventually(Duration::from_secs(20), || async {
        let ready = stack.http.get(stack.url("/health/ready")).send().await;
        connects() >= 2 && ready.is_ok_and(|r| r.status().is_success())
    })
    .await;
    echo("with the second user").await;
}

/// Production runs three NATS nodes and replicated (R3) streams, and losing one under load
/// loses no job. The node the API is connected to, leading `JOBS` and `JOB_EVENTS`, is killed
/// (SIGKILL) while a hundred jobs are in flight and fifty more are submitted during the
/// streams' elections (a `503` would be retried with the same `Idempotency-Key`, as a client
/// does): the connections move to the other nodes, the streams elect new leaders, the
/// commands and outcome events refused meanwhile are sent again, and every job ends
/// `succeeded` with one result and one terminal event, both read from the stream. The node
/// then comes back and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_the_loss_of_a_broker_node_in_a_three_node_cluster() {
    let mut nodes = xenios_devstack::NatsServer::start_cluster(3).expect("the cluster forms");
    let urls: Vec<String> = nodes.iter().map(|node| node.url()).collect();
    let urls = urls.join(",");
    let first = nodes.remove(0);
    let extra = [("nats.url", urls.as_str()), ("nats.replicas", "3")];
    // No sweeper: the commands the broker refuses while it fails over are sent again by the
    // API itself, rather than left for the sweeper's delay.
    let mut stack = Stack::start_on(first, Db::Sqlite, &extra, 2).await;
    // The node to lose is the one the API is connected to, made the leader of `JOBS` and of
    // `JOB_EVENTS`, so that the connections and both streams' leaders move at once.
    let api_node = stack.nats_client.server_info().server_name;
    for stream in [JOBS_STREAM, EVENTS_STREAM] {
        lead_stream_from(&stack.nats_client, stream, &api_node).await;
    }
    let js = jetstream::new(stack.nats_client.clone());
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(submit_until_accepted(&stack, i).await);
    }
    let mut killed = if stack.nats.server_name() == Some(api_node.as_str()) {
        None
    } else {
        Some(
            nodes
                .iter()
                .position(|node| node.server_name() == Some(api_node.as_str()))
                .expect("the API's node is one of them"),
        )
    };
    match killed {
        None => stack.nats.kill(),
        Some(index) => nodes[index].kill(),
    }
    for i in 100..150 {
        ids.push(submit_until_accepted(&stack, i).await);
    }

    for (i, id) in ids.iter().enumerate() {
        let job = stack
            .wait_for(
                id,
                &["succeeded", "failed", "cancelled"],
                Duration::from_secs(120),
            )
            .await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["result"], json!({"message": i}), "{job}");
        // Followed as EventSource does: a stream the relay ended while the broker failed
        // over (it says to reconnect) is resumed with `Last-Event-ID`.
        let mut events: Vec<Sse> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !events
            .iter()
            .any(|e| e.event.as_deref() == Some("status") && e.json()["status"] == "succeeded")
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id}: {events:?}"
            );
            let last = events.last().and_then(|e| e.id.clone());
            events.extend(
                stack
                    .events(id, last.as_deref(), Duration::from_secs(10))
                    .await,
            );
        }
        let results = events
            .iter()
            .filter(|e| e.event.as_deref() == Some("result"));
        let terminal = events
            .iter()
            .filter(|e| e.event.as_deref() == Some("status") && e.json()["status"] == "succeeded");
        assert_eq!((results.count(), terminal.count()), (1, 1), "{events:?}");
        // Read from the stream (an id that is its sequence), not told from the store after
        // a silence (`<seq>.<n>`): the outcome's events reached `JOB_EVENTS` in the failover.
        let outcome = events.iter().filter(|e| {
            e.event.as_deref() == Some("result")
                || (e.event.as_deref() == Some("status") && e.json()["status"] == "succeeded")
        });
        for event in outcome {
            let seq = event.id.as_deref().unwrap_or_default();
            assert!(
                seq.parse::<u64>().is_ok(),
                "job {id}'s outcome told from the store: {events:?}"
            );
        }
    }
    let jobs_leader = stream_leader(&stack.nats_client, JOBS_STREAM).await;
    assert!(jobs_leader.is_some_and(|leader| leader != api_node));

    match killed.take() {
        None => stack.nats.start_again().unwrap(),
        Some(index) => nodes[index].start_again().unwrap(),
    }
    eventually(Duration::from_secs(60), || {
        let js = js.clone();
        async move {
            let Ok(mut stream) = js.get_stream(JOBS_STREAM).await else {
                return false;
            };
            let Ok(info) = stream.info().await else {
                return false;
            };
            info.cluster.as_ref().is_some_and(|cluster| {
                cluster.replicas.len() == 2
                    && cluster
                        .replicas
                        .iter()
                        .all(|peer| peer.current && !peer.offline)
            })
        }
    })
    .await;
}

/// The server leading `stream` of a cluster, as JetStream reports it.
async fn stream_leader(client: &async_nats::Client, stream: &str) -> Option<String> {
    let mut stream = jetstream::new(client.clone())
        .get_stream(stream)
        .await
        .ok()?;
    let info = stream.info().await.ok()?;
    info.cluster.as_ref()?.leader.clone()
}

/// Has the leader of `stream` step down until `node` leads it (each step down elects a random
/// peer).
async fn lead_stream_from(client: &async_nats::Client, stream: &str, node: &str) {
    let mut leader = None;
    for _ in 0..100 {
        leader = stream_leader(client, stream).await;
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..20 {
        if leader.as_deref() == Some(node) {
            return;
        }
        client
            .request(
                format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
                "".into(),
            )
            .await
            .unwrap();
        for _ in 0..100 {
            let now = stream_leader(client, stream).await;
            if now.is_some() && now != leader {
                leader = now;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("{node} never led {stream} (last {leader:?})");
}

/// Submits echo job `i` as a client does while the broker fails over: a `503` is retried with
/// the same `Idempotency-Key`.
async fn submit_until_accepted(stack: &Stack, i: usize) -> String {
    let key = format!("cluster-{i}");
    for _ in 0..200 {
        let response = stack
            .post("/api/v1/jobs")
            .header("Idempotency-Key", &key)
            .json(&json!({"kind": "echo", "input": {"message": i, "delay_ms": 200}}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        match status {
            202 | 200 => return body["job_id"].as_str().unwrap().to_owned(),
            503 => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => panic!("job {i}: {status} {body}"),
        }
    }
    panic!("job {i} not accepted within 200 tries");
}
