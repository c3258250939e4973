//! `cairn fs undelete` and `cairn fs ls --trash`: deletion with retention
//! (GFS §4.4) from the command line. `rm` keeps what it deletes in the
//! store's trash for the retention (3 days by default); `ls --trash` shows
//! what can be restored and until when, and `undelete PATH` puts the latest
//! deletion of PATH back where it was. `rm --skip-trash` deletes at once.

use cairn_rpc::fs::TrashEntry;

use crate::progress::print_stdout;

/// `undelete PATH`: restores the latest deletion of PATH.
pub(crate) async fn undelete(path: &str, masters: &crate::fs::MastersArgs) -> anyhow::Result<()> {
    let target = crate::fs::path(path)?;
    crate::fs::client(masters)?.undelete(&target).await?;
    if masters.json {
        let restored = serde_json::json!({"path": target.as_str(), "restored": true});
        print_stdout(&format!("{restored}\n"));
    } else {
        print_stdout(&format!("restored {target}\n"));
    }
    Ok(())
}

/// `ls --trash [PATH]`: the deletions of PATH and below that can be
/// restored, oldest first.
pub(crate) async fn list(path: &str, masters: &crate::fs::MastersArgs) -> anyhow::Result<()> {
    let within = crate::fs::path(path)?;
    let entries = crate::fs::client(masters)?.trash(&within).await?;
    if masters.json {
        let rows: Vec<_> = entries.iter().map(entry_json).collect();
        print_stdout(&format!("{}\n", serde_json::Value::Array(rows)));
        return Ok(());
    }
    let now = unix_ms_now();
    let mut out = format!(
        "{:<5} {:>6}  {:>12}  {:>16}  path\n",
        "kind", "files", "deleted", "restorable for"
    );
    for entry in &entries {
        out.push_str(&format!(
            "{:<5} {:>6}  {:>12}  {:>16}  {}{}\n",
            if entry.directory { "dir" } else { "file" },
            entry.files,
            format!("{} ago", span(now.saturating_sub(entry.deleted_at_ms))),
            span(entry.purge_at_ms.saturating_sub(now)),
            entry.path,
            if entry.directory { "/" } else { "" },
        ));
    }
    print_stdout(&out);
    Ok(())
}

fn entry_json(entry: &TrashEntry) -> serde_json::Value {
    serde_json::json!({
        "path": entry.path,
        "directory": entry.directory,
        "files": entry.files,
        "deleted_at_ms": entry.deleted_at_ms,
        "purge_at_ms": entry.purge_at_ms,
    })
}

/// The wall clock in ms since the Unix epoch.
fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// A span of time in its two largest units: `2d 23h`, `5m 10s`, `0s`.
fn span(ms: u64) -> String {
    let seconds = ms / 1000;
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let parts: Vec<String> = units
        .iter()
        .scan(seconds, |left, &(name, size)| {
            let count = *left / size;
            *left %= size;
            Some((count, name))
        })
        .skip_while(|&(count, _)| count == 0)
        .take(2)
        .map(|(count, name)| format!("{count}{name}"))
        .collect();
    if parts.is_empty() {
        "0s".to_string()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::span;

    #[test]
    fn spans_show_their_two_largest_units() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(59_999), "59s");
        assert_eq!(span(3 * 86_400_000 - 1), "2d 23h");
        assert_eq!(span(3_600_000 + 5_000), "1h 0m");
    }
}
