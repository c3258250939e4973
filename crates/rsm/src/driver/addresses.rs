//! How the node task keeps its peers' addresses: a member added in the
//! log is reached at the URL its configuration entry carries (from the
//! moment the entry is appended), a removed one is dropped once its
//! removal commits, a snapshot sent to a peer names every member's URL,
//! and the URLs it talks to are published for status and not-leader
//! hints.

use std::collections::BTreeMap;

use bytes::Bytes;
use cairn_raft::{ConfChange, ConfigEntry, Entry, EntryKind, Message, MessageBody, NodeId};
use tokio::sync::watch;

use super::Driver;
use crate::state_machine::StateMachine;

impl<S: StateMachine> Driver<S> {
    /// Publishes the URLs of the nodes this one talks to in `urls`, now
    /// and whenever members come or go.
    pub(crate) fn publishing_urls(mut self, urls: watch::Sender<BTreeMap<NodeId, String>>) -> Self {
        self.urls = urls;
        self.publish_urls();
        self
    }

    pub(super) fn publish_urls(&self) {
        let urls = self.outbox.urls();
        self.urls.send_if_modified(|current| {
            let changed = *current != urls;
            *current = urls;
            changed
        });
    }

    /// A snapshot sent to a peer carries the URL of every member of its
    /// configuration that this node knows, so that the receiver reaches
    /// members added after bootstrap whose entries the snapshot covers.
    pub(super) fn with_member_urls(&self, mut message: Message) -> Message {
        if let MessageBody::InstallSnapshot(request) = &mut message.body {
            request.meta.urls = self.outbox.member_urls(&request.meta.config);
        }
        message
    }

    /// Learns the address of every member added in `entries` (the URL
    /// its configuration entry carries).
    pub(super) fn learn_addresses(&mut self, entries: &[Entry]) {
        for (change, context) in conf_changes(entries) {
            if let ConfChange::AddLearner(id) = change {
                match std::str::from_utf8(&context) {
                    Ok(url) => self.outbox.add_peer(id, url),
                    Err(_) => tracing::error!(
                        id,
                        "a new member's address is not UTF-8; it cannot be reached"
                    ),
                }
                self.publish_urls();
            }
        }
    }

    /// Stops talking to every member whose removal is in `committed`.
    pub(super) fn forget_removed(&mut self, committed: &[Entry]) {
        for (change, _) in conf_changes(committed) {
            if let ConfChange::Remove(id) = change {
                self.outbox.remove_peer(id);
                self.publish_urls();
            }
        }
    }
}

/// The configuration changes in `entries`, with the bytes each carries
/// (the URL of a member it adds).
pub(crate) fn conf_changes(entries: &[Entry]) -> impl Iterator<Item = (ConfChange, Bytes)> + '_ {
    entries
        .iter()
        .filter(|entry| entry.kind == EntryKind::Config)
        .filter_map(|entry| ConfigEntry::decode(entry.data.clone()))
        .map(|entry| (entry.change, entry.context))
}
