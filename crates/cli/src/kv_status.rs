//! `cairn kv status`: every node of the cluster behind `--endpoints`, not
//! only the endpoints given. A key/value node (and a shard controller)
//! reports the members of its group, so the nodes not named are found and
//! asked too; on a sharded cluster the controllers are followed by every
//! server of every group of the latest configuration, with what each group
//! waits for, then the servers of groups that left (in the last
//! [`MAX_HISTORY`] configurations) and still answer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::bail;
use cairn_rpc::kv::StatusRequest;
use cairn_rpc::kv::kv_client::KvClient;
use cairn_rpc::node::StatusReply;
use cairn_rpc::shardctrler::shard_ctrler_client::ShardCtrlerClient;
use cairn_rpc::shardkv::shard_kv_client::ShardKvClient;
use cairn_rpc::{RpcClient, RpcError};

use crate::kv::ClientArgs;
use crate::progress::print_stdout;

/// How many configurations back `status` looks for groups that left.
const MAX_HISTORY: u64 = 100;

/// One node's line in `cairn kv status`.
struct StatusRow {
    /// "node", "controller", "group G" or "group G (left)".
    kind: String,
    endpoint: String,
    status: Result<StatusReply, String>,
    /// A sharded group's configuration and shards.
    extra: Option<(u64, usize)>,
    /// What a sharded group waits for, as its server sees it.
    waiting: Vec<String>,
    /// The voters and learners as this node knows them.
    members: Option<(Vec<u64>, Vec<u64>)>,
}

/// Which service's `Status` to call.
#[derive(Clone, Copy)]
enum Service {
    Kv,
    Controller,
}

fn options() -> cairn_rpc::ClientOptions {
    cairn_rpc::ClientOptions {
        connect_timeout: Duration::from_secs(1),
        call_timeout: Duration::from_secs(2),
    }
}

/// `http://HOST:PORT` for `HOST:PORT` or `http://HOST:PORT/`.
fn normalized(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

async fn node_status(service: Service, url: &str) -> Result<StatusReply, RpcError> {
    let server = RpcClient::new(normalized(url), options())?;
    match service {
        Service::Kv => {
            server
                .call(StatusRequest {}, |c, r| async move {
                    KvClient::new(c).status(r).await
                })
                .await
        }
        Service::Controller => {
            server
                .call(StatusRequest {}, |c, r| async move {
                    ShardCtrlerClient::new(c).status(r).await
                })
                .await
        }
    }
}

/// The rows of a Raft group's nodes.
struct GroupRows {
    /// The endpoints given, then every member they report that was not
    /// among them (in id order).
    rows: Vec<StatusRow>,
    /// An endpoint answered that it does not have this service (a
    /// key/value `Status` to a controller).
    unimplemented: bool,
    /// Every node's URL: the endpoints and the members.
    urls: Vec<String>,
}

async fn group_rows(service: Service, kind: &str, endpoints: &[String]) -> GroupRows {
    let mut rows = Vec::new();
    let mut members = BTreeMap::new();
    let mut unimplemented = false;
    for endpoint in endpoints {
        let status = node_status(service, endpoint).await;
        match &status {
            Ok(reply) => members.extend(reply.members.iter().map(|m| (m.id, m.url.clone()))),
            Err(RpcError::Rejected { status, .. })
                if status.code() == cairn_rpc::tonic::Code::Unimplemented =>
            {
                unimplemented = true;
            }
            Err(_) => {}
        }
        rows.push(row(kind, endpoint, status.map_err(|e| e.to_string())));
    }
    let given: BTreeSet<String> = endpoints.iter().map(|e| normalized(e)).collect();
    let mut urls = endpoints.to_vec();
    for url in members.into_values() {
        if !given.contains(&normalized(&url)) {
            let status = node_status(service, &url).await;
            rows.push(row(kind, &url, status.map_err(|e| e.to_string())));
            urls.push(url);
        }
    }
    GroupRows {
        rows,
        unimplemented,
        urls,
    }
}

fn row(kind: &str, endpoint: &str, status: Result<StatusReply, String>) -> StatusRow {
    StatusRow {
        kind: kind.into(),
        endpoint: endpoint.into(),
        status,
        extra: None,
        waiting: Vec::new(),
        members: None,
    }
}

pub(crate) async fn status(args: ClientArgs) -> anyhow::Result<()> {
    let GroupRows {
        mut rows,
        unimplemented: sharded,
        ..
    } = group_rows(Service::Kv, "node", &args.endpoints).await;
    if sharded {
        check_controllers(&args.endpoints).await?;
        rows = sharded_status(&args).await?;
    } else {
        add_joined_members(&mut rows).await;
    }
    add_memberships(&mut rows).await;
    if args.json {
        print_json(&rows);
    } else {
        print_table(&rows, sharded);
    }
    if rows.iter().all(|row| row.status.is_err()) {
        bail!("no node answered; is the cluster running? (`cairn cluster` starts one)");
    }
    Ok(())
}

/// Adds a row for every member the nodes' member lists name that is not
/// shown yet (a node added after bootstrap is not among the members a
/// node's status reports).
async fn add_joined_members(rows: &mut Vec<StatusRow>) {
    let mut shown: BTreeSet<String> = rows.iter().map(|r| normalized(&r.endpoint)).collect();
    let answering: Vec<String> = rows
        .iter()
        .filter(|r| r.status.is_ok())
        .map(|r| r.endpoint.clone())
        .collect();
    for endpoint in answering {
        let Ok(list) = crate::member::list_at(&normalized(&endpoint), Duration::from_secs(2)).await
        else {
            continue;
        };
        for member in list.voters.iter().chain(&list.learners) {
            if !member.url.is_empty() && shown.insert(normalized(&member.url)) {
                let status = node_status(Service::Kv, &member.url).await;
                rows.push(row("node", &member.url, status.map_err(|e| e.to_string())));
            }
        }
    }
}

/// Asks every answering node for its members: a learner's role is shown as
/// "learner", and each node's configuration is kept for the output.
async fn add_memberships(rows: &mut [StatusRow]) {
    for row in rows.iter_mut() {
        let Ok(status) = &mut row.status else {
            continue;
        };
        let timeout = Duration::from_secs(2);
        let Ok(list) = crate::member::list_at(&normalized(&row.endpoint), timeout).await else {
            continue;
        };
        let ids = |members: &[cairn_rpc::node::MemberState]| members.iter().map(|m| m.id).collect();
        let (voters, learners): (Vec<u64>, Vec<u64>) = (ids(&list.voters), ids(&list.learners));
        if learners.contains(&status.id) && status.role == "follower" {
            status.role = "learner".into();
        }
        row.members = Some((voters, learners));
    }
}

/// The configurations the nodes know, one line for each distinct one,
/// naming the nodes that know it.
fn configurations(rows: &[StatusRow]) -> String {
    let mut known: BTreeMap<&(Vec<u64>, Vec<u64>), Vec<String>> = BTreeMap::new();
    for row in rows {
        if let (Some(members), Ok(status)) = (&row.members, &row.status) {
            known
                .entry(members)
                .or_default()
                .push(status.id.to_string());
        }
    }
    let list = |ids: &[u64]| {
        ids.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    for ((voters, learners), nodes) in known {
        let learners = match learners.is_empty() {
            true => "none".to_string(),
            false => list(learners),
        };
        out.push_str(&format!(
            "configuration (as nodes {} know it): voters {}; learners {learners}\n",
            nodes.join(", "),
            list(voters)
        ));
    }
    out
}

/// Endpoints that do not serve the key/value service are a sharded
/// cluster's controllers if one of them is; otherwise the first that is
/// another kind of server (a shard group server, a MapReduce coordinator,
/// ...) is named in the error, with where to point `--endpoints` instead.
async fn check_controllers(endpoints: &[String]) -> anyhow::Result<()> {
    use crate::probe::Service as Probed;
    let mut wrong = None;
    for endpoint in endpoints {
        match crate::probe::identify(endpoint).await {
            Probed::Controller => return Ok(()),
            Probed::KvNode | Probed::NoAnswer(_) => {}
            service => wrong = wrong.or(Some((endpoint, service))),
        }
    }
    match wrong {
        Some((endpoint, service)) => Err(crate::kv::wrong_service(endpoint, &service)),
        None => Ok(()),
    }
}

fn print_json(rows: &[StatusRow]) {
    let nodes: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let mut value = match &row.status {
                Ok(s) => serde_json::json!({
                    "endpoint": row.endpoint, "kind": row.kind, "id": s.id, "role": s.role,
                    "term": s.term, "leader": s.leader, "commit": s.commit, "applied": s.applied,
                    "last_index": s.last_index, "snapshot_index": s.snapshot_index,
                    "raft_state_bytes": s.raft_state_bytes,
                }),
                Err(error) => serde_json::json!({
                    "endpoint": row.endpoint, "kind": row.kind, "error": error,
                }),
            };
            if let Some((voters, learners)) = &row.members {
                value["voters"] = serde_json::json!(voters);
                value["learners"] = serde_json::json!(learners);
            }
            if let Some((config, shards)) = row.extra {
                value["config"] = config.into();
                value["serving_shards"] = shards.into();
                value["waiting"] = serde_json::json!(row.waiting);
            }
            value
        })
        .collect();
    print_stdout(&format!("{}\n", serde_json::Value::Array(nodes)));
}

fn print_table(rows: &[StatusRow], sharded: bool) {
    let mut out = format!(
        "{:<16} {:<26} {:>4} {:<14} {:>6} {:>7} {:>9} {:>9} {:>9}{}\n",
        "kind",
        "endpoint",
        "id",
        "role",
        "term",
        "leader",
        "commit",
        "applied",
        "snapshot",
        if sharded { "  config  shards" } else { "" }
    );
    for row in rows {
        let (kind, endpoint) = (&row.kind, &row.endpoint);
        match &row.status {
            Ok(s) => {
                out.push_str(&format!(
                    "{kind:<16} {endpoint:<26} {:>4} {:<14} {:>6} {:>7} {:>9} {:>9} {:>9}",
                    s.id, s.role, s.term, s.leader, s.commit, s.applied, s.snapshot_index
                ));
                if let Some((config, shards)) = row.extra {
                    out.push_str(&format!("  {config:>6}  {shards:>6}"));
                }
                out.push('\n');
            }
            Err(error) => {
                out.push_str(&format!("{kind:<16} {endpoint:<26} unreachable: {error}\n"))
            }
        }
    }
    if !sharded {
        out.push_str(&configurations(rows));
    }
    out.push_str(&waits(rows));
    if rows.iter().any(|r| r.kind.ends_with("(left)")) {
        out.push_str(
            "\n(left): a group that is not in the latest configuration but whose servers still \
             answer; it serves nothing. Stop its servers, or join it again.\n",
        );
    }
    print_stdout(&out);
}

/// The waits of each group, once per group: its leader's (which knows
/// whether the other group answers), else the first server's.
fn waits(rows: &[StatusRow]) -> String {
    let mut by_group: BTreeMap<&str, (bool, &[String])> = BTreeMap::new();
    for row in rows.iter().filter(|r| !r.waiting.is_empty()) {
        let leader = row.status.as_ref().is_ok_and(|s| s.role == "leader");
        let entry = by_group.entry(&row.kind).or_insert((leader, &row.waiting));
        if leader && !entry.0 {
            *entry = (true, &row.waiting);
        }
    }
    let mut out = String::new();
    for (group, (_, lines)) in by_group {
        for line in lines {
            out.push_str(&format!("{group}: {line}\n"));
        }
    }
    if out.is_empty() {
        out
    } else {
        format!("\nwaiting:\n{out}")
    }
}

/// The controllers, then every server of every group in the latest
/// configuration, then those of groups that left and still answer.
async fn sharded_status(args: &ClientArgs) -> anyhow::Result<Vec<StatusRow>> {
    let GroupRows { mut rows, urls, .. } =
        group_rows(Service::Controller, "controller", &args.endpoints).await;
    let controllers = cairn_shardctrler::Client::new(
        &urls,
        Duration::from_secs(1),
        Duration::from_secs(args.timeout),
    )?;
    let latest = controllers.query(None).await?;
    for (gid, servers) in &latest.groups {
        for endpoint in servers {
            rows.push(group_server_row(&format!("group {gid}"), endpoint).await);
        }
    }
    // Groups of earlier configurations, with their latest servers.
    let mut left: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let oldest = latest.num.saturating_sub(MAX_HISTORY).max(1);
    for num in (oldest..latest.num).rev() {
        let Ok(config) = controllers.query(Some(num)).await else {
            break;
        };
        for (gid, servers) in config.groups {
            if !latest.groups.contains_key(&gid) {
                left.entry(gid).or_insert(servers);
            }
        }
    }
    for (gid, servers) in left {
        for endpoint in &servers {
            let row = group_server_row(&format!("group {gid} (left)"), endpoint).await;
            if row.status.is_ok() {
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

async fn group_server_row(kind: &str, endpoint: &str) -> StatusRow {
    let status = match RpcClient::new(normalized(endpoint), options()) {
        Ok(server) => {
            server
                .call(StatusRequest {}, |c, r| async move {
                    ShardKvClient::new(c).status(r).await
                })
                .await
        }
        Err(error) => Err(error),
    };
    match status {
        Ok(group) => StatusRow {
            kind: kind.into(),
            endpoint: endpoint.into(),
            status: group.node.ok_or_else(|| "no status".to_string()),
            extra: Some((group.config_num, group.serving.len())),
            waiting: group.waiting,
            members: None,
        },
        Err(error) => row(kind, endpoint, Err(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting_row(kind: &str, role: &str, lines: &[&str]) -> StatusRow {
        let status = StatusReply {
            role: role.into(),
            ..StatusReply::default()
        };
        StatusRow {
            kind: kind.into(),
            endpoint: "http://h:1".into(),
            status: Ok(status),
            extra: Some((5, 1)),
            waiting: lines.iter().map(|l| l.to_string()).collect(),
            members: None,
        }
    }

    #[test]
    fn each_group_waits_are_shown_once_from_its_leader() {
        let rows = [
            waiting_row("group 1", "follower", &["config 5: from a follower"]),
            waiting_row("group 1", "leader", &["config 5: from the leader"]),
            waiting_row("group 2", "follower", &["config 5: only a follower"]),
        ];
        assert_eq!(
            waits(&rows),
            "\nwaiting:\ngroup 1: config 5: from the leader\ngroup 2: config 5: only a follower\n"
        );
        assert_eq!(waits(&[]), "");
    }

    #[test]
    fn urls_compare_with_or_without_the_scheme() {
        assert_eq!(normalized("127.0.0.1:7701"), "http://127.0.0.1:7701");
        assert_eq!(
            normalized("http://127.0.0.1:7701/"),
            "http://127.0.0.1:7701"
        );
    }
}
