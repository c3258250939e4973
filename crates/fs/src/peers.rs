//! [`Peers`]: one [`RpcClient`] per chunkserver URL, made on first use,
//! and [`chunk_stub`]: the `Chunk` service stub with the store's message
//! limits, which every call carrying chunk data goes through.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_rpc::fs::chunk_client::ChunkClient;
use cairn_rpc::{ClientOptions, RpcClient, RpcError};
use tonic::transport::Channel;

use crate::chunkserver::MAX_MESSAGE_BYTES;

/// The most chunkservers a party keeps a client for; beyond it the cache is
/// emptied (clients are cheap to make again).
pub const MAX_PEER_CLIENTS: usize = 4096;

/// Clients for the chunkservers a party talks to.
#[derive(Debug)]
pub(crate) struct Peers {
    options: ClientOptions,
    /// Only touched under the lock, never across an `.await`.
    clients: Mutex<BTreeMap<String, Arc<RpcClient>>>,
}

impl Peers {
    pub(crate) fn new(call_timeout: Duration) -> Self {
        Self {
            options: ClientOptions {
                connect_timeout: call_timeout,
                call_timeout,
            },
            clients: Mutex::new(BTreeMap::new()),
        }
    }

    /// The client for `url`.
    pub(crate) fn get(&self, url: &str) -> Result<Arc<RpcClient>, RpcError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(url) {
            return Ok(client.clone());
        }
        if clients.len() >= MAX_PEER_CLIENTS {
            clients.clear();
        }
        let client = Arc::new(RpcClient::new(url, self.options.clone())?);
        clients.insert(url.to_string(), client.clone());
        Ok(client)
    }
}

/// A `Chunk` stub on `channel` that sends and takes messages of up to
/// [`MAX_MESSAGE_BYTES`] (a push or a read carries up to 4 MiB of data).
pub(crate) fn chunk_stub(channel: Channel) -> ChunkClient<Channel> {
    ChunkClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
