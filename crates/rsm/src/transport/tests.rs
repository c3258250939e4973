//! Tests of the transport: checking incoming batches, and timing round trips
//! without reply slots.

use cairn_raft::{Heartbeat, HeartbeatResponse, MessageBody};

use super::round_trip::RoundTrips;
use super::*;

/// A state machine that is never used: the tests stop at the service.
struct Counter;

impl StateMachine for Counter {
    fn apply(&mut self, _index: cairn_raft::LogIndex, _command: &[u8]) -> bytes::Bytes {
        bytes::Bytes::new()
    }
    fn snapshot(&self) -> bytes::Bytes {
        bytes::Bytes::new()
    }
    fn restore(&mut self, _snapshot: &[u8]) -> Result<(), crate::RestoreError> {
        Ok(())
    }
}

fn message(from: NodeId, to: NodeId, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term: 1,
        body,
    }
}

fn heartbeat(from: NodeId, to: NodeId) -> Message {
    let body = MessageBody::Heartbeat(Heartbeat {
        commit: 0,
        read_round: 0,
    });
    message(from, to, body)
}

fn heartbeat_response(from: NodeId, to: NodeId) -> Message {
    let body = MessageBody::HeartbeatResponse(HeartbeatResponse {
        read_round: 0,
        lacking: None,
    });
    message(from, to, body)
}

/// Offers `batches`, as one peer's stream, to node 2's service; returns
/// the refusal, if any, and how many batches reached the node.
fn stream_to_node_2(batches: &[&[Message]]) -> (Option<Status>, usize) {
    let (node, _inbox) = mpsc::channel::<Command<Counter>>(4);
    let service = RaftService::new(2, "test".into(), node, Duration::from_secs(10));
    let mut sender = None;
    for (taken, messages) in batches.iter().enumerate() {
        let batch = MessageBatch {
            cluster: "test".into(),
            messages: messages.iter().map(codec::encode).collect(),
        };
        if let Err(status) = service.admit(batch, &mut sender) {
            return (Some(status), taken);
        }
    }
    (None, batches.len())
}

/// Bug 5 of the reliability review: a message claiming to come from the
/// receiver itself means two nodes share an id; it is refused, and the
/// refusal names the node.
#[test]
fn a_batch_from_the_receiver_itself_is_refused() {
    let (error, taken) = stream_to_node_2(&[&[heartbeat(2, 2)]]);
    let error = error.expect("refused");
    assert_eq!(taken, 0);
    assert_eq!(error.metadata().get(NODE_ID_KEY).unwrap(), "2");
}

#[test]
fn a_stream_mixing_senders_is_refused_and_responses_are_welcome() {
    let (error, taken) = stream_to_node_2(&[&[heartbeat(1, 2), heartbeat(3, 2)]]);
    assert!(error.is_some() && taken == 0, "mixed in a batch: {error:?}");
    let (error, taken) = stream_to_node_2(&[&[heartbeat(1, 2)], &[heartbeat(3, 2)]]);
    assert!(
        error.is_some() && taken == 1,
        "mixed in a stream: {error:?}"
    );
    let (error, taken) = stream_to_node_2(&[&[heartbeat(1, 2), heartbeat_response(1, 2)]]);
    assert!(
        error.is_none() && taken == 1,
        "requests and responses: {error:?}"
    );
    let (error, taken) = stream_to_node_2(&[&[heartbeat(1, 3)]]);
    assert!(error.is_some() && taken == 0, "for another node: {error:?}");
}

#[test]
fn a_batch_of_another_cluster_is_refused() {
    let (node, _inbox) = mpsc::channel::<Command<Counter>>(4);
    let service = RaftService::new(2, "test".into(), node, Duration::from_secs(10));
    let batch = MessageBatch {
        cluster: "other".into(),
        messages: vec![codec::encode(&heartbeat(1, 2))],
    };
    assert!(service.admit(batch, &mut None).is_err());
}

fn append(from: NodeId, to: NodeId, prev_index: u64, entries: u64) -> Message {
    let entries = (1..=entries)
        .map(|i| cairn_raft::Entry {
            term: 1,
            index: prev_index + i,
            kind: cairn_raft::EntryKind::Normal,
            data: bytes::Bytes::new(),
        })
        .collect();
    let body = MessageBody::AppendEntries(cairn_raft::AppendEntries {
        prev_index,
        prev_term: 1,
        entries,
        commit: 0,
    });
    message(from, to, body)
}

fn append_response(from: NodeId, to: NodeId, match_index: u64) -> Message {
    let body = MessageBody::AppendEntriesResponse(cairn_raft::AppendEntriesResponse {
        match_index,
        reject: None,
    });
    message(from, to, body)
}

/// Without reply slots, a response stops the timers of what it answers:
/// an append by its match index, a heartbeat by its read round; each
/// response is one sample.
#[test]
fn round_trips_are_timed_from_message_to_the_response_that_answers_it() {
    let histogram = prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("rt", "rt"))
        .expect("valid");
    let mut timer = RoundTrips::new(histogram.clone());
    timer.sent(&[append(1, 2, 0, 2), append(1, 2, 2, 3), heartbeat(1, 2)]);
    timer.answered(&append_response(2, 1, 1));
    assert_eq!(histogram.get_sample_count(), 0, "index 1 answers no append");
    timer.answered(&append_response(2, 1, 5));
    assert_eq!(histogram.get_sample_count(), 1, "both appends, one sample");
    timer.answered(&append_response(2, 1, 5));
    assert_eq!(histogram.get_sample_count(), 1, "nothing left to answer");
    timer.answered(&heartbeat_response(2, 1));
    assert_eq!(histogram.get_sample_count(), 2);
}
