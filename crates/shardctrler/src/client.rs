//! [`Client`]: the controller's clerk. It finds the leader, retries across
//! servers, opens a session with the controller, and numbers its changes
//! so that a retried change is applied once. A change answered "session
//! expired" on its only attempt was certainly not applied and is sent once
//! more under a new session; otherwise its outcome is unknown and the
//! clerk reports [`CtrlerError::SessionExpired`] (as `cairn-kv`'s clerk).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use cairn_rpc::kv::RegisterRequest;
use cairn_rpc::shardctrler::change_request::Change;
use cairn_rpc::shardctrler::shard_ctrler_client::ShardCtrlerClient;
use cairn_rpc::shardctrler::{ChangeRequest, Group, Join, Leave, Move, QueryRequest};
use cairn_rpc::{ReplicaError, Replicas};

use crate::config::{Config, Gid};

/// Why a controller request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CtrlerError {
    /// The controllers did not complete the request, or it is malformed
    /// (gid 0, a shard that does not exist, an empty server list): see
    /// [`ReplicaError`]. After a timeout a change may or may not have been
    /// applied; retrying it through the same client is safe.
    #[error("{}", .0.with_hint(UNREACHABLE_HINT))]
    Replica(#[from] ReplicaError),
    /// The controller refused the change against its latest configuration
    /// (a group that already joined, or is not there); nothing was applied.
    #[error("refused: {0}")]
    Refused(String),
    /// The controller forgot this client's session while a change's
    /// outcome was unknown: it may have been applied once, or not at all.
    /// The client's next change opens a new session.
    #[error(
        "the controller forgot this client's session while the change's outcome was unknown (it was applied once or not at all); query before changing again"
    )]
    SessionExpired,
    /// A server answered, but not as a shard controller should (no
    /// session, no configuration); nothing was applied.
    #[error("the controller refused the request: {0}")]
    Rejected(String),
    /// The addresses given are unusable.
    #[error("bad endpoint: {0}")]
    BadEndpoint(String),
}

/// What to do when nothing listens at the addresses given.
const UNREACHABLE_HINT: &str = "are the controllers running? Start a sharded cluster with `cairn cluster --sharded`, or pass --endpoints with the controllers' addresses";

/// A shard controller clerk. Queries take `&self`; changes take `&mut self`
/// (one outstanding change per clerk: its sequence number).
#[derive(Debug)]
pub struct Client {
    servers: Replicas,
    /// The session's id; `None` before the first change and after the
    /// session expired.
    client_id: Option<u64>,
    seq: u64,
}

impl Client {
    /// A clerk for the controllers at `endpoints`, each call allowed
    /// `call_timeout` and each request `deadline` in all.
    pub fn new(
        endpoints: &[String],
        call_timeout: Duration,
        deadline: Duration,
    ) -> Result<Self, CtrlerError> {
        let servers = Replicas::new(endpoints, call_timeout, deadline)
            .map_err(|e| CtrlerError::BadEndpoint(e.to_string()))?;
        Ok(Self {
            servers,
            client_id: None,
            seq: 0,
        })
    }

    /// This clerk waits out its deadline even when every controller
    /// refuses the connection, instead of failing with
    /// [`ReplicaError::Unreachable`] after [`cairn_rpc::REFUSED_GIVE_UP`]:
    /// for controllers that are starting.
    pub fn wait_while_refused(mut self) -> Self {
        self.servers = self.servers.wait_while_refused();
        self
    }

    /// Configuration `num`, or the latest with `None`. Linearizable: the
    /// latest reflects every change completed before the call.
    pub async fn query(&self, num: Option<u64>) -> Result<Config, CtrlerError> {
        let request = QueryRequest {
            num: num.and_then(|n| i64::try_from(n).ok()).unwrap_or(-1),
        };
        let config = self
            .servers
            .request(request, |c, r| async move {
                ShardCtrlerClient::new(c).query(r).await
            })
            .await?;
        Ok(Config::from_proto(config))
    }

    /// Adds groups (gid → server addresses); returns the new
    /// configuration's number.
    pub async fn join(&mut self, groups: &BTreeMap<Gid, Vec<String>>) -> Result<u64, CtrlerError> {
        let groups = groups
            .iter()
            .map(|(&gid, servers)| Group {
                gid,
                servers: servers.clone(),
            })
            .collect();
        self.change(Change::Join(Join { groups })).await
    }

    /// Removes groups; returns the new configuration's number.
    pub async fn leave(&mut self, gids: &[Gid]) -> Result<u64, CtrlerError> {
        self.change(Change::Leave(Leave {
            gids: gids.to_vec(),
        }))
        .await
    }

    /// Assigns `shard` to `gid`; returns the new configuration's number.
    pub async fn move_shard(&mut self, shard: usize, gid: Gid) -> Result<u64, CtrlerError> {
        let shard = u32::try_from(shard).map_err(|_| {
            CtrlerError::from(ReplicaError::InvalidArgument(format!(
                "shard {shard} does not exist"
            )))
        })?;
        self.change(Change::Move(Move { shard, gid })).await
    }

    /// Registers a new client session through the controllers' log and
    /// returns its id: unique, and larger than every id registered before
    /// it (the sharded store's clerks use these ids too).
    pub async fn register(&self) -> Result<u64, CtrlerError> {
        let reply = self
            .servers
            .request(RegisterRequest {}, |c, r| async move {
                ShardCtrlerClient::new(c).register(r).await
            })
            .await?;
        if reply.client_id == 0 {
            return Err(CtrlerError::Rejected(
                "the controller registered no session; is it a shard controller?".into(),
            ));
        }
        Ok(reply.client_id)
    }

    async fn change(&mut self, change: Change) -> Result<u64, CtrlerError> {
        let mut request = ChangeRequest {
            change: Some(change),
            ..ChangeRequest::default()
        };
        // At most once more, under a new session, and only when the change
        // was certainly not applied.
        for resent in [false, true] {
            let client_id = match self.client_id {
                Some(id) => id,
                None => {
                    let id = self.register().await?;
                    (self.client_id, self.seq) = (Some(id), 0);
                    id
                }
            };
            self.seq += 1;
            (request.client_id, request.seq) = (client_id, self.seq);
            let attempts = Arc::new(AtomicUsize::new(0));
            let counter = attempts.clone();
            let reply = self
                .servers
                .request(request.clone(), move |c, r| {
                    counter.fetch_add(1, Relaxed);
                    async move { ShardCtrlerClient::new(c).change(r).await }
                })
                .await?;
            if reply.session_expired {
                self.client_id = None;
                if attempts.load(Relaxed) == 1 && !resent {
                    continue;
                }
                return Err(CtrlerError::SessionExpired);
            }
            if !reply.error.is_empty() {
                return Err(CtrlerError::Refused(reply.error));
            }
            return Ok(reply.num);
        }
        Err(CtrlerError::SessionExpired)
    }
}
