//! The clerk's handling of an expired session, against a scripted server on
//! loopback: a fresh write refused as "session expired" on its only attempt
//! is sent once more under a new session; one whose earlier attempt may
//! have been applied is reported as an unknown outcome, and the next write
//! opens a new session.

#![cfg(not(madsim))]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_kv::{Client, ClientConfig, KvError};
use cairn_rpc::kv::kv_server::{Kv, KvServer};
use cairn_rpc::kv::{
    GetReply, GetRequest, RegisterReply, RegisterRequest, StatusRequest, WriteReply, WriteRequest,
};
use cairn_rpc::node::StatusReply;
use cairn_rpc::tonic::{self, Request, Response, Status};

/// What the scripted server answers to the next write.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Applied,
    Expired,
    /// The call fails as if the reply was lost.
    Lost,
}

#[derive(Default)]
struct Script {
    answers: VecDeque<Answer>,
    registrations: u64,
    /// (client id, sequence number) of every write received.
    writes: Vec<(u64, u64)>,
}

#[derive(Clone, Default)]
struct Scripted(Arc<Mutex<Script>>);

#[tonic::async_trait]
impl Kv for Scripted {
    async fn get(&self, _: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn write(&self, request: Request<WriteRequest>) -> Result<Response<WriteReply>, Status> {
        let request = request.into_inner();
        let mut script = self.0.lock().unwrap();
        script.writes.push((request.client_id, request.seq));
        let reply = match script.answers.pop_front().unwrap_or(Answer::Applied) {
            Answer::Applied => WriteReply {
                ok: true,
                ..WriteReply::default()
            },
            Answer::Expired => WriteReply {
                session_expired: true,
                ..WriteReply::default()
            },
            Answer::Lost => return Err(Status::unavailable("the reply was lost")),
        };
        Ok(Response::new(reply))
    }

    async fn register(
        &self,
        _: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let mut script = self.0.lock().unwrap();
        script.registrations += 1;
        Ok(Response::new(RegisterReply {
            client_id: 100 * script.registrations,
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
}

async fn start(answers: &[Answer]) -> (Scripted, Client) {
    let server = Scripted::default();
    server.0.lock().unwrap().answers = answers.iter().copied().collect();
    let router = tonic::transport::Server::builder().add_service(KvServer::new(server.clone()));
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (addr, _task) = cairn_rpc::serve(router, listen).await.unwrap();
    let config = ClientConfig {
        call_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(10),
    };
    let client = Client::new(&[format!("http://{addr}")], config).unwrap();
    (server, client)
}

#[tokio::test]
async fn a_write_refused_on_its_only_attempt_is_sent_again_under_a_new_session() {
    let (server, mut client) = start(&[Answer::Expired]).await;
    let outcome = client.put(b"k", b"v").await.unwrap();
    assert!(outcome.ok);
    let script = server.0.lock().unwrap();
    assert_eq!(script.writes, vec![(100, 1), (200, 1)]);
    assert_eq!(script.registrations, 2);
    assert_eq!(client.id(), Some(200));
}

#[tokio::test]
async fn a_write_whose_earlier_attempt_may_have_applied_reports_an_unknown_outcome() {
    let (server, mut client) = start(&[Answer::Applied, Answer::Lost, Answer::Expired]).await;
    client.put(b"k", b"1").await.unwrap();
    let error = client.put(b"k", b"2").await.unwrap_err();
    assert_eq!(error, KvError::SessionExpired);
    assert!(error.to_string().contains("outcome was unknown"), "{error}");
    // Not sent again under a new session; the next write opens one.
    assert_eq!(
        server.0.lock().unwrap().writes,
        vec![(100, 1), (100, 2), (100, 2)]
    );
    client.put(b"k", b"3").await.unwrap();
    let script = server.0.lock().unwrap();
    assert_eq!(script.writes.last(), Some(&(200, 1)));
    assert_eq!(script.registrations, 2);
}
