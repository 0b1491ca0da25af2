//! One contract, two databases: every test is written once against `Store` and instantiated
//! for SQLite (a temp file) and PostgreSQL (a fresh database from `test_database_url`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tempfile::TempDir;
use xenios_contract::{new_job_id, JobError, JobId, JobKind, JobStatus, Progress};
use xenios_store::{
    AttemptWrite, Backend, CancelOutcome, Created, InferenceLog, JobQuery, JobRecord, NewJob,
    Outcome, StartAttempt, Store, StoreError, StoreOptions, UsageCounts, UsageQuery, UsageReport,
    WebhookStatus, PAGE_BYTES,
};

/// Keeps the SQLite temp dir alive for as long as the test's store.
struct Db {
    store: Store,
    _dir: Option<TempDir>,
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet: connect creates it.
    let url = format!("sqlite://{}/nested/xenios.db", dir.path().display());
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    store.migrate().await.unwrap();
    Db {
        store,
        _dir: Some(dir),
    }
}

async fn postgres() -> Db {
    let url = xenios_devstack::test_database_url().await.unwrap();
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    store.migrate().await.unwrap();
    Db { store, _dir: None }
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = super::sqlite().await;
                    super::$name(db.store.clone()).await;
                    db.store.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = super::postgres().await;
                    super::$name(db.store.clone()).await;
                    db.store.close().await;
                }
            )*
        }
    };
}

contract!(
    migrate_twice_and_ping,
    create_and_get_round_trip,
    idempotency_key_returns_the_existing_job,
    a_job_a_retry_was_answered_with_is_not_taken_back,
    a_live_job_is_recorded_and_deduplicated_like_any_other,
    list_newest_first_with_filters_and_cursor,
    start_attempt_counts_and_skips_finished_jobs,
    a_held_lease_makes_other_deliveries_wait,
    an_attempt_taken_over_can_no_longer_write,
    first_outcome_wins,
    what_postgres_cannot_hold_is_stored_mended,
    illegal_transitions_are_refused,
    retry_requeues_a_running_job,
    cancel_depends_on_status,
    republish_picks_old_queued_jobs,
    progress_only_while_running,
    inference_logs_round_trip,
    llm_usage_sums_a_window_per_user_and_model,
    webhook_deliveries_are_claimed_once_and_recorded,
    a_webhook_claim_stops_at_its_bytes,
    extraction_cache_put_get_upsert,
    concurrent_writers_have_one_winner,
    many_callers_at_once_each_get_their_own_outcome,
    counts_by_kind_and_status,
    expired_rows_are_purged_oldest_first,
    a_users_rows_are_erased_and_no_one_elses,
    an_erased_users_spending_of_the_day_stays_as_one_row,
);

fn new_job(kind: JobKind, user: Option<&str>) -> NewJob {
    NewJob {
        id: new_job_id(),
        kind,
        user_id: user.map(str::to_owned),
        input: json!({"message": "hi", "nested": {"n": [1, 2.5, null, "ü"]}}),
        correlation_id: "corr-1".into(),
        idempotency_key: None,
        webhook_url: None,
    }
}

async fn create(store: &Store, new: NewJob) -> JobRecord {
    match store.create_job(new).await.unwrap() {
        Created::New(job) => job,
        other => panic!("expected a new job, got {other:?}"),
    }
}

async fn running(store: &Store, kind: JobKind) -> JobRecord {
    let job = create(store, new_job(kind, Some("u1"))).await;
    match store.start_attempt(job.id).await.unwrap() {
        StartAttempt::Started(job) => job,
        other => panic!("expected Started, got {other:?}"),
    }
}

fn transient() -> JobError {
    JobError {
        code: "upstream_timeout".into(),
        message: "provider timed out".into(),
        retryable: true,
    }
}

async fn migrate_twice_and_ping(store: Store) {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
}

async fn create_and_get_round_trip(store: Store) {
    let before = Utc::now();
    let new = new_job(JobKind::Extraction, Some("user-a"));
    let job = create(&store, new.clone()).await;
    assert_eq!(job.id, new.id);
    assert_eq!(job.kind, JobKind::Extraction);
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.user_id.as_deref(), Some("user-a"));
    assert_eq!(job.input, new.input);
    assert_eq!(job.correlation_id, "corr-1");
    assert_eq!(job.attempts, 0);
    assert!(!job.cancel_requested);
    assert_eq!(
        (job.progress.clone(), job.result.clone(), job.error.clone()),
        (None, None, None)
    );
    assert_eq!(
        (job.published_at, job.started_at, job.finished_at),
        (None, None, None)
    );
    assert!(job.created_at >= before - chrono::Duration::milliseconds(1));
    assert!(job.created_at <= Utc::now());
    assert_eq!(job.updated_at, job.created_at);

    let got = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(
        got, job,
        "read back exactly as written, sub-second timestamps included"
    );
    assert!(store.get_job(new_job_id()).await.unwrap().is_none());

    let no_user = create(&store, new_job(JobKind::Echo, None)).await;
    assert_eq!(
        store.get_job(no_user.id).await.unwrap().unwrap().user_id,
        None
    );

    store.mark_published(job.id).await.unwrap();
    let published = store.get_job(job.id).await.unwrap().unwrap();
    assert!(published.published_at.unwrap() >= job.created_at);
    assert!(published.updated_at >= job.updated_at);
    assert!(matches!(
        store.mark_published(new_job_id()).await,
        Err(StoreError::NotFound(_))
    ));
}

/// The LLM gateway's record (its commit not waited on to reach the disk) is the same record,
/// under the same rules, as any other job's; a job made either way is found by the other.
async fn a_live_job_is_recorded_and_deduplicated_like_any_other(store: Store) {
    let keyed = || NewJob {
        idempotency_key: Some("live-key".into()),
        ..new_job(JobKind::Llm, Some("alice"))
    };
    let live = match store.create_live_job(keyed()).await.unwrap() {
        Created::New(job) => job,
        other => panic!("expected a new job, got {other:?}"),
    };
    assert_eq!(store.get_job(live.id).await.unwrap(), Some(live.clone()));
    match store.create_job(keyed()).await.unwrap() {
        Created::Existing(job) => assert_eq!(job.id, live.id),
        other => panic!("expected Existing, got {other:?}"),
    }
    let plain = new_job(JobKind::Llm, Some("alice"));
    create(&store, plain.clone()).await;
    assert!(matches!(
        store.create_live_job(plain).await,
        Err(StoreError::Conflict(_))
    ));
    // Many at once go out together, each caller with its own record.
    let many = (0..40).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let new = new_job(JobKind::Llm, Some("bob"));
            let id = new.id;
            (id, store.create_live_job(new).await.unwrap())
        })
    });
    for joined in futures::future::join_all(many).await {
        let (id, created) = joined.unwrap();
        assert!(matches!(created, Created::New(job) if job.id == id));
    }
    match store.start_attempt(live.id).await.unwrap() {
        StartAttempt::Started(job) => assert_eq!(job.attempts, 1),
        other => panic!("expected Started, got {other:?}"),
    }
}

async fn idempotency_key_returns_the_existing_job(store: Store) {
    let keyed = |user: Option<&str>| NewJob {
        idempotency_key: Some("key-1".into()),
        webhook_url: None,
        ..new_job(JobKind::Llm, user)
    };
    let first = create(&store, keyed(Some("alice"))).await;
    match store.create_job(keyed(Some("alice"))).await.unwrap() {
        Created::Existing(job) => assert_eq!(job, first),
        other => panic!("expected Existing, got {other:?}"),
    }
    // Same key, another user: another job.
    let bob = create(&store, keyed(Some("bob"))).await;
    assert_ne!(bob.id, first.id);
    // Callers without a user share one namespace.
    let anonymous = create(&store, keyed(None)).await;
    assert!(matches!(
        store.create_job(keyed(None)).await.unwrap(),
        Created::Existing(job) if job.id == anonymous.id
    ));
    // Without a key nothing is deduplicated, but an id is never reused.
    let plain = new_job(JobKind::Llm, Some("alice"));
    create(&store, plain.clone()).await;
    assert!(matches!(
        store.create_job(plain).await,
        Err(StoreError::Conflict(_))
    ));
}

/// A submission refused by a full queue takes its record back, unless a retry with its key
/// was answered with the job first (through the API's lookup or a concurrent insert): a job
/// someone was told of is never deleted.
async fn a_job_a_retry_was_answered_with_is_not_taken_back(store: Store) {
    let keyed = |key: &str| NewJob {
        idempotency_key: Some(key.into()),
        ..new_job(JobKind::Echo, Some("alice"))
    };
    // Looked up by a retry before the take-back.
    let looked_up = create(&store, keyed("looked-up")).await;
    let replayed = store
        .replayed_job(Some("alice"), "looked-up")
        .await
        .unwrap();
    assert_eq!(replayed, Some(looked_up.clone()));
    assert!(!store.delete_unstarted_job(looked_up.id).await.unwrap());
    assert!(store.get_job(looked_up.id).await.unwrap().is_some());
    // Met by a concurrent submission's insert before the take-back.
    let raced = create(&store, keyed("raced")).await;
    assert!(matches!(
        store.create_job(keyed("raced")).await.unwrap(),
        Created::Existing(job) if job.id == raced.id
    ));
    assert!(!store.delete_unstarted_job(raced.id).await.unwrap());
    // Taken back first: a retry finds nothing and makes the job anew.
    let refused = create(&store, keyed("refused")).await;
    assert!(store.delete_unstarted_job(refused.id).await.unwrap());
    assert_eq!(
        store.replayed_job(Some("alice"), "refused").await.unwrap(),
        None
    );
    let remade = create(&store, keyed("refused")).await;
    assert_ne!(remade.id, refused.id);
    // A job that started is answered as it is; it cannot be taken back anyway.
    store.start_attempt(remade.id).await.unwrap();
    let started = store
        .replayed_job(Some("alice"), "refused")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((started.id, started.attempts), (remade.id, 1));
    assert!(!store.delete_unstarted_job(remade.id).await.unwrap());
}

async fn list_newest_first_with_filters_and_cursor(store: Store) {
    let mut alice = Vec::new();
    for i in 0..5 {
        let kind = if i % 2 == 0 {
            JobKind::Echo
        } else {
            JobKind::Llm
        };
        alice.push(create(&store, new_job(kind, Some("alice"))).await.id);
    }
    let bob = create(&store, new_job(JobKind::Echo, Some("bob"))).await.id;
    alice.reverse(); // newest first

    let q = |limit, before| JobQuery {
        user_id: Some("alice".into()),
        limit,
        before,
        ..JobQuery::default()
    };
    let page = store.list_jobs(&q(2, None)).await.unwrap();
    assert_eq!(ids(&page.jobs), alice[..2]);
    assert_eq!(page.next_cursor, Some(alice[1]));
    let page = store.list_jobs(&q(2, page.next_cursor)).await.unwrap();
    assert_eq!(ids(&page.jobs), alice[2..4]);
    assert_eq!(page.next_cursor, Some(alice[3]));
    let page = store.list_jobs(&q(2, page.next_cursor)).await.unwrap();
    assert_eq!(ids(&page.jobs), alice[4..]);
    assert_eq!(page.next_cursor, None);
    // Exactly a page left: no cursor to an empty page.
    let page = store.list_jobs(&q(5, None)).await.unwrap();
    assert_eq!(ids(&page.jobs), alice);
    assert_eq!(page.next_cursor, None);

    let echo = store
        .list_jobs(&JobQuery {
            kind: Some(JobKind::Echo),
            ..q(100, None)
        })
        .await
        .unwrap();
    assert_eq!(ids(&echo.jobs), [alice[0], alice[2], alice[4]]);

    store.start_attempt(alice[1]).await.unwrap();
    let started = store
        .list_jobs(&JobQuery {
            status: Some(JobStatus::Running),
            ..q(100, None)
        })
        .await
        .unwrap();
    assert_eq!(ids(&started.jobs), [alice[1]]);

    let everyone = store
        .list_jobs(&JobQuery {
            limit: 100,
            ..JobQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(everyone.jobs.len(), 6);
    assert_eq!(everyone.jobs[0].id, bob);

    // The limit is clamped to 1..=100.
    let one = store.list_jobs(&q(0, None)).await.unwrap();
    assert_eq!(one.jobs.len(), 1);
    assert_eq!(one.next_cursor, Some(alice[0]));

    // A page ends before the job that would take it past its byte budget.
    let mut large = Vec::new();
    for _ in 0..3 {
        let job = running(&store, JobKind::Extraction).await;
        // Random text: PostgreSQL counts jsonb as stored, compressed.
        let content: String = (0..1200)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        store
            .finish_job(job.id, Outcome::Succeeded(json!({ "content": content })))
            .await
            .unwrap();
        large.push(job.id);
    }
    large.reverse();
    let by_size = |max_bytes, before| JobQuery {
        kind: Some(JobKind::Extraction),
        limit: 100,
        before,
        max_bytes,
        ..JobQuery::default()
    };
    let page = store.list_jobs(&by_size(100_000, None)).await.unwrap();
    assert_eq!(ids(&page.jobs), large[..2]);
    assert_eq!(page.next_cursor, Some(large[1]));
    let page = store
        .list_jobs(&by_size(100_000, page.next_cursor))
        .await
        .unwrap();
    assert_eq!(ids(&page.jobs), large[2..]);
    assert_eq!(page.next_cursor, None);
    // The first job is listed whatever its size.
    let page = store.list_jobs(&by_size(1, None)).await.unwrap();
    assert_eq!(ids(&page.jobs), large[..1]);
    assert_eq!(page.next_cursor, Some(large[0]));
    let everything = store.list_jobs(&by_size(u64::MAX, None)).await.unwrap();
    assert_eq!(ids(&everything.jobs), large);
}

fn ids(jobs: &[JobRecord]) -> Vec<uuid::Uuid> {
    jobs.iter().map(|j| j.id).collect()
}

async fn start_attempt_counts_and_skips_finished_jobs(store: Store) {
    let job = running(&store, JobKind::Echo).await;
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.attempts, 1);
    let started_at = job.started_at.unwrap();

    // A redelivery after a crashed attempt: still running, counted again, first start kept.
    let StartAttempt::Started(again) = store.start_attempt(job.id).await.unwrap() else {
        panic!("redelivery must start again");
    };
    assert_eq!(again.attempts, 2);
    assert_eq!(again.started_at, Some(started_at));
    assert!(again.updated_at >= job.updated_at);

    store
        .finish_job(job.id, Outcome::Succeeded(json!({"ok": true})))
        .await
        .unwrap()
        .unwrap();
    match store.start_attempt(job.id).await.unwrap() {
        StartAttempt::Finished(done) => {
            assert_eq!(done.status, JobStatus::Succeeded);
            assert_eq!(done.attempts, 2, "a skipped redelivery is not an attempt");
        }
        other => panic!("expected Finished, got {other:?}"),
    }
    assert_eq!(
        store.start_attempt(new_job_id()).await.unwrap(),
        StartAttempt::NotFound
    );
}

async fn a_held_lease_makes_other_deliveries_wait(store: Store) {
    let job = running(&store, JobKind::Echo).await;
    let lease = std::time::Duration::from_secs(60);
    // Held: a second delivery must wait, and nothing changes.
    match store.start_attempt_with_lease(job.id, lease).await.unwrap() {
        StartAttempt::Busy(held) => assert_eq!(held.attempts, 1),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(
        store.renew_lease(job.id, 1).await.unwrap(),
        AttemptWrite::Done(false)
    );
    // A cancel request shows in the renewal.
    store.cancel_job(job.id).await.unwrap();
    assert_eq!(
        store.renew_lease(job.id, 1).await.unwrap(),
        AttemptWrite::Done(true)
    );

    // A lease nobody renewed within the window is taken over.
    let other = running(&store, JobKind::Echo).await;
    let StartAttempt::Started(taken) = store
        .start_attempt_with_lease(other.id, std::time::Duration::ZERO)
        .await
        .unwrap()
    else {
        panic!("an expired lease is taken over");
    };
    assert_eq!(taken.attempts, 2);
    // Queued jobs start whatever the lease.
    let queued = store
        .create_job(new_job(JobKind::Echo, None))
        .await
        .unwrap()
        .into_job();
    assert!(matches!(
        store
            .start_attempt_with_lease(queued.id, lease)
            .await
            .unwrap(),
        StartAttempt::Started(_)
    ));
    store
        .finish_job(queued.id, Outcome::Succeeded(json!(1)))
        .await
        .unwrap();
    assert_eq!(
        store.renew_lease(queued.id, 1).await.unwrap(),
        AttemptWrite::Lost
    );
}

/// Fencing: an attempt cut off from the database past its lease was taken over by the next
/// delivery. When it comes back, none of its writes lands on the new attempt's job: not a
/// renewal (both would run at once), a requeue (a third copy would start) or an outcome.
async fn an_attempt_taken_over_can_no_longer_write(store: Store) {
    let first = running(&store, JobKind::Echo).await;
    assert_eq!(first.attempts, 1);
    let StartAttempt::Started(second) = store.start_attempt(first.id).await.unwrap() else {
        panic!("a lapsed lease is taken over");
    };
    assert_eq!(second.attempts, 2);
    let id = first.id;
    let progress = Progress {
        percent: Some(50.0),
        ..Progress::default()
    };

    assert_eq!(store.renew_lease(id, 1).await.unwrap(), AttemptWrite::Lost);
    assert_eq!(
        store.set_progress(id, 1, &progress).await.unwrap(),
        AttemptWrite::Lost
    );
    assert_eq!(
        store
            .retry_job(id, 1, &transient(), Duration::ZERO)
            .await
            .unwrap(),
        AttemptWrite::Lost
    );
    for outcome in [
        Outcome::Succeeded(json!("first")),
        Outcome::Failed(transient()),
        Outcome::Cancelled,
    ] {
        assert_eq!(
            store.finish_attempt(id, 1, outcome).await.unwrap(),
            AttemptWrite::Lost
        );
    }
    assert_eq!(store.get_job(id).await.unwrap().unwrap(), second);

    assert_eq!(
        store.renew_lease(id, 2).await.unwrap(),
        AttemptWrite::Done(false)
    );
    assert_eq!(
        store.set_progress(id, 2, &progress).await.unwrap(),
        AttemptWrite::Done(())
    );
    let AttemptWrite::Done(done) = store
        .finish_attempt(id, 2, Outcome::Succeeded(json!("second")))
        .await
        .unwrap()
    else {
        panic!("the holder records its outcome");
    };
    assert_eq!(
        (done.status, done.result, done.attempts),
        (JobStatus::Succeeded, Some(json!("second")), 2)
    );
    assert_eq!(done.progress, Some(progress));
    // Finished, the job is no attempt's any more.
    assert_eq!(store.renew_lease(id, 2).await.unwrap(), AttemptWrite::Lost);
    assert_eq!(
        store
            .finish_attempt(id, 2, Outcome::Cancelled)
            .await
            .unwrap(),
        AttemptWrite::Lost
    );

    // The holder's own retry puts the job back; its outcome then has no attempt to land on.
    let retried = running(&store, JobKind::Echo).await;
    assert_eq!(
        store
            .retry_job(retried.id, 1, &transient(), Duration::ZERO)
            .await
            .unwrap(),
        AttemptWrite::Done(())
    );
    assert_eq!(
        store
            .finish_attempt(retried.id, 1, Outcome::Succeeded(json!(1)))
            .await
            .unwrap(),
        AttemptWrite::Lost
    );
    assert_eq!(
        store.get_job(retried.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    assert!(matches!(
        store
            .finish_attempt(new_job_id(), 1, Outcome::Cancelled)
            .await,
        Err(StoreError::NotFound(_))
    ));

    // Outcomes of both attempts of many jobs at once (batched together on PostgreSQL): each
    // job gets its holder's.
    let mut jobs = Vec::new();
    for _ in 0..20 {
        let job = running(&store, JobKind::Echo).await;
        store.start_attempt(job.id).await.unwrap();
        jobs.push(job.id);
    }
    let finishes = jobs.iter().flat_map(|&id| {
        [1, 2].map(|attempt| {
            let store = store.clone();
            async move {
                let outcome = Outcome::Succeeded(json!(attempt));
                (
                    attempt,
                    store.finish_attempt(id, attempt, outcome).await.unwrap(),
                )
            }
        })
    });
    for joined in spawn_all(finishes.collect()).await {
        match joined.unwrap() {
            (1, written) => assert_eq!(written, AttemptWrite::Lost),
            (_, written) => assert!(matches!(written, AttemptWrite::Done(_)), "{written:?}"),
        }
    }
    for id in jobs {
        let job = store.get_job(id).await.unwrap().unwrap();
        assert_eq!(
            (job.status, job.result),
            (JobStatus::Succeeded, Some(json!(2)))
        );
    }
}

async fn first_outcome_wins(store: Store) {
    let job = running(&store, JobKind::Llm).await;
    let done = store
        .finish_job(job.id, Outcome::Succeeded(json!({"content": "4"})))
        .await
        .unwrap()
        .expect("first outcome is recorded");
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.result, Some(json!({"content": "4"})));
    assert!(done.finished_at.unwrap() >= done.started_at.unwrap());

    for late in [
        Outcome::Failed(transient()),
        Outcome::Cancelled,
        Outcome::Succeeded(json!(1)),
    ] {
        assert_eq!(store.finish_job(job.id, late).await.unwrap(), None);
    }
    assert_eq!(store.get_job(job.id).await.unwrap().unwrap(), done);

    let failed = running(&store, JobKind::Llm).await;
    let err = JobError {
        code: "invalid_input".into(),
        message: "no such task".into(),
        retryable: false,
    };
    let rec = store
        .finish_job(failed.id, Outcome::Failed(err.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (rec.status, rec.error, rec.result),
        (JobStatus::Failed, Some(err), None)
    );
}

/// PostgreSQL refuses U+0000 in `text` and `jsonb`: a result, an error, a progress or a
/// provider's error holding one is stored with U+FFFD in its place, on both databases, rather
/// than failing its write for ever.
async fn what_postgres_cannot_hold_is_stored_mended(store: Store) {
    let job = running(&store, JobKind::Transcription).await;
    let progress = Progress {
        stage: Some("a\0b".into()),
        ..Progress::default()
    };
    assert_eq!(
        store.set_progress(job.id, 1, &progress).await.unwrap(),
        AttemptWrite::Done(())
    );
    let got = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(got.progress.unwrap().stage.as_deref(), Some("a\u{FFFD}b"));
    let done = store
        .finish_job(
            job.id,
            Outcome::Succeeded(json!({"text": "x\0y", "k\0": ["\0"]})),
        )
        .await
        .unwrap()
        .unwrap();
    let mended = json!({"text": "x\u{FFFD}y", "k\u{FFFD}": ["\u{FFFD}"]});
    assert_eq!(done.result.as_ref(), Some(&mended));
    let stored = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(stored.result, Some(mended));

    let failed = running(&store, JobKind::Llm).await;
    let error = JobError {
        message: "provider said \0".into(),
        ..transient()
    };
    assert_eq!(
        store
            .retry_job(failed.id, 1, &error, Duration::ZERO)
            .await
            .unwrap(),
        AttemptWrite::Done(())
    );
    store.start_attempt(failed.id).await.unwrap();
    let done = store
        .finish_job(failed.id, Outcome::Failed(error))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.error.unwrap().message, "provider said \u{FFFD}");

    let log = InferenceLog {
        id: uuid::Uuid::now_v7(),
        created_at: Utc::now(),
        user_id: None,
        job_id: Some(failed.id),
        task: "chat".into(),
        model: "m".into(),
        provider: "p".into(),
        attempt: 1,
        input_tokens: 0,
        output_tokens: 0,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        latency_ms: 1,
        ttft_ms: None,
        cost_usd: None,
        success: false,
        error: Some("HTTP 500: \0".into()),
    };
    store.insert_inference_log(&log).await.unwrap();
    let logs = store.inference_logs_for_job(failed.id).await.unwrap();
    assert_eq!(logs[0].error.as_deref(), Some("HTTP 500: \u{FFFD}"));
}

/// Contract: an outcome the current status does not allow is `Conflict` (the job is left
/// untouched); an already recorded outcome is `Ok(None)`; an unknown job is `NotFound`.
async fn illegal_transitions_are_refused(store: Store) {
    let queued = create(&store, new_job(JobKind::Echo, Some("u"))).await;
    assert!(matches!(
        store
            .finish_job(queued.id, Outcome::Succeeded(json!({})))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.get_job(queued.id).await.unwrap().unwrap(), queued);
    assert_eq!(
        store
            .retry_job(queued.id, 0, &transient(), Duration::ZERO)
            .await
            .unwrap(),
        AttemptWrite::Lost
    );

    // Nor queued → failed (SPEC §3): a job fails in an attempt, or is cancelled before one.
    assert!(matches!(
        store
            .finish_job(queued.id, Outcome::Failed(transient()))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.get_job(queued.id).await.unwrap().unwrap(), queued);

    assert!(matches!(
        store.finish_job(new_job_id(), Outcome::Cancelled).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn retry_requeues_a_running_job(store: Store) {
    let job = running(&store, JobKind::Transcription).await;
    let redelivered_in = Duration::from_secs(600);
    assert_eq!(
        store
            .retry_job(job.id, 1, &transient(), redelivered_in)
            .await
            .unwrap(),
        AttemptWrite::Done(())
    );
    let queued = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(queued.status, JobStatus::Queued);
    assert_eq!(queued.error, Some(transient()));
    assert_eq!(queued.attempts, 1);
    // The NAKed command is still in flight: the sweeper's clock starts when it is due.
    let due = queued.published_at.expect("published_at set");
    assert!(
        due >= queued.updated_at + chrono::Duration::seconds(599),
        "{due}"
    );
    let before_due = queued.updated_at + chrono::Duration::seconds(300);
    let swept = store
        .jobs_to_republish(before_due, &JobKind::ALL, 100)
        .await
        .unwrap();
    assert!(swept.iter().all(|j| j.id != job.id), "swept before due");

    let StartAttempt::Started(second) = store.start_attempt(job.id).await.unwrap() else {
        panic!("a retried job starts again");
    };
    assert_eq!(second.attempts, 2);
    assert_eq!(second.started_at, job.started_at);
    let done = store
        .finish_job(job.id, Outcome::Succeeded(json!({"text": "ok"})))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.error, None, "success clears the last transient error");
}

async fn cancel_depends_on_status(store: Store) {
    let queued = create(&store, new_job(JobKind::Echo, Some("u"))).await;
    match store.cancel_job(queued.id).await.unwrap() {
        CancelOutcome::Cancelled(job) => {
            assert_eq!(job.status, JobStatus::Cancelled);
            assert!(job.finished_at.is_some());
        }
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert!(matches!(
        store.start_attempt(queued.id).await.unwrap(),
        StartAttempt::Finished(_)
    ));

    let run = running(&store, JobKind::Echo).await;
    match store.cancel_job(run.id).await.unwrap() {
        CancelOutcome::Requested(job) => {
            assert_eq!(job.status, JobStatus::Running);
            assert!(job.cancel_requested);
            assert_eq!(job.finished_at, None);
        }
        other => panic!("expected Requested, got {other:?}"),
    }
    // A redelivery of a job whose cancellation is pending does not start it again.
    assert!(matches!(
        store.start_attempt(run.id).await.unwrap(),
        StartAttempt::CancelRequested(job) if job.attempts == 1
    ));
    let cancelled = store
        .finish_job(run.id, Outcome::Cancelled)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);

    assert!(matches!(
        store.cancel_job(run.id).await.unwrap(),
        CancelOutcome::AlreadyFinished(job) if job.status == JobStatus::Cancelled
    ));
    assert_eq!(
        store.cancel_job(new_job_id()).await.unwrap(),
        CancelOutcome::NotFound
    );
}

async fn republish_picks_old_queued_jobs(store: Store) {
    let never_published = create(&store, new_job(JobKind::Echo, None)).await;
    let published = create(&store, new_job(JobKind::Echo, None)).await;
    store.mark_published(published.id).await.unwrap();
    let started = running(&store, JobKind::Echo).await;
    let cutoff = wait_past(Utc::now()).await;
    let fresh = create(&store, new_job(JobKind::Echo, None)).await;

    let due = store
        .jobs_to_republish(cutoff, &JobKind::ALL, 100)
        .await
        .unwrap();
    assert_eq!(ids(&due), [never_published.id, published.id]);
    assert!(!ids(&due).contains(&started.id) && !ids(&due).contains(&fresh.id));
    assert_eq!(
        store
            .jobs_to_republish(cutoff, &JobKind::ALL, 1)
            .await
            .unwrap()
            .len(),
        1
    );

    // Republished: not due again until its new publication is old.
    store.mark_published(never_published.id).await.unwrap();
    assert_eq!(
        ids(&store
            .jobs_to_republish(cutoff, &JobKind::ALL, 100)
            .await
            .unwrap()),
        [published.id]
    );
    let later = wait_past(Utc::now()).await;
    let due = ids(&store
        .jobs_to_republish(later, &JobKind::ALL, 100)
        .await
        .unwrap());
    assert_eq!(due, [never_published.id, published.id, fresh.id]);
    // Only the kinds asked for (the sweeper leaves out kinds with a backlog).
    assert!(store
        .jobs_to_republish(later, &[JobKind::Llm], 100)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .jobs_to_republish(later, &[], 100)
        .await
        .unwrap()
        .is_empty());
}

/// Returns `t` once the clock has moved past it, so rows written afterwards are newer.
async fn wait_past(t: DateTime<Utc>) -> DateTime<Utc> {
    while Utc::now() <= t + chrono::Duration::milliseconds(1) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    t
}

async fn progress_only_while_running(store: Store) {
    let progress = Progress {
        percent: Some(42.5),
        stage: Some("transcribing".into()),
        message: Some("chunk 3/7".into()),
    };
    let queued = create(&store, new_job(JobKind::Transcription, None)).await;
    assert_eq!(
        store.set_progress(queued.id, 0, &progress).await.unwrap(),
        AttemptWrite::Lost
    );
    assert_eq!(
        store.get_job(queued.id).await.unwrap().unwrap().progress,
        None
    );

    let job = running(&store, JobKind::Transcription).await;
    assert_eq!(
        store.set_progress(job.id, 1, &progress).await.unwrap(),
        AttemptWrite::Done(())
    );
    let got = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(got.progress, Some(progress.clone()));
    assert!(got.updated_at >= job.updated_at);

    store.finish_job(job.id, Outcome::Cancelled).await.unwrap();
    assert_eq!(
        store
            .set_progress(job.id, 1, &Progress::default())
            .await
            .unwrap(),
        AttemptWrite::Lost
    );
    assert_eq!(
        store.get_job(job.id).await.unwrap().unwrap().progress,
        Some(progress)
    );
}

async fn inference_logs_round_trip(store: Store) {
    let job = running(&store, JobKind::Llm).await;
    let t0 = Utc::now();
    let first = InferenceLog {
        id: uuid::Uuid::now_v7(),
        created_at: t0,
        user_id: Some("u1".into()),
        job_id: Some(job.id),
        task: "chat".into(),
        model: "anthropic/claude-opus-4-20250514".into(),
        provider: "openrouter".into(),
        attempt: 1,
        input_tokens: 1200,
        output_tokens: 0,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        latency_ms: 30_000,
        ttft_ms: None,
        cost_usd: None,
        success: false,
        error: Some("429 Too Many Requests".into()),
    };
    let second = InferenceLog {
        id: uuid::Uuid::now_v7(),
        created_at: t0 + chrono::Duration::milliseconds(5),
        model: "anthropic/claude-sonnet-4-20250514".into(),
        attempt: 2,
        output_tokens: 345,
        cache_read_tokens: 1024,
        cache_write_tokens: 150,
        latency_ms: 2100,
        ttft_ms: Some(180),
        cost_usd: Some(0.012_345),
        success: true,
        error: None,
        ..first.clone()
    };
    store.insert_inference_log(&second).await.unwrap();
    store.insert_inference_log(&first).await.unwrap();
    let other_job = InferenceLog {
        id: uuid::Uuid::now_v7(),
        job_id: None,
        user_id: None,
        ..first.clone()
    };
    store.insert_inference_log(&other_job).await.unwrap();

    let logs = store.inference_logs_for_job(job.id).await.unwrap();
    let micros = |mut l: InferenceLog| {
        l.created_at = chrono::SubsecRound::trunc_subsecs(l.created_at, 6);
        l
    };
    assert_eq!(logs, [micros(first), micros(second)], "oldest first");
}

/// Calls inside the window are summed, for one user or for all, in all and per task and
/// model (costliest first); unknown costs add nothing; a job's calls count one request.
async fn llm_usage_sums_a_window_per_user_and_model(store: Store) {
    let t0 = Utc::now() - chrono::Duration::hours(1);
    let (job_a, job_b) = (new_job_id(), new_job_id());
    let call = |user: Option<&str>, job: JobId, model: &str, minutes: i64| InferenceLog {
        id: uuid::Uuid::now_v7(),
        created_at: t0 + chrono::Duration::minutes(minutes),
        user_id: user.map(str::to_owned),
        job_id: Some(job),
        task: "chat".into(),
        model: model.into(),
        provider: "anthropic".into(),
        attempt: 1,
        input_tokens: 1000,
        output_tokens: 100,
        cache_read_tokens: 600,
        cache_write_tokens: 0,
        latency_ms: 900,
        ttft_ms: None,
        cost_usd: Some(0.5),
        success: true,
        error: None,
    };
    let logs = [
        // u1: a failed try then a fallback in one job, and a second job.
        InferenceLog {
            success: false,
            output_tokens: 0,
            cost_usd: None,
            error: Some("HTTP 503".into()),
            ..call(Some("u1"), job_a, "opus", 1)
        },
        call(Some("u1"), job_a, "sonnet", 2),
        InferenceLog {
            cost_usd: Some(2.0),
            cache_write_tokens: 300,
            ..call(Some("u1"), job_b, "opus", 3)
        },
        // Outside the window.
        call(Some("u1"), new_job_id(), "opus", -5),
        call(Some("u1"), new_job_id(), "opus", 60),
        // Another user, and a service call.
        call(Some("u2"), new_job_id(), "opus", 4),
        call(None, new_job_id(), "sonnet", 5),
    ];
    for log in &logs {
        store.insert_inference_log(log).await.unwrap();
    }
    let window = |user_id: Option<&str>| UsageQuery {
        user_id: user_id.map(str::to_owned),
        since: t0,
        until: t0 + chrono::Duration::minutes(60),
    };

    let u1 = store.llm_usage(&window(Some("u1"))).await.unwrap();
    assert_eq!(
        u1.total,
        UsageCounts {
            requests: 2,
            calls: 3,
            failed_calls: 1,
            input_tokens: 3000,
            output_tokens: 200,
            cache_read_tokens: 1800,
            cache_write_tokens: 300,
            cost_usd: 2.5,
        }
    );
    let by_model: Vec<_> = u1
        .by_model
        .iter()
        .map(|m| (m.model.as_str(), m.counts.calls, m.counts.cost_usd))
        .collect();
    assert_eq!(by_model, [("opus", 2, 2.0), ("sonnet", 1, 0.5)]);
    assert_eq!(u1.by_model[0].task, "chat");

    let everyone = store.llm_usage(&window(None)).await.unwrap();
    assert_eq!((everyone.total.calls, everyone.total.requests), (5, 4));
    assert_eq!(everyone.total.cost_usd, 3.5);
    let by_user: Vec<_> = everyone
        .by_user
        .iter()
        .map(|u| (u.user_id.as_deref(), u.counts.calls, u.counts.cost_usd))
        .collect();
    assert_eq!(
        by_user,
        [(Some("u1"), 3, 2.5), (Some("u2"), 1, 0.5), (None, 1, 0.5)],
        "costliest first; service calls last among equals"
    );
    assert!(
        u1.by_user.is_empty(),
        "one user's report has no per-user part"
    );

    let nobody = store.llm_usage(&window(Some("u3"))).await.unwrap();
    assert_eq!(nobody, UsageReport::default());
}

/// A finished job's announcement is claimed by one taker at a time (leased), tried again once
/// due, recorded as delivered or failed; a job without a webhook, or not finished, never is.
async fn webhook_deliveries_are_claimed_once_and_recorded(store: Store) {
    let hooked = |kind| NewJob {
        webhook_url: Some("https://hooks.example.com/x".into()),
        ..new_job(kind, Some("u1"))
    };
    let finish = |id| {
        let store = store.clone();
        async move {
            store.start_attempt(id).await.unwrap();
            store
                .finish_job(id, Outcome::Succeeded(json!({"ok": true})))
                .await
                .unwrap();
        }
    };
    let now = Utc::now();
    let lease = now + chrono::Duration::seconds(40);
    let a = create(&store, hooked(JobKind::Echo)).await.id;
    let plain = create(&store, new_job(JobKind::Echo, Some("u1"))).await.id;
    assert!(
        store
            .claim_webhooks(now, lease, 10, PAGE_BYTES)
            .await
            .unwrap()
            .is_empty(),
        "not finished yet"
    );
    let pending = webhook_of(&store, a).await.unwrap();
    assert_eq!((pending.state.as_str(), pending.attempts), ("pending", 0));
    finish(a).await;
    finish(plain).await;

    let due = store
        .claim_webhooks(now, lease, 10, PAGE_BYTES)
        .await
        .unwrap();
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!((due[0].job.id, due[0].attempt), (a, 1));
    assert_eq!(due[0].url, "https://hooks.example.com/x");
    assert_eq!(due[0].job.status, JobStatus::Succeeded);
    assert!(
        store
            .claim_webhooks(now, lease, 10, PAGE_BYTES)
            .await
            .unwrap()
            .is_empty(),
        "leased to the first taker"
    );
    // A taker that never reports back: the lease ends and the try is taken again.
    let later = lease + chrono::Duration::seconds(1);
    let again = store
        .claim_webhooks(later, later + chrono::Duration::seconds(40), 10, PAGE_BYTES)
        .await
        .unwrap();
    assert_eq!(again[0].attempt, 2);
    // The first taker reports at last: its failure is not the announcement's any more.
    store
        .finish_webhook(a, 1, Err(("too late".into(), None)))
        .await
        .unwrap();
    let still = webhook_of(&store, a).await.unwrap();
    assert_eq!((still.state.as_str(), still.error), ("pending", None));

    let retry_at = later + chrono::Duration::seconds(5);
    store
        .finish_webhook(
            a,
            2,
            Err(("the receiver answered 500".into(), Some(retry_at))),
        )
        .await
        .unwrap();
    let waiting = webhook_of(&store, a).await.unwrap();
    assert_eq!(waiting.state, "pending");
    assert_eq!(waiting.error.as_deref(), Some("the receiver answered 500"));
    assert!(store
        .claim_webhooks(later, lease, 10, PAGE_BYTES)
        .await
        .unwrap()
        .is_empty());
    let third = store
        .claim_webhooks(retry_at, retry_at, 10, PAGE_BYTES)
        .await
        .unwrap();
    assert_eq!(third[0].attempt, 3);
    store.finish_webhook(a, 3, Ok(())).await.unwrap();
    let delivered = webhook_of(&store, a).await.unwrap();
    assert_eq!(
        (
            delivered.state.as_str(),
            delivered.attempts,
            delivered.error
        ),
        ("delivered", 3, None)
    );
    let far = retry_at + chrono::Duration::days(1);
    assert!(store
        .claim_webhooks(far, far, 10, PAGE_BYTES)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(webhook_of(&store, plain).await, None);

    let gone = create(&store, hooked(JobKind::Llm)).await.id;
    finish(gone).await;
    let due = store
        .claim_webhooks(far, far, 10, PAGE_BYTES)
        .await
        .unwrap();
    assert_eq!(due[0].job.id, gone);
    store
        .finish_webhook(gone, 1, Err(("the receiver answered 410".into(), None)))
        .await
        .unwrap();
    assert_eq!(webhook_of(&store, gone).await.unwrap().state, "failed");
    // A try that delivered is recorded whatever a later one made of it.
    store.finish_webhook(gone, 1, Ok(())).await.unwrap();
    assert_eq!(webhook_of(&store, gone).await.unwrap().state, "delivered");

    // An operator's second chance: due at once, tries counted afresh.
    let redelivered = store
        .redeliver_webhook(gone)
        .await
        .unwrap()
        .expect("it has one");
    let webhook = redelivered.webhook.expect("its webhook");
    assert_eq!((webhook.state.as_str(), webhook.attempts), ("pending", 0));
    let again = store
        .claim_webhooks(far, far, 10, PAGE_BYTES)
        .await
        .unwrap();
    assert_eq!((again[0].job.id, again[0].attempt), (gone, 1));
    assert!(
        store.redeliver_webhook(plain).await.unwrap().is_none(),
        "no webhook"
    );
}

/// A claim loads its jobs whole: past its bytes of inputs and results the rest wait for the
/// next claim, though the first job always comes, however large.
async fn a_webhook_claim_stops_at_its_bytes(store: Store) {
    // Some 1.6 kB each, and nothing a database could compress much.
    let result = || {
        json!((0..40)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect::<Vec<_>>())
    };
    let mut finished = Vec::new();
    for _ in 0..4 {
        let new = NewJob {
            webhook_url: Some("https://hooks.example.com/x".into()),
            ..new_job(JobKind::Extraction, Some("u1"))
        };
        let id = create(&store, new).await.id;
        store.start_attempt(id).await.unwrap();
        store
            .finish_job(id, Outcome::Succeeded(result()))
            .await
            .unwrap();
        finished.push(id);
    }
    let now = Utc::now();
    let leased = now + chrono::Duration::minutes(5);
    let claim = |max_bytes| store.claim_webhooks(now, leased, 10, max_bytes);
    let ids =
        |due: Vec<xenios_store::WebhookDue>| due.into_iter().map(|d| d.job.id).collect::<Vec<_>>();
    assert_eq!(
        ids(claim(1).await.unwrap()),
        finished[..1],
        "the first always"
    );
    assert_eq!(
        ids(claim(4000).await.unwrap()),
        finished[1..3],
        "two fit in 4 kB"
    );
    assert_eq!(ids(claim(PAGE_BYTES).await.unwrap()), finished[3..]);
    assert!(claim(PAGE_BYTES).await.unwrap().is_empty(), "all claimed");
}

async fn a_users_rows_are_erased_and_no_one_elses(store: Store) {
    let finished = |user: &'static str, result: serde_json::Value| {
        let store = store.clone();
        async move {
            let id = create(&store, new_job(JobKind::Extraction, Some(user)))
                .await
                .id;
            store.start_attempt(id).await.unwrap();
            store
                .finish_job(id, Outcome::Succeeded(result))
                .await
                .unwrap();
            id
        }
    };
    let read = finished("gone", json!({"content": "# Notes", "sha256": "aaa"})).await;
    let other_doc = finished("gone", json!({"content": "x", "sha256": "bbb"})).await;
    let queued = create(&store, new_job(JobKind::Echo, Some("gone")))
        .await
        .id;
    let kept = finished("stays", json!({"content": "# Mine", "sha256": "ccc"})).await;
    let log = |user: &str, job| InferenceLog {
        id: uuid::Uuid::now_v7(),
        created_at: Utc::now(),
        user_id: Some(user.into()),
        job_id: Some(job),
        task: "chat".into(),
        model: "m".into(),
        provider: "p".into(),
        attempt: 1,
        input_tokens: 1,
        output_tokens: 1,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        latency_ms: 1,
        ttft_ms: None,
        cost_usd: None,
        success: true,
        error: None,
    };
    for (user, job) in [
        ("gone", read),
        ("gone", other_doc),
        ("gone", read),
        ("stays", kept),
    ] {
        store.insert_inference_log(&log(user, job)).await.unwrap();
    }
    for (key, sha) in [
        ("aaa:markdown", "aaa"),
        ("aaa:text", "aaa"),
        ("ccc:markdown", "ccc"),
    ] {
        store
            .put_extraction(key, sha, &json!({"content": "…"}))
            .await
            .unwrap();
    }

    let jobs = store.user_jobs("gone", 10).await.unwrap();
    assert_eq!(
        store.user_jobs("gone", 2).await.unwrap().len(),
        2,
        "at most the limit"
    );
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![queued, other_doc, read], "newest first");
    let docs: Vec<_> = jobs.iter().map(|j| j.document_sha256.as_deref()).collect();
    assert_eq!(docs, vec![None, Some("bbb"), Some("aaa")]);
    assert_eq!(jobs[0].status, JobStatus::Queued);

    assert_eq!(store.erase_cached_extractions("aaa").await.unwrap(), 2);
    // A job that finished after the erasure looked stays: what it wrote since was not erased.
    let late = create(&store, new_job(JobKind::Echo, Some("gone")))
        .await
        .id;
    store.start_attempt(late).await.unwrap();
    store.finish_job(late, Outcome::Cancelled).await.unwrap();
    assert_eq!(
        store.erase_finished_jobs("gone", &[read]).await.unwrap(),
        1,
        "only the listed"
    );
    // More ids than one statement takes; a queued job and another user's are not erased.
    let mut listed: Vec<JobId> = (0..600).map(|_| new_job_id()).collect();
    listed.extend([other_doc, queued, kept, read]);
    assert_eq!(store.erase_finished_jobs("gone", &listed).await.unwrap(), 1);
    assert_eq!(store.erase_finished_jobs("gone", &listed).await.unwrap(), 0);
    assert_eq!(store.erase_finished_jobs("gone", &[]).await.unwrap(), 0);
    let tomorrow = Utc::now() + chrono::Duration::days(1);
    assert_eq!(
        store
            .erase_inference_logs_of("gone", tomorrow, 10)
            .await
            .unwrap(),
        3
    );

    let left: Vec<_> = store.user_jobs("gone", 10).await.unwrap();
    let left: Vec<_> = left.iter().map(|j| j.id).collect();
    assert_eq!(left, vec![late, queued], "a queued job is not erased");
    assert_eq!(store.user_jobs("stays", 10).await.unwrap().len(), 1);
    assert!(store.get_job(kept).await.unwrap().is_some());
    assert_eq!(store.inference_logs_for_job(kept).await.unwrap().len(), 1);
    assert!(store
        .cached_extraction("ccc:markdown")
        .await
        .unwrap()
        .is_some());
    assert!(store.cached_extraction("aaa:text").await.unwrap().is_none());
}

/// Erasing a user's LLM audit keeps what their daily budget needs: the day's calls become one
/// row with their summed cost and nothing else; earlier days' rows go. Erasing again folds
/// the calls made since into that row, and once the day is over it goes too.
async fn an_erased_users_spending_of_the_day_stays_as_one_row(store: Store) {
    let now = Utc::now();
    let today = now - chrono::Duration::hours(1);
    let job = new_job_id();
    // Ids in the reverse order of the calls, so that the row kept is not the first one read.
    let mut ids: Vec<uuid::Uuid> = (0..4).map(|_| uuid::Uuid::now_v7()).collect();
    ids.reverse();
    let call = |id, user: &str, at, cost| InferenceLog {
        id,
        created_at: at,
        user_id: Some(user.into()),
        job_id: Some(job),
        task: "chat".into(),
        model: "m".into(),
        provider: "p".into(),
        attempt: 1,
        input_tokens: 100,
        output_tokens: 10,
        cache_read_tokens: 1,
        cache_write_tokens: 1,
        latency_ms: 5,
        ttft_ms: Some(2),
        cost_usd: cost,
        success: false,
        error: Some("overloaded".into()),
    };
    let yesterday = now - chrono::Duration::hours(2);
    for log in [
        call(ids[0], "spender", yesterday, Some(1.0)),
        call(
            ids[1],
            "spender",
            now - chrono::Duration::minutes(3),
            Some(0.5),
        ),
        call(ids[2], "spender", now - chrono::Duration::minutes(2), None),
        call(
            ids[3],
            "spender",
            now - chrono::Duration::minutes(1),
            Some(0.25),
        ),
    ] {
        store.insert_inference_log(&log).await.unwrap();
    }
    let mut theirs = call(uuid::Uuid::now_v7(), "saver", now, Some(2.0));
    theirs.job_id = Some(new_job_id());
    store.insert_inference_log(&theirs).await.unwrap();
    let day = |user: &str, since| {
        let store = store.clone();
        let query = UsageQuery {
            user_id: Some(user.into()),
            since,
            until: now + chrono::Duration::hours(1),
        };
        async move { store.llm_usage_total(&query).await.unwrap() }
    };
    let ever = now - chrono::Duration::days(30);

    assert_eq!(
        store
            .erase_inference_logs_of("spender", today, 1)
            .await
            .unwrap(),
        4
    );
    let kept = UsageCounts {
        calls: 1,
        cost_usd: 0.75,
        ..UsageCounts::default()
    };
    assert_eq!(day("spender", ever).await, kept, "only today's sum is left");
    assert_eq!(day("spender", today).await, kept);
    assert_eq!(store.inference_logs_for_job(job).await.unwrap().len(), 0);
    assert_eq!(day("saver", ever).await.cost_usd, 2.0);

    let mut later = call(uuid::Uuid::now_v7(), "spender", Utc::now(), Some(0.125));
    later.job_id = Some(new_job_id());
    store.insert_inference_log(&later).await.unwrap();
    assert_eq!(
        store
            .erase_inference_logs_of("spender", today, 10)
            .await
            .unwrap(),
        1
    );
    let kept = UsageCounts {
        cost_usd: 0.875,
        ..kept
    };
    assert_eq!(day("spender", ever).await, kept);
    assert_eq!(
        store
            .erase_inference_logs_of("spender", today, 10)
            .await
            .unwrap(),
        0,
        "nothing more"
    );
    assert_eq!(day("spender", ever).await, kept);

    let next_day = Utc::now() + chrono::Duration::seconds(1);
    store
        .erase_inference_logs_of("spender", next_day, 10)
        .await
        .unwrap();
    assert_eq!(day("spender", ever).await, UsageCounts::default());
    assert_eq!(day("saver", ever).await.calls, 1);
}

/// Where a job's announcement stands, as every read of the job shows it.
async fn webhook_of(store: &Store, id: JobId) -> Option<WebhookStatus> {
    store.get_job(id).await.unwrap().unwrap().webhook
}

async fn extraction_cache_put_get_upsert(store: Store) {
    let key = "3f2a…:markdown";
    assert_eq!(store.cached_extraction(key).await.unwrap(), None);
    let v1 = json!({"content": "# Title", "pages": 3, "cached": false});
    store.put_extraction(key, "3f2a", &v1).await.unwrap();
    assert_eq!(store.cached_extraction(key).await.unwrap(), Some(v1));
    let v2 = json!({"content": "# Title v2", "pages": 4});
    store.put_extraction(key, "3f2a", &v2).await.unwrap();
    assert_eq!(store.cached_extraction(key).await.unwrap(), Some(v2));
    assert_eq!(store.cached_extraction("other").await.unwrap(), None);
}

async fn concurrent_writers_have_one_winner(store: Store) {
    const TASKS: i32 = 16;
    let job = create(&store, new_job(JobKind::Echo, None)).await;
    let store = Arc::new(store);

    let starts = futures::future::join_all((0..TASKS).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.start_attempt(job.id).await.unwrap() })
    }))
    .await;
    assert!(starts
        .into_iter()
        .all(|s| matches!(s.unwrap(), StartAttempt::Started(_))));
    assert_eq!(
        store.get_job(job.id).await.unwrap().unwrap().attempts,
        TASKS,
        "no attempt lost to a concurrent update"
    );

    let finishes = futures::future::join_all((0..TASKS).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let outcome = match i % 3 {
                0 => Outcome::Succeeded(json!({"winner": i})),
                1 => Outcome::Failed(transient()),
                _ => Outcome::Cancelled,
            };
            store.finish_job(job.id, outcome).await.unwrap()
        })
    }))
    .await;
    let winners: Vec<JobRecord> = finishes.into_iter().filter_map(|f| f.unwrap()).collect();
    assert_eq!(winners.len(), 1, "exactly one outcome recorded");
    assert_eq!(store.get_job(job.id).await.unwrap().unwrap(), winners[0]);

    // Cancel racing with start: the job ends either cancelled before starting or running with
    // a pending cancellation, never both started and silently cancelled.
    let raced = create(&store, new_job(JobKind::Echo, None)).await;
    let (start, cancel) = tokio::join!(store.start_attempt(raced.id), store.cancel_job(raced.id));
    match (start.unwrap(), cancel.unwrap()) {
        (StartAttempt::Started(_), CancelOutcome::Requested(_))
        | (StartAttempt::Finished(_), CancelOutcome::Cancelled(_)) => {}
        other => panic!("inconsistent race outcome {other:?}"),
    }
}

async fn counts_by_kind_and_status(store: Store) {
    create(&store, new_job(JobKind::Echo, None)).await;
    create(&store, new_job(JobKind::Echo, None)).await;
    running(&store, JobKind::Llm).await;
    let counts = store.count_jobs_by_status().await.unwrap();
    assert_eq!(
        counts,
        [
            (JobKind::Echo, JobStatus::Queued, 2),
            (JobKind::Llm, JobStatus::Running, 1),
        ]
    );
}

#[tokio::test]
async fn postgres_tables_live_in_schema_ai_backend() {
    let url = xenios_devstack::test_database_url().await.unwrap();
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.close().await;

    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables \
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
         ORDER BY table_name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let in_schema = |t: &str| tables.contains(&("ai_backend".into(), t.into()));
    for t in [
        "_sqlx_migrations",
        "extraction_cache",
        "inference_logs",
        "jobs",
    ] {
        assert!(in_schema(t), "{t} not in ai_backend: {tables:?}");
    }
    assert!(
        tables.iter().all(|(schema, _)| schema == "ai_backend"),
        "nothing outside ai_backend: {tables:?}"
    );
}

#[tokio::test]
async fn sqlite_in_memory_and_bad_urls() {
    let store = Store::connect("sqlite::memory:", &StoreOptions::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let job = create(&store, new_job(JobKind::Echo, None)).await;
    assert_eq!(store.get_job(job.id).await.unwrap().unwrap(), job);

    // Reads beside the writer's batches: the two connections share one in-memory database,
    // and neither may fail while the other holds it.
    let tasks = (0..200).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let job = create(&store, new_job(JobKind::Echo, None)).await;
            let read = store.get_job(job.id).await.unwrap().unwrap();
            assert_eq!(read, job);
            store.start_attempt(job.id).await.unwrap();
            store.list_jobs(&JobQuery::default()).await.unwrap();
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.unwrap();
    }
    assert_eq!(
        store
            .count_jobs_by_status()
            .await
            .unwrap()
            .iter()
            .map(|c| c.2)
            .sum::<i64>(),
        201
    );

    let err = Store::connect("mysql://root:secret@db/x", &StoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)));
    assert!(!err.to_string().contains("secret"));
}

/// Two processes starting together against a new file (an API and a worker) open and migrate
/// it at once: both succeed, and the schema is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_migrations_run_one_process_at_a_time() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("new.db").display());
        let opts = StoreOptions::default();
        let (first, second) =
            tokio::join!(Store::connect(&url, &opts), Store::connect(&url, &opts));
        let (first, second) = (first.unwrap(), second.unwrap());
        let (a, b) = tokio::join!(first.migrate(), second.migrate());
        a.unwrap();
        b.unwrap();
        assert!(second.pending_migrations().await.unwrap().is_empty());
        create(&first, new_job(JobKind::Echo, None)).await;
        first.close().await;
        second.close().await;
    }
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable() {
    let port = xenios_devstack::free_port();
    let opts = StoreOptions {
        acquire_timeout: Duration::from_millis(500),
        ..StoreOptions::default()
    };
    let err = Store::connect(&format!("postgres://postgres@127.0.0.1:{port}/x"), &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn postgres_outage_is_unavailable_then_recovers() {
    let mut pg = tokio::task::spawn_blocking(xenios_devstack::PgServer::start)
        .await
        .unwrap()
        .unwrap();
    let opts = StoreOptions {
        acquire_timeout: Duration::from_secs(1),
        ..StoreOptions::default()
    };
    let store = Store::connect(&pg.url(), &opts).await.unwrap();
    store.migrate().await.unwrap();
    let job = create(&store, new_job(JobKind::Echo, None)).await;

    let mut pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.get_job(job.id).await,
        Err(StoreError::Unavailable(_))
    ));

    let pg = tokio::task::spawn_blocking(move || {
        pg.start_again().unwrap();
        pg
    })
    .await
    .unwrap();
    store.ping().await.unwrap();
    assert_eq!(store.get_job(job.id).await.unwrap().unwrap(), job);
    store.close().await;
    drop(pg);
}

/// Options whose statements may take a second before the server cancels them.
fn quick_statements() -> StoreOptions {
    StoreOptions {
        statement_timeout: Duration::from_secs(1),
        ..StoreOptions::default()
    }
}

/// Long enough for any bound of `quick_statements` to act, short of a test that hangs.
const GIVEN_UP_WITHIN: Duration = Duration::from_secs(20);

/// A statement that waits on a lock is cancelled by the server at the store's statement
/// timeout: every caller of its batch hears that the database is unavailable (none waits for
/// the lock, nor is its row run again alone), and the writes work once the lock is gone.
#[tokio::test]
async fn a_batch_held_up_by_a_lock_is_given_up() {
    let url = xenios_devstack::test_database_url().await.unwrap();
    let store = Store::connect(&url, &quick_statements()).await.unwrap();
    store.migrate().await.unwrap();
    let started = create(&store, new_job(JobKind::Echo, None)).await;
    let StartAttempt::Started(_) = store.start_attempt(started.id).await.unwrap() else {
        panic!("the attempt starts");
    };

    let mut locker = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE ai_backend.jobs")
        .execute(&mut locker)
        .await
        .unwrap();
    let creates = (0..5).map(|_| {
        let store = store.clone();
        async move { store.create_job(new_job(JobKind::Echo, None)).await }
    });
    let finish = store.finish_job(started.id, Outcome::Succeeded(json!(1)));
    let (created, finished) = tokio::time::timeout(
        GIVEN_UP_WITHIN,
        futures::future::join(futures::future::join_all(creates), finish),
    )
    .await
    .expect("the writes are given up, not left waiting for the lock");
    let outcomes = created.into_iter().map(|c| c.map(drop));
    for outcome in outcomes.chain([finished.map(drop)]) {
        assert!(
            matches!(&outcome, Err(e @ StoreError::Unavailable(_)) if e.to_string().contains("statement timeout")),
            "{outcome:?}"
        );
    }

    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    let later = create(&store, new_job(JobKind::Echo, None)).await;
    assert_eq!(store.get_job(later.id).await.unwrap().unwrap(), later);
    assert!(store
        .finish_job(started.id, Outcome::Succeeded(json!(1)))
        .await
        .unwrap()
        .is_some());
    store.close().await;
}

/// A TCP relay to a server that can stop passing bytes either way: a connection whose peer
/// is gone without a reset (a failover), which the kernel would hold for a quarter of an hour.
struct Relay {
    addr: std::net::SocketAddr,
    frozen: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn to(upstream: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, _) = tokio::sync::watch::channel(false);
        let watch = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(Self::pass(client_read, server_write, watch.subscribe()));
                tokio::spawn(Self::pass(server_read, client_write, watch.subscribe()));
            }
        });
        Relay { addr, frozen }
    }

    async fn pass(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut frozen: tokio::sync::watch::Receiver<bool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if frozen.wait_for(|frozen| !frozen).await.is_err() {
                return;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }

    /// `url` with its server replaced by the relay.
    fn url(&self, url: &str) -> String {
        let start = url.find('@').unwrap() + 1;
        let end = start + url[start..].find('/').unwrap();
        format!("{}{}{}", &url[..start], self.addr, &url[end..])
    }
}

/// A statement whose answer never comes (its connection silently dead) is given up soon after
/// the statement timeout: the batch's callers, and a single statement's, hear the database is
/// unavailable, and the dead connection is not used again.
#[tokio::test]
async fn a_statement_on_a_silent_connection_is_given_up() {
    let direct = xenios_devstack::test_database_url().await.unwrap();
    let authority = direct.split('@').nth(1).unwrap().split('/').next().unwrap();
    let relay = Relay::to(authority.parse().unwrap()).await;
    let store = Store::connect(&relay.url(&direct), &quick_statements())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let job = create(&store, new_job(JobKind::Echo, None)).await;
    store.get_job(job.id).await.unwrap().unwrap();

    relay.freeze(true);
    let created = tokio::time::timeout(
        GIVEN_UP_WITHIN,
        store.create_job(new_job(JobKind::Echo, None)),
    )
    .await
    .expect("the write is given up");
    assert!(
        matches!(created, Err(StoreError::Unavailable(_))),
        "{created:?}"
    );
    let read = tokio::time::timeout(GIVEN_UP_WITHIN, store.get_job(job.id))
        .await
        .expect("the read is given up");
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");

    relay.freeze(false);
    let later = create(&store, new_job(JobKind::Echo, None)).await;
    assert_eq!(store.get_job(later.id).await.unwrap().unwrap(), later);
    store.close().await;
}

/// Many jobs written at once, as under load, where PostgreSQL's writes go out batched: each
/// caller still gets exactly the outcome of its own statement, including one whose value the
/// database refuses in the middle of a batch.
async fn spawn_all<F>(futures: Vec<F>) -> Vec<Result<F::Output, tokio::task::JoinError>>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    futures::future::join_all(futures.into_iter().map(tokio::spawn)).await
}

async fn many_callers_at_once_each_get_their_own_outcome(store: Store) {
    const JOBS: usize = 60;
    let store = Arc::new(store);

    let mut submissions: Vec<NewJob> = (0..JOBS)
        .map(|i| {
            let mut job = new_job(JobKind::Echo, Some("u-many"));
            job.input = json!({"i": i});
            job
        })
        .collect();
    // Five pairs share an idempotency key; the id of an existing job; a value PostgreSQL's jsonb
    // refuses.
    for pair in 0..5 {
        for _ in 0..2 {
            let mut job = new_job(JobKind::Echo, Some("u-many"));
            job.idempotency_key = Some(format!("key-{pair}"));
            submissions.push(job);
        }
    }
    let prior = create(&store, new_job(JobKind::Echo, Some("u-many"))).await;
    let mut reused = new_job(JobKind::Echo, Some("u-many"));
    reused.id = prior.id;
    submissions.push(reused);
    let mut refused = new_job(JobKind::Echo, Some("u-many"));
    refused.input = json!({"nul": "a\u{0}b"});
    submissions.push(refused);

    let created = spawn_all(
        submissions
            .into_iter()
            .map(|new| {
                let store = store.clone();
                async move { store.create_job(new).await }
            })
            .collect(),
    )
    .await;
    let created: Vec<_> = created.into_iter().map(|r| r.unwrap()).collect();
    let mut jobs = Vec::new();
    for outcome in &created[..JOBS] {
        match outcome {
            Ok(Created::New(job)) => jobs.push(job.clone()),
            other => panic!("a plain submission got {other:?}"),
        }
    }
    for pair in created[JOBS..JOBS + 10].chunks(2) {
        let ids: Vec<_> = pair
            .iter()
            .map(|c| match c {
                Ok(Created::New(job)) => ("new", job.id),
                Ok(Created::Existing(job)) => ("existing", job.id),
                other => panic!("an idempotent submission got {other:?}"),
            })
            .collect();
        let mut kinds: Vec<_> = ids.iter().map(|(k, _)| *k).collect();
        kinds.sort();
        assert_eq!(kinds, ["existing", "new"], "one key, one job");
        assert_eq!(ids[0].1, ids[1].1);
    }
    assert!(
        matches!(created[JOBS + 10], Err(StoreError::Conflict(_))),
        "a reused id: {:?}",
        created[JOBS + 10]
    );
    match (store.backend(), &created[JOBS + 11]) {
        (Backend::Postgres, Err(_)) | (Backend::Sqlite, Ok(Created::New(_))) => {}
        (backend, other) => panic!("{backend:?} answered the NUL value with {other:?}"),
    }

    // Every job delivered twice at once under a lease: one delivery starts it.
    let starts = spawn_all(
        jobs.iter()
            .chain(jobs.iter())
            .map(|job| {
                let (store, id) = (store.clone(), job.id);
                async move {
                    let started = store
                        .start_attempt_with_lease(id, Duration::from_secs(60))
                        .await;
                    (id, started.unwrap())
                }
            })
            .collect(),
    )
    .await;
    for job in &jobs {
        let started = starts
            .iter()
            .map(|r| r.as_ref().unwrap())
            .filter(|(id, s)| *id == job.id && matches!(s, StartAttempt::Started(_)))
            .count();
        assert_eq!(started, 1, "job {} started once", job.id);
    }

    // Outcomes of every kind at once, a second outcome for some: the first recorded wins.
    let finishes = spawn_all(
        jobs.iter()
            .enumerate()
            .chain(jobs.iter().enumerate().take(10))
            .map(|(i, job)| {
                let (store, id) = (store.clone(), job.id);
                async move {
                    let outcome = match i % 3 {
                        0 => Outcome::Succeeded(json!({"i": i})),
                        1 => Outcome::Failed(transient()),
                        _ => Outcome::Cancelled,
                    };
                    (id, store.finish_job(id, outcome).await.unwrap())
                }
            })
            .collect(),
    )
    .await;
    for (i, job) in jobs.iter().enumerate() {
        let recorded: Vec<_> = finishes
            .iter()
            .map(|r| r.as_ref().unwrap())
            .filter(|(id, _)| *id == job.id)
            .filter_map(|(_, f)| f.clone())
            .collect();
        assert_eq!(recorded.len(), 1, "job {i}: one outcome");
        let stored = store.get_job(job.id).await.unwrap().unwrap();
        assert_eq!(stored, recorded[0]);
        assert_eq!(stored.attempts, 1);
        match i % 3 {
            0 => {
                assert_eq!(stored.status, JobStatus::Succeeded);
                assert_eq!(stored.result, Some(json!({"i": i})));
                assert_eq!(stored.error, None);
            }
            1 => {
                assert_eq!(stored.status, JobStatus::Failed);
                assert_eq!(stored.error, Some(transient()));
            }
            _ => assert_eq!(stored.status, JobStatus::Cancelled),
        }
    }
}

/// A job id as `new_job_id` gave it at `at`.
fn job_id_at(at: DateTime<Utc>) -> uuid::Uuid {
    let secs = u64::try_from(at.timestamp()).unwrap();
    uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        secs,
        at.timestamp_subsec_nanos(),
    ))
}

/// Contract: a purge deletes at most its batch of rows older than the cut-off, oldest first,
/// and only finished jobs; newer rows and unfinished jobs stay.
async fn expired_rows_are_purged_oldest_first(store: Store) {
    let now = Utc::now();
    let days_ago = |days: i64| now - chrono::Duration::days(days);
    let submitted = |at: DateTime<Utc>| NewJob {
        id: job_id_at(at),
        ..new_job(JobKind::Echo, Some("u1"))
    };
    let mut finished = Vec::new();
    for (days, outcome) in [
        (42, Outcome::Succeeded(json!({"message": "old"}))),
        (41, Outcome::Failed(transient())),
        (40, Outcome::Cancelled),
    ] {
        let job = create(&store, submitted(days_ago(days))).await;
        store.start_attempt(job.id).await.unwrap();
        store.finish_job(job.id, outcome).await.unwrap().unwrap();
        finished.push(job.id);
    }
    let cancelled_while_queued = create(&store, submitted(days_ago(39))).await.id;
    store.cancel_job(cancelled_while_queued).await.unwrap();
    finished.push(cancelled_while_queued);
    let still_queued = create(&store, submitted(days_ago(50))).await.id;
    let still_running = create(&store, submitted(days_ago(45))).await.id;
    store.start_attempt(still_running).await.unwrap();
    let recent = create(&store, new_job(JobKind::Echo, Some("u1"))).await.id;
    store.start_attempt(recent).await.unwrap();
    store
        .finish_job(recent, Outcome::Succeeded(json!(1)))
        .await
        .unwrap();

    let cut_off = days_ago(30);
    assert_eq!(store.purge_finished_jobs(cut_off, 3).await.unwrap(), 3);
    for id in &finished[..3] {
        assert_eq!(store.get_job(*id).await.unwrap(), None, "oldest first");
    }
    assert!(store.get_job(finished[3]).await.unwrap().is_some());
    assert_eq!(store.purge_finished_jobs(cut_off, 3).await.unwrap(), 1);
    assert_eq!(store.purge_finished_jobs(cut_off, 3).await.unwrap(), 0);
    for id in [still_queued, still_running, recent] {
        assert!(store.get_job(id).await.unwrap().is_some(), "{id} kept");
    }

    let log = |created_at: DateTime<Utc>| InferenceLog {
        id: uuid::Uuid::now_v7(),
        created_at,
        user_id: Some("u1".into()),
        job_id: Some(recent),
        task: "chat".into(),
        model: "openai/gpt-4o-mini".into(),
        provider: "openai".into(),
        attempt: 1,
        input_tokens: 10,
        output_tokens: 2,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        latency_ms: 300,
        ttft_ms: Some(90),
        cost_usd: None,
        success: true,
        error: None,
    };
    for days in [402, 401, 400] {
        store
            .insert_inference_log(&log(days_ago(days)))
            .await
            .unwrap();
    }
    let kept = log(days_ago(1));
    store.insert_inference_log(&kept).await.unwrap();
    assert_eq!(
        store.purge_inference_logs(days_ago(365), 2).await.unwrap(),
        2
    );
    assert_eq!(
        store.purge_inference_logs(days_ago(365), 2).await.unwrap(),
        1
    );
    let left = store.inference_logs_for_job(recent).await.unwrap();
    assert_eq!(left.iter().map(|l| l.id).collect::<Vec<_>>(), [kept.id]);

    let result = json!({"content": "# Title"});
    store.put_extraction("unused", "aa", &result).await.unwrap();
    store.put_extraction("used", "bb", &result).await.unwrap();
    let cut_off = wait_past(Utc::now()).await;
    assert!(store.cached_extraction("used").await.unwrap().is_some());
    store.put_extraction("new", "cc", &result).await.unwrap();
    assert_eq!(store.purge_extraction_cache(cut_off, 10).await.unwrap(), 1);
    assert_eq!(store.cached_extraction("unused").await.unwrap(), None);
    for key in ["used", "new"] {
        assert!(
            store.cached_extraction(key).await.unwrap().is_some(),
            "{key}"
        );
    }
}
