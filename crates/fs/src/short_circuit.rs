//! Short-circuit reads, the client's half (as HDFS's
//! `dfs.client.read.shortcircuit`, HDFS-347): a client on the same machine
//! as a chunkserver reads that chunkserver's replicas through file
//! descriptors it hands over, instead of receiving their bytes over gRPC.
//!
//! 1. Once per chunkserver, the client asks it (`LocalReads` RPC) for its
//!    machine's identity (boot id and machine id), its Unix socket and a
//!    token naming the process. Another machine, or no socket: RPC reads.
//! 2. For a piece, the client sends the `ReadRequest` on the socket. The
//!    chunkserver checks it as the Read RPC does (on its state task: the
//!    replica exists and is not stale) and answers with the plan (blocks,
//!    their checksums, the bytes wanted below the replica's length, the
//!    version, its token) and a read-only descriptor of the data file.
//! 3. The client reads the blocks through the descriptor, checks every
//!    64 KiB block's CRC32C, returns the wanted bytes, and closes it.
//!
//! Any failure (a refusal, a token of another process, a short file, a
//! checksum mismatch) falls back to the Read RPC for that piece, silently;
//! the chunkserver then reads the replica itself and, if it is corrupt,
//! sets it aside and refuses, exactly as for any RPC read.
//!
//! The assumption: client and chunkserver share a kernel (the identity
//! proves it, and the socket's path answering with the chunkserver's token
//! proves they share the file system). The client can read nothing but the
//! descriptors it is given. A write made to the replica after the plan
//! shows as a checksum mismatch (then the RPC decides), never as bytes past
//! the length planned. In simulation this is compiled out: there, every
//! read is an RPC read.

#[cfg(not(madsim))]
pub(crate) use real::*;

#[cfg(madsim)]
pub(crate) use simulated::*;

#[cfg(madsim)]
mod simulated {
    use std::sync::Arc;

    use bytes::Bytes;
    use cairn_rpc::RpcClient;

    /// No short-circuit in simulation: every read is an RPC read.
    #[derive(Debug)]
    pub(crate) struct ShortCircuit;

    impl ShortCircuit {
        pub(crate) fn new(_enabled: bool) -> Self {
            Self
        }

        pub(crate) fn pick<'a>(&self, replicas: &'a [String], turn: usize) -> &'a str {
            &replicas[turn % replicas.len()]
        }

        pub(crate) async fn read(
            self: Arc<Self>,
            _peer: &RpcClient,
            _request: cairn_rpc::fs::ReadRequest,
        ) -> Option<(Bytes, u64)> {
            None
        }
    }
}

#[cfg(not(madsim))]
mod real {
    use std::collections::BTreeMap;
    use std::fs::File;
    use std::io::{self, IoSlice, IoSliceMut, Read as _, Write as _};
    use std::mem::MaybeUninit;
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::fs::FileExt as _;
    use std::os::unix::net::UnixStream;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use bytes::Bytes;
    use cairn_rpc::fs::{LocalReadReply, LocalReadsRequest, ReadRequest};
    use cairn_rpc::{RpcClient, RpcError};
    use rustix::net::{
        RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
        SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
    };

    use crate::chunk_store::{BLOCK_BYTES, ChunkError, PlannedBlocks};
    use crate::peers::{MAX_PEER_CLIENTS, chunk_stub};

    /// The largest request frame a chunkserver takes.
    pub(crate) const MAX_REQUEST_FRAME_BYTES: usize = 1 << 10;
    /// The largest reply frame a client takes (a plan of a 4 MiB piece is
    /// about 400 bytes).
    const MAX_REPLY_FRAME_BYTES: usize = 64 << 10;
    /// How long a short-circuit exchange may take before the RPC is used.
    const SOCKET_TIMEOUT: Duration = Duration::from_secs(2);

    /// This machine's identity: the kernel's boot id, and the machine id
    /// when there is one. `None` when the boot id cannot be read.
    pub(crate) fn host_identity() -> Option<String> {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .ok()
                .map(|s| s.trim().to_string())
        };
        let boot = read("/proc/sys/kernel/random/boot_id").filter(|id| !id.is_empty())?;
        let machine = read("/etc/machine-id").unwrap_or_default();
        Some(format!("{boot}/{machine}"))
    }

    /// `message` after its length (4 bytes, big-endian).
    pub(crate) fn frame(message: &impl prost::Message) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut bytes = Vec::with_capacity(4 + body.len());
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&body);
        bytes
    }

    /// Sends `bytes` (or their start) on `socket` with `file`'s descriptor
    /// attached; returns how many bytes went.
    pub(crate) fn send_with_fd(
        socket: impl AsFd,
        bytes: &[u8],
        file: Option<&File>,
    ) -> io::Result<usize> {
        let fds: Vec<_> = file.iter().map(|file| file.as_fd()).collect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::Error::other("no room for the descriptor"));
        }
        Ok(sendmsg(
            socket,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )?)
    }

    /// Receives bytes into `buffer` and at most one descriptor (any other
    /// is closed).
    fn receive_with_fd(
        socket: impl AsFd,
        buffer: &mut [u8],
    ) -> io::Result<(usize, Option<OwnedFd>)> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = recvmsg(
            socket,
            &mut [IoSliceMut::new(buffer)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        let mut fd = None;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                for received in fds {
                    fd.get_or_insert(received);
                }
            }
        }
        Ok((received.bytes, fd))
    }

    /// A chunkserver that serves short-circuit reads to this machine.
    #[derive(Debug, Clone)]
    struct LocalServer {
        socket: PathBuf,
        token: u64,
    }

    /// Why a short-circuit read did not return bytes.
    #[derive(Debug)]
    enum Failure {
        /// The chunkserver refused the piece (as the RPC would): the
        /// socket stays in use.
        Refused(String),
        /// The checksums failed: the RPC read decides.
        Corrupt(ChunkError),
        /// The socket, the descriptor or the reply failed: the
        /// chunkserver is asked again where it serves them.
        Broken(io::Error),
    }

    impl From<io::Error> for Failure {
        fn from(error: io::Error) -> Self {
            Self::Broken(error)
        }
    }

    /// A client's short-circuit reads: which chunkservers share its
    /// machine, and the reads through their descriptors.
    #[derive(Debug)]
    pub(crate) struct ShortCircuit {
        /// This machine's identity; `None`: short-circuit reads are off.
        host: Option<String>,
        /// Chunkserver URL -> its socket if it shares this machine
        /// (`None`: it does not, or it broke). Only touched under the
        /// lock, never across an `.await`; at most [`MAX_PEER_CLIENTS`].
        servers: Mutex<BTreeMap<String, Option<LocalServer>>>,
    }

    impl ShortCircuit {
        /// Short-circuit reads on (when this machine's identity is known)
        /// or off.
        pub(crate) fn new(enabled: bool) -> Self {
            Self {
                host: enabled.then(host_identity).flatten(),
                servers: Mutex::new(BTreeMap::new()),
            }
        }

        /// The piece `request` asks for from the replica `peer` serves,
        /// read through a descriptor when `peer` shares this machine and
        /// every block verifies; `None`: read it through the RPC.
        pub(crate) async fn read(
            self: Arc<Self>,
            peer: &RpcClient,
            request: ReadRequest,
        ) -> Option<(Bytes, u64)> {
            let server = self.server(peer).await?;
            let handle = request.handle;
            let read = tokio::task::spawn_blocking(move || read_through_fd(&server, request));
            match read.await.ok()? {
                Ok(read) => {
                    tracing::debug!(
                        "{} bytes of chunk {handle} read through a descriptor from {}",
                        read.0.len(),
                        peer.addr()
                    );
                    Some(read)
                }
                Err(Failure::Refused(reason)) => {
                    tracing::debug!("short-circuit read refused by {}: {reason}", peer.addr());
                    None
                }
                Err(Failure::Corrupt(error)) => {
                    tracing::warn!(
                        "short-circuit read from {}: {error}; reading through the RPC",
                        peer.addr()
                    );
                    None
                }
                Err(Failure::Broken(error)) => {
                    // It may have restarted (another socket or token):
                    // asked again for the next piece.
                    tracing::debug!("short-circuit read from {} failed: {error}", peer.addr());
                    self.forget(peer.addr());
                    None
                }
            }
        }

        /// The replica of `replicas` (not empty) to read a piece from,
        /// `turn` spreading the pieces: among those known to share this
        /// machine if there are any (HDFS reads a local replica first),
        /// else among all.
        pub(crate) fn pick<'a>(&self, replicas: &'a [String], turn: usize) -> &'a str {
            let servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
            let local: Vec<&String> = replicas
                .iter()
                .filter(|url| matches!(servers.get(url.as_str()), Some(Some(_))))
                .collect();
            match local.len() {
                0 => &replicas[turn % replicas.len()],
                n => local[turn % n],
            }
        }

        /// Where `peer` serves short-circuit reads, asking it the first
        /// time; `None` if it does not share this machine.
        async fn server(&self, peer: &RpcClient) -> Option<LocalServer> {
            let host = self.host.as_ref()?;
            let known = {
                let servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
                servers.get(peer.addr()).cloned()
            };
            if let Some(known) = known {
                return known;
            }
            let offer = match peer
                .call(LocalReadsRequest {}, |c, r| async move {
                    chunk_stub(c).local_reads(r).await
                })
                .await
            {
                Ok(offer) => offer,
                // It answered, without short-circuit reads (an older
                // chunkserver): not asked again.
                Err(RpcError::Rejected { .. }) => {
                    self.remember(peer.addr(), None);
                    return None;
                }
                // Asked again next time.
                Err(_) => return None,
            };
            let server = (offer.host == *host && !offer.socket.is_empty()).then(|| LocalServer {
                socket: offer.socket.into(),
                token: offer.token,
            });
            self.remember(peer.addr(), server.clone());
            server
        }

        fn forget(&self, url: &str) {
            let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
            servers.remove(url);
        }

        fn remember(&self, url: &str, server: Option<LocalServer>) {
            let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
            if servers.len() >= MAX_PEER_CLIENTS {
                servers.clear();
            }
            servers.insert(url.to_string(), server);
        }
    }

    /// One short-circuit exchange: the request, the plan and descriptor,
    /// the checked read (blocking).
    fn read_through_fd(
        server: &LocalServer,
        request: ReadRequest,
    ) -> Result<(Bytes, u64), Failure> {
        let mut stream = UnixStream::connect(&server.socket)?;
        stream.set_read_timeout(Some(SOCKET_TIMEOUT))?;
        stream.set_write_timeout(Some(SOCKET_TIMEOUT))?;
        stream.write_all(&frame(&request))?;
        let (reply, fd) = receive_reply(&mut stream)?;
        if reply.token != server.token {
            return Err(Failure::Broken(io::Error::other(
                "the socket answers for another chunkserver process",
            )));
        }
        if !reply.error.is_empty() {
            return Err(Failure::Refused(reply.error));
        }
        let file = File::from(fd.ok_or_else(|| io::Error::other("no descriptor came"))?);
        let plan = plan_of(&reply, &request)?;
        plan.run_on(|offset, length| {
            let mut blocks = vec![0; length];
            file.read_exact_at(&mut blocks, offset)?;
            Ok(blocks)
        })
        .map_err(|error| match error {
            ChunkError::Io(error) => Failure::Broken(error),
            error => Failure::Corrupt(error),
        })
    }

    /// Reads the framed reply and the descriptor sent with its first
    /// bytes.
    fn receive_reply(stream: &mut UnixStream) -> io::Result<(LocalReadReply, Option<OwnedFd>)> {
        let mut buffer = vec![0; 4 + MAX_REPLY_FRAME_BYTES];
        let (mut got, fd) = receive_with_fd(&*stream, &mut buffer)?;
        while got < 4 {
            got += read_some(stream, &mut buffer[got..4])?;
        }
        let length = u32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) as usize;
        if length > MAX_REPLY_FRAME_BYTES || got > 4 + length {
            return Err(io::Error::other(format!("a reply frame of {length} bytes")));
        }
        stream.read_exact(&mut buffer[got..4 + length])?;
        let reply = prost::Message::decode(&buffer[4..4 + length]).map_err(io::Error::other)?;
        Ok((reply, fd))
    }

    fn read_some(stream: &mut UnixStream, buffer: &mut [u8]) -> io::Result<usize> {
        match stream.read(buffer)? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n => Ok(n),
        }
    }

    /// The plan `blocks` as a chunkserver with `token` sends it.
    pub(crate) fn reply_of(token: u64, blocks: &PlannedBlocks) -> LocalReadReply {
        LocalReadReply {
            token,
            error: String::new(),
            version: blocks.version,
            first_block: blocks.first,
            blocks_start: blocks.blocks.start,
            blocks_end: blocks.blocks.end,
            wanted_start: blocks.wanted.start,
            wanted_end: blocks.wanted.end,
            checksums: blocks.checksums.clone(),
        }
    }

    /// The plan in `reply`, if it fits what `request` asked: the chunk
    /// and version asked (or newer), the bytes at the offset asked, no
    /// more than asked.
    fn plan_of(reply: &LocalReadReply, request: &ReadRequest) -> io::Result<PlannedBlocks> {
        let plan = PlannedBlocks {
            handle: request.handle,
            version: reply.version,
            first: reply.first_block,
            blocks: reply.blocks_start..reply.blocks_end,
            wanted: reply.wanted_start..reply.wanted_end,
            checksums: reply.checksums.clone(),
        };
        let at_offset = plan.wanted.start == request.offset || plan.wanted.is_empty();
        let sized = plan.wanted.end.saturating_sub(plan.wanted.start) <= request.length
            && plan.blocks.end.saturating_sub(plan.blocks.start)
                <= request.length.saturating_add(2 * BLOCK_BYTES);
        if plan.is_consistent() && at_offset && sized && plan.version >= request.version {
            Ok(plan)
        } else {
            Err(io::Error::other("a plan that does not fit the request"))
        }
    }

    #[cfg(test)]
    mod tests {
        use std::path::Path;

        use cairn_storage::{Disk, MemDisk};

        use super::*;
        use crate::chunk_store::ChunkStore;

        /// A store with chunk 7 at version 2, 200,000 bytes long; the
        /// plan of `length` bytes at `offset`, as a chunkserver sends it.
        fn reply_for(offset: u64, length: u64) -> (LocalReadReply, Vec<u8>) {
            let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
            let mut store = ChunkStore::open(disk, Path::new("chunks"), 1 << 20).unwrap();
            store.create(7, 2).unwrap();
            let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            store.write(7, 2, 0, &data).unwrap();
            let plan = store.plan_read(7, offset, length).unwrap();
            let reply = reply_of(1, plan.blocks());
            (reply, data)
        }

        fn request(offset: u64, length: u64) -> ReadRequest {
            ReadRequest {
                handle: 7,
                version: 2,
                offset,
                length,
            }
        }

        #[test]
        fn a_plan_that_fits_reads_only_verified_bytes_below_the_length() {
            let (reply, data) = reply_for(70_000, 500_000);
            let plan = plan_of(&reply, &request(70_000, 500_000)).unwrap();
            let (bytes, version) = plan
                .run_on(|offset, length| {
                    Ok(data[offset as usize..offset as usize + length].to_vec())
                })
                .unwrap();
            assert_eq!((&bytes[..], version), (&data[70_000..], 2));

            let mut flipped = data.clone();
            flipped[150_000] ^= 1;
            let read = plan.run_on(|offset, length| {
                Ok(flipped[offset as usize..offset as usize + length].to_vec())
            });
            assert!(
                matches!(read, Err(ChunkError::Corrupt { block: 2, .. })),
                "{read:?}"
            );
        }

        #[test]
        fn a_plan_that_does_not_fit_the_request_is_refused() {
            let (reply, _) = reply_for(70_000, 1_000);
            assert!(plan_of(&reply, &request(70_000, 1_000)).is_ok());
            // More bytes than asked, another offset, an older version.
            assert!(plan_of(&reply, &request(70_000, 999)).is_err());
            assert!(plan_of(&reply, &request(69_000, 1_000)).is_err());
            let mut newer = request(70_000, 1_000);
            newer.version = 3;
            assert!(plan_of(&reply, &newer).is_err());
            // A checksum missing, blocks not where the first block is,
            // wanted bytes outside the blocks.
            let mut broken = reply.clone();
            broken.checksums.pop();
            assert!(plan_of(&broken, &request(70_000, 1_000)).is_err());
            let mut broken = reply.clone();
            broken.blocks_start += 1;
            assert!(plan_of(&broken, &request(70_000, 1_000)).is_err());
            let mut broken = reply;
            broken.wanted_end = broken.blocks_end + 1;
            assert!(plan_of(&broken, &request(70_000, 1_000)).is_err());
        }
    }
}
