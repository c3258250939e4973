//! [`RaftStorage`]: the durable side of a node — the write-ahead log (hard
//! state and entries) and the snapshot store, both on a [`Disk`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use cairn_raft::{
    ClusterConfig, Entry, EntryKind, HardState, InitialState, NodeId, Ready, Snapshot, SnapshotMeta,
};
use cairn_storage::{Disk, SnapshotError, SnapshotStore, Wal, WalEntry, WalError, WalOptions};

use crate::error::StartError;

/// Why the log or the snapshot store failed a write (an I/O error, a full
/// disk): the node cannot go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StorageError {
    /// The write-ahead log (entries, hard state, truncation, compaction).
    #[error("the write-ahead log: {0}")]
    Wal(#[from] WalError),
    /// The snapshot store.
    #[error("the snapshot store: {0}")]
    Snapshot(#[from] SnapshotError),
}

/// The write-ahead log and snapshots of one node.
#[derive(Debug)]
pub(crate) struct RaftStorage {
    wal: Wal,
    snapshots: SnapshotStore,
}

/// What a node recovers at start.
pub(crate) struct Recovered {
    pub(crate) initial: InitialState,
    /// The state machine's part of the latest snapshot.
    pub(crate) machine_snapshot: Option<Bytes>,
}

impl RaftStorage {
    /// Opens the log and snapshots under `dir` and recovers what they hold.
    pub(crate) fn open(
        disk: Arc<dyn Disk>,
        dir: &Path,
        cluster: ClusterConfig,
    ) -> Result<(Self, Recovered), StartError> {
        Self::open_with(disk, dir, cluster, WalOptions::default())
    }

    /// [`open`](Self::open) with the log laid out by `options`.
    pub(crate) fn open_with(
        disk: Arc<dyn Disk>,
        dir: &Path,
        cluster: ClusterConfig,
        options: WalOptions,
    ) -> Result<(Self, Recovered), StartError> {
        let storage_error = |e: &dyn std::fmt::Display| StartError::Storage(e.to_string());
        let snapshots = SnapshotStore::open(disk.clone(), &dir.join("snapshots"))
            .map_err(|e| storage_error(&e))?;
        let (wal, recovered) =
            Wal::open(disk, &dir.join("wal"), options).map_err(|e| storage_error(&e))?;
        let stored = snapshots.load_latest().map_err(|e| storage_error(&e))?;
        let (snapshot, machine_snapshot) = match stored {
            Some(stored) => {
                let (StoredMeta { config, urls }, data) =
                    decode_snapshot(stored.data).ok_or_else(|| {
                        StartError::Storage(format!(
                            "snapshot at index {} is unreadable",
                            stored.index
                        ))
                    })?;
                let meta = SnapshotMeta {
                    index: stored.index,
                    term: stored.term,
                    config,
                    urls,
                };
                (
                    Some(Snapshot {
                        meta,
                        data: data.clone(),
                    }),
                    Some(data),
                )
            }
            None => (None, None),
        };
        let hard_state = match recovered.state {
            Some(bytes) => decode_hard_state(&bytes)
                .ok_or_else(|| StartError::Storage("the stored hard state is unreadable".into()))?,
            None => HardState::default(),
        };
        let snapshot_index = snapshot.as_ref().map_or(0, |s| s.meta.index);
        let snapshot_term = snapshot.as_ref().map_or(0, |s| s.meta.term);
        // Entries after a snapshot belong to its history only if the log
        // agrees with it at its index; otherwise they are what the
        // snapshot replaced (kept by a crash before the log was cut).
        let replaced = recovered
            .entries
            .iter()
            .any(|e| e.index == snapshot_index && e.term != snapshot_term);
        let mut entries = Vec::with_capacity(recovered.entries.len());
        for stored in recovered
            .entries
            .into_iter()
            .filter(|e| e.index > snapshot_index && !replaced)
        {
            let (kind, data) = decode_entry_data(stored.data).ok_or_else(|| {
                StartError::Storage(format!("log entry {} is unreadable", stored.index))
            })?;
            entries.push(Entry {
                term: stored.term,
                index: stored.index,
                kind,
                data,
            });
        }
        if let Some(first) = entries.first()
            && first.index != snapshot_index + 1
        {
            return Err(StartError::Storage(format!(
                "the log starts at index {} but the snapshot ends at {snapshot_index}; the data directory is damaged",
                first.index
            )));
        }
        let initial = InitialState {
            cluster,
            hard_state,
            snapshot,
            entries,
        };
        Ok((
            Self { wal, snapshots },
            Recovered {
                initial,
                machine_snapshot,
            },
        ))
    }

    /// `Ready` step 1: writes the snapshot, entries and hard state, with
    /// one fsync for the log when the core says it must
    /// (`Ready::must_sync`: not for a hard state that moves only the
    /// commit index, which a crash may lose or tear without harm).
    pub(crate) fn persist(&mut self, ready: &Ready) -> Result<(), StorageError> {
        if let Some(snapshot) = &ready.snapshot {
            // The snapshot replaces the whole log (the core sends one only
            // when its log disagrees at the snapshot's index). First the
            // entries after it go, durably: a crash between the two steps
            // must not recover the new snapshot followed by the replaced
            // entries, a log this node never had.
            let index = snapshot.meta.index;
            if self.wal.last_index() > index && index >= self.wal.compacted_to() {
                self.wal.truncate(index + 1)?;
                self.wal.sync()?;
            }
            self.save_snapshot(&snapshot.meta, &snapshot.data)?;
            self.wal.compact(index)?;
        }
        if !ready.entries.is_empty() {
            let entries: Vec<WalEntry> = ready
                .entries
                .iter()
                .map(|e| WalEntry::new(e.index, e.term, encode_entry_data(e.kind, &e.data)))
                .collect();
            self.wal.append(&entries)?;
        }
        if let Some(hard_state) = &ready.hard_state {
            self.wal.set_state(&encode_hard_state(hard_state))?;
        }
        if ready.must_sync {
            self.wal.sync()?;
        }
        Ok(())
    }

    /// Stores a snapshot the service took, then drops the log it covers.
    pub(crate) fn save_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        data: &[u8],
    ) -> Result<(), StorageError> {
        let encoded = encode_snapshot(meta, data);
        Ok(self.snapshots.save(meta.index, meta.term, &encoded)?)
    }

    /// Drops the log up to `index` (after its snapshot was saved); durable
    /// on return.
    pub(crate) fn compact(&mut self, index: u64) -> Result<(), StorageError> {
        Ok(self.wal.compact(index)?)
    }

    /// The (index, term) of the latest stored snapshot.
    pub(crate) fn latest_snapshot(&self) -> Option<(u64, u64)> {
        self.snapshots.latest_meta()
    }

    /// The size of the Raft state (6.824's `RaftStateSize`).
    pub(crate) fn raft_state_bytes(&self) -> u64 {
        self.wal.live_bytes()
    }
}

fn encode_hard_state(hard_state: &HardState) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.put_u64_le(hard_state.term);
    out.put_u64_le(hard_state.vote.unwrap_or(0));
    out.put_u64_le(hard_state.commit);
    out
}

fn decode_hard_state(mut bytes: &[u8]) -> Option<HardState> {
    if bytes.len() != 24 {
        return None;
    }
    let term = bytes.get_u64_le();
    let vote = bytes.get_u64_le();
    let commit = bytes.get_u64_le();
    Some(HardState {
        term,
        vote: (vote != 0).then_some(vote),
        commit,
    })
}

/// An entry's payload in the log: one kind byte, then the command.
fn encode_entry_data(kind: EntryKind, data: &Bytes) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 1);
    out.put_u8(match kind {
        EntryKind::Normal => 0,
        EntryKind::Noop => 1,
        EntryKind::Config => 2,
    });
    out.extend_from_slice(data);
    out.freeze()
}

fn decode_entry_data(mut data: Bytes) -> Option<(EntryKind, Bytes)> {
    if data.is_empty() {
        return None;
    }
    let kind = match data.get_u8() {
        0 => EntryKind::Normal,
        1 => EntryKind::Noop,
        2 => EntryKind::Config,
        _ => return None,
    };
    Some((kind, data))
}

/// The first word of a snapshot in the current format. The first format
/// began with the voter count, which is never this (its ids must follow).
const SNAPSHOT_FORMAT_MARK: u64 = u64::MAX;
/// The current snapshot format: the mark, this version, then the
/// configuration's voters, learners and removed ids (each a count, then
/// the ids), then the members' URLs (a count, then for each the id, the
/// URL's length and its UTF-8 bytes), then the state machine's bytes.
/// Version 2 was the same without the URLs.
const SNAPSHOT_FORMAT_VERSION: u8 = 3;

/// What a stored snapshot holds besides the state machine's bytes.
#[derive(Debug, PartialEq, Eq)]
struct StoredMeta {
    config: ClusterConfig,
    urls: BTreeMap<NodeId, String>,
}

/// A stored snapshot in the current format (see
/// [`SNAPSHOT_FORMAT_VERSION`]).
fn encode_snapshot(meta: &SnapshotMeta, data: &[u8]) -> Vec<u8> {
    let config = &meta.config;
    let ids = config.voters.len() + config.learners.len() + config.removed.len();
    let url_bytes: usize = meta.urls.values().map(|url| 16 + url.len()).sum();
    let mut out = Vec::with_capacity(9 + 32 + 8 * ids + url_bytes + data.len());
    out.put_u64_le(SNAPSHOT_FORMAT_MARK);
    out.put_u8(SNAPSHOT_FORMAT_VERSION);
    for set in [&config.voters, &config.learners, &config.removed] {
        out.put_u64_le(set.len() as u64);
        set.iter().for_each(|&id| out.put_u64_le(id));
    }
    out.put_u64_le(meta.urls.len() as u64);
    for (&id, url) in &meta.urls {
        out.put_u64_le(id);
        out.put_u64_le(url.len() as u64);
        out.extend_from_slice(url.as_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Decodes a stored snapshot of any format: the current one, version 2
/// (no URLs), or the first (the voter count, the voters, the data), whose
/// members all vote.
fn decode_snapshot(mut data: Bytes) -> Option<(StoredMeta, Bytes)> {
    if data.len() < 8 {
        return None;
    }
    let first = data.get_u64_le();
    let mut urls = BTreeMap::new();
    let config = if first == SNAPSHOT_FORMAT_MARK {
        let version = (!data.is_empty()).then(|| data.get_u8())?;
        if version != 2 && version != SNAPSHOT_FORMAT_VERSION {
            return None;
        }
        let voters = decode_ids(&mut data, None)?;
        let learners = decode_ids(&mut data, None)?;
        let removed = decode_ids(&mut data, None)?;
        if version == SNAPSHOT_FORMAT_VERSION {
            urls = decode_urls(&mut data)?;
        }
        ClusterConfig {
            voters,
            learners,
            removed,
        }
    } else {
        ClusterConfig {
            voters: decode_ids(&mut data, Some(first))?,
            ..ClusterConfig::default()
        }
    };
    let valid = !config.voters.is_empty() && config.is_valid();
    (valid && urls.keys().all(|&id| config.is_member(id)))
        .then_some((StoredMeta { config, urls }, data))
}

/// The members' URLs: a count, then each id, length and bytes; `None` if
/// the bytes are too short, not UTF-8, or repeat an id.
fn decode_urls(data: &mut Bytes) -> Option<BTreeMap<NodeId, String>> {
    let count = (data.len() >= 8).then(|| data.get_u64_le())?;
    let mut urls = BTreeMap::new();
    for _ in 0..count {
        if data.len() < 16 {
            return None;
        }
        let id = data.get_u64_le();
        let length = usize::try_from(data.get_u64_le()).ok()?;
        if data.len() < length {
            return None;
        }
        let url = String::from_utf8(data.split_to(length).to_vec()).ok()?;
        if urls.insert(id, url).is_some() {
            return None;
        }
    }
    Some(urls)
}

/// A set of ids: its count (read here unless already read), then the ids;
/// `None` if the bytes are too short or repeat an id.
fn decode_ids(data: &mut Bytes, count: Option<u64>) -> Option<BTreeSet<NodeId>> {
    let count = match count {
        Some(count) => count,
        None if data.len() >= 8 => data.get_u64_le(),
        None => return None,
    };
    let count = usize::try_from(count).ok()?;
    if data.len() / 8 < count {
        return None;
    }
    let ids: BTreeSet<NodeId> = (0..count).map(|_| data.get_u64_le()).collect();
    (ids.len() == count).then_some(ids)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The node's own records (hard state, entry payload, snapshot
        /// header) decode arbitrary bytes to a value or `None`, never a
        /// panic.
        #[test]
        fn stored_records_decode_or_refuse(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode_hard_state(&bytes);
            let _ = decode_entry_data(Bytes::from(bytes.clone()));
            if let Some((stored, _)) = decode_snapshot(Bytes::from(bytes)) {
                prop_assert!(!stored.config.voters.is_empty());
            }
        }
    }

    #[test]
    fn records_round_trip() {
        let hard_state = HardState {
            term: 4,
            vote: Some(2),
            commit: 9,
        };
        assert_eq!(
            decode_hard_state(&encode_hard_state(&hard_state)),
            Some(hard_state)
        );
        let data = Bytes::from_static(b"command");
        let encoded = encode_entry_data(EntryKind::Normal, &data);
        assert_eq!(decode_entry_data(encoded), Some((EntryKind::Normal, data)));
        let config = ClusterConfig {
            voters: [1, 2, 3].into(),
            learners: [4].into(),
            removed: [5, 6].into(),
        };
        let meta = SnapshotMeta {
            index: 9,
            term: 4,
            config,
            urls: [(1, "http://a:1".into()), (4, "http://d:4".into())].into(),
        };
        let snapshot = encode_snapshot(&meta, b"state");
        let stored = StoredMeta {
            config: meta.config,
            urls: meta.urls,
        };
        assert_eq!(
            decode_snapshot(Bytes::from(snapshot)),
            Some((stored, Bytes::from_static(b"state")))
        );
    }

    /// A snapshot file of format 2 (the whole configuration, no URLs)
    /// still loads, with no URLs known.
    #[test]
    fn a_snapshot_of_the_second_format_loads_without_urls() {
        let mut old = Vec::new();
        old.put_u64_le(SNAPSHOT_FORMAT_MARK);
        old.put_u8(2);
        for word in [2u64, 1, 2, 1, 4, 0] {
            old.put_u64_le(word);
        }
        old.extend_from_slice(b"state");
        let config = ClusterConfig {
            voters: [1, 2].into(),
            learners: [4].into(),
            removed: BTreeSet::new(),
        };
        let stored = StoredMeta {
            config,
            urls: BTreeMap::new(),
        };
        assert_eq!(
            decode_snapshot(Bytes::from(old)),
            Some((stored, Bytes::from_static(b"state")))
        );
    }

    /// A URL for a node that is not a member is refused, not believed.
    #[test]
    fn a_snapshot_with_a_url_of_a_non_member_is_refused() {
        let meta = SnapshotMeta {
            index: 9,
            term: 4,
            config: ClusterConfig::new([1, 2]),
            urls: [(3, "http://c:3".into())].into(),
        };
        assert_eq!(
            decode_snapshot(Bytes::from(encode_snapshot(&meta, b""))),
            None
        );
    }

    /// A snapshot file written before learners existed (the voter count,
    /// the voters, the data) still loads, every member a voter.
    #[test]
    fn a_snapshot_of_the_first_format_loads_with_all_members_voting() {
        let mut old = Vec::new();
        for word in [3u64, 1, 2, 3] {
            old.put_u64_le(word);
        }
        old.extend_from_slice(b"state");
        let stored = StoredMeta {
            config: ClusterConfig::new([1, 2, 3]),
            urls: BTreeMap::new(),
        };
        assert_eq!(
            decode_snapshot(Bytes::from(old)),
            Some((stored, Bytes::from_static(b"state")))
        );
    }

    /// A configuration that breaks the invariants (an id both voter and
    /// learner) is refused, not believed.
    #[test]
    fn a_snapshot_with_an_impossible_configuration_is_refused() {
        let config = ClusterConfig {
            voters: [1, 2].into(),
            learners: [2].into(),
            removed: BTreeSet::new(),
        };
        let meta = SnapshotMeta {
            index: 9,
            term: 4,
            config,
            urls: BTreeMap::new(),
        };
        assert_eq!(
            decode_snapshot(Bytes::from(encode_snapshot(&meta, b""))),
            None
        );
    }
}
