//! `Balance`: the leader's balancer is a task of its own heal rounds
//! (`master_heal.rs`), started and kept going by this RPC; the CLI
//! (`cairn fs balance`) calls it until the answer says balanced or stuck,
//! showing the progress. A new leader starts with no balancer: the CLI's
//! next call starts one there (the run goes on from the store as it is).
//! Moves are clones, so they wait for safemode to end like the healer's.

use cairn_rpc::fs::{BalanceReply, BalanceRequest, FsErrorCode};
use tokio::time::Instant;
use tonic::Status;

use crate::master::MasterServer;
use crate::master_chunks::stopped;

impl MasterServer {
    pub(crate) async fn handle_balance(
        &self,
        request: BalanceRequest,
    ) -> Result<BalanceReply, Status> {
        if !(1..=100).contains(&request.threshold_percent) {
            return Err(Status::invalid_argument(format!(
                "a balance threshold of {} percentage points; give 1 to 100 (HDFS's default is 10)",
                request.threshold_percent
            )));
        }
        let term = self.leading()?;
        let now = Instant::now();
        self.table
            .with(move |t| {
                t.observe_term(term, now);
                if t.in_safemode(now) {
                    return BalanceReply {
                        error: FsErrorCode::InSafemode as i32,
                        message: format!(
                            "the master is in safemode ({}); nothing is moved until it ends: see `cairn fs safemode get`, then balance again",
                            t.safemode_status(now).reason
                        ),
                        ..BalanceReply::default()
                    };
                }
                t.request_balance(request.threshold_percent, request.start);
                t.balance_status(now)
            })
            .await
            .map_err(stopped)
    }
}
