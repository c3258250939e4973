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
    let gauges: [(&str, &str, u64); 13] = [
        (
            "maps_total",
            "Map tasks in the job.",
            status.maps_total.into(),
        ),
        ("maps_done", "Map tasks done.", status.maps_done.into()),
        (
            "maps_running",
            "Map tasks running.",
            status.maps_running.into(),
        ),
        (
            "reduces_total",
            "Reduce tasks in the job.",
            status.reduces_total.into(),
        ),
        (
            "reduces_done",
            "Reduce tasks done.",
            status.reduces_done.into(),
        ),
        (
            "reduces_running",
            "Reduce tasks running.",
            status.reduces_running.into(),
        ),
        (
            "input_bytes_total",
            "Input bytes of the job.",
            status.input_bytes_total,
        ),
        (
            "input_bytes_done",
            "Input bytes mapped.",
            status.input_bytes_done,
        ),
        (
            "workers_alive",
            "Workers heartbeating.",
            status.workers_alive.into(),
        ),
        (
            "workers_lost",
            "Workers given up as lost.",
            status.workers_lost.into(),
        ),
        (
            "task_failures",
            "Task attempts that failed.",
            status.task_failures.into(),
        ),
        (
            "attempts_lost",
            "Attempts lost with a silent worker.",
            status.attempts_lost.into(),
        ),
        ("done", "1 once the job is over.", u64::from(status.done)),
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
