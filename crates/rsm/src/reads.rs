//! Read batching: linearizable reads by read index (thesis §6.4), many
//! reads to one heartbeat round.
//!
//! A read waits in three places in turn. It is *queued* until a round can
//! start; at most one read-index round is in flight, and every read queued
//! meanwhile shares the next one (as etcd's read loop does), so a burst of
//! reads costs one round, not one per batch. The round's reads are then
//! *in flight* under its token until the core confirms the round at an
//! index (a `ReadState`), and *confirmed* until the state machine has
//! applied that index, when they run. The driver owns one [`ReadQueue`]
//! and calls it from its loop; every read is answered exactly once, with
//! the state machine or an error.

use std::collections::{BTreeMap, VecDeque};

use cairn_raft::{LogIndex, Raft, ReadState};

use crate::error::SubmitError;
use crate::node::{MAX_PENDING_READS, ReadFn};

/// The reads of one node, from queued to served.
pub(crate) struct ReadQueue<S> {
    /// Waiting for a round to start.
    queued: Vec<ReadFn<S>>,
    /// In the round in flight, by its token (at most one entry).
    in_flight: BTreeMap<u64, Vec<ReadFn<S>>>,
    /// Confirmed at an index, waiting for it to be applied, in index order.
    confirmed: VecDeque<(LogIndex, Vec<ReadFn<S>>)>,
    /// The last round's token.
    last_token: u64,
    /// Counts the rounds started (a metric).
    rounds: prometheus::IntCounter,
}

impl<S> ReadQueue<S> {
    pub(crate) fn new(rounds: prometheus::IntCounter) -> Self {
        Self {
            queued: Vec::new(),
            in_flight: BTreeMap::new(),
            confirmed: VecDeque::new(),
            last_token: 0,
            rounds,
        }
    }

    /// Queues `reads` (failing those beyond [`MAX_PENDING_READS`] with
    /// `Overloaded`) and starts a round for everything queued, unless one
    /// is in flight.
    pub(crate) fn start(&mut self, raft: &mut Raft, mut reads: Vec<ReadFn<S>>) {
        let room = MAX_PENDING_READS.saturating_sub(self.waiting());
        if reads.len() > room {
            for read in reads.drain(room..) {
                read(Err(SubmitError::Overloaded));
            }
        }
        self.queued.extend(reads);
        if self.queued.is_empty() || !self.in_flight.is_empty() {
            return;
        }
        let reads = std::mem::take(&mut self.queued);
        self.last_token += 1;
        match raft.read_index(self.last_token) {
            Ok(()) => {
                self.rounds.inc();
                self.in_flight.insert(self.last_token, reads);
            }
            Err(error) => {
                for read in reads {
                    read(Err(crate::driver::not_leader(error)));
                }
            }
        }
    }

    /// Whether reads are queued behind a round that has been confirmed
    /// since: the driver starts their round at once.
    pub(crate) fn next_round_due(&self) -> bool {
        self.in_flight.is_empty() && !self.queued.is_empty()
    }

    /// `Ready` step 5, first half: the rounds the core confirmed.
    pub(crate) fn confirm(&mut self, read_states: &[ReadState]) {
        for read in read_states {
            if let Some(reads) = self.in_flight.remove(&read.ctx) {
                self.confirmed.push_back((read.index, reads));
            }
        }
    }

    /// `Ready` step 5, second half: runs the reads whose index is applied.
    pub(crate) fn serve(&mut self, applied: LogIndex, machine: &S) {
        while self
            .confirmed
            .front()
            .is_some_and(|(index, _)| *index <= applied)
        {
            let (_, reads) = self.confirmed.pop_front().expect("checked");
            for read in reads {
                read(Ok(machine));
            }
        }
    }

    /// Leadership is gone, or the node: fails every read, wherever it
    /// waits.
    pub(crate) fn fail_all(&mut self, error: &SubmitError) {
        let in_flight = std::mem::take(&mut self.in_flight).into_values();
        let confirmed = std::mem::take(&mut self.confirmed)
            .into_iter()
            .map(|(_, reads)| reads);
        let queued = std::mem::take(&mut self.queued);
        for read in in_flight.chain(confirmed).flatten().chain(queued) {
            read(Err(error.clone()));
        }
    }

    fn waiting(&self) -> usize {
        self.queued.len()
            + self.in_flight.values().map(Vec::len).sum::<usize>()
            + self.confirmed.iter().map(|(_, r)| r.len()).sum::<usize>()
    }
}
