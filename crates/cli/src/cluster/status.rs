//! The launcher's live status line, one per kind of cluster: a key/value
//! group's roles and commit indexes, a file store's masters and
//! chunkservers, a sharded cluster's configuration and groups; a member
//! that exited shows as gone.

use std::time::Duration;

use cairn_kv::Client;

use super::{Kind, Member};

/// The masters' roles and commit indexes, and which chunkservers run.
pub(super) async fn fs_status_line(members: &mut [Member]) -> String {
    use cairn_rpc::fs::master_client::MasterClient as Stub;
    let options = cairn_rpc::ClientOptions {
        connect_timeout: Duration::from_millis(300),
        call_timeout: Duration::from_millis(300),
    };
    let mut parts = Vec::new();
    let mut leader = None;
    for member in members.iter_mut() {
        if let Some(gone) = member.gone() {
            parts.push(gone);
            continue;
        }
        if matches!(member.kind, Kind::Chunk | Kind::MrWorker) {
            parts.push(format!("{}: up", member.label()));
            continue;
        }
        let Ok(server) = cairn_rpc::RpcClient::new(member.url.clone(), options.clone()) else {
            continue;
        };
        let status = server
            .call(cairn_rpc::kv::StatusRequest {}, |c, r| async move {
                Stub::new(c).status(r).await
            })
            .await;
        match status {
            Ok(status) => {
                if status.role == "leader" {
                    leader = Some((status.id, status.term));
                }
                parts.push(format!(
                    "{}: {} commit {}",
                    member.label(),
                    status.role,
                    status.commit
                ));
            }
            Err(_) => parts.push(format!("{}: starting", member.label())),
        }
    }
    let head = match leader {
        Some((id, term)) => format!("master leader {id}, term {term}"),
        None => "no master leader yet".to_string(),
    };
    format!("[{head}] {}", parts.join(" | "))
}

pub(super) async fn status_line(client: &Client, members: &mut [Member]) -> String {
    let mut parts = Vec::new();
    let mut leader = None;
    for (index, member) in members.iter_mut().enumerate() {
        if let Some(gone) = member.gone() {
            parts.push(gone);
            continue;
        }
        match client.status(index).await {
            Ok(status) => {
                if status.role == "leader" {
                    leader = Some((status.id, status.term));
                }
                parts.push(format!(
                    "{}: {} commit {}",
                    status.id, status.role, status.commit
                ));
            }
            Err(_) => parts.push(format!("{}: starting", member.label())),
        }
    }
    let head = match leader {
        Some((id, term)) => format!("leader {id}, term {term}"),
        None => "no leader yet".to_string(),
    };
    format!("[{head}] {}", parts.join(" | "))
}
/// `[config N] controllers: leader c2 | group 1: leader g1.3, 5 shards | ...`
pub(super) async fn sharded_status_line(controllers: &[String], members: &mut [Member]) -> String {
    use cairn_rpc::kv::StatusRequest;
    use cairn_rpc::shardctrler::shard_ctrler_client::ShardCtrlerClient;
    use cairn_rpc::shardkv::shard_kv_client::ShardKvClient;
    let options = cairn_rpc::ClientOptions {
        connect_timeout: Duration::from_millis(300),
        call_timeout: Duration::from_millis(300),
    };
    let mut config = None;
    let mut ctrl_leader = None;
    let mut groups: std::collections::BTreeMap<u64, (Option<String>, u64, usize, usize)> =
        Default::default();
    for member in members.iter_mut() {
        if let Some(child) = &mut member.child
            && let Ok(Some(_)) = child.try_wait()
        {
            member.child = None;
        }
        let up = member.child.is_some();
        let Ok(server) = cairn_rpc::RpcClient::new(member.url.clone(), options.clone()) else {
            continue;
        };
        match member.kind {
            Kind::Kv | Kind::Master | Kind::Chunk | Kind::MrWorker => {}
            Kind::Controller => {
                if up
                    && let Ok(s) = server
                        .call(StatusRequest {}, |c, r| async move {
                            ShardCtrlerClient::new(c).status(r).await
                        })
                        .await
                    && s.role == "leader"
                {
                    ctrl_leader = Some(member.label());
                }
            }
            Kind::Group(gid) => {
                let entry = groups.entry(gid).or_default();
                if !up {
                    entry.3 += 1;
                    continue;
                }
                if let Ok(s) = server
                    .call(StatusRequest {}, |c, r| async move {
                        ShardKvClient::new(c).status(r).await
                    })
                    .await
                    && s.node.as_ref().is_some_and(|n| n.role == "leader")
                {
                    *entry = (Some(member.label()), s.config_num, s.serving.len(), entry.3);
                }
            }
        }
    }
    if let Ok(client) = cairn_shardctrler::Client::new(
        controllers,
        Duration::from_millis(300),
        Duration::from_millis(300),
    ) && let Ok(latest) = client.query(None).await
    {
        config = Some(latest.num);
    }
    let mut parts = vec![match ctrl_leader {
        Some(leader) => format!("controllers: leader {leader}"),
        None => "controllers: no leader yet".to_string(),
    }];
    for (gid, (leader, num, shards, down)) in groups {
        let down = if down > 0 {
            format!(", {down} down")
        } else {
            String::new()
        };
        parts.push(match leader {
            Some(leader) => {
                format!("group {gid}: leader {leader}, config {num}, {shards} shards{down}")
            }
            None => format!("group {gid}: no leader yet{down}"),
        });
    }
    let head = config.map_or("no configuration yet".to_string(), |n| {
        format!("config {n}")
    });
    format!("[{head}] {}", parts.join(" | "))
}
