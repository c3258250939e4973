//! A MapReduce job across machines: `cairn mr coordinator` (opens the
//! job, serves it and reports its progress until the workers are
//! released), `cairn mr worker` (runs tasks until the job ends, or job
//! after job with --stay) and `cairn mr status` (asks a coordinator).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use cairn_mapreduce::{CoordinatorCore, JobConfig, WorkerConfig, store_path};
use cairn_storage::RealDisk;

use super::flags::coordinator_url;
use super::{CoordinatorArgs, StatusArgs, WorkerArgs};
use crate::config::Config;

/// Opens the coordinator and serves it; returns the core and the address
/// it is bound to.
pub(super) async fn start_coordinator(
    job: &JobConfig,
    fs_masters: &[String],
    data_dir: PathBuf,
    listen: std::net::SocketAddr,
) -> anyhow::Result<(CoordinatorCore, std::net::SocketAddr)> {
    let disk = RealDisk::new(".")?;
    let core = if uses_store(job) {
        CoordinatorCore::open_with_store(job, fs_masters, &disk, &disk, data_dir)
            .await
            .with_context(|| {
                format!(
                    "planning the job over the file store at {}",
                    fs_masters.join(",")
                )
            })?
    } else {
        CoordinatorCore::open(job, &disk, &disk, data_dir)?
    };
    let router = core.router();
    let (addr, _server) = cairn_mapreduce::serve(router, listen)
        .await
        .with_context(|| {
            format!("listening on {listen} (is the port taken? try another --listen)")
        })?;
    Ok((core, addr))
}

/// Whether a job reads or writes the file store.
fn uses_store(job: &JobConfig) -> bool {
    job.inputs
        .iter()
        .chain(std::iter::once(&job.output_dir))
        .any(|name| store_path(name).is_some())
}

/// Creates a local output directory (one in the store is created by the
/// coordinator).
pub(super) fn create_output_dir(output: &Path) -> anyhow::Result<()> {
    if store_path(&output.display().to_string()).is_some() {
        return Ok(());
    }
    std::fs::create_dir_all(output)
        .with_context(|| format!("creating the output directory {}", output.display()))
}

pub(super) async fn coordinator(args: CoordinatorArgs, config: &Config) -> anyhow::Result<()> {
    create_output_dir(&args.output)?;
    let job = args.job.config(&args.output)?;
    let data_dir = config.data_dir.0.join("mr-coordinator");
    let metrics = crate::coordinator_metrics::bind(args.metrics_listen).await?;
    let (core, bound) =
        start_coordinator(&job, &args.job.fs_masters, data_dir, args.listen).await?;
    let metrics = crate::coordinator_metrics::serve(metrics, &core)?;
    let url = coordinator_url(bound, args.advertise.as_deref())?;
    crate::progress::print_stdout(&format!("coordinator listening on {url}\n"));
    if bound.ip().is_unspecified() && args.advertise.is_none() {
        eprintln!(
            "listening on every interface ({bound}); workers are told to use {url}, this \
             machine's hostname (pass --advertise URL to name another)"
        );
    }
    let status = core.status();
    eprintln!(
        "job {}: {} map tasks, {} reduce tasks; start workers with: cairn mr worker --coordinator {url}",
        status.job_id, status.maps_total, status.reduces_total
    );
    let reporter = {
        let core = core.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let s = core.status();
                tracing::info!(
                    "maps {}/{} reduces {}/{} workers {} ({} lost)",
                    s.maps_done,
                    s.maps_total,
                    s.reduces_done,
                    s.reduces_total,
                    s.workers_alive,
                    s.workers_lost
                );
            }
        })
    };
    core.run_until_released(args.linger).await?;
    reporter.abort();
    metrics.inspect(|task| task.abort());
    let status = core.status();
    crate::progress::print_report(&status, None);
    if !status.error.is_empty() {
        bail!("the job failed: {}", status.error);
    }
    Ok(())
}

pub(super) async fn worker(args: WorkerArgs, config: &Config) -> anyhow::Result<()> {
    let default_work_dir = args.work_dir.is_none();
    let work_dir = args.work_dir.clone().unwrap_or_else(|| {
        config
            .data_dir
            .0
            .join(format!("mr-worker-{}", std::process::id()))
    });
    let disk: Arc<dyn cairn_storage::Disk> = Arc::new(RealDisk::new(".")?);
    let worker_config = WorkerConfig {
        coordinator: args.coordinator,
        listen: args.listen,
        advertise: args.advertise,
        scratch: disk.clone(),
        scratch_dir: work_dir.clone(),
        shared: disk,
        coordinator_timeout: args.coordinator_timeout,
        app: None,
        host: args.host,
    };
    let result = loop {
        let result = cairn_mapreduce::run_worker(worker_config.clone()).await;
        if !args.stay {
            break result;
        }
        match result {
            Ok(summary) => report_worker(&summary),
            Err(error) => tracing::info!("{error}"),
        }
        tracing::info!("staying for the next job (--stay)");
        // The coordinator of the job just done may linger a moment.
        tokio::time::sleep(STAY_PAUSE).await;
    };
    if default_work_dir {
        // The worker removes its own files; the per-process directory
        // around them goes too (only if empty).
        let _ = std::fs::remove_dir(&work_dir);
    }
    report_worker(&result?);
    Ok(())
}

/// How long a `--stay` worker pauses between jobs.
const STAY_PAUSE: Duration = Duration::from_secs(1);

fn report_worker(summary: &cairn_mapreduce::WorkerSummary) {
    tracing::info!(
        "worker done: {} maps, {} reduces, {} failed attempts",
        summary.maps,
        summary.reduces,
        summary.failures
    );
}

pub(super) async fn status(args: StatusArgs) -> anyhow::Result<()> {
    use cairn_rpc::mapreduce::coordinator_client::CoordinatorClient;
    let client = cairn_rpc::RpcClient::new(args.coordinator.clone(), Default::default())?;
    let reply = client
        .call(
            cairn_rpc::mapreduce::StatusRequest {},
            |channel, request| async move { CoordinatorClient::new(channel).status(request).await },
        )
        .await
        .map_err(|error| match &error {
            cairn_rpc::RpcError::Rejected { status, .. }
                if status.code() == cairn_rpc::tonic::Code::Unimplemented =>
            {
                anyhow::anyhow!(
                    "{} answers, but it is not a MapReduce coordinator (a key/value node or a \
                     worker?); pass the address `cairn mr coordinator` printed",
                    args.coordinator
                )
            }
            _ => anyhow::Error::new(error),
        })?;
    if args.json {
        crate::progress::print_stdout(&format!("{}\n", crate::progress::status_json(&reply)));
    } else {
        crate::progress::print_report(&reply, None);
    }
    Ok(())
}
