//! `cairn kv`: run a key/value node (`serve`) and talk to a cluster
//! (`get`, `put`, `append`, `del`, `cas`, `status`).

use std::time::Duration;

use anyhow::{Context as _, bail};
use cairn_kv::{Client, ClientConfig};
use clap::{Args, Subcommand};

mod connect;
mod join;
mod serve;
mod snapshot;

use connect::connect;
pub(crate) use connect::wrong_service;
use serve::serve;
pub(crate) use serve::{
    KvServeArgs, ServeArgs, listen_of, open_data_dir, prepare_node, run_until_stopped,
    wait_for_stop_signal,
};

use crate::config::Config;
use crate::member::{self, Group, MemberAction, TransferArgs};
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
    Serve(KvServeArgs),
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
    /// The group's members: `member list`, `member add-learner URL`,
    /// `member promote ID`, `member remove ID`.
    ///
    /// Replacing a node: start the new one with `cairn kv serve --join
    /// URL,... --listen HOST:PORT --data-dir DIR`, promote it once it has
    /// caught up (`member promote ID`), then `member remove` the old one.
    #[command(subcommand)]
    Member(MemberAction<ClientArgs>),
    /// Hand leadership to voter ID (answered once it leads), e.g. before
    /// the leader's machine goes down for maintenance.
    TransferLeader(TransferArgs<ClientArgs>),
    /// Back up the cluster's data to a file, or start a new cluster from
    /// one (also the recovery when the cluster lost its quorum for good).
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
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
        KvCommand::Member(action) => {
            let group = group(action.target());
            runtime.block_on(member::run(action, &group))
        }
        KvCommand::TransferLeader(args) => {
            runtime.block_on(member::transfer_leader(args.id, &group(&args.target)))
        }
        KvCommand::Snapshot(command) => runtime.block_on(snapshot::run(command, config)),
        command => runtime.block_on(request(command)),
    }
}

/// The group `--endpoints` names, for the membership commands.
fn group(args: &ClientArgs) -> Group {
    Group {
        endpoints: args.endpoints.clone(),
        timeout: Duration::from_secs(args.timeout),
        json: args.json,
        command: ("cairn kv", String::new()),
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

async fn request(command: KvCommand) -> anyhow::Result<()> {
    match command {
        KvCommand::Get(args) => get(args).await?,
        KvCommand::Put(args) => {
            let client = &args.key.client;
            let existed = connect(client)?
                .write(client, "put", &args.key.key()?, &args.value()?)
                .await?;
            report(args.key.client.json, "OK", true, existed);
        }
        KvCommand::Append(args) => {
            let client = &args.key.client;
            let existed = connect(client)?
                .write(client, "append", &args.key.key()?, &args.value()?)
                .await?;
            report(args.key.client.json, "OK", true, existed);
        }
        KvCommand::Del(args) => {
            let existed = connect(&args.client)?
                .write(&args.client, "del", &args.key()?, b"")
                .await?;
            report(args.client.json, "deleted", existed, existed);
            if !existed {
                if !args.client.json {
                    eprintln!("not found: {} (nothing was deleted)", args.key);
                }
                std::process::exit(EXIT_NO);
            }
        }
        KvCommand::Cas(args) => {
            let expected = if args.expect_missing {
                None
            } else {
                args.expect.as_deref().map(str::as_bytes)
            };
            let (key, value) = (args.key.as_bytes(), args.value.as_bytes());
            let outcome = connect(&args.client)?
                .run(
                    &args.client,
                    async |c: &mut Client| c.cas(key, expected, value).await,
                    async |_: &mut cairn_shardkv::Client| {
                        bail!("compare-and-swap is not available on a sharded cluster; use put")
                    },
                )
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
        KvCommand::Serve(_)
        | KvCommand::Status(_)
        | KvCommand::Member(_)
        | KvCommand::TransferLeader(_)
        | KvCommand::Snapshot(_) => unreachable!("dispatched in run()"),
    }
    Ok(())
}

/// `cairn kv get`: the value as text, exact bytes (--raw, --output) or
/// JSON (base64 for bytes that are not UTF-8).
async fn get(args: GetArgs) -> anyhow::Result<()> {
    let client = &args.key.client;
    let value = connect(client)?.get(client, &args.key.key()?).await?;
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

#[cfg(test)]
mod tests;
