//! Waiting for a condition in virtual time.

use std::time::Duration;

/// How often [`wait_until`] re-checks its condition, in virtual time.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `condition` every 10 ms of virtual time until it holds; panics with
/// `what` if it does not within `deadline`.
pub async fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} (virtual) waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
