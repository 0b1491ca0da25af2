//! A pull the broker never ends. Its own test binary: the lapse counter it reads is
//! process-wide, and other tests that stop the broker lapse pulls too.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn lapsed_pulls(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("xenios_pulls_lapsed_total{kind=\"echo\"} "))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// A broker that stops answering mid-pull (frozen, as a stalled host would be) sends no
/// end-of-pull status: the consumer gives that pull up after its `expires`, counts it, and
/// the next pull takes the commands once the broker answers again.
#[tokio::test]
async fn a_pull_the_broker_never_ends_is_given_up_and_replaced() {
    let stack = Stack::start_with(Db::Sqlite, &[("consumer.pull_expires_ms", "300")], 1).await;
    let before = stack.submit("echo", json!({"message": "before"})).await;
    let job = stack
        .wait_for(&before, &["succeeded"], Duration::from_secs(30))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let lapsed_before = lapsed_pulls(&stack.metrics().await);

    stack.nats.freeze();
    // Several times the pull's `expires` (300 ms) and the grace after it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stack.nats.thaw();

    let after = stack.submit("echo", json!({"message": "after"})).await;
    let job = stack
        .wait_for(&after, &["succeeded"], Duration::from_secs(30))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["message"], "after", "{job}");
    let lapsed = lapsed_pulls(&stack.metrics().await) - lapsed_before;
    assert!(lapsed >= 1.0, "no pull counted as lapsed: {lapsed}");
}
