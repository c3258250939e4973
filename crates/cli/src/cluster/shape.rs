//! `cairn cluster` refuses data of another shape than the one it is asked
//! to start (other `--nodes` or `--groups`), reading the shape off the
//! members' data directories.

use std::path::Path;

use anyhow::bail;

use super::ClusterArgs;

/// The shape of the cluster whose data is in `data_dir` (of the kind
/// asked for: plain or sharded), from its members' data directories:
/// `node<ID>` for a plain cluster, `ctrl<ID>` and `group<GID>-node<ID>` for
/// a sharded one. `None` if there is none.
fn existing_shape(data_dir: &Path, sharded: bool) -> Option<(u64, u64)> {
    let entries = std::fs::read_dir(data_dir).ok()?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (mut nodes, mut groups) = (None, 0);
    for entry in entries.filter_map(|entry| entry.ok()) {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !entry.path().is_dir() {
            continue;
        }
        let (gid, id) = if !sharded {
            (0, name.strip_prefix("node").and_then(number))
        } else if let Some(id) = name.strip_prefix("ctrl") {
            (0, number(id))
        } else if let Some((gid, id)) = name
            .strip_prefix("group")
            .and_then(|rest| rest.split_once("-node"))
        {
            match number(gid) {
                Some(gid) => (gid, number(id)),
                None => continue,
            }
        } else {
            continue;
        };
        if let Some(id) = id {
            nodes = Some(nodes.unwrap_or(0).max(id));
            groups = groups.max(gid);
        }
    }
    nodes.map(|nodes| (nodes, groups))
}

/// Refuses to start a cluster of another shape (--nodes, --groups) than
/// the one whose data is in `data_dir`: its nodes would start with peers
/// that disagree with their logs, or groups would be missing. A plain and
/// a sharded cluster use different directories and may share `data_dir`.
pub(super) fn check_same_shape(args: &ClusterArgs, data_dir: &Path) -> anyhow::Result<()> {
    let Some((nodes, groups)) = existing_shape(data_dir, args.sharded) else {
        return Ok(());
    };
    let (found, flags, asked) = if args.sharded {
        if (nodes, groups) == (args.nodes, args.groups) {
            return Ok(());
        }
        (
            format!(
                "a sharded cluster of {nodes} controllers and {groups} groups of {nodes} servers"
            ),
            format!("--sharded --nodes {nodes} --groups {groups}"),
            format!("--sharded --nodes {} --groups {}", args.nodes, args.groups),
        )
    } else {
        if nodes == args.nodes {
            return Ok(());
        }
        (
            format!("a {nodes}-node cluster"),
            format!("--nodes {nodes}"),
            format!("--nodes {}", args.nodes),
        )
    };
    bail!(
        "{} holds {found}, but this run asks for `{asked}`; start it with the same flags \
         (`cairn cluster {flags}`), or wipe the old cluster's data with `rm -rf {}` to start a \
         new one",
        data_dir.display(),
        data_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(nodes: u64, sharded: bool, groups: u64) -> ClusterArgs {
        ClusterArgs {
            nodes,
            base_port: 7700,
            sharded,
            groups,
            fs: false,
            chunkservers: 3,
            mr_workers: 0,
            metrics: false,
        }
    }

    #[test]
    fn data_of_another_shape_is_refused_with_what_was_found() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        assert!(check_same_shape(&args(3, false, 2), data).is_ok());
        for id in 1..=3 {
            std::fs::create_dir_all(data.join(format!("node{id}"))).unwrap();
        }
        std::fs::write(data.join("node9.log"), "").unwrap();
        assert!(check_same_shape(&args(3, false, 2), data).is_ok());
        for nodes in [1, 5] {
            let error = check_same_shape(&args(nodes, false, 2), data)
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("a 3-node cluster")
                    && error.contains(&format!("--nodes {nodes}`"))
                    && error.contains("`cairn cluster --nodes 3`")
                    && error.contains("rm -rf"),
                "{error}"
            );
        }
        // A node whose data was wiped alone restarts empty: allowed.
        std::fs::remove_dir(data.join("node2")).unwrap();
        assert!(check_same_shape(&args(3, false, 2), data).is_ok());
        // A sharded cluster beside it is another cluster: allowed.
        assert!(check_same_shape(&args(3, true, 2), data).is_ok());
        for name in ["ctrl1", "ctrl2", "ctrl3", "group1-node3", "group2-node1"] {
            std::fs::create_dir_all(data.join(name)).unwrap();
        }
        assert!(check_same_shape(&args(3, true, 2), data).is_ok());
        for (nodes, groups) in [(3, 3), (5, 2), (3, 1)] {
            let error = check_same_shape(&args(nodes, true, groups), data)
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("3 controllers and 2 groups of 3 servers")
                    && error.contains("`cairn cluster --sharded --nodes 3 --groups 2`"),
                "{error}"
            );
        }
    }
}
