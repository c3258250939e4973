//! The round-trip timer of one peer: [`RoundTrips`].
//!
//! With one stream per direction no reply pairs with a call, so the round
//! trip of appends and heartbeats (the `raft_peer_round_trip_seconds`
//! metric) is measured from a message to the response that answers it, by
//! what the response carries: an append is answered by the first
//! successful response whose match index reaches its last entry, a
//! heartbeat by the first heartbeat response of its read round or a later
//! one. Each answered message is timed once, at the newest of the messages
//! a response answers (older ones it also answers were in flight together
//! with it). At most [`MAX_TIMED_PER_PEER`] messages wait for an answer:
//! past that the oldest is forgotten (lost messages never answer).

use std::collections::VecDeque;

use cairn_raft::{LogIndex, Message, MessageBody};
use tokio::time::Instant;

use crate::metrics::observe;

/// The most messages to one peer timed at once.
pub(crate) const MAX_TIMED_PER_PEER: usize = 64;

/// What answers a timed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaited {
    /// A successful append response matching at least this index.
    Append(LogIndex),
    /// A heartbeat response of at least this read round.
    Heartbeat(u64),
}

impl Awaited {
    fn of_request(message: &Message) -> Option<Self> {
        match &message.body {
            MessageBody::AppendEntries(append) => Some(Awaited::Append(
                append.prev_index + append.entries.len() as u64,
            )),
            MessageBody::Heartbeat(heartbeat) => Some(Awaited::Heartbeat(heartbeat.read_round)),
            _ => None,
        }
    }

    /// Whether `response` answers this.
    fn answered_by(self, response: &MessageBody) -> bool {
        match (self, response) {
            (Awaited::Append(index), MessageBody::AppendEntriesResponse(r)) => {
                r.reject.is_none() && r.match_index >= index
            }
            (Awaited::Heartbeat(round), MessageBody::HeartbeatResponse(r)) => r.read_round >= round,
            _ => false,
        }
    }
}

/// The appends and heartbeats sent to one peer that wait for an answer.
pub(crate) struct RoundTrips {
    waiting: VecDeque<(Awaited, Instant)>,
    histogram: prometheus::Histogram,
}

impl RoundTrips {
    pub(crate) fn new(histogram: prometheus::Histogram) -> Self {
        Self {
            waiting: VecDeque::new(),
            histogram,
        }
    }

    /// Starts timing the appends and heartbeats among `messages`.
    pub(crate) fn sent(&mut self, messages: &[Message]) {
        let now = Instant::now();
        for awaited in messages.iter().filter_map(Awaited::of_request) {
            if self.waiting.len() == MAX_TIMED_PER_PEER {
                self.waiting.pop_front();
            }
            self.waiting.push_back((awaited, now));
        }
    }

    /// Stops the timers `response` answers, observing the newest.
    pub(crate) fn answered(&mut self, response: &Message) {
        let mut newest = None;
        self.waiting.retain(|&(awaited, since)| {
            let answered = awaited.answered_by(&response.body);
            if answered {
                newest = Some(since);
            }
            !answered
        });
        if let Some(since) = newest {
            observe(&self.histogram, since.elapsed());
        }
    }
}
