//! Short-circuit reads, the chunkserver's half (HDFS-347's idea): a client
//! on this machine asks on a Unix socket in the data directory for a piece
//! of a replica, and gets, instead of the bytes, a read-only file
//! descriptor of the replica's data file (SCM_RIGHTS) with the piece's
//! plan: the blocks to read, their checksums, the bytes wanted, the
//! version. The plan is taken on the state task with the checks of the
//! Read RPC ([`ChunkServer::plan_read`]), so the client never reads past
//! the replica's length at that moment nor a stale replica; it verifies
//! every block itself (`short_circuit.rs`) and reads through the RPC on
//! any doubt.
//!
//! The kernel copies the bytes once, from the page cache into the
//! client's buffer: no encoding, no socket, no decoding, and no work for
//! this process beyond the plan. Not in simulation (no Unix sockets).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_rpc::fs::{LocalReadReply, LocalReadsReply, ReadRequest};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use super::ChunkServer;
use crate::chunk_store::ReadPlan;
use crate::short_circuit::{MAX_REQUEST_FRAME_BYTES, frame, host_identity, reply_of, send_with_fd};

/// The socket's name in the data directory.
pub const LOCAL_READS_SOCKET: &str = "local-reads.sock";
/// The most short-circuit requests answered at once; further connections
/// wait to be accepted.
pub const MAX_LOCAL_READERS: usize = 64;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

impl ChunkServer {
    /// Serves short-circuit reads on a Unix socket in `root`, the
    /// directory the store's disk is rooted at (the data directory), and
    /// offers it to clients that share this machine (`LocalReads` RPC).
    /// Returns the socket's path. A socket left by an earlier process is
    /// replaced (the caller holds the data directory's lock).
    pub fn serve_local_reads(&self, root: &Path) -> io::Result<PathBuf> {
        let host = host_identity().ok_or_else(|| {
            io::Error::other("this machine's boot id is unknown; short-circuit reads are off")
        })?;
        let root = std::path::absolute(root)?;
        let socket = root.join(LOCAL_READS_SOCKET);
        match std::fs::remove_file(&socket) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let listener = UnixListener::bind(&socket)?;
        let token = rand::Rng::r#gen(&mut cairn_rpc::seeded_rng());
        let offer = LocalReadsReply {
            host,
            socket: socket.display().to_string(),
            token,
        };
        if self.inner.local_reads.set(offer).is_err() {
            return Err(io::Error::other("short-circuit reads are served already"));
        }
        tokio::spawn(accept_loop(self.clone(), listener, root, token));
        Ok(socket)
    }

    /// The plan of the piece `request` asks for and the replica's data
    /// file, opened read-only; or why not (the RPC's refusal).
    async fn open_local_read(
        &self,
        request: ReadRequest,
        root: &Path,
    ) -> Result<(ReadPlan, File), String> {
        let plan = self
            .plan_read(request)
            .await
            .map_err(|status| status.message().to_string())?;
        let file = File::open(root.join(plan.path())).map_err(|error| error.to_string())?;
        Ok((plan, file))
    }
}

/// Accepts clients, [`MAX_LOCAL_READERS`] answered at once.
async fn accept_loop(server: ChunkServer, listener: UnixListener, root: PathBuf, token: u64) {
    let slots = Arc::new(Semaphore::new(MAX_LOCAL_READERS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let (server, root) = (server.clone(), root.clone());
                tokio::spawn(async move {
                    if let Err(error) = answer(&server, stream, &root, token).await {
                        tracing::debug!("a short-circuit read was not answered: {error}");
                    }
                    drop(slot);
                });
            }
            Err(error) => {
                // Out of descriptors, most likely: pause, then go on.
                tracing::warn!("accepting a short-circuit reader failed: {error}");
                tokio::time::sleep(REQUEST_TIMEOUT / 20).await;
            }
        }
    }
}

/// Answers one client's request: the plan with the descriptor, or the
/// refusal alone.
async fn answer(
    server: &ChunkServer,
    mut stream: UnixStream,
    root: &Path,
    token: u64,
) -> io::Result<()> {
    let request = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request in time"))??;
    let (reply, file) = match server.open_local_read(request, root).await {
        Ok((plan, file)) => (reply_of(token, plan.blocks()), Some(file)),
        Err(error) => (
            LocalReadReply {
                token,
                error,
                ..Default::default()
            },
            None,
        ),
    };
    let bytes = frame(&reply);
    let sent = loop {
        stream.writable().await?;
        match stream.try_io(Interest::WRITABLE, || {
            send_with_fd(&stream, &bytes, file.as_ref())
        }) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            result => break result?,
        }
    };
    // The descriptor went with the first bytes; the rest of a long frame
    // follows.
    stream.write_all(&bytes[sent..]).await
}

/// Reads one framed `ReadRequest`.
async fn read_request(stream: &mut UnixStream) -> io::Result<ReadRequest> {
    let length = stream.read_u32().await? as usize;
    if length > MAX_REQUEST_FRAME_BYTES {
        return Err(io::Error::other(format!(
            "a request of {length} bytes; at most {MAX_REQUEST_FRAME_BYTES}"
        )));
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    prost::Message::decode(body.as_slice()).map_err(io::Error::other)
}
