//! [`Identity`]: which cluster a node's data belongs to, and as which node.
//!
//! The member list given by flags is used once: when a node starts on an
//! empty data directory it stores its identity (the cluster id, its own id,
//! the members) next to its log, atomically, before anything else. Every
//! later start compares the flags with the stored identity and refuses to
//! start when they disagree. Without this, a node restarted with the wrong
//! `--peers` (only itself, say) would elect itself and acknowledge writes
//! the rest of the cluster never saw, and later overwrite theirs.
//!
//! The cluster id is derived from the bootstrap configuration (the group's
//! name and every member's id and URL), so that the nodes of one cluster,
//! bootstrapped with the same flags, agree on it without talking, and a
//! node started empty in place of a lost one gets it back from the same
//! flags. Every message batch carries it; a node refuses batches from
//! another cluster.

use std::collections::BTreeMap;
use std::path::Path;

use cairn_raft::NodeId;
use cairn_storage::{Disk, write_atomic};

use crate::error::StartError;

/// The file the identity is stored in, under the node's data directory.
pub(crate) const IDENTITY_FILE: &str = "cluster";

const HEADER: &str = "cairn node identity v1";

/// A node's identity: its cluster and its place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The cluster's id, carried by every message batch.
    pub(crate) cluster_id: String,
    /// This node.
    pub(crate) node: NodeId,
    /// The members at bootstrap.
    pub(crate) members: Vec<NodeId>,
}

impl Identity {
    /// The identity the flags describe: `name` is the group's name, `peers`
    /// every member's id and URL.
    pub(crate) fn from_flags(name: &str, node: NodeId, peers: &BTreeMap<NodeId, String>) -> Self {
        let mut hash = Fnv::default();
        hash.write(name.as_bytes());
        for (id, url) in peers {
            hash.write(&id.to_le_bytes());
            hash.write(url.trim_end_matches('/').as_bytes());
        }
        Self {
            cluster_id: format!("{name}-{:016x}", hash.0),
            node,
            members: peers.keys().copied().collect(),
        }
    }

    fn encode(&self) -> String {
        let members: Vec<String> = self.members.iter().map(u64::to_string).collect();
        format!(
            "{HEADER}\ncluster {}\nnode {}\nmembers {}\n",
            self.cluster_id,
            self.node,
            members.join(",")
        )
    }

    fn decode(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let cluster_id = lines.next()?.strip_prefix("cluster ")?.to_string();
        let node = lines.next()?.strip_prefix("node ")?.parse().ok()?;
        let members = lines
            .next()?
            .strip_prefix("members ")?
            .split(',')
            .map(|id| id.parse().ok())
            .collect::<Option<Vec<NodeId>>>()?;
        Some(Self {
            cluster_id,
            node,
            members,
        })
    }
}

/// FNV-1a, 64 bits: stable across builds and platforms.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        self.0 = (self.0 ^ 0xff).wrapping_mul(0x0000_0100_0000_01b3);
    }
}

/// Checks the flags against the identity stored under `dir`, or stores it
/// if there is none (a data directory written before identities were
/// stored adopts the flags' identity). Returns the identity to run with.
pub(crate) fn check_or_store(
    disk: &dyn Disk,
    dir: &Path,
    flags: Identity,
) -> Result<Identity, StartError> {
    let path = dir.join(IDENTITY_FILE);
    if !disk.exists(&path) {
        disk.create_dir_durable(dir)
            .and_then(|()| write_atomic(disk, &path, flags.encode().as_bytes()))
            .map_err(|e| StartError::Storage(format!("cannot store the node's identity: {e}")))?;
        return Ok(flags);
    }
    let bytes = disk
        .read(&path)
        .map_err(|e| StartError::Storage(format!("cannot read {}: {e}", path.display())))?;
    let stored = std::str::from_utf8(&bytes)
        .ok()
        .and_then(Identity::decode)
        .ok_or_else(|| {
            StartError::Storage(format!(
                "{} is unreadable; the data directory is damaged: restore it from a backup, or \
                 remove it and start this node empty to copy the data from the others",
                path.display()
            ))
        })?;
    if stored.node != flags.node {
        return Err(StartError::Config(format!(
            "this data directory belongs to node {}, not node {}; give each node its own \
             --data-dir, or start it with --id {}",
            stored.node, flags.node, stored.node
        )));
    }
    if stored.members != flags.members {
        return Err(StartError::Config(format!(
            "this node's data belongs to a cluster of nodes {:?}, but the flags name nodes {:?}; \
             start it with the --peers it was created with (a node started with other peers \
             could elect itself and lose acknowledged writes)",
            stored.members, flags.members
        )));
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cairn_storage::MemDisk;

    use super::*;

    fn peers(ids: &[u64]) -> BTreeMap<NodeId, String> {
        ids.iter()
            .map(|&id| (id, format!("http://127.0.0.1:77{id:02}")))
            .collect()
    }

    #[test]
    fn the_first_start_stores_and_later_starts_must_agree() {
        let disk = Arc::new(MemDisk::new());
        let dir = Path::new("raft");
        let flags = Identity::from_flags("cairn", 1, &peers(&[1, 2, 3]));
        assert_eq!(check_or_store(&*disk, dir, flags.clone()).unwrap(), flags);
        assert_eq!(check_or_store(&*disk, dir, flags.clone()).unwrap(), flags);
        let alone = Identity::from_flags("cairn", 1, &peers(&[1]));
        let error = check_or_store(&*disk, dir, alone).unwrap_err().to_string();
        assert!(
            error.contains("[1, 2, 3]") && error.contains("--peers"),
            "{error}"
        );
        let other_node = Identity::from_flags("cairn", 2, &peers(&[1, 2, 3]));
        let error = check_or_store(&*disk, dir, other_node)
            .unwrap_err()
            .to_string();
        assert!(error.contains("belongs to node 1"), "{error}");
    }

    #[test]
    fn the_cluster_id_depends_on_name_members_and_addresses() {
        let a = Identity::from_flags("cairn", 1, &peers(&[1, 2, 3]));
        assert_eq!(a, Identity::from_flags("cairn", 1, &peers(&[1, 2, 3])));
        assert_ne!(
            a.cluster_id,
            Identity::from_flags("other", 1, &peers(&[1, 2, 3])).cluster_id
        );
        assert_ne!(
            a.cluster_id,
            Identity::from_flags("cairn", 1, &peers(&[1, 2])).cluster_id
        );
        let mut moved = peers(&[1, 2, 3]);
        moved.insert(3, "http://10.0.0.3:7703".into());
        assert_ne!(
            a.cluster_id,
            Identity::from_flags("cairn", 1, &moved).cluster_id
        );
    }

    #[test]
    fn a_damaged_identity_is_a_clear_error() {
        let disk = Arc::new(MemDisk::new());
        let dir = Path::new("raft");
        disk.create_dir_durable(dir).unwrap();
        write_atomic(&*disk, &dir.join(IDENTITY_FILE), b"garbage").unwrap();
        let flags = Identity::from_flags("cairn", 1, &peers(&[1, 2, 3]));
        let error = check_or_store(&*disk, dir, flags).unwrap_err().to_string();
        assert!(error.contains("damaged"), "{error}");
    }
}
