//! Tests of the transport: checking incoming batches and the responses in replies.

use cairn_raft::{Heartbeat, HeartbeatResponse, MessageBody};

use tonic::Request;

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

/// Sends `messages` to node 2's service; returns the error and whether
/// anything reached the node.
async fn step_node_2(messages: &[Message]) -> (Option<Status>, bool) {
    let (node, mut inbox) = mpsc::channel::<Command<Counter>>(4);
    let service = RaftService::new(2, "test".into(), node, Duration::from_secs(10));
    let batch = MessageBatch {
        cluster: "test".into(),
        messages: messages.iter().map(codec::encode).collect(),
    };
    let call = proto::raft_server::Raft::step(&service, Request::new(batch));
    let answered = tokio::spawn(async move {
        if let Some(Command::Inbound {
            reply: Some(reply), ..
        }) = inbox.recv().await
        {
            let _ = reply.send(Vec::new());
            return true;
        }
        false
    });
    let error = call.await.err();
    drop(service);
    (error, answered.await.unwrap())
}

/// Bug 5 of the reliability review: a request claiming to come from the
/// receiver itself got no response from the core, so the reply slots
/// paired later responses with the wrong calls.
#[tokio::test]
async fn a_batch_from_the_receiver_itself_is_refused() {
    let (error, reached) = step_node_2(&[heartbeat(2, 2)]).await;
    assert!(error.is_some() && !reached, "{error:?}");
}

#[tokio::test]
async fn a_batch_mixing_senders_or_carrying_responses_is_refused() {
    let (error, reached) = step_node_2(&[heartbeat(1, 2), heartbeat(3, 2)]).await;
    assert!(error.is_some() && !reached, "mixed senders: {error:?}");
    let (error, reached) = step_node_2(&[heartbeat_response(1, 2)]).await;
    assert!(error.is_some() && !reached, "a response: {error:?}");
    let (error, reached) = step_node_2(&[heartbeat(1, 2)]).await;
    assert!(error.is_none() && reached, "a good batch: {error:?}");
}

/// The other half of bug 5: only responses from the peer called, to
/// this node, are taken from a reply.
#[test]
fn only_the_peers_responses_are_taken_from_a_reply() {
    let reply = [
        heartbeat_response(3, 1),
        heartbeat(3, 1),
        heartbeat_response(2, 1),
        heartbeat_response(3, 2),
    ];
    let kept = responses_in_reply(1, 3, reply.iter().map(codec::encode).collect());
    assert_eq!(kept, vec![heartbeat_response(3, 1)]);
}
