//! Work done on a timer beside the API: the sweeper's passes and the retention pass.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `pass` every `interval`, the first one interval after the start, until `stop` fires.
/// A pass under way is finished, not interrupted: each is bounded in the work it takes on.
pub(crate) async fn every<F, Fut>(interval: Duration, stop: &CancellationToken, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
        pass().await;
    }
}
