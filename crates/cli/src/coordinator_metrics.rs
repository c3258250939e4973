//! A MapReduce coordinator's metrics (`cairn mr coordinator
//! --metrics-listen`): the job's progress as Prometheus gauges, rendered at
//! scrape time from the coordinator's status, the same numbers `cairn mr
//! status` shows. Nothing is counted on the coordinator's own path; the
//! HTTP side is `metrics_http`'s.

use std::fmt::Write as _;
use std::net::SocketAddr;

use cairn_mapreduce::CoordinatorCore;
use cairn_rpc::mapreduce::StatusReply;

use crate::metrics_http::MetricsListener;

/// Binds `--metrics-listen` before the coordinator opens anything.
pub(crate) async fn bind(listen: Option<SocketAddr>) -> anyhow::Result<Option<MetricsListener>> {
    match listen {
        Some(addr) => Ok(Some(MetricsListener::bind(addr).await?)),
        None => Ok(None),
    }
}

/// Serves `core`'s metrics on `listener`, if there is one, and says where.
pub(crate) fn serve(
    listener: Option<MetricsListener>,
    core: &CoordinatorCore,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(listener) = listener else {
        return Ok(None);
    };
    eprintln!("metrics at http://{}/metrics", listener.local_addr()?);
    let core = core.clone();
    Ok(Some(listener.serve(move || {
        let status = core.status();
        async move { render(&status) }
    })))
}

/// The job's progress in the Prometheus text format.
pub(crate) fn render(status: &StatusReply) -> String {
    let mut text = String::new();
    // Each field of the status, by its own name, with its help text.
    macro_rules! gauges {
        ($($field:ident: $help:literal),* $(,)?) => {
            [$((stringify!($field), $help, u64::from(status.$field))),*]
        };
    }
    let gauges = gauges![
        maps_total: "Map tasks in the job.",
        maps_done: "Map tasks done.",
        maps_running: "Map tasks running.",
        reduces_total: "Reduce tasks in the job.",
        reduces_done: "Reduce tasks done.",
        reduces_running: "Reduce tasks running.",
        input_bytes_total: "Input bytes of the job.",
        input_bytes_done: "Input bytes mapped.",
        workers_alive: "Workers heartbeating.",
        workers_lost: "Workers given up as lost.",
        task_failures: "Task attempts that failed.",
        attempts_lost: "Attempts lost with a silent worker.",
        done: "1 once the job is over.",
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            text,
            "# HELP cairn_mr_{name} {help}\n# TYPE cairn_mr_{name} gauge\ncairn_mr_{name} {value}"
        );
    }
    let _ = writeln!(
        text,
        "# HELP cairn_mr_counter The job's counters, by name.\n# TYPE cairn_mr_counter gauge"
    );
    for counter in &status.counters {
        let name = counter.name.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(
            text,
            "cairn_mr_counter{{name=\"{name}\"}} {}",
            counter.value
        );
    }
    text
}
