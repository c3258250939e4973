//! Deletion with retention (GFS §4.4): a deleted file or tree leaves the
//! paths at once but is kept, with the time of its deletion, as a
//! [`Trashed`] deletion. Within the retention `undelete` puts it back where
//! it was; after it the leader purges it, and only then are its chunks
//! unreferenced, so the chunkservers' copies become garbage.
//!
//! The trash lives outside the path space (no reserved directory name), so
//! a deleted entry can never show in a listing and no user path can reach
//! or forge it. Every deletion gets the next [`TrashId`]; deleting a path
//! again while an earlier deletion of it is still kept keeps both, and
//! `undelete` restores the latest one first.
//!
//! Times come in the commands (the leader's wall clock, stamped when it
//! submitted them), never from a clock read here: every master applies the
//! same log entry to the same result.

use super::{FsError, Inode, Namespace};
use crate::namespace::ChunkHandle;
use crate::path::FsPath;

/// A deletion's number: increasing, never reused.
pub type TrashId = u64;

/// The most deletions the trash keeps; beyond it deletes to the trash are
/// refused with [`FsError::TrashFull`] (`--skip-trash` still works).
pub const MAX_TRASH_ENTRIES: usize = 100_000;

/// One deleted file or tree, kept for undelete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trashed {
    /// Where it was.
    pub path: FsPath,
    /// When the leader applied the delete, in ms since the Unix epoch.
    pub deleted_at_ms: u64,
    /// Its entries at their former paths: `path` first, then what was
    /// below it.
    pub entries: Vec<(FsPath, Inode)>,
}

impl Trashed {
    /// When its retention ends.
    pub fn purge_at_ms(&self, retention_ms: u64) -> u64 {
        self.deleted_at_ms.saturating_add(retention_ms)
    }

    /// Whether its retention has ended at `now_ms`.
    pub fn expired(&self, now_ms: u64, retention_ms: u64) -> bool {
        now_ms >= self.purge_at_ms(retention_ms)
    }

    pub fn is_directory(&self) -> bool {
        self.entries
            .first()
            .is_some_and(|(_, inode)| *inode == Inode::Directory)
    }

    /// How many files it holds.
    pub fn files(&self) -> usize {
        self.entries
            .iter()
            .filter(|(_, inode)| matches!(inode, Inode::File { .. }))
            .count()
    }

    /// Checks a decoded deletion: its own path first, everything within it.
    pub(crate) fn check(&self) -> Result<(), String> {
        let path = &self.path;
        match self.entries.first() {
            Some((first, _)) if first == path && !path.is_root() => {}
            _ => return Err(format!("the deletion of {path} does not start with it")),
        }
        if let Some((stray, _)) = self.entries.iter().find(|(p, _)| !p.is_within(path)) {
            return Err(format!("the deletion of {path} holds {stray}"));
        }
        Ok(())
    }
}

impl Namespace {
    /// Deletes `path` (with `recursive`, a non-empty directory and all
    /// below it) into the trash, stamped `deleted_at_ms`. Its chunks stay
    /// referenced until it is purged.
    pub fn trash(
        &mut self,
        path: &FsPath,
        recursive: bool,
        deleted_at_ms: u64,
    ) -> Result<TrashId, FsError> {
        let doomed = self.subtree(path, recursive)?;
        if self.trash.len() >= MAX_TRASH_ENTRIES {
            return Err(FsError::TrashFull);
        }
        let entries = doomed
            .into_iter()
            .map(|p| {
                let inode = self.entries.remove(&p).expect("listed by subtree");
                (p, inode)
            })
            .collect();
        let id = self.next_trash_id;
        self.next_trash_id += 1;
        let trashed = Trashed {
            path: path.clone(),
            deleted_at_ms,
            entries,
        };
        self.trash.insert(id, trashed);
        Ok(id)
    }

    /// Puts the latest deletion of `path` back where it was, if its
    /// retention has not ended at `now_ms` and nothing is at `path` now.
    pub fn undelete(
        &mut self,
        path: &FsPath,
        now_ms: u64,
        retention_ms: u64,
    ) -> Result<TrashId, FsError> {
        let (&id, trashed) = self
            .trash
            .iter()
            .rev()
            .find(|(_, t)| &t.path == path)
            .ok_or_else(|| FsError::NotInTrash(path.clone()))?;
        if trashed.expired(now_ms, retention_ms) {
            return Err(FsError::TrashExpired {
                path: path.clone(),
                purge_at_ms: trashed.purge_at_ms(retention_ms),
            });
        }
        self.check_parent(path)?;
        if self.entries.contains_key(path) {
            return Err(FsError::AlreadyExists(path.clone()));
        }
        if self.entries.len() + trashed.entries.len() > super::MAX_ENTRIES {
            return Err(FsError::NamespaceFull);
        }
        let trashed = self.trash.remove(&id).expect("found above");
        self.entries.extend(trashed.entries);
        Ok(id)
    }

    /// Forgets deletion `id` once its retention has ended at `now_ms`;
    /// returns the chunks no one references any more. A deletion already
    /// gone (purged, or restored) is no error: nothing to do.
    pub fn purge(
        &mut self,
        id: TrashId,
        now_ms: u64,
        retention_ms: u64,
    ) -> Result<Vec<ChunkHandle>, FsError> {
        let Some(trashed) = self.trash.get(&id) else {
            return Ok(Vec::new());
        };
        if !trashed.expired(now_ms, retention_ms) {
            return Err(FsError::TrashNotExpired(id));
        }
        let trashed = self.trash.remove(&id).expect("found above");
        let mut listed = Vec::new();
        for (_, inode) in trashed.entries {
            if let Inode::File { chunks, .. } = inode {
                listed.extend(chunks);
            }
        }
        Ok(self.unreference(listed))
    }

    /// The deletions in the trash, oldest first.
    pub fn trashed(&self) -> impl Iterator<Item = (TrashId, &Trashed)> + '_ {
        self.trash.iter().map(|(&id, trashed)| (id, trashed))
    }

    /// Up to `limit` deletions whose retention has ended at `now_ms`,
    /// oldest first: what the leader purges next.
    pub fn expired(&self, now_ms: u64, retention_ms: u64, limit: usize) -> Vec<TrashId> {
        self.trashed()
            .filter(|(_, t)| t.expired(now_ms, retention_ms))
            .map(|(id, _)| id)
            .take(limit)
            .collect()
    }
}

#[cfg(test)]
mod tests;
