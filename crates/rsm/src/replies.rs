//! Inbound reply bookkeeping: the responses owed to peers' calls.
//!
//! A peer sends its requests for this node in one gRPC call (`Raft.Step`)
//! and takes the responses as that call's reply, in order. The core
//! answers every request, but among all its other messages, so the driver
//! keeps, per peer, one slot per request stepped, naming the call it came
//! in. Each response the core addresses to that peer fills the oldest
//! slot; a call whose slots are all filled gets its reply. At most
//! [`MAX_UNANSWERED_BATCHES`] calls wait; past that the oldest is failed
//! and logged as the bug it would be.

use std::collections::{BTreeMap, VecDeque};

use cairn_raft::{Message, NodeId};
use tokio::sync::oneshot;

/// The most inbound message batches waiting for their responses. The core
/// answers every request in the turn it arrives, so batches do not wait;
/// past this bound the oldest is failed (its caller sees an error) and the
/// event is logged as the bug it is.
pub(crate) const MAX_UNANSWERED_BATCHES: usize = 1024;

/// The responses owed for one inbound batch.
struct BatchReply {
    remaining: usize,
    responses: Vec<Message>,
    reply: oneshot::Sender<Vec<Message>>,
}

/// The calls waiting for responses, and which call each request came in.
pub(crate) struct InboundReplies {
    /// Per peer, one slot per request stepped, in order: its batch.
    slots: BTreeMap<NodeId, VecDeque<u64>>,
    batches: BTreeMap<u64, BatchReply>,
    next_batch: u64,
}

impl InboundReplies {
    pub(crate) fn new() -> Self {
        Self {
            slots: BTreeMap::new(),
            batches: BTreeMap::new(),
            next_batch: 0,
        }
    }

    /// Records the requests of an inbound batch before the core steps
    /// them; `reply` (when the caller waits for one) is sent once every
    /// request has its response.
    pub(crate) fn expect(
        &mut self,
        messages: &[Message],
        reply: Option<oneshot::Sender<Vec<Message>>>,
    ) {
        let batch = self.next_batch;
        self.next_batch += 1;
        let mut requests = 0;
        for message in messages.iter().filter(|m| m.is_request()) {
            self.slots.entry(message.from).or_default().push_back(batch);
            requests += 1;
        }
        let Some(reply) = reply else { return };
        if requests == 0 {
            let _ = reply.send(Vec::new());
            return;
        }
        self.batches.insert(
            batch,
            BatchReply {
                remaining: requests,
                responses: Vec::new(),
                reply,
            },
        );
        if self.batches.len() > MAX_UNANSWERED_BATCHES
            && let Some((oldest, _)) = self.batches.pop_first()
        {
            // The core answers every request at once, so this means a bug:
            // fail the oldest call rather than hold memory for ever.
            tracing::error!(
                batch = oldest,
                "a message batch was never fully answered; its call fails"
            );
        }
    }

    /// Puts a response from the core into the oldest slot of its peer, and
    /// replies to the call it completes.
    pub(crate) fn route(&mut self, message: Message) {
        let Some(batch) = self
            .slots
            .get_mut(&message.to)
            .and_then(VecDeque::pop_front)
        else {
            tracing::debug!(
                to = message.to,
                "a response with no request waiting for it; dropped"
            );
            return;
        };
        let Some(pending) = self.batches.get_mut(&batch) else {
            return;
        };
        pending.responses.push(message);
        pending.remaining -= 1;
        if pending.remaining == 0
            && let Some(done) = self.batches.remove(&batch)
        {
            let _ = done.reply.send(done.responses);
        }
    }
}
