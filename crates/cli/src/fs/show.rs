//! What the store shows: `ls` (a directory, long or recursive), `stat`
//! (a file's chunks and where their replicas are) and `status` (every
//! master's role, term and indexes), as text or JSON.

use std::time::Duration;

use anyhow::bail;
use cairn_rpc::fs::EntryInfo;

use super::{LsArgs, MastersArgs, PathArgs, client, path};
use crate::progress::print_stdout;

fn describe(entry: &EntryInfo, long: bool) -> String {
    if !long {
        return format!("{}{}", entry.path, if entry.directory { "/" } else { "" });
    }
    if entry.directory {
        format!("dir   {:>12}  {:>6}  {}/", "-", "-", entry.path)
    } else {
        format!(
            "file  {:>12}  {:>6}  {}",
            entry.length,
            entry.chunks.len(),
            entry.path
        )
    }
}

pub(super) async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let client = client(&args.masters)?;
    let mut pending = vec![path(&args.path)?];
    let mut all = Vec::new();
    while let Some(dir) = pending.pop() {
        let entries = client.list(&dir).await?;
        for entry in entries.iter().rev() {
            if args.recursive && entry.directory && entry.path != dir.as_str() {
                pending.push(path(&entry.path)?);
            }
        }
        all.extend(entries);
    }
    if args.masters.json {
        let list: Vec<_> = all.iter().map(entry_json).collect();
        print_stdout(&format!("{}\n", serde_json::Value::Array(list)));
    } else {
        if args.long {
            print_stdout(&format!("kind  {:>12}  chunks  path\n", "bytes"));
        }
        let lines: Vec<String> = all.iter().map(|e| describe(e, args.long)).collect();
        if !lines.is_empty() {
            print_stdout(&format!("{}\n", lines.join("\n")));
        }
    }
    Ok(())
}

fn entry_json(entry: &EntryInfo) -> serde_json::Value {
    serde_json::json!({
        "path": entry.path,
        "directory": entry.directory,
        "bytes": entry.length,
        "chunks": entry.chunks.iter().map(|c| serde_json::json!({"handle": c.handle, "version": c.version})).collect::<Vec<_>>(),
    })
}

pub(super) async fn stat(args: PathArgs) -> anyhow::Result<()> {
    let target = path(&args.path)?;
    let client = client(&args.masters)?;
    let entry = client.stat(&target).await?;
    let mut chunks = Vec::new();
    for (index, chunk) in entry.chunks.iter().enumerate() {
        let location = client.locate(&target, index as u64, false).await?;
        chunks.push((chunk, location.replicas));
    }
    if args.masters.json {
        let mut value = entry_json(&entry);
        value["replicas"] = chunks.iter().map(|(_, r)| serde_json::json!(r)).collect();
        print_stdout(&format!("{value}\n"));
        return Ok(());
    }
    let mut out = format!(
        "{}  {}\n",
        entry.path,
        if entry.directory { "directory" } else { "file" }
    );
    if !entry.directory {
        out.push_str(&format!(
            "{} bytes ({}; as of the chunkservers' last heartbeats), {} chunks\n",
            entry.length,
            crate::progress::human_bytes(entry.length),
            chunks.len()
        ));
        for (index, (chunk, replicas)) in chunks.iter().enumerate() {
            out.push_str(&format!(
                "  chunk {index}: handle {} version {} replicas {}\n",
                chunk.handle,
                chunk.version,
                replicas.join(",")
            ));
        }
    }
    print_stdout(&out);
    Ok(())
}

pub(super) async fn status(args: MastersArgs) -> anyhow::Result<()> {
    use cairn_rpc::fs::master_client::MasterClient as Stub;
    use cairn_rpc::kv::StatusRequest;
    let options = cairn_rpc::ClientOptions {
        connect_timeout: Duration::from_secs(1),
        call_timeout: Duration::from_secs(2),
    };
    let mut out = format!(
        "{:<28} {:>4} {:<10} {:>6} {:>7} {:>9} {:>9}\n",
        "master", "id", "role", "term", "leader", "commit", "applied"
    );
    let mut answered = 0;
    let mut rows = Vec::new();
    for endpoint in &args.masters {
        let server = cairn_rpc::RpcClient::new(endpoint.clone(), options.clone())?;
        match server
            .call(StatusRequest {}, |c, r| async move {
                Stub::new(c).status(r).await
            })
            .await
        {
            Ok(s) => {
                answered += 1;
                out.push_str(&format!(
                    "{endpoint:<28} {:>4} {:<10} {:>6} {:>7} {:>9} {:>9}\n",
                    s.id, s.role, s.term, s.leader, s.commit, s.applied
                ));
                rows.push(
                    serde_json::json!({"endpoint": endpoint, "id": s.id, "role": s.role,
                    "term": s.term, "leader": s.leader, "commit": s.commit, "applied": s.applied}),
                );
            }
            Err(error) => {
                out.push_str(&format!("{endpoint:<28} unreachable: {error}\n"));
                rows.push(serde_json::json!({"endpoint": endpoint, "error": error.to_string()}));
            }
        }
    }
    if args.json {
        print_stdout(&format!("{}\n", serde_json::Value::Array(rows)));
    } else {
        if let Ok(usage) = crate::fs_admin::fetch_usage(&args.masters).await {
            for server in usage.servers.iter().filter(|s| s.decommissioning) {
                let state = crate::fs_balance::service_state(server);
                out.push_str(&format!("chunkserver {}: {state}\n", server.url));
            }
        }
        print_stdout(&out);
    }
    if answered == 0 {
        bail!("no master answered; is the store running? (`cairn cluster --fs` starts one)");
    }
    Ok(())
}
