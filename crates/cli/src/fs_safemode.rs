//! `cairn fs safemode get|enter|leave`: the master leader's safemode, the
//! wait after it becomes leader until the chunkservers have reported
//! enough chunks (no placement, lease grant, re-replication or deletion
//! meanwhile; reads go on). `enter` holds it until `leave`; `leave` ends
//! it at once. The state is the leader's alone: a new leader starts in
//! safemode again and forgets an operator's `enter`.

use std::time::Duration;

use cairn_fs::MasterClient;
use cairn_rpc::fs::SafemodeReply;
use clap::ValueEnum;

use crate::progress::print_stdout;

/// What to do with safemode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SafemodeAction {
    /// Show whether the leader is in safemode, and why.
    Get,
    /// Enter safemode until `leave`.
    Enter,
    /// Leave safemode now, whatever the chunk reports.
    Leave,
}

/// Asks the leader, prints its answer (as JSON with `json`).
pub(crate) async fn safemode(
    masters: &[String],
    timeout: Duration,
    action: SafemodeAction,
    json: bool,
) -> anyhow::Result<()> {
    let client = MasterClient::new(masters, Duration::from_secs(2), timeout)?;
    let reply = client
        .safemode(
            action == SafemodeAction::Enter,
            action == SafemodeAction::Leave,
        )
        .await?;
    print_stdout(&render(&reply, json));
    Ok(())
}

fn render(reply: &SafemodeReply, json: bool) -> String {
    if json {
        return format!(
            "{}\n",
            serde_json::json!({
                "on": reply.on,
                "manual": reply.manual,
                "reason": reply.reason,
                "reported_chunks": reply.reported_chunks,
                "total_chunks": reply.total_chunks,
            })
        );
    }
    format!(
        "safemode {}: {}\n",
        if reply.on { "ON" } else { "off" },
        reply.reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_and_json() {
        let reply = SafemodeReply {
            on: true,
            manual: false,
            reason: "waiting for chunk reports".into(),
            reported_chunks: 2,
            total_chunks: 3,
        };
        assert_eq!(
            render(&reply, false),
            "safemode ON: waiting for chunk reports\n"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&reply, true)).unwrap();
        assert_eq!(json["on"], true);
        assert_eq!(json["total_chunks"], 3);
    }
}
