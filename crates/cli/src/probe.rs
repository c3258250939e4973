//! What serves an endpoint. Every Cairn process answers gRPC, and a server
//! answers a call to a service it does not serve with `UNIMPLEMENTED`; so
//! a command pointed at the wrong kind of server can find out what it
//! reached and say so ("http://127.0.0.1:7711 is a shard group server
//! (group 1)") instead of waiting out its deadline.

use std::future::Future;
use std::time::Duration;

use cairn_rpc::kv::StatusRequest;
use cairn_rpc::kv::kv_client::KvClient;
use cairn_rpc::mapreduce::coordinator_client::CoordinatorClient;
use cairn_rpc::mapreduce::shuffle_client::ShuffleClient;
use cairn_rpc::shardctrler::shard_ctrler_client::ShardCtrlerClient;
use cairn_rpc::shardkv::shard_kv_client::ShardKvClient;
use cairn_rpc::tonic::Code;
use cairn_rpc::{ClientOptions, RpcClient, RpcError};

/// The kinds of server an endpoint may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Service {
    /// A node of a key/value cluster (`cairn kv serve`).
    KvNode,
    /// A shard controller (`cairn shardctl serve`).
    Controller,
    /// A server of a sharded cluster's replica group (`cairn shardkv serve`).
    ShardGroup {
        /// Its group.
        gid: u64,
    },
    /// A MapReduce coordinator.
    Coordinator,
    /// A MapReduce worker (it serves the shuffle).
    Worker,
    /// A gRPC server of none of the kinds above.
    OtherGrpc,
    /// A server that does not speak gRPC (its answer broke the HTTP/2
    /// protocol: a web server, say).
    NotGrpc,
    /// No answer to tell: the reason.
    NoAnswer(String),
}

impl Service {
    /// "a shard group server (group 1)", to follow "ENDPOINT is".
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::KvNode => "a key/value node".into(),
            Self::Controller => "a shard controller".into(),
            Self::ShardGroup { gid } => format!("a shard group server (group {gid})"),
            Self::Coordinator => "a MapReduce coordinator".into(),
            Self::Worker => "a MapReduce worker".into(),
            Self::OtherGrpc => "a gRPC server of no Cairn service".into(),
            Self::NotGrpc => "a server that does not speak gRPC (not a Cairn server)".into(),
            Self::NoAnswer(reason) => format!("not answering ({reason})"),
        }
    }
}

/// Finds out what serves `endpoint`, asking each service in turn for its
/// status (or, for a worker, a shuffle fetch): the first that is not
/// `UNIMPLEMENTED` is the one served.
pub(crate) async fn identify(endpoint: &str) -> Service {
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(1),
        call_timeout: Duration::from_secs(2),
    };
    let server = match RpcClient::new(endpoint, options) {
        Ok(server) => server,
        Err(error) => return Service::NoAnswer(error.to_string()),
    };
    match served(server.call(StatusRequest {}, |c, r| async move {
        KvClient::new(c).status(r).await
    }))
    .await
    {
        Ok(true) => return Service::KvNode,
        Ok(false) => {}
        Err(Some(reason)) => return Service::NoAnswer(reason),
        Err(None) => return Service::NotGrpc,
    }
    let controller = server.call(StatusRequest {}, |c, r| async move {
        ShardCtrlerClient::new(c).status(r).await
    });
    if served(controller).await == Ok(true) {
        return Service::Controller;
    }
    let group = server
        .call(StatusRequest {}, |c, r| async move {
            ShardKvClient::new(c).status(r).await
        })
        .await;
    if let Ok(status) = group {
        return Service::ShardGroup { gid: status.gid };
    }
    let coordinator = server.call(Default::default(), |c, r| async move {
        CoordinatorClient::new(c).status(r).await
    });
    if served(coordinator).await == Ok(true) {
        return Service::Coordinator;
    }
    let worker = server.call(Default::default(), |c, r| async move {
        ShuffleClient::new(c).fetch(r).await
    });
    if served(worker).await == Ok(true) {
        return Service::Worker;
    }
    Service::OtherGrpc
}

/// Whether a call's service exists on the server: any answer but
/// `UNIMPLEMENTED` says it does. `Err` when the server did not answer
/// (with the reason), or not in gRPC (`None`).
async fn served<T>(
    call: impl Future<Output = Result<T, RpcError>>,
) -> Result<bool, Option<String>> {
    match call.await {
        Ok(_) => Ok(true),
        Err(error) if unimplemented(&error) => Ok(false),
        Err(error) if not_grpc(&error) => Err(None),
        Err(RpcError::Rejected { .. }) => Ok(true),
        Err(error) => Err(Some(error.to_string())),
    }
}

/// Whether a call failed because the server's answer was not HTTP/2 (what
/// tonic reports when a web server or another protocol answers): no Cairn
/// server answers a call that way.
pub(crate) fn not_grpc(error: &RpcError) -> bool {
    error.status().is_some_and(|status| {
        status.code() == Code::Internal && status.message().starts_with("h2 protocol error")
    })
}

fn unimplemented(error: &RpcError) -> bool {
    error
        .status()
        .is_some_and(|status| status.code() == Code::Unimplemented)
}
