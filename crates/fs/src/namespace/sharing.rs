//! Snapshots and copy-on-write (GFS §3.4): chunks shared by reference
//! count.
//!
//! A snapshot copies a file or a tree in the namespace alone: the copy
//! lists the same chunk handles, and each chunk's `refs` goes up by one.
//! No byte moves. A chunk listed more than once must not be mutated in
//! place (the other file would change too), so the first write to it is
//! preceded by [`Namespace::copy_on_write`]: the writing file gets a new
//! handle that remembers the chunk it copies (`copy_of`), and the master
//! has every chunkserver holding the old chunk copy it locally to the new
//! handle, at the same version, before it grants a lease on the new one.
//! [`Namespace::copy_done`] then drops the link. Until then the link
//! counts as a reference, so the old chunk cannot be reclaimed while a
//! copy still needs it, and a reader of the new handle is served the old
//! one (their bytes are the same).
//!
//! A chunk is garbage once nothing references it
//! ([`Namespace::unreference`] returns those): its replicas are then
//! orphans, deleted by the healer.

use super::{ChunkHandle, ChunkMeta, FsError, Inode, MAX_ENTRIES, Namespace};
use crate::path::FsPath;

impl Namespace {
    /// Copies `src` (a file, or a directory and all below it) to `dst`,
    /// sharing every chunk. `dst` must not exist, its parent must be a
    /// directory, and a directory cannot be copied into itself. Returns
    /// the chunks now shared (each listed once).
    pub fn snapshot(&mut self, src: &FsPath, dst: &FsPath) -> Result<Vec<ChunkHandle>, FsError> {
        if src.is_root() || dst.is_root() {
            return Err(FsError::Root);
        }
        let copied = self.subtree(src, true)?;
        if dst.is_within(src) {
            return Err(FsError::MoveIntoItself {
                from: src.clone(),
                to: dst.clone(),
            });
        }
        self.check_parent(dst)?;
        if self.entries.contains_key(dst) {
            return Err(FsError::AlreadyExists(dst.clone()));
        }
        if self.entries.len() + copied.len() > MAX_ENTRIES {
            return Err(FsError::NamespaceFull);
        }
        let mut shared = Vec::new();
        for old in copied {
            let inode = self.entries[&old].clone();
            if let Inode::File { chunks, .. } = &inode {
                for handle in chunks {
                    self.chunks
                        .get_mut(handle)
                        .expect("a listed chunk is known")
                        .refs += 1;
                    shared.push(*handle);
                }
            }
            let rest = &old.as_str()[src.as_str().len()..];
            let new = FsPath::parse(&format!("{dst}{rest}")).expect("a copied path stays valid");
            self.entries.insert(new, inode);
        }
        shared.sort_unstable();
        shared.dedup();
        Ok(shared)
    }

    /// The chunks of `path` (a file, or every file below a directory),
    /// each once.
    pub fn chunks_under(&self, path: &FsPath) -> Result<Vec<ChunkHandle>, FsError> {
        let mut handles = Vec::new();
        for entry in self.subtree(path, true)? {
            if let Some(Inode::File { chunks, .. }) = self.entries.get(&entry) {
                handles.extend(chunks);
            }
        }
        handles.sort_unstable();
        handles.dedup();
        Ok(handles)
    }

    /// Whether `handle` is listed by more than one file (or still copied
    /// from): a write to it must copy it first.
    pub fn is_shared(&self, handle: ChunkHandle) -> bool {
        self.chunks.get(&handle).is_some_and(|meta| meta.refs > 1)
    }

    /// Gives the file `path` its own copy of its chunk at `index` if that
    /// chunk is shared: a new handle, at the same version and goal, that
    /// is `copy_of` the old one. Returns the handle the file now lists
    /// there (the same one if it was not shared, so a retried request
    /// changes nothing).
    pub fn copy_on_write(&mut self, path: &FsPath, index: usize) -> Result<ChunkHandle, FsError> {
        let Inode::File { chunks, .. } = self.get(path)? else {
            return Err(FsError::IsADirectory(path.clone()));
        };
        let old = *chunks.get(index).ok_or(FsError::ChunkCountChanged {
            path: path.clone(),
            chunks: chunks.len(),
            expected: index + 1,
        })?;
        if !self.is_shared(old) {
            return Ok(old);
        }
        let meta = self.chunks[&old];
        let new = self.next_handle;
        self.next_handle += 1;
        // The file's reference moves from `old` to `new`; `new`'s link
        // holds one on `old` instead, so `old.refs` stays as it is.
        self.chunks.insert(
            new,
            ChunkMeta {
                version: meta.version,
                goal: meta.goal,
                refs: 1,
                copy_of: Some(old),
            },
        );
        match self.entries.get_mut(path) {
            Some(Inode::File { chunks, .. }) => chunks[index] = new,
            _ => unreachable!("checked above"),
        }
        Ok(new)
    }

    /// Ends the copy of `handle`: its replicas are made, it no longer
    /// needs the chunk it was copied from. Returns the chunks that leaves
    /// unreferenced. A copy already done, or a chunk gone, is no error.
    pub fn copy_done(&mut self, handle: ChunkHandle) -> Vec<ChunkHandle> {
        let Some(old) = self.chunks.get_mut(&handle).and_then(|m| m.copy_of.take()) else {
            return Vec::new();
        };
        self.unreference([old])
    }

    /// Drops one reference to each of `handles`; returns those no longer
    /// referenced at all (forgotten here: their replicas are garbage),
    /// and with them the chunks a pending copy still held.
    pub(crate) fn unreference(
        &mut self,
        handles: impl IntoIterator<Item = ChunkHandle>,
    ) -> Vec<ChunkHandle> {
        let mut freed = Vec::new();
        let mut dropping: Vec<ChunkHandle> = handles.into_iter().collect();
        while let Some(handle) = dropping.pop() {
            let Some(meta) = self.chunks.get_mut(&handle) else {
                continue;
            };
            meta.refs = meta.refs.saturating_sub(1);
            if meta.refs == 0 {
                let meta = self.chunks.remove(&handle).expect("found above");
                freed.push(handle);
                dropping.extend(meta.copy_of);
            }
        }
        freed
    }
}

#[cfg(test)]
mod tests;
