//! A worker's connection to its coordinator: calls retried through an
//! outage of up to the coordinator timeout, and a [`WaitReport`] that says
//! what the worker is waiting for while it cannot get through.

use std::sync::Mutex;
use std::time::Duration;

use cairn_rpc::{RpcClient, RpcError};
use tokio::time::Instant;
use tonic::Status;

use crate::worker::WorkerError;

/// How often a worker that still cannot reach its coordinator says so
/// again (the first failure is reported at once).
pub(crate) const WAIT_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// A worker's connection to its coordinator, retrying through outages.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) client: RpcClient,
    /// How long one call keeps retrying (`--coordinator-timeout`).
    timeout: Duration,
    report: Mutex<WaitReport>,
}

impl Link {
    pub(crate) fn new(client: RpcClient, timeout: Duration) -> Self {
        Self {
            client,
            timeout,
            report: Mutex::new(WaitReport::default()),
        }
    }

    /// Calls until success or until the coordinator has been unreachable
    /// for the timeout. Requests here are idempotent or deduplicated by
    /// (task, attempt), so retrying is safe.
    pub(crate) async fn call<Req, Resp, F, Fut>(
        &self,
        request: Req,
        stub: F,
    ) -> Result<Resp, WorkerError>
    where
        Req: prost::Message + Clone,
        Resp: prost::Message,
        F: Fn(tonic::transport::Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let start = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.client.call(request.clone(), &stub).await {
                Ok(reply) => {
                    self.note(|report| report.reached(self.client.addr(), Instant::now()));
                    return Ok(reply);
                }
                Err(error) if error.is_retryable() && start.elapsed() < self.timeout => {
                    tracing::debug!("coordinator call failed, retrying: {error}");
                    let reason = short_reason(&error);
                    self.note(|report| {
                        report.failed(self.client.addr(), &reason, self.timeout, Instant::now())
                    });
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(last) => {
                    return Err(WorkerError::CoordinatorGone {
                        addr: self.client.addr().to_string(),
                        after: start.elapsed(),
                        last,
                    });
                }
            }
        }
    }

    /// Logs what `event` says about the wait, if anything.
    fn note(&self, event: impl FnOnce(&mut WaitReport) -> Option<Said>) {
        let said = event(&mut self.report.lock().expect("wait report lock"));
        match said {
            Some(Said::Waiting(line)) => tracing::warn!("{line}"),
            Some(Said::Reached(line)) => tracing::info!("{line}"),
            None => {}
        }
    }
}

/// What went wrong with a call, without the address (the report names it).
fn short_reason(error: &RpcError) -> String {
    match error {
        RpcError::Unavailable { reason, .. } => reason.clone(),
        RpcError::ConnectionRefused { reason, .. } => reason.clone(),
        RpcError::Timeout { after, .. } => format!("no reply within {after:?}"),
        RpcError::Rejected { status, .. } => format!("{}: {}", status.code(), status.message()),
        RpcError::InvalidAddress { reason, .. } => reason.clone(),
    }
}

/// A line for the worker's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Said {
    /// It cannot reach the coordinator (a warning).
    Waiting(String),
    /// It reached the coordinator after waiting.
    Reached(String),
}

/// What a worker says about reaching its coordinator: the first failed
/// call of an outage at once, then at most one line per
/// [`WAIT_REPORT_INTERVAL`] while it lasts, and a line when a call gets
/// through again. Pure: time comes in as arguments.
#[derive(Debug, Default)]
pub(crate) struct WaitReport {
    /// Whether any call ever got through.
    reached_once: bool,
    /// When the current outage began, if there is one.
    waiting_since: Option<Instant>,
    /// When the last waiting line was said.
    said_at: Option<Instant>,
}

impl WaitReport {
    /// A call to `url` failed with `reason`; it is retried for up to
    /// `timeout`.
    pub(crate) fn failed(
        &mut self,
        url: &str,
        reason: &str,
        timeout: Duration,
        now: Instant,
    ) -> Option<Said> {
        let Some(since) = self.waiting_since else {
            self.waiting_since = Some(now);
            self.said_at = Some(now);
            let line = if self.reached_once {
                format!(
                    "lost the coordinator at {url} ({reason}); retrying for up to {timeout:?} (--coordinator-timeout)"
                )
            } else {
                format!(
                    "waiting for the coordinator at {url} ({reason}); retrying for up to {timeout:?} (--coordinator-timeout). Is `cairn mr coordinator` running there, and is this its URL?"
                )
            };
            return Some(Said::Waiting(line));
        };
        if self
            .said_at
            .is_some_and(|said| now.duration_since(said) < WAIT_REPORT_INTERVAL)
        {
            return None;
        }
        self.said_at = Some(now);
        Some(Said::Waiting(format!(
            "still waiting for the coordinator at {url} after {}s ({reason}); giving up after {timeout:?}",
            now.duration_since(since).as_secs()
        )))
    }

    /// A call to `url` got through.
    pub(crate) fn reached(&mut self, url: &str, now: Instant) -> Option<Said> {
        let first = !self.reached_once;
        self.reached_once = true;
        let since = self.waiting_since.take()?;
        self.said_at = None;
        let waited = now.duration_since(since).as_secs_f64();
        Some(Said::Reached(if first {
            format!("connected to the coordinator at {url} after waiting {waited:.1}s")
        } else {
            format!("reached the coordinator at {url} again after {waited:.1}s")
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://host:7070";
    const TIMEOUT: Duration = Duration::from_secs(30);

    fn waiting(said: Option<Said>) -> String {
        match said {
            Some(Said::Waiting(line)) => line,
            other => panic!("expected a waiting line, got {other:?}"),
        }
    }

    #[test]
    fn a_wait_is_said_at_once_then_rate_limited_then_its_end() {
        let mut report = WaitReport::default();
        let start = Instant::now();
        let first = waiting(report.failed(URL, "tcp connect error", TIMEOUT, start));
        assert!(
            first.starts_with("waiting for the coordinator at http://host:7070 (tcp connect error); retrying for up to 30s"),
            "{first}"
        );
        let at = |millis| start + Duration::from_millis(millis);
        assert_eq!(
            report.failed(URL, "tcp connect error", TIMEOUT, at(100)),
            None
        );
        assert_eq!(
            report.failed(URL, "tcp connect error", TIMEOUT, at(4_999)),
            None
        );
        let again = waiting(report.failed(URL, "tcp connect error", TIMEOUT, at(5_000)));
        assert!(
            again.contains("still waiting") && again.contains("after 5s"),
            "{again}"
        );
        assert_eq!(
            report.failed(URL, "tcp connect error", TIMEOUT, at(9_000)),
            None
        );
        assert_eq!(
            report.reached(URL, at(9_500)),
            Some(Said::Reached(format!(
                "connected to the coordinator at {URL} after waiting 9.5s"
            )))
        );
        assert_eq!(
            report.reached(URL, at(9_600)),
            None,
            "no wait, nothing to say"
        );
        // A later outage is a lost coordinator, said at once.
        let lost = waiting(report.failed(URL, "no reply within 10s", TIMEOUT, at(20_000)));
        assert!(lost.starts_with("lost the coordinator"), "{lost}");
        assert!(matches!(
            report.reached(URL, at(21_000)),
            Some(Said::Reached(line)) if line.contains("again after 1.0s")
        ));
    }

    #[test]
    fn a_worker_that_connects_at_once_says_nothing_here() {
        let mut report = WaitReport::default();
        assert_eq!(report.reached(URL, Instant::now()), None);
    }
}
