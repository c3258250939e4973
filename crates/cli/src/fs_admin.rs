//! `cairn fs df` (every chunkserver's space), the size column of `ls -l`
//! and `stat`, the chunkserver's free-space probe, and the checks that turn
//! bad command-line input into usage errors (exit status 2) before the
//! store is touched.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use cairn_fs::{FsPath, FsSettings};
use cairn_rpc::fs::{ServerUsage, UsageReply, UsageRequest};
use clap::builder::TypedValueParser;

use crate::progress::{human_bytes, print_stdout};

/// An error in the command line itself: `main` exits with status 2.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(message: String) -> anyhow::Error {
    UsageError(message).into()
}

/// Parses a store path argument, so that an empty, relative, `..`,
/// over-long or non-UTF-8 one is a usage error naming the problem.
#[derive(Clone, Debug)]
pub(crate) struct StorePath;

impl TypedValueParser for StorePath {
    type Value = String;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        let name = arg.map_or_else(|| "PATH".to_string(), |a| a.get_id().to_string());
        let parsed = match value.to_str() {
            Some(text) => FsPath::parse(text),
            None => FsPath::from_bytes(value.as_encoded_bytes()),
        };
        match parsed {
            Ok(path) => Ok(path.as_str().to_string()),
            Err(error) => {
                let mut shown = value.to_string_lossy().to_string();
                if shown.len() > 60 {
                    let cut = (0..=60)
                        .rev()
                        .find(|&i| shown.is_char_boundary(i))
                        .unwrap_or(0);
                    shown = format!("{}...", &shown[..cut]);
                }
                Err(clap::Error::raw(
                    clap::error::ErrorKind::InvalidValue,
                    format!(
                        "invalid store path {shown:?} for <{}>: {error}\n",
                        name.to_uppercase()
                    ),
                ))
            }
        }
    }
}

/// Parses a byte count: a number with an optional K, M, G or T suffix
/// (powers of 1024).
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((at, unit)) if unit.is_ascii_alphabetic() => {
            let shift = match unit.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{text:?}: the unit is K, M, G or T (e.g. 500G)")),
            };
            (&text[..at], shift)
        }
        _ => (text, 0),
    };
    let number: u64 = digits.parse().map_err(|_| {
        format!("{text:?} is not a size; give bytes, or a number and K, M, G or T (e.g. 500G)")
    })?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large; give at most 16383T"))
}

/// The free bytes of the file system `dir` is on, for an unprivileged
/// user (statvfs's available blocks).
pub(crate) fn free_space(dir: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Checks `put`'s local input before the store is touched.
pub(crate) fn check_put_source(local: &Path) -> anyhow::Result<()> {
    if local.as_os_str() == "-" {
        return Ok(());
    }
    match std::fs::metadata(local) {
        Ok(meta) if meta.is_dir() => Err(usage(format!(
            "{} is a directory; put copies one file (give a file, or `-` for standard input)",
            local.display()
        ))),
        Ok(_) => Ok(()),
        Err(error) => Err(usage(format!(
            "cannot open {} ({error}); give an existing local file, or `-` for standard input",
            local.display()
        ))),
    }
}

/// Checks `get`'s local output before the store is read.
pub(crate) fn check_get_target(local: &Path) -> anyhow::Result<()> {
    if local.as_os_str() == "-" {
        return Ok(());
    }
    if local.is_dir() {
        return Err(usage(format!(
            "{} is a directory; give the file to write (e.g. {}/NAME), or `-` for standard output",
            local.display(),
            local.display()
        )));
    }
    let parent = match local.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(usage(format!(
            "cannot write {}: the directory {} does not exist; create it or give another output",
            local.display(),
            parent.display()
        )));
    }
    // Opening without truncating shows whether we may write there, and
    // leaves an existing file as it is until the store answers.
    let existed = local.exists();
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(local);
    match opened {
        Ok(_) => {
            if !existed {
                let _ = std::fs::remove_file(local);
            }
            Ok(())
        }
        Err(error) => Err(usage(format!(
            "cannot write {} ({error}); give an output you may write, or `-` for standard output",
            local.display()
        ))),
    }
}

/// Refuses `rm /` before the store is asked.
pub(crate) fn check_rm(path: &str) -> anyhow::Result<()> {
    if path == "/" {
        bail!(usage(
            "the root directory cannot be deleted; remove what is in it (cairn fs rm -r /DIR)"
                .to_string()
        ));
    }
    Ok(())
}

/// Refuses `mv A A/...` before the store is asked (the store refuses it
/// too).
pub(crate) fn check_mv(from: &str, to: &str) -> anyhow::Result<()> {
    if to == from || to.starts_with(&format!("{}/", from.trim_end_matches('/'))) {
        bail!(usage(format!(
            "cannot move or copy {from} into itself ({to}); pick a destination outside it"
        )));
    }
    Ok(())
}

/// What `df --json` and `report --json` both show of a chunkserver.
pub(crate) fn server_json(s: &ServerUsage) -> serde_json::Value {
    serde_json::json!({"url": s.url, "capacity_bytes": s.capacity_bytes,
    "used_bytes": s.used_bytes, "free_bytes": s.free_bytes, "chunks": s.chunks,
    "live": s.live, "full": s.full, "disk": s.disk,
    "service": crate::fs_balance::service_json(s)})
}

/// The rows of `df` and its totals.
pub(crate) fn render_df(reply: &UsageReply, settings: &FsSettings, json: bool) -> String {
    let live: Vec<&ServerUsage> = reply.servers.iter().filter(|s| s.live).collect();
    let total = |f: fn(&ServerUsage) -> u64| live.iter().map(|s| f(s)).sum::<u64>();
    let (capacity, used, free, chunks) = (
        total(|s| s.capacity_bytes),
        total(|s| s.used_bytes),
        total(|s| s.free_bytes),
        total(|s| s.chunks),
    );
    if json {
        let servers: Vec<serde_json::Value> = reply
            .servers
            .iter()
            .map(|s| {
                let mut server = server_json(s);
                server["last_seen_ms"] = s.last_seen_ms.into();
                server
            })
            .collect();
        return format!(
            "{}\n",
            serde_json::json!({"servers": servers, "min_free_bytes": reply.min_free_bytes,
            "replication": settings.replication,
            "total": {"capacity_bytes": capacity, "used_bytes": used, "free_bytes": free,
            "chunks": chunks, "live": live.len(), "servers": reply.servers.len()}})
        );
    }
    let mut out = format!(
        "{:<28} {:>10} {:>10} {:>10} {:>7}  {:<6} disk\n",
        "chunkserver", "capacity", "used", "free", "chunks", "state"
    );
    for s in &reply.servers {
        let state = match (s.live, s.full) {
            (false, _) => format!("dead ({}s)", s.last_seen_ms / 1000),
            _ if s.decommissioning => crate::fs_balance::service_state(s),
            (true, true) => "full".to_string(),
            (true, false) => "live".to_string(),
        };
        out.push_str(&format!(
            "{:<28} {:>10} {:>10} {:>10} {:>7}  {:<6} {}\n",
            s.url,
            human_bytes(s.capacity_bytes),
            human_bytes(s.used_bytes),
            human_bytes(s.free_bytes),
            s.chunks,
            state,
            s.disk
        ));
    }
    out.push_str(&format!(
        "{:<28} {:>10} {:>10} {:>10} {:>7}  {} of {} live\n",
        "total (live)",
        human_bytes(capacity),
        human_bytes(used),
        human_bytes(free),
        chunks,
        live.len(),
        reply.servers.len()
    ));
    out.push_str(&format!(
        "(as of each chunkserver's last heartbeat; used counts every replica, {}x per chunk; below {} free a chunkserver takes no new chunk)\n",
        settings.replication,
        human_bytes(reply.min_free_bytes)
    ));
    out
}

/// Asks the masters for the chunkservers' reports: the master that heard
/// from the most live chunkservers wins (every master hears every
/// heartbeat). What `df` and `report` show.
pub(crate) async fn fetch_usage(masters: &[String]) -> anyhow::Result<UsageReply> {
    use cairn_rpc::fs::master_client::MasterClient as Stub;
    let options = cairn_rpc::ClientOptions {
        connect_timeout: Duration::from_secs(1),
        call_timeout: Duration::from_secs(2),
    };
    let mut errors = Vec::new();
    let mut best: Option<UsageReply> = None;
    for endpoint in masters {
        let server = cairn_rpc::RpcClient::new(endpoint.clone(), options.clone())?;
        match server
            .call(UsageRequest {}, |c, r| async move {
                Stub::new(c).usage(r).await
            })
            .await
        {
            Ok(reply) => {
                let live = |r: &UsageReply| r.servers.iter().filter(|s| s.live).count();
                if best.as_ref().is_none_or(|b| live(&reply) > live(b)) {
                    best = Some(reply);
                }
            }
            Err(error) => errors.push(format!("{endpoint}: {error}")),
        }
    }
    let Some(reply) = best else {
        bail!(
            "no master answered ({}); is the store running? (`cairn cluster --fs` starts one)",
            errors.join("; ")
        );
    };
    Ok(reply)
}

/// `cairn fs df`.
pub(crate) async fn df(masters: &[String], json: bool) -> anyhow::Result<()> {
    let reply = fetch_usage(masters).await?;
    print_stdout(&render_df(&reply, &FsSettings::default(), json));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("2K"), Ok(2048));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert!(parse_bytes("1X").is_err());
        assert!(parse_bytes("x").is_err());
        assert!(parse_bytes("99999999T").is_err());
    }

    #[test]
    fn moves_into_themselves_and_the_root_are_refused() {
        assert!(check_mv("/a", "/a/b").is_err());
        assert!(check_mv("/a", "/a").is_err());
        assert!(check_mv("/a", "/ab").is_ok());
        assert!(check_rm("/").is_err());
        assert!(check_rm("/a").is_ok());
    }
}
