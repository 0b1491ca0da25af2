//! `xenios_sse_clients` counts the open event streams, and a client that leaves mid-job
//! stops counting while the job goes on. A test binary of its own: the metrics recorder is
//! one per process, and the other suites open event streams in parallel.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

async fn sse_clients(stack: &Stack) -> f64 {
    stack
        .metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix("xenios_sse_clients "))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn a_client_that_leaves_mid_job_stops_counting() {
    let stack = Stack::start(Db::Sqlite).await;
    let id = stack
        .submit("echo", json!({"message": "slow", "delay_ms": 2000}))
        .await;
    let mut response = stack
        .get(&format!("/api/v1/jobs/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().expect("a first event");
    assert!(
        String::from_utf8_lossy(&first).contains("\"status\""),
        "{first:?}"
    );
    assert_eq!(sse_clients(&stack).await, 1.0);

    drop(response);
    eventually(Duration::from_secs(10), || async {
        sse_clients(&stack).await == 0.0
    })
    .await;
    let job = stack
        .wait_for(&id, &["succeeded", "failed"], Duration::from_secs(20))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
}
