//! [`Safemode`]: what keeps a new leader from acting on chunk locations it
//! has not heard yet (HDFS's safemode; `gfs.md` scenario M2).
//!
//! Chunk locations are not in the log: a master learns them from the
//! chunkservers' reports (GFS §2.6.2). A node that just became leader —
//! after a cold start of every master, above all — may not have heard
//! from most chunkservers, so a chunk it thinks has no replica may have
//! three. Until it has heard enough, it must not place new replicas,
//! grant leases (which pick replicas), re-replicate or delete: it is in
//! safemode. Reads and leases that already exist are served.
//!
//! It leaves safemode on its own when
//! - the **threshold** is met — the share of the namespace's chunks with at
//!   least one reported replica at their current version or above reaches
//!   `safemode_threshold_per_mille` (default 99.9 %) — and an
//!   **extension** of two heartbeat intervals has passed since (so every
//!   live chunkserver reports once more), or
//! - the **timeout** (`safemode_timeout`) has passed since it became
//!   leader, met or not, so that chunks lost with a chunkserver that never
//!   returns do not keep the store read-only (it logs how many chunks were
//!   still missing).
//!
//! An operator can enter it (it then holds until they leave it) and leave
//! it at once (`cairn fs safemode enter|leave`). The state is the leader's
//! alone, not in the log: a new leader starts in safemode again and a
//! manual enter ends with the leadership.

use std::time::Duration;

use tokio::time::Instant;

use crate::settings::FsSettings;

/// How many chunks have a reported replica, of how many.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReportCount {
    pub reported: u64,
    pub total: u64,
}

impl ReportCount {
    /// Whether `reported / total` reaches `per_mille` thousandths (an empty
    /// namespace is fully reported).
    fn reaches(&self, per_mille: u32) -> bool {
        u128::from(self.reported) * 1000 >= u128::from(self.total) * u128::from(per_mille)
    }
}

/// Why the leader is in safemode or left it, for `cairn fs safemode get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SafemodeStatus {
    pub on: bool,
    pub manual: bool,
    pub count: ReportCount,
    pub reason: String,
}

/// The leader's safemode (see the module's documentation).
#[derive(Debug)]
pub(crate) struct Safemode {
    threshold_per_mille: u32,
    extension: Duration,
    timeout: Duration,
    /// When this node last became leader; `None`: not leading yet.
    leader_since: Option<Instant>,
    count: ReportCount,
    threshold_met: Option<Instant>,
    /// An operator's enter (holds until their leave).
    manual: bool,
    /// An operator's leave: out until the next leadership.
    left_by_operator: bool,
    /// The exit was logged.
    announced: bool,
}

impl Safemode {
    pub(crate) fn new(settings: &FsSettings) -> Self {
        let extension = settings.heartbeat_interval * 2;
        Self::with_limits(
            settings.safemode_threshold_per_mille,
            extension,
            settings.safemode_timeout,
        )
    }

    fn with_limits(threshold_per_mille: u32, extension: Duration, timeout: Duration) -> Self {
        Self {
            threshold_per_mille,
            extension,
            timeout,
            leader_since: None,
            count: ReportCount::default(),
            threshold_met: None,
            manual: false,
            left_by_operator: false,
            announced: false,
        }
    }

    /// This node became leader at `now`: safemode starts over.
    pub(crate) fn restart(&mut self, now: Instant) {
        *self = Self {
            leader_since: Some(now),
            ..Self::with_limits(self.threshold_per_mille, self.extension, self.timeout)
        };
    }

    /// Whether the reports still need counting (safemode may end by the
    /// threshold).
    pub(crate) fn counting(&self, now: Instant) -> bool {
        self.threshold_met.is_none() && self.in_safemode(now)
    }

    /// Records a count of the reports; the first that meets the threshold
    /// starts the extension.
    pub(crate) fn record(&mut self, count: ReportCount, now: Instant) {
        if self.threshold_met.is_some() {
            return;
        }
        self.count = count;
        if count.reaches(self.threshold_per_mille) {
            self.threshold_met = Some(now);
        }
    }

    /// Whether this node, as leader, must not place, grant, re-replicate
    /// or delete at `now`.
    pub(crate) fn in_safemode(&self, now: Instant) -> bool {
        self.status(now).on
    }

    /// Whether it is in safemode and why (or why it left).
    pub(crate) fn status(&self, now: Instant) -> SafemodeStatus {
        let (on, reason) = self.decide(now);
        SafemodeStatus {
            on,
            manual: self.manual,
            count: self.count,
            reason,
        }
    }

    fn decide(&self, now: Instant) -> (bool, String) {
        let count = self.count;
        let share = format!(
            "{} of {} chunks have a reported replica",
            count.reported, count.total
        );
        if self.manual {
            return (
                true,
                "entered by an operator; it holds until `cairn fs safemode leave`".into(),
            );
        }
        if self.left_by_operator {
            return (
                false,
                "left by an operator (`cairn fs safemode leave`)".into(),
            );
        }
        let Some(since) = self.leader_since else {
            return (true, "this node has not led yet; ask the leader".into());
        };
        if let Some(met) = self.threshold_met {
            if now >= met + self.extension {
                return (
                    false,
                    format!(
                        "left when the threshold was met ({share}) and the extension of {:?} passed",
                        self.extension
                    ),
                );
            }
            return (
                true,
                format!(
                    "the threshold is met ({share}); leaving after an extension of {:?}, {:?} from now",
                    self.extension,
                    met + self.extension - now
                ),
            );
        }
        if now >= since + self.timeout {
            return (
                false,
                format!(
                    "left after the timeout of {:?} with the threshold not met ({share}, {} per mille wanted): the chunks missing may be lost with a chunkserver that did not return; start it, or check the files",
                    self.timeout, self.threshold_per_mille
                ),
            );
        }
        (
            true,
            format!(
                "waiting for chunk reports: {share}, {} per mille wanted; leaving at the latest after the timeout, {:?} from now",
                self.threshold_per_mille,
                since + self.timeout - now
            ),
        )
    }

    /// Logs the exit once (called as reports arrive).
    pub(crate) fn announce(&mut self, now: Instant) {
        let status = self.status(now);
        if !status.on && !self.announced && self.leader_since.is_some() {
            self.announced = true;
            tracing::info!(reason = %status.reason, "safemode off");
        }
    }

    /// An operator's enter: holds until their leave.
    pub(crate) fn enter(&mut self) {
        self.manual = true;
        tracing::info!("safemode entered by an operator");
    }

    /// An operator's leave: out at once, threshold met or not.
    pub(crate) fn leave(&mut self) {
        self.manual = false;
        self.left_by_operator = true;
        self.announced = true;
        tracing::info!(count = ?self.count, "safemode left by an operator");
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    fn safemode() -> Safemode {
        let settings = FsSettings {
            heartbeat_interval: Duration::from_millis(100),
            safemode_timeout: Duration::from_secs(5),
            ..FsSettings::default()
        };
        Safemode::new(&settings)
    }

    fn count(reported: u64, total: u64) -> ReportCount {
        ReportCount { reported, total }
    }

    #[tokio::test]
    async fn leaves_after_the_threshold_and_the_extension() {
        let (mut mode, start) = (safemode(), Instant::now());
        assert!(mode.in_safemode(start), "not leading yet: in safemode");
        mode.restart(start);
        mode.record(count(998, 1000), start);
        assert!(mode.counting(start) && mode.in_safemode(start));
        let met = start + Duration::from_secs(1);
        mode.record(count(999, 1000), met);
        assert!(!mode.counting(met) && mode.in_safemode(met));
        assert!(mode.in_safemode(met + Duration::from_millis(199)));
        assert!(!mode.in_safemode(met + Duration::from_millis(200)));
    }

    #[tokio::test]
    async fn an_empty_namespace_meets_the_threshold() {
        let (mut mode, start) = (safemode(), Instant::now());
        mode.restart(start);
        mode.record(count(0, 0), start);
        assert!(!mode.in_safemode(start + Duration::from_millis(200)));
    }

    #[tokio::test]
    async fn partial_reports_end_at_the_timeout() {
        let (mut mode, start) = (safemode(), Instant::now());
        mode.restart(start);
        mode.record(count(1, 3), start);
        assert!(mode.in_safemode(start + Duration::from_millis(4999)));
        let status = mode.status(start + Duration::from_secs(5));
        assert!(!status.on);
        assert!(status.reason.contains("timeout"), "{}", status.reason);
    }

    #[tokio::test]
    async fn an_operator_enters_and_leaves_and_a_new_term_starts_over() {
        let (mut mode, start) = (safemode(), Instant::now());
        mode.restart(start);
        mode.record(count(3, 3), start);
        let later = start + Duration::from_secs(60);
        mode.enter();
        assert!(
            mode.in_safemode(later),
            "a manual enter outlasts the timeout"
        );
        mode.leave();
        assert!(!mode.in_safemode(later));
        mode.restart(later);
        assert!(mode.in_safemode(later) && mode.counting(later));
        mode.leave();
        assert!(!mode.in_safemode(later), "a leave ends counting too");
    }
}
