//! `cairn kv`: run a key/value node (`serve`) and talk to a cluster
//! (`get`, `put`, `append`, `del`, `cas`, `status`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use cairn_kv::{Client, ClientConfig, KvServer};
use cairn_rpc::RpcError;
use cairn_rsm::NodeConfig;
use cairn_storage::RealDisk;
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::probe::{self, Service};
use crate::progress::print_stdout;

/// The endpoints of the cluster `cairn cluster` starts by default.
pub(crate) const DEFAULT_ENDPOINTS: &str =
    "http://127.0.0.1:7701,http://127.0.0.1:7702,http://127.0.0.1:7703";

#[derive(Debug, Subcommand)]
pub(crate) enum KvCommand {
    /// Run one node of a key/value cluster (data in --data-dir).
    ///
    /// Every node needs the same --peers list, e.g.
    /// `cairn kv serve --id 1 --peers 1=http://10.0.0.1:7701,2=http://10.0.0.2:7701,3=http://10.0.0.3:7701
    /// --data-dir /var/lib/cairn`. The `[node]` table of the --config file can hold the same settings.
    Serve(ServeArgs),
    /// Print a key's value (exit status 3 if it is missing, 1 if the
    /// cluster could not answer). The value is printed as text with a
    /// newline; --raw prints its exact bytes, --output writes them to a
    /// file, --json gives `value` (UTF-8) or `value_base64` (other bytes).
    Get(GetArgs),
    /// Set a key's value.
    Put(KeyValueArgs),
    /// Append to a key's value (a missing key counts as empty).
    Append(KeyValueArgs),
    /// Delete a key (exit status 3 if it was not there).
    Del(KeyArgs),
    /// Compare-and-swap: set KEY to VALUE only if its value now is exactly
    /// --expect OLD, or only if KEY does not exist (--expect-missing).
    ///
    /// The comparison and the write are one step in the replicated log: of
    /// several clients swapping from the same value, exactly one succeeds.
    /// Prints "swapped" and exits 0 when the value was set; otherwise
    /// changes nothing, says "not swapped" and exits with status 3 (1 when
    /// the cluster could not answer). `--expect ""` matches an empty value,
    /// not a missing key. Not available on a sharded cluster.
    ///
    /// Examples: `cairn kv cas counter 2 --expect 1` (1 becomes 2, exit 3
    /// if the value was not 1); `cairn kv cas lock me --expect-missing`
    /// (take a lock that nobody holds).
    Cas(CasArgs),
    /// Show every node's role, term, commit and applied index: the
    /// endpoints given and every other member they report; on a sharded
    /// cluster the controllers, every server of every group (with what a
    /// group waits for), and groups that left but still answer.
    Status(ClientArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// This node's id (1, 2, ...), one of the ids in --peers.
    #[arg(long)]
    id: Option<u64>,
    /// Every node of the cluster as ID=URL, comma-separated.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// The address to listen on, HOST:PORT (default: the host and port of
    /// this node's URL in --peers). A host name is resolved and the node
    /// listens on its address (IPv4 first): `localhost` is loopback only.
    /// 0.0.0.0:PORT listens on every interface.
    #[arg(long)]
    listen: Option<String>,
    /// Snapshot when the Raft log passes this many bytes (default 8388608 =
    /// 8 MiB; -1: never).
    #[arg(long, allow_negative_numbers = true, value_name = "BYTES")]
    max_raft_state: Option<i64>,
}

#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    /// The cluster's nodes, comma-separated (default: the local cluster of
    /// `cairn cluster`).
    #[arg(long, env = "CAIRN_ENDPOINTS", value_delimiter = ',', default_value = DEFAULT_ENDPOINTS,
          value_parser = parse_endpoint)]
    pub(crate) endpoints: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Give up after this many seconds (at least 1).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) timeout: u64,
}

/// An endpoint as `http://HOST:PORT` or `HOST:PORT`, checked when the
/// command line is read so that a typo fails at once with the reason.
pub(crate) fn parse_endpoint(text: &str) -> Result<String, String> {
    let text = text.trim();
    let authority = match text.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{scheme}:// is not supported; write http://HOST:PORT or HOST:PORT"
            ));
        }
        None => text,
    };
    let authority = authority.trim_end_matches('/');
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Err(format!(
            "{text:?} has no port; write HOST:PORT, e.g. 127.0.0.1:7701"
        ));
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!(
            "{text:?} has no host; write HOST:PORT, e.g. 127.0.0.1:7701"
        ));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(text.to_string()),
        _ => Err(format!("{port:?} is not a port (1-65535)")),
    }
}

#[derive(Debug, Args)]
pub(crate) struct KeyArgs {
    /// The key (any bytes with --key-hex).
    key: String,
    /// The key is written in hexadecimal (e.g. `00ff10` for the bytes 0x00
    /// 0xff 0x10), for keys that are not text.
    #[arg(long)]
    key_hex: bool,
    #[command(flatten)]
    client: ClientArgs,
}

impl KeyArgs {
    fn key(&self) -> anyhow::Result<Vec<u8>> {
        if !self.key_hex {
            return Ok(self.key.as_bytes().to_vec());
        }
        let digits = self.key.as_bytes();
        if !digits.len().is_multiple_of(2) {
            bail!(
                "--key-hex {:?} has an odd number of digits; write two per byte",
                self.key
            );
        }
        digits
            .chunks(2)
            .map(|pair| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .with_context(|| {
                        format!("--key-hex {:?} is not hexadecimal (0-9, a-f)", self.key)
                    })
            })
            .collect()
    }
}

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// Print the value's exact bytes, with no newline added.
    #[arg(long, conflicts_with = "output")]
    raw: bool,
    /// Write the value's exact bytes to this file instead of printing it.
    #[arg(long)]
    output: Option<std::path::PathBuf>,
}

/// The exit status of a command whose answer is "no": `get` of a missing
/// key, `del` of a missing key, a `cas` that did not swap. Errors (the
/// cluster could not answer) exit with 1, usage errors with 2.
pub(crate) const EXIT_NO: i32 = 3;

#[derive(Debug, Args)]
pub(crate) struct KeyValueArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// The value; `-` reads it from standard input.
    value: String,
}

impl KeyValueArgs {
    fn value(&self) -> anyhow::Result<Vec<u8>> {
        if self.value == "-" {
            let mut value = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut value)
                .context("reading the value from standard input")?;
            Ok(value)
        } else {
            Ok(self.value.clone().into_bytes())
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct CasArgs {
    /// The key.
    key: String,
    /// The value to set.
    value: String,
    /// Swap only if the key's value is exactly OLD now (an empty OLD
    /// matches an empty value, not a missing key).
    #[arg(
        value_name = "OLD",
        long,
        conflicts_with = "expect_missing",
        required_unless_present = "expect_missing"
    )]
    expect: Option<String>,
    /// Swap only if the key does not exist (the swap creates it).
    #[arg(long)]
    expect_missing: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) fn run(command: KvCommand, config: &Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match command {
        KvCommand::Serve(args) => runtime.block_on(serve(args, config)),
        KvCommand::Status(args) => runtime.block_on(crate::kv_status::status(args)),
        command => runtime.block_on(request(command)),
    }
}

fn client(args: &ClientArgs) -> anyhow::Result<Client> {
    let config = ClientConfig {
        deadline: Duration::from_secs(args.timeout),
        ..ClientConfig::default()
    };
    Client::new(&args.endpoints, config)
        .map_err(|e| anyhow::anyhow!("{e}; pass --endpoints http://HOST:PORT,..."))
}

/// The cluster behind `--endpoints`: one Raft group serving the Kv
/// service, or the shard controllers of a sharded cluster (which do not).
enum Store {
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
async fn connect(args: &ClientArgs) -> anyhow::Result<Store> {
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
                return Err(cairn_kv::KvError::Unreachable { endpoints, last }.into());
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
    async fn get(&mut self, key: &[u8]) -> anyhow::Result<Option<bytes::Bytes>> {
        Ok(match self {
            Store::Single(c) => c.get(key).await?,
            Store::Sharded(c) => c.get(key).await?,
        })
    }

    /// Put, Append or Delete; returns whether the key existed.
    async fn write(&mut self, op: &str, key: &[u8], value: &[u8]) -> anyhow::Result<bool> {
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

async fn request(command: KvCommand) -> anyhow::Result<()> {
    match command {
        KvCommand::Get(args) => get(args).await?,
        KvCommand::Put(args) => {
            let mut store = connect(&args.key.client).await?;
            let existed = store.write("put", &args.key.key()?, &args.value()?).await?;
            report(args.key.client.json, "OK", true, existed);
        }
        KvCommand::Append(args) => {
            let mut store = connect(&args.key.client).await?;
            let existed = store
                .write("append", &args.key.key()?, &args.value()?)
                .await?;
            report(args.key.client.json, "OK", true, existed);
        }
        KvCommand::Del(args) => {
            let mut store = connect(&args.client).await?;
            let existed = store.write("del", &args.key()?, b"").await?;
            report(args.client.json, "deleted", existed, existed);
            if !existed {
                if !args.client.json {
                    eprintln!("not found: {} (nothing was deleted)", args.key);
                }
                std::process::exit(EXIT_NO);
            }
        }
        KvCommand::Cas(args) => {
            let Store::Single(mut client) = connect(&args.client).await? else {
                bail!("compare-and-swap is not available on a sharded cluster; use put");
            };
            let expected = if args.expect_missing {
                None
            } else {
                args.expect.as_deref().map(str::as_bytes)
            };
            let outcome = client
                .cas(args.key.as_bytes(), expected, args.value.as_bytes())
                .await?;
            report(args.client.json, "swapped", outcome.ok, outcome.existed);
            if !outcome.ok {
                if !args.client.json {
                    eprintln!(
                        "not swapped: the current value of {} is not the expected one",
                        args.key
                    );
                }
                std::process::exit(EXIT_NO);
            }
        }
        KvCommand::Serve(_) | KvCommand::Status(_) => unreachable!("dispatched in run()"),
    }
    Ok(())
}

/// `cairn kv get`: the value as text, exact bytes (--raw, --output) or
/// JSON (base64 for bytes that are not UTF-8).
async fn get(args: GetArgs) -> anyhow::Result<()> {
    let client = &args.key.client;
    let mut store = connect(client).await?;
    let value = store.get(&args.key.key()?).await?;
    let Some(value) = value else {
        if client.json {
            let answer = serde_json::json!({ "key": args.key.key, "found": false });
            print_stdout(&format!("{answer}\n"));
        } else {
            eprintln!("not found: {}", args.key.key);
        }
        std::process::exit(EXIT_NO);
    };
    if let Some(path) = &args.output {
        std::fs::write(path, &value)
            .with_context(|| format!("writing the value to {}", path.display()))?;
    } else if client.json {
        let mut answer = serde_json::json!({ "key": args.key.key, "found": true });
        match std::str::from_utf8(&value) {
            Ok(text) => answer["value"] = text.into(),
            Err(_) => answer["value_base64"] = base64(&value).into(),
        }
        print_stdout(&format!("{answer}\n"));
    } else if args.raw {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&value).and_then(|()| stdout.flush())?;
    } else {
        print_stdout(&format!("{}\n", String::from_utf8_lossy(&value)));
    }
    Ok(())
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let triple = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for position in 0..4 {
            if position <= chunk.len() {
                out.push(char::from(
                    ALPHABET[(triple >> (18 - 6 * position)) as usize & 63],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn report(json: bool, done: &str, ok: bool, existed: bool) {
    if json {
        print_stdout(&format!(
            "{}\n",
            serde_json::json!({ "ok": ok, "existed": existed })
        ));
    } else if ok {
        print_stdout(&format!("{done}\n"));
    }
}

/// Parses `ID=URL` pairs.
pub(crate) fn parse_peers(peers: &[String]) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut map = BTreeMap::new();
    for peer in peers {
        let (id, url) = peer.split_once('=').with_context(|| {
            format!("peer {peer:?} is not ID=URL (e.g. 1=http://10.0.0.1:7701)")
        })?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("peer {peer:?}: the id is not a number"))?;
        if id == 0 {
            bail!("peer {peer:?}: node ids start at 1");
        }
        if !url.starts_with("http://") && !url.starts_with("https://") {
            bail!(
                "peer {peer:?}: the URL must start with http:// (e.g. {id}=http://10.0.0.1:7701)"
            );
        }
        if map.insert(id, url.trim().to_string()).is_some() {
            bail!("node {id} appears twice in --peers");
        }
    }
    Ok(map)
}

/// Everything a node needs before its service starts: identity, peers,
/// listening address, and its locked data directory.
pub(crate) struct PreparedNode {
    pub(crate) id: u64,
    pub(crate) listen: SocketAddr,
    pub(crate) data_dir: std::path::PathBuf,
    pub(crate) disk: Arc<RealDisk>,
    pub(crate) node_config: NodeConfig,
    /// Held for the life of the node.
    _lock: std::fs::File,
}

/// Resolves `serve`'s flags and the `[node]` table, and locks and opens the
/// data directory.
pub(crate) fn prepare_node(args: &ServeArgs, config: &Config) -> anyhow::Result<PreparedNode> {
    let node = &config.node;
    let id = args
        .id
        .or(node.id)
        .context("which node is this? pass --id N (or id in the [node] table of --config)")?;
    let peer_list = if args.peers.is_empty() {
        node.peers.clone().unwrap_or_default()
    } else {
        args.peers.clone()
    };
    if peer_list.is_empty() {
        bail!(
            "pass --peers 1=http://HOST:PORT,2=...,3=... (every node of the cluster, this one included)"
        );
    }
    let peers = parse_peers(&peer_list)?;
    let own_url = peers
        .get(&id)
        .with_context(|| format!("node {id} is not in --peers; add {id}=http://HOST:PORT"))?;
    let listen = match args.listen.clone().or(node.listen.clone()) {
        Some(listen) => listen_address(&listen)
            .with_context(|| format!("--listen {listen:?}: pass HOST:PORT, e.g. 0.0.0.0:7701"))?,
        None => listen_of(own_url).with_context(|| {
            format!(
                "cannot listen on the address of node {id}'s URL {own_url} in --peers; pass \
                 --listen HOST:PORT (0.0.0.0:PORT for every interface)"
            )
        })?,
    };
    let data_dir = config.data_dir.0.clone();
    if data_dir.exists() && !data_dir.is_dir() {
        bail!(
            "--data-dir {} is a file, not a directory; pass a directory (it is created if missing)",
            data_dir.display()
        );
    }
    let disk = Arc::new(
        RealDisk::new(&data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?,
    );
    let lock = lock_data_dir(&data_dir)?;
    let mut node_config = NodeConfig::new(id, peers, "raft");
    if let Some(max) = args.max_raft_state.or(node.max_raft_state) {
        node_config.max_raft_state = max;
    }
    Ok(PreparedNode {
        id,
        listen,
        data_dir,
        disk,
        node_config,
        _lock: lock,
    })
}

async fn serve(args: ServeArgs, config: &Config) -> anyhow::Result<()> {
    let prepared = prepare_node(&args, config)?;
    let id = prepared.id;
    let server = KvServer::start(prepared.node_config.clone(), prepared.disk.clone())
        .map_err(|e| anyhow::anyhow!("node {id} cannot start: {e}"))?;
    let (addr, task) = serve_node!(server, prepared.listen)?;
    tracing::info!(
        "node {id} serving on {addr}, data in {}",
        prepared.data_dir.display()
    );
    let outcome = run_until_stopped(server.node(), &format!("node {id}")).await;
    tracing::info!("node {id} stopping");
    server.node().shutdown().await;
    task.abort();
    outcome
}

/// The address to listen on for a URL like `http://127.0.0.1:7701`: its
/// host and port, exactly (see [`listen_address`]).
pub(crate) fn listen_of(url: &str) -> anyhow::Result<SocketAddr> {
    let authority = url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    if authority
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        bail!("{url} has no port; write it as http://HOST:PORT");
    }
    listen_address(authority)
}

/// The socket address for `HOST:PORT`: an IP address as written, or a host
/// name's first address (IPv4 first), so that `localhost:7701` listens on
/// loopback only, as the name says, and `0.0.0.0:7701` on every interface.
fn listen_address(text: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs as _;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {text}"))?
        .collect();
    addrs
        .iter()
        .find(|addr| addr.is_ipv4())
        .or(addrs.first())
        .copied()
        .with_context(|| format!("{text} resolves to no address"))
}

/// Holds an exclusive lock (flock) on the data directory itself for the
/// life of the process, so that two nodes never share one log. The lock is
/// on the directory, not on a file in it: removing a file cannot release it,
/// and the kernel drops it when the process dies, however it dies.
pub(crate) fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let file = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => bail!(
            "another cairn node is using {}; stop it or pick another --data-dir",
            dir.display()
        ),
    }
}

/// Serves until Ctrl-C or SIGTERM (`Ok`), or until the node stops on its
/// own, e.g. on a disk error (`Err` with the reason: the process then exits
/// with a non-zero status instead of staying up as a node that answers
/// nothing).
pub(crate) async fn run_until_stopped<S: cairn_rsm::StateMachine>(
    node: &cairn_rsm::Node<S>,
    what: &str,
) -> anyhow::Result<()> {
    tokio::select! {
        () = wait_for_stop_signal() => Ok(()),
        reason = node.stopped() => Err(anyhow::anyhow!(
            "{what} stopped: {reason}. Everything it acknowledged is on its disk; fix the cause \
             (free disk space, check the disk and its permissions) and start it again"
        )),
    }
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn wait_for_stop_signal() {
    #[cfg(all(unix, not(madsim)))]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(any(not(unix), madsim))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::{base64, listen_address, listen_of, parse_endpoint};

    #[test]
    fn base64_follows_the_rfc_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    /// Issue 19: `localhost` in a node's URL listened on 0.0.0.0, every
    /// interface, although the help said the URL's host.
    #[test]
    fn a_node_listens_on_exactly_the_host_it_is_given() {
        assert_eq!(
            listen_of("http://localhost:7701").unwrap(),
            "127.0.0.1:7701".parse().unwrap()
        );
        assert_eq!(
            listen_of("http://10.1.2.3:7701/").unwrap(),
            "10.1.2.3:7701".parse().unwrap()
        );
        assert_eq!(
            listen_address("0.0.0.0:7701").unwrap(),
            "0.0.0.0:7701".parse().unwrap()
        );
        assert_eq!(
            listen_address("[::1]:7701").unwrap(),
            "[::1]:7701".parse().unwrap()
        );
        assert!(listen_of("http://localhost").is_err());
        let error = listen_address("no-such-host.invalid:7701").unwrap_err();
        assert!(format!("{error:#}").contains("cannot resolve"), "{error:#}");
    }

    #[test]
    fn endpoints_are_checked_when_the_command_line_is_read() {
        assert!(parse_endpoint("http://127.0.0.1:7701").is_ok());
        assert!(parse_endpoint("127.0.0.1:7701").is_ok());
        assert!(parse_endpoint("localhost:7701/").is_ok());
        for bad in [
            "nonsense",
            "127.0.0.1:99999",
            "ftp://127.0.0.1:7701",
            ":7701",
            "host:0",
        ] {
            let error = parse_endpoint(bad).unwrap_err();
            assert!(!error.is_empty(), "{bad}");
        }
    }
}
