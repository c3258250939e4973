//! [`Namespace`]: the master's replicated metadata — directories, files as
//! ordered lists of chunk handles, and each chunk's version number.
//!
//! This is the part of GFS's master state that is non-volatile (paper
//! §2.6): it changes only by the operations below, each applied at a Raft
//! log index on every master, so they must be deterministic (no clock, no
//! randomness: new chunk handles come from a counter). Chunk *locations*
//! are not here: chunkservers report them, and a new leader rebuilds them
//! from those reports (§2.6.2).
//!
//! Every operation checks before it changes anything, so a refused one
//! changes nothing.
//!
//! A deleted file or tree is kept out of the paths, in the trash, until
//! its retention runs out (GFS §4.4; `namespace/trash.rs`): its chunks stay
//! referenced ([`Namespace::references`]) until it is purged.

use std::collections::BTreeMap;
use std::ops::Bound;

use thiserror::Error;

use crate::path::FsPath;

mod sharing;
mod trash;

pub use trash::{MAX_TRASH_ENTRIES, TrashId, Trashed};

/// A chunk's name for its whole life: never reused, even after deletion.
pub type ChunkHandle = u64;

/// The most chunks one file may have (at 64 MiB each, 64 TiB).
pub const MAX_CHUNKS_PER_FILE: usize = 1 << 20;
/// The highest replication goal a file may have (one grant names at most
/// this many replicas).
pub const MAX_REPLICATION: u32 = 16;
/// The most entries (files and directories) the namespace holds; beyond it
/// creates are refused with [`FsError::NamespaceFull`].
pub const MAX_ENTRIES: usize = 10_000_000;

/// What the namespace knows about one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    /// Raised each time the master grants a new lease (§4.5): replicas with
    /// an older version are stale. 0 until the first lease.
    pub version: u64,
    /// Its files' replication goal (set with the file's, see
    /// [`Inode::File`]; a chunk a snapshot shares takes the last one set
    /// on any of its files).
    pub goal: u32,
    /// How many files (in the paths or in the trash) list it, plus the
    /// chunks copied from it whose copies are not done (`namespace/sharing.rs`).
    /// Derived, not stored: a snapshot recounts it.
    pub refs: u32,
    /// For a chunk made by copy-on-write: the chunk it is copied from,
    /// until every replica's copy is made ([`Namespace::copy_done`]).
    pub copy_of: Option<ChunkHandle>,
}

impl ChunkMeta {
    /// The number of good replicas the chunk should have, `default` (the
    /// store's setting) unless its file has its own.
    pub fn goal_or(&self, default: usize) -> usize {
        if self.goal == 0 {
            default
        } else {
            self.goal as usize
        }
    }
}

/// A directory or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inode {
    Directory,
    /// `goal`: how many replicas its chunks should have (`cairn fs
    /// setrep`); 0 for the store's setting.
    File {
        chunks: Vec<ChunkHandle>,
        goal: u32,
    },
}

/// Why an operation was refused. Retrying does not help with any of them
/// (they depend on the namespace, not on timing).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FsError {
    #[error("{0} does not exist; `cairn fs ls` its directory to see what is there")]
    NotFound(FsPath),
    #[error("{0} already exists; pick another name, or remove it first (rm)")]
    AlreadyExists(FsPath),
    #[error("{0} is not a directory; give a directory's path")]
    NotADirectory(FsPath),
    #[error("{0} is a directory; use a file path (or rm -r / ls for directories)")]
    IsADirectory(FsPath),
    #[error("{0} is not empty; remove it recursively (rm -r) or empty it first")]
    DirectoryNotEmpty(FsPath),
    #[error("the directory {0} does not exist; create it first (mkdir -p)")]
    ParentMissing(FsPath),
    #[error("cannot move {from} into itself ({to}); pick a destination outside it")]
    MoveIntoItself { from: FsPath, to: FsPath },
    #[error("the root directory cannot be removed or renamed")]
    Root,
    #[error(
        "{path} has {chunks} chunks, not {expected}: another writer added one; re-read the file"
    )]
    ChunkCountChanged {
        path: FsPath,
        chunks: usize,
        expected: usize,
    },
    #[error(
        "{0} has reached the limit of {MAX_CHUNKS_PER_FILE} chunks; split the data across files"
    )]
    FileTooLarge(FsPath),
    #[error("chunk {0} does not exist (its file was deleted)")]
    NoSuchChunk(ChunkHandle),
    #[error("chunk {handle} is at version {current}, not {expected}: another lease was granted")]
    VersionChanged {
        handle: ChunkHandle,
        current: u64,
        expected: u64,
    },
    #[error("the namespace holds {MAX_ENTRIES} entries, its limit; delete some")]
    NamespaceFull,
    #[error(
        "{0} is not in the trash (never deleted, deleted with --skip-trash, or already purged); `cairn fs ls --trash` shows what can be restored"
    )]
    NotInTrash(FsPath),
    #[error(
        "the deletion of {path} is past its retention (it ended at {purge_at_ms} ms since the epoch) and is being purged; it cannot be restored"
    )]
    TrashExpired { path: FsPath, purge_at_ms: u64 },
    #[error("deletion {0} is still within its retention; purge it after it ends")]
    TrashNotExpired(TrashId),
    #[error(
        "the trash holds {MAX_TRASH_ENTRIES} deletions, its limit; delete with --skip-trash, or wait for the oldest to be purged"
    )]
    TrashFull,
    #[error("a replication goal of {0}; give one from 1 to {MAX_REPLICATION}")]
    BadReplication(u32),
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: FsPath,
    pub inode: Inode,
}

/// The directories, files and chunk versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Every entry but the root, which always exists.
    entries: BTreeMap<FsPath, Inode>,
    /// Every chunk a file or a deletion in the trash references.
    chunks: BTreeMap<ChunkHandle, ChunkMeta>,
    /// The next chunk handle to hand out.
    next_handle: ChunkHandle,
    /// Deletions kept for undelete, by the order they were made in.
    trash: BTreeMap<TrashId, Trashed>,
    /// The next deletion's id.
    next_trash_id: TrashId,
}

impl Default for Namespace {
    fn default() -> Self {
        Self::new()
    }
}

impl Namespace {
    pub fn new() -> Self {
        Self {
            entries: BTreeMap::new(),
            chunks: BTreeMap::new(),
            next_handle: 1,
            trash: BTreeMap::new(),
            next_trash_id: 1,
        }
    }

    /// The entry at `path`.
    pub fn get(&self, path: &FsPath) -> Result<&Inode, FsError> {
        if path.is_root() {
            return Ok(&Inode::Directory);
        }
        self.entries
            .get(path)
            .ok_or_else(|| FsError::NotFound(path.clone()))
    }

    /// A chunk's metadata.
    pub fn chunk(&self, handle: ChunkHandle) -> Result<ChunkMeta, FsError> {
        self.chunks
            .get(&handle)
            .copied()
            .ok_or(FsError::NoSuchChunk(handle))
    }

    /// The handle the next added chunk gets: every handle below it was
    /// handed out (a higher one is a chunk this node has not applied yet).
    pub fn next_handle(&self) -> ChunkHandle {
        self.next_handle
    }

    /// How many files and directories there are (the root not counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a file or a deletion still in the trash references the
    /// chunk: the one rule for whether its replicas are garbage. A chunk is
    /// unreferenced only once its file was deleted at once (`--skip-trash`),
    /// replaced by a rename, or purged from the trash. (A replica of a
    /// handle below [`next_handle`](Self::next_handle) that nothing
    /// references is an orphan.)
    pub fn references(&self, handle: ChunkHandle) -> bool {
        self.chunks.contains_key(&handle)
    }

    /// How many chunks the files and the trash reference.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Every chunk and its version, in handle order (for comparing with
    /// the chunkservers' reports).
    pub fn chunks(&self) -> impl Iterator<Item = (ChunkHandle, ChunkMeta)> + '_ {
        self.chunks.iter().map(|(&handle, &meta)| (handle, meta))
    }

    /// The entries directly inside the directory `path` (or `path` itself,
    /// if it is a file), in name order.
    pub fn list(&self, path: &FsPath) -> Result<Vec<Entry>, FsError> {
        match self.get(path)? {
            Inode::File { .. } => Ok(vec![Entry {
                path: path.clone(),
                inode: self.get(path)?.clone(),
            }]),
            Inode::Directory => Ok(self
                .below(path)
                .filter(|(child, _)| child.parent().as_ref() == Some(path))
                .map(|(child, inode)| Entry {
                    path: child.clone(),
                    inode: inode.clone(),
                })
                .collect()),
        }
    }

    /// Every entry strictly below the directory `path`, in path order.
    fn below<'a>(&'a self, path: &FsPath) -> impl Iterator<Item = (&'a FsPath, &'a Inode)> + 'a {
        let path = path.clone();
        let start = if path.is_root() {
            Bound::Unbounded
        } else {
            Bound::Excluded(path.clone())
        };
        self.entries
            .range((start, Bound::Unbounded))
            .take_while(move |(child, _)| child.is_within(&path))
            .filter(|(child, _)| child.as_str().len() > 1)
    }

    /// Creates the directory `path`; with `parents`, also every missing
    /// directory above it, and an existing directory is not an error.
    pub fn mkdir(&mut self, path: &FsPath, parents: bool) -> Result<(), FsError> {
        if path.is_root() {
            return if parents {
                Ok(())
            } else {
                Err(FsError::AlreadyExists(path.clone()))
            };
        }
        let mut missing = Vec::new();
        for dir in path.ancestors() {
            match self.get(&dir) {
                Ok(Inode::Directory) => {}
                Ok(Inode::File { .. }) => return Err(FsError::NotADirectory(dir)),
                Err(_) if parents => missing.push(dir),
                Err(_) => return Err(FsError::ParentMissing(dir)),
            }
        }
        match self.get(path) {
            Ok(Inode::Directory) if parents => return Ok(()),
            Ok(_) => return Err(FsError::AlreadyExists(path.clone())),
            Err(_) => missing.push(path.clone()),
        }
        if self.entries.len() + missing.len() > MAX_ENTRIES {
            return Err(FsError::NamespaceFull);
        }
        for dir in missing {
            self.entries.insert(dir, Inode::Directory);
        }
        Ok(())
    }

    /// Creates the empty file `path`, whose directory must exist.
    pub fn create(&mut self, path: &FsPath) -> Result<(), FsError> {
        if path.is_root() {
            return Err(FsError::IsADirectory(path.clone()));
        }
        self.check_parent(path)?;
        if self.entries.contains_key(path) {
            return Err(FsError::AlreadyExists(path.clone()));
        }
        if self.entries.len() >= MAX_ENTRIES {
            return Err(FsError::NamespaceFull);
        }
        self.entries.insert(
            path.clone(),
            Inode::File {
                chunks: Vec::new(),
                goal: 0,
            },
        );
        Ok(())
    }

    fn check_parent(&self, path: &FsPath) -> Result<(), FsError> {
        let parent = path.parent().expect("not the root");
        match self.get(&parent) {
            Ok(Inode::Directory) => Ok(()),
            Ok(Inode::File { .. }) => Err(FsError::NotADirectory(parent)),
            Err(_) => Err(FsError::ParentMissing(parent)),
        }
    }

    /// Removes a file, or a directory (an empty one, or with `recursive`
    /// everything below it) at once, without keeping it in the trash.
    /// Returns the chunks no file references any more (their replicas are
    /// now garbage).
    pub fn delete(&mut self, path: &FsPath, recursive: bool) -> Result<Vec<ChunkHandle>, FsError> {
        let doomed = self.subtree(path, recursive)?;
        let mut listed = Vec::new();
        for doomed in doomed {
            if let Some(Inode::File { chunks, .. }) = self.entries.remove(&doomed) {
                listed.extend(chunks);
            }
        }
        Ok(self.unreference(listed))
    }

    /// `path` and, for a directory, every entry below it (the deepest
    /// last): what deleting it removes. Refuses the root, and a non-empty
    /// directory unless `recursive`.
    fn subtree(&self, path: &FsPath, recursive: bool) -> Result<Vec<FsPath>, FsError> {
        if path.is_root() {
            return Err(FsError::Root);
        }
        Ok(match self.get(path)? {
            Inode::File { .. } => vec![path.clone()],
            Inode::Directory => {
                let below: Vec<FsPath> = self.below(path).map(|(p, _)| p.clone()).collect();
                if !below.is_empty() && !recursive {
                    return Err(FsError::DirectoryNotEmpty(path.clone()));
                }
                [path.clone()].into_iter().chain(below).collect()
            }
        })
    }

    /// Moves `from` (a file or a whole directory) to `to` atomically. `to`
    /// must not exist unless `replace` is set and both are files; the
    /// replaced file's chunks are returned as garbage.
    pub fn rename(
        &mut self,
        from: &FsPath,
        to: &FsPath,
        replace: bool,
    ) -> Result<Vec<ChunkHandle>, FsError> {
        if from.is_root() || to.is_root() {
            return Err(FsError::Root);
        }
        let moving = self.get(from)?.clone();
        if from == to {
            return Ok(Vec::new());
        }
        if to.is_within(from) {
            return Err(FsError::MoveIntoItself {
                from: from.clone(),
                to: to.clone(),
            });
        }
        self.check_parent(to)?;
        let mut replaced = Vec::new();
        match (self.entries.get(to), &moving) {
            (None, _) => {}
            (Some(Inode::File { chunks, .. }), Inode::File { .. }) if replace => {
                replaced = chunks.clone();
            }
            (Some(Inode::Directory), _) if replace => {
                return Err(FsError::IsADirectory(to.clone()));
            }
            (Some(_), _) => return Err(FsError::AlreadyExists(to.clone())),
        }
        let freed = self.unreference(replaced);
        let below: Vec<(FsPath, Inode)> = self
            .below(from)
            .map(|(p, i)| (p.clone(), i.clone()))
            .collect();
        self.entries.remove(from);
        self.entries.insert(to.clone(), moving);
        for (old, inode) in below {
            self.entries.remove(&old);
            let rest = &old.as_str()[from.as_str().len()..];
            let new = FsPath::parse(&format!("{to}{rest}")).expect("a moved path stays valid");
            self.entries.insert(new, inode);
        }
        Ok(freed)
    }

    /// Gives the file `path` a new last chunk, if it has exactly `index`
    /// chunks (so that two writers racing to extend a file add one chunk,
    /// not two); if the chunk at `index` already exists, returns it, so a
    /// retried request gets the same answer.
    pub fn add_chunk(&mut self, path: &FsPath, index: usize) -> Result<ChunkHandle, FsError> {
        let Inode::File { chunks, goal } = self.get(path)? else {
            return Err(FsError::IsADirectory(path.clone()));
        };
        let goal = *goal;
        if let Some(&existing) = chunks.get(index) {
            return Ok(existing);
        }
        if chunks.len() != index {
            return Err(FsError::ChunkCountChanged {
                path: path.clone(),
                chunks: chunks.len(),
                expected: index,
            });
        }
        if index >= MAX_CHUNKS_PER_FILE {
            return Err(FsError::FileTooLarge(path.clone()));
        }
        let handle = self.next_handle;
        self.next_handle += 1;
        self.chunks.insert(
            handle,
            ChunkMeta {
                version: 0,
                goal,
                refs: 1,
                copy_of: None,
            },
        );
        match self.entries.get_mut(path) {
            Some(Inode::File { chunks, .. }) => chunks.push(handle),
            _ => unreachable!("checked above"),
        }
        Ok(handle)
    }

    /// Sets the replication goal of the file `path` and its chunks (a
    /// directory is refused: give each file).
    pub fn set_replication(&mut self, path: &FsPath, goal: u32) -> Result<(), FsError> {
        if goal == 0 || goal > MAX_REPLICATION {
            return Err(FsError::BadReplication(goal));
        }
        let Some(Inode::File { chunks, goal: old }) = self.entries.get_mut(path) else {
            self.get(path)?;
            return Err(FsError::IsADirectory(path.clone()));
        };
        *old = goal;
        for handle in chunks.iter() {
            if let Some(meta) = self.chunks.get_mut(handle) {
                meta.goal = goal;
            }
        }
        Ok(())
    }

    /// Raises a chunk's version from `expected` to `expected + 1` (the
    /// master does this when it grants a new lease, §4.5). Refused if the
    /// version is no longer `expected`: another grant won.
    pub fn bump_version(&mut self, handle: ChunkHandle, expected: u64) -> Result<u64, FsError> {
        let meta = self
            .chunks
            .get_mut(&handle)
            .ok_or(FsError::NoSuchChunk(handle))?;
        if meta.version != expected {
            return Err(FsError::VersionChanged {
                handle,
                current: meta.version,
                expected,
            });
        }
        meta.version += 1;
        Ok(meta.version)
    }

    /// Adopts a higher version a chunkserver reported (GFS §4.5: the master
    /// failed after telling the replicas of a grant, before recording it).
    /// Lower or equal versions change nothing.
    pub fn adopt_version(&mut self, handle: ChunkHandle, version: u64) -> Result<(), FsError> {
        let meta = self
            .chunks
            .get_mut(&handle)
            .ok_or(FsError::NoSuchChunk(handle))?;
        meta.version = meta.version.max(version);
        Ok(())
    }

    /// Every entry, for encoding a snapshot.
    pub(crate) fn parts(
        &self,
    ) -> (
        &BTreeMap<FsPath, Inode>,
        &BTreeMap<ChunkHandle, ChunkMeta>,
        ChunkHandle,
    ) {
        (&self.entries, &self.chunks, self.next_handle)
    }

    /// The trash and the next deletion's id, for encoding a snapshot.
    pub(crate) fn trash_parts(&self) -> (&BTreeMap<TrashId, Trashed>, TrashId) {
        (&self.trash, self.next_trash_id)
    }

    /// Rebuilds a namespace from decoded parts, checking that they agree
    /// (every directory above an entry exists, every chunk is referenced
    /// by a file, a deletion or a pending copy, and counted so, the
    /// counters are above every handle and deletion id).
    pub(crate) fn from_parts(
        entries: BTreeMap<FsPath, Inode>,
        mut chunks: BTreeMap<ChunkHandle, ChunkMeta>,
        next_handle: ChunkHandle,
        (trash, next_trash_id): (BTreeMap<TrashId, Trashed>, TrashId),
    ) -> Result<Self, String> {
        for meta in chunks.values_mut() {
            meta.refs = 0;
        }
        let mut claim = |owner: &FsPath, inode: &Inode| -> Result<(), String> {
            if let Inode::File { chunks: list, goal } = inode {
                if *goal > MAX_REPLICATION {
                    return Err(format!("{owner} has a replication goal of {goal}"));
                }
                let mut seen = std::collections::BTreeSet::new();
                for handle in list {
                    let Some(meta) = chunks.get_mut(handle).filter(|_| *handle < next_handle)
                    else {
                        return Err(format!("{owner} names unknown chunk {handle}"));
                    };
                    if !seen.insert(*handle) {
                        return Err(format!("{owner} lists chunk {handle} twice"));
                    }
                    meta.refs += 1;
                }
            }
            Ok(())
        };
        for (path, inode) in &entries {
            let parent = path.parent().ok_or("the root is stored as an entry")?;
            if !parent.is_root() && entries.get(&parent) != Some(&Inode::Directory) {
                return Err(format!("{path} has no directory above it"));
            }
            claim(path, inode)?;
        }
        for (&id, trashed) in &trash {
            if id >= next_trash_id {
                return Err(format!("deletion {id} is beyond the counter"));
            }
            trashed.check()?;
            for (path, inode) in &trashed.entries {
                claim(path, inode)?;
            }
        }
        let links: Vec<(ChunkHandle, ChunkHandle)> = chunks
            .iter()
            .filter_map(|(&handle, meta)| Some((handle, meta.copy_of?)))
            .collect();
        for (handle, old) in links {
            match chunks.get_mut(&old) {
                Some(meta) if old < handle => meta.refs += 1,
                _ => return Err(format!("chunk {handle} is a copy of unknown chunk {old}")),
            }
        }
        if let Some((handle, _)) = chunks.iter().find(|(_, meta)| meta.refs == 0) {
            return Err(format!("chunk {handle} is known but nothing references it"));
        }
        Ok(Self {
            entries,
            chunks,
            next_handle,
            trash,
            next_trash_id,
        })
    }
}

#[cfg(test)]
mod tests;
