//! The rows of `cairn bench fs` and how they are shown: a table (or one
//! JSON object) with each workload's rate, its ratio to the reference the
//! issue names, the target and whether it was met; the conditions of the
//! run; the GFS paper's figures for orientation.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::FsBenchArgs;
use crate::bench::Outcome;

/// What a workload is compared with: a name and its rate.
#[derive(Debug, Clone)]
pub(super) struct Reference {
    name: &'static str,
    value: f64,
}

impl Reference {
    pub(super) fn new(name: &'static str, value: f64) -> Self {
        Self { name, value }
    }
}

/// One workload's result.
#[derive(Debug)]
pub(super) struct Row {
    workload: &'static str,
    clients: usize,
    /// MB/s (10^6 bytes per second) or operations per second.
    pub(super) value: f64,
    unit: &'static str,
    /// The latency of one call (p50, p99), and what a call is.
    latency: Option<(Duration, Duration, &'static str)>,
    errors: u64,
    /// The reference and the target ratio.
    judged: Option<(Reference, f64)>,
}

impl Row {
    /// A ceiling: `bytes` in `elapsed` on the local disk, by one thread.
    pub(super) fn ceiling(workload: &'static str, bytes: u64, elapsed: Duration) -> Self {
        Self {
            workload,
            clients: 1,
            value: bytes as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6,
            unit: "MB/s",
            latency: None,
            errors: 0,
            judged: None,
        }
    }

    /// `bytes` moved by `clients` in the outcome's window, judged against
    /// `target` times the reference.
    pub(super) fn throughput(
        workload: &'static str,
        clients: usize,
        bytes: u64,
        outcome: Outcome,
        reference: &Reference,
        target: f64,
    ) -> Self {
        let seconds = outcome.elapsed().as_secs_f64();
        Self {
            workload,
            clients,
            value: bytes as f64 / seconds.max(1e-9) / 1e6,
            unit: "MB/s",
            latency: Some((outcome.percentile(0.5), outcome.percentile(0.99), "call")),
            errors: outcome.errors,
            judged: Some((reference.clone(), target)),
        }
    }

    /// Operations per second, judged against a reference if given.
    pub(super) fn operations(
        workload: &'static str,
        clients: usize,
        outcome: Outcome,
        judged: Option<(&Reference, f64)>,
    ) -> Self {
        Self {
            workload,
            clients,
            value: outcome.rate(),
            unit: "ops/s",
            latency: Some((outcome.percentile(0.5), outcome.percentile(0.99), "op")),
            errors: outcome.errors,
            judged: judged.map(|(reference, target)| (reference.clone(), target)),
        }
    }

    /// `write 1 client: 24.7 MB/s (0.51 of ceiling write / 3)`.
    pub(super) fn summary(&self) -> String {
        let ratio = match (&self.judged, self.ratio()) {
            (Some((reference, _)), Some(ratio)) => format!(" ({ratio:.2} of {})", reference.name),
            _ => String::new(),
        };
        format!("{}: {:.1} {}{ratio}", self.workload, self.value, self.unit)
    }

    fn ratio(&self) -> Option<f64> {
        self.judged
            .as_ref()
            .map(|(reference, _)| self.value / reference.value.max(1e-9))
    }

    fn passed(&self) -> Option<bool> {
        let target = self.judged.as_ref()?.1;
        Some(self.ratio()? >= target)
    }

    fn to_json(&self) -> serde_json::Value {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        json!({
            "workload": self.workload,
            "clients": self.clients,
            "value": self.value,
            "unit": self.unit,
            "p50_ms": self.latency.map(|l| ms(l.0)),
            "p99_ms": self.latency.map(|l| ms(l.1)),
            "errors": self.errors,
            "reference": self.judged.as_ref().map(|(r, _)| r.name),
            "reference_value": self.judged.as_ref().map(|(r, _)| r.value),
            "ratio": self.ratio(),
            "target": self.judged.as_ref().map(|(_, t)| *t),
            "pass": self.passed(),
        })
    }
}

/// The GFS paper's micro-benchmarks (§6.1: 16 chunkservers, up to 16
/// clients, 100 Mbps NICs, one 1 Gbps link between the switches) and its
/// clusters' master load (§6.2, Table 3): (workload, clients, figure, unit).
const GFS_FIGURES: [(&str, usize, f64, &str); 7] = [
    ("read", 1, 10.0, "MB/s"),
    ("read", 16, 94.0, "MB/s"),
    ("write", 1, 6.3, "MB/s"),
    ("write", 16, 35.0, "MB/s"),
    ("record append", 1, 6.0, "MB/s"),
    ("record append", 16, 4.8, "MB/s"),
    ("master ops (clusters A, B)", 0, 500.0, "ops/s"),
];

const GFS_NOTES: &str = "GFS paper, for orientation (different hardware: 16 chunkservers, 100 Mbps NICs):
  read           1 client 10 MB/s, 16 clients 94 MB/s in all (limit 125: the switches' 1 Gbps link)
  write          1 client 6.3 MB/s, 16 clients 35 MB/s in all (limit 67: 3 replicas)
  record append  1 client 6.0 MB/s, 16 clients to one file 4.8 MB/s (limit: the last chunk's chunkservers)
  master         200-500 operations/s in production (clusters A and B, Table 3)";

/// The run's conditions: what was measured where, by which build, on how
/// loaded a machine.
fn conditions(args: &FsBenchArgs, dir: &Path) -> serde_json::Value {
    let load = std::fs::read_to_string("/proc/loadavg").ok().map(|text| {
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    });
    json!({
        "size_bytes": args.size,
        "seconds": args.seconds,
        "dir": dir.display().to_string(),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "load_average": load,
        "store": "3 masters, 3 chunkservers, replication 3, fsync on, on this machine",
    })
}

pub(super) fn print(rows: &[Row], args: &FsBenchArgs, dir: &Path) {
    let conditions = conditions(args, dir);
    if args.json {
        let gfs: Vec<_> = GFS_FIGURES
            .iter()
            .map(|(workload, clients, value, unit)| {
                json!({"workload": workload, "clients": clients, "value": value, "unit": unit})
            })
            .collect();
        let rows: Vec<_> = rows.iter().map(Row::to_json).collect();
        let all = json!({"conditions": conditions, "rows": rows, "gfs_paper": gfs});
        crate::progress::print_stdout(&format!("{all}\n"));
        return;
    }
    crate::progress::print_stdout(&table(rows, args, &conditions));
}

fn table(rows: &[Row], args: &FsBenchArgs, conditions: &serde_json::Value) -> String {
    let mut out = format!(
        "{:<26} {:>7} {:>16} {:>9} {:>9}  {:<32} {:>6} {:>7}  {}\n",
        "workload", "clients", "rate", "p50", "p99", "reference", "ratio", "target", "result"
    );
    for row in rows {
        let (p50, p99) = row
            .latency
            .map_or(("-".into(), "-".into()), |(p50, p99, _)| {
                let ms = |d: Duration| format!("{:.1}ms", d.as_secs_f64() * 1e3);
                (ms(p50), ms(p99))
            });
        let (reference, ratio, target, result) = match (&row.judged, row.ratio(), row.passed()) {
            (Some((reference, target)), Some(ratio), Some(passed)) => (
                format!("{} = {:.1} {}", reference.name, reference.value, row.unit),
                format!("{ratio:.2}"),
                format!(">= {target:.2}"),
                if passed { "pass" } else { "MISS" },
            ),
            _ => ("-".into(), "-".into(), "-".into(), ""),
        };
        out.push_str(&format!(
            "{:<26} {:>7} {:>10.1} {:<5} {:>9} {:>9}  {:<32} {:>6} {:>7}  {result}{}\n",
            row.workload,
            row.clients,
            row.value,
            row.unit,
            p50,
            p99,
            reference,
            ratio,
            target,
            if row.errors > 0 {
                format!(" ({} errors)", row.errors)
            } else {
                String::new()
            }
        ));
    }
    let size = crate::progress::human_bytes(args.size);
    out.push_str(&format!(
        "\nMB/s = 10^6 bytes/s. p50/p99: one call ({} MiB read or write, one 64 KiB record, one create or put).
size {size} per workload; write 4 clients = 4 files of {} each, written at once; hot read 4 clients reads them back at once;
record append: 16 clients, 64 KiB records, one file; creates and kv puts: {} s after a 1 s warm-up.
{} build, {} cores, load average {} at the end; data in {} (removed).\n\n{GFS_NOTES}\n",
        super::CALL_BYTES >> 20,
        crate::progress::human_bytes(args.size / super::WRITE_CLIENTS as u64),
        args.seconds,
        conditions["build"].as_str().unwrap_or("?"),
        conditions["cores"],
        conditions["load_average"].as_str().unwrap_or("unknown"),
        conditions["dir"].as_str().unwrap_or("?"),
    ));
    out
}
