//! Which cluster `--endpoints` names: a probe round asks the endpoints
//! whether they serve one Raft group's key/value service or are the shard
//! controllers of a sharded cluster, and [`Store`] then sends each command
//! to the one it found.

use std::time::Duration;

use cairn_kv::Client;
use cairn_rpc::RpcError;

use super::{ClientArgs, client};
use crate::probe::{self, Service};

/// The cluster behind `--endpoints`: one Raft group serving the Kv
/// service, or the shard controllers of a sharded cluster (which do not).
pub(super) enum Store {
    Single(Client),
    Sharded(cairn_shardkv::Client),
}

/// Connects to the cluster, finding out which kind it is: a server that
/// answers the Kv service's `Status` with "unimplemented" is a shard
/// controller, or a server of another kind, which is an error that names
/// it.
///
/// A cluster that is still starting (right after `cairn cluster`) may not
/// answer yet: the probe is repeated until one endpoint answers or the
/// command's deadline passes, as the requests themselves would be; but when
/// every endpoint refuses the connection for [`cairn_rpc::REFUSED_GIVE_UP`]
/// nothing is starting there, and the command says so.
pub(super) async fn connect(args: &ClientArgs) -> anyhow::Result<Store> {
    let single = client(args)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    let mut refused_since = None;
    loop {
        let last_refusal = match probe_round(args, &single).await? {
            Probe::Single => return Ok(Store::Single(single)),
            Probe::Sharded => return Ok(Store::Sharded(sharded_client(args)?)),
            Probe::AllRefused(reason) => Some(reason),
            Probe::NoAnswer => None,
        };
        let now = tokio::time::Instant::now();
        match last_refusal {
            Some(last) if now - *refused_since.get_or_insert(now) >= cairn_rpc::REFUSED_GIVE_UP => {
                let endpoints = args.endpoints.clone();
                let unreachable = cairn_rpc::ReplicaError::Unreachable { endpoints, last };
                return Err(cairn_kv::KvError::from(unreachable).into());
            }
            Some(_) => {}
            None => refused_since = None,
        }
        if now + CONNECT_PROBE_PAUSE >= deadline {
            // Nobody answered: the single-group client's errors say so.
            return Ok(Store::Single(single));
        }
        tokio::time::sleep(CONNECT_PROBE_PAUSE).await;
    }
}

/// The pause between two rounds of `connect`'s probe.
const CONNECT_PROBE_PAUSE: Duration = Duration::from_millis(100);

/// What one round of `connect`'s probe found.
enum Probe {
    /// A key/value node answered.
    Single,
    /// A shard controller answered.
    Sharded,
    /// Every endpoint refused the connection (the last reason).
    AllRefused(String),
    /// No endpoint answered, and not every one refused.
    NoAnswer,
}

/// Asks every endpoint for its Kv status once; an endpoint of another
/// kind than a key/value node or a shard controller is an error naming it.
async fn probe_round(args: &ClientArgs, single: &Client) -> anyhow::Result<Probe> {
    let mut wrong = None;
    let mut refusals = Vec::new();
    for (index, endpoint) in args.endpoints.iter().enumerate() {
        match single.status(index).await {
            Ok(_) => return Ok(Probe::Single),
            Err(RpcError::ConnectionRefused { reason, .. }) => refusals.push(reason),
            Err(error)
                if probe::not_grpc(&error)
                    || error.status().map(|s| s.code())
                        == Some(cairn_rpc::tonic::Code::Unimplemented) =>
            {
                match probe::identify(endpoint).await {
                    Service::Controller => return Ok(Probe::Sharded),
                    // Gone meanwhile: the next round or the clerk will say.
                    Service::KvNode | Service::NoAnswer(_) => {}
                    service => wrong = wrong.or(Some((endpoint, service))),
                }
            }
            Err(_) => {}
        }
    }
    if let Some((endpoint, service)) = wrong {
        return Err(wrong_service(endpoint, &service));
    }
    Ok(match refusals.pop() {
        Some(last) if refusals.len() + 1 == args.endpoints.len() => Probe::AllRefused(last),
        _ => Probe::NoAnswer,
    })
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
    pub(super) async fn get(&mut self, key: &[u8]) -> anyhow::Result<Option<bytes::Bytes>> {
        Ok(match self {
            Store::Single(c) => c.get(key).await?,
            Store::Sharded(c) => c.get(key).await?,
        })
    }

    /// Put, Append or Delete; returns whether the key existed.
    pub(super) async fn write(
        &mut self,
        op: &str,
        key: &[u8],
        value: &[u8],
    ) -> anyhow::Result<bool> {
        Ok(match (self, op) {
            (Store::Single(c), "put") => c.put(key, value).await?.existed,
            (Store::Single(c), "append") => c.append(key, value).await?.existed,
            (Store::Single(c), _) => c.delete(key).await?.existed,
            (Store::Sharded(c), "put") => c.put(key, value).await?,
            (Store::Sharded(c), "append") => c.append(key, value).await?,
            (Store::Sharded(c), _) => c.delete(key).await?,
        })
    }
}
