//! Which cluster `--endpoints` names, learned from the first request's
//! answer rather than asked first: a command sends its request as to one
//! Raft group's key/value service, and only a server that answers
//! "unimplemented" (a shard controller has no Kv service) makes it find
//! out what the endpoints are and, for a sharded cluster's controllers,
//! send the request again through the sharded client. So a one-shot
//! command against a key/value cluster is one round trip for a read (a
//! write opens its session first: two), not a `Status` probe and then the
//! request; nothing is applied by a refused request, so sending it again
//! is safe.

use std::time::Duration;

use cairn_kv::{Client, KvError};
use cairn_rpc::ReplicaError;
use cairn_rpc::tonic::Code;

use super::{ClientArgs, client};
use crate::probe::{self, Service};

/// The cluster behind `--endpoints`: one Raft group serving the Kv
/// service, or the shard controllers of a sharded cluster (which do not).
pub(super) enum Store {
    Single(Client),
    Sharded(cairn_shardkv::Client),
}

/// A store that takes `--endpoints` for a key/value cluster until a
/// request's answer says otherwise (see [`Store::run`]).
pub(super) fn connect(args: &ClientArgs) -> anyhow::Result<Store> {
    Ok(Store::Single(client(args)?))
}

/// Whether a key/value request failed because the server does not serve
/// the Kv service (`UNIMPLEMENTED` at once, or an answer that is not gRPC,
/// seen as the last error of a timeout): the endpoints are of another kind.
fn wrong_kind(error: &KvError) -> bool {
    match error {
        KvError::Replica(ReplicaError::Refused { code, .. }) => *code == Code::Unimplemented,
        KvError::Replica(ReplicaError::Timeout { last, .. }) => last.contains("h2 protocol error"),
        _ => false,
    }
}

/// How long a request may go unanswered before the endpoints are asked
/// what they are.
const PROBE_AFTER: Duration = Duration::from_secs(1);

/// Resolves, while a request goes unanswered, to the error for endpoints
/// that all answer as something other than a key/value node or a shard
/// controller (a web server, a MapReduce coordinator): the request would
/// only retry them until its deadline. Asks every [`PROBE_AFTER`]; never
/// resolves while some endpoint is a node, a controller, or gives no
/// answer to tell.
async fn none_serve_kv(args: &ClientArgs) -> anyhow::Error {
    loop {
        tokio::time::sleep(PROBE_AFTER).await;
        if let Some(error) = all_serve_something_else(args).await {
            return error;
        }
    }
}

/// The error for the first endpoint, when every endpoint answers as
/// something other than a key/value node or a shard controller.
async fn all_serve_something_else(args: &ClientArgs) -> Option<anyhow::Error> {
    let mut first_wrong = None;
    for endpoint in &args.endpoints {
        match probe::identify(endpoint).await {
            Service::KvNode | Service::Controller | Service::NoAnswer(_) => return None,
            service => {
                first_wrong.get_or_insert_with(|| wrong_service(endpoint, &service));
            }
        }
    }
    first_wrong
}

/// What the endpoints are, once a request found they serve no Kv service:
/// the sharded client for shard controllers, or an error that names what
/// answered and where to point instead.
async fn sharded_or_error(
    args: &ClientArgs,
    error: KvError,
) -> anyhow::Result<cairn_shardkv::Client> {
    for endpoint in &args.endpoints {
        match probe::identify(endpoint).await {
            Service::Controller => return sharded_client(args),
            // Gone meanwhile, or a node after all: the request's error says.
            Service::KvNode | Service::NoAnswer(_) => {}
            service => return Err(wrong_service(endpoint, &service)),
        }
    }
    Err(error.into())
}

/// The error for an endpoint that is neither a key/value node nor a shard
/// controller, saying what it is and where the right servers are.
pub(crate) fn wrong_service(endpoint: &str, service: &Service) -> anyhow::Error {
    let what = service.describe();
    let local = "`cairn cluster` starts them at 127.0.0.1:7701-7703, the default --endpoints";
    match service {
        Service::ShardGroup { .. } => anyhow::anyhow!(
            "{endpoint} is {what} of a sharded cluster: `cairn kv` talks to the shard controllers, \
             which route each key to its group; point --endpoints at the controllers \
             (`cairn cluster --sharded` starts them at 127.0.0.1:7701-7703, the default --endpoints)"
        ),
        Service::Coordinator | Service::Worker => anyhow::anyhow!(
            "{endpoint} is {what}, not a key/value node (`cairn mr status URL` shows a coordinator's job); \
             point --endpoints at the nodes of a key/value cluster ({local})"
        ),
        _ => anyhow::anyhow!(
            "{endpoint} is {what}, not a key/value node or a shard controller; point --endpoints at \
             the nodes of a key/value cluster, or at a sharded cluster's controllers ({local})"
        ),
    }
}

fn sharded_client(args: &ClientArgs) -> anyhow::Result<cairn_shardkv::Client> {
    let settings = cairn_shardkv::ClientConfig {
        deadline: Duration::from_secs(args.timeout),
        ..cairn_shardkv::ClientConfig::default()
    };
    cairn_shardkv::Client::new(&args.endpoints, cairn_shardkv::shard_of, settings)
        .map_err(|e| anyhow::anyhow!("{e}; pass --endpoints http://HOST:PORT,..."))
}

impl Store {
    /// Runs a request: `single` on a key/value cluster; when its answer
    /// shows the endpoints are shard controllers, the store becomes the
    /// sharded client and `sharded` runs instead (and does for every later
    /// request).
    pub(super) async fn run<T>(
        &mut self,
        args: &ClientArgs,
        single: impl AsyncFnOnce(&mut Client) -> Result<T, KvError>,
        sharded: impl AsyncFnOnce(&mut cairn_shardkv::Client) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        if let Store::Single(client) = self {
            let outcome = tokio::select! {
                outcome = single(client) => outcome,
                wrong = none_serve_kv(args) => return Err(wrong),
            };
            match outcome {
                Err(error) if wrong_kind(&error) => {
                    *self = Store::Sharded(sharded_or_error(args, error).await?);
                }
                result => return Ok(result?),
            }
        }
        match self {
            Store::Sharded(client) => sharded(client).await,
            Store::Single(_) => unreachable!("a single-group store answered above"),
        }
    }

    pub(super) async fn get(
        &mut self,
        args: &ClientArgs,
        key: &[u8],
    ) -> anyhow::Result<Option<bytes::Bytes>> {
        self.run(
            args,
            async |c: &mut Client| c.get(key).await,
            async |c: &mut cairn_shardkv::Client| Ok(c.get(key).await?),
        )
        .await
    }

    /// Put, Append or Delete; returns whether the key existed.
    pub(super) async fn write(
        &mut self,
        args: &ClientArgs,
        op: &str,
        key: &[u8],
        value: &[u8],
    ) -> anyhow::Result<bool> {
        self.run(
            args,
            async |c: &mut Client| {
                Ok(match op {
                    "put" => c.put(key, value).await?.existed,
                    "append" => c.append(key, value).await?.existed,
                    _ => c.delete(key).await?.existed,
                })
            },
            async |c: &mut cairn_shardkv::Client| {
                Ok(match op {
                    "put" => c.put(key, value).await?,
                    "append" => c.append(key, value).await?,
                    _ => c.delete(key).await?,
                })
            },
        )
        .await
    }
}
