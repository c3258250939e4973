//! `cairn mr run`: a whole job on this machine — a coordinator in this
//! process and worker processes of this executable, each restarted (up to
//! [`MAX_RESTARTS_PER_WORKER`] times) if it dies before the job ends, with
//! the job's progress shown until it is done.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::RunArgs;
use super::distributed::{create_output_dir, start_coordinator};
use crate::config::Config;
use crate::progress::JobProgress;

/// A worker process slot of `mr run`: restarted if its process dies.
struct Slot {
    index: u32,
    child: Option<Child>,
    restarts: u32,
    log: PathBuf,
}

const MAX_RESTARTS_PER_WORKER: u32 = 3;

fn spawn_worker(url: &str, job_dir: &Path, slot: &Slot) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("finding the cairn executable")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&slot.log)?;
    Command::new(exe)
        .args(["mr", "worker", "--coordinator", url, "--work-dir"])
        .arg(job_dir.join(format!("worker-{}", slot.index)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting a worker process")
}

pub(super) async fn run_job(args: RunArgs, config: &Config) -> anyhow::Result<()> {
    create_output_dir(&args.output)?;
    let job = args.job.config(&args.output)?;
    let job_dir = config
        .data_dir
        .0
        .join("mr")
        .join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&job_dir).with_context(|| format!("creating {}", job_dir.display()))?;
    let listen = "127.0.0.1:0".parse().expect("a valid address");
    let (core, bound) = start_coordinator(
        &job,
        &args.job.fs_masters,
        job_dir.join("coordinator"),
        listen,
    )
    .await?;
    let url = format!("http://{bound}");
    let released = {
        let core = core.clone();
        tokio::spawn(async move { core.run_until_released(Duration::from_secs(10)).await })
    };
    let mut slots: Vec<Slot> = (0..args.workers)
        .map(|index| Slot {
            index,
            child: None,
            restarts: 0,
            log: job_dir.join(format!("worker-{index}.log")),
        })
        .collect();
    for slot in &mut slots {
        slot.child = Some(spawn_worker(&url, &job_dir, slot)?);
    }
    let started = Instant::now();
    let mut progress = JobProgress::new(args.quiet);
    let status = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let status = core.status();
        progress.update(&status);
        if status.done || !status.error.is_empty() {
            break status;
        }
        if let Err(error) = supervise(&mut slots, &url, &job_dir, &mut progress) {
            progress.finish();
            kill_all(&mut slots);
            return Err(error);
        }
    };
    progress.finish();
    // Workers exit when told; the coordinator lingers until they are.
    let _ = tokio::time::timeout(Duration::from_secs(15), released).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    for slot in &mut slots {
        if let Some(child) = slot.child.as_mut() {
            while child.try_wait()?.is_none() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    kill_all(&mut slots);
    if !status.error.is_empty() {
        bail!(
            "the job failed: {}\nworker logs are in {}",
            status.error,
            job_dir.display()
        );
    }
    if !args.quiet {
        crate::progress::print_report(&status, Some(started.elapsed()));
    }
    std::fs::remove_dir_all(&job_dir).ok();
    Ok(())
}

/// Restarts worker processes that died before the job ended.
fn supervise(
    slots: &mut [Slot],
    url: &str,
    job_dir: &Path,
    progress: &mut JobProgress,
) -> anyhow::Result<()> {
    for slot in slots.iter_mut() {
        let Some(child) = slot.child.as_mut() else {
            continue;
        };
        let Some(exit) = child.try_wait()? else {
            continue;
        };
        if slot.restarts >= MAX_RESTARTS_PER_WORKER {
            bail!(
                "worker {} keeps dying ({exit}); see its log: {}",
                slot.index,
                slot.log.display()
            );
        }
        slot.restarts += 1;
        progress.warn(&format!(
            "worker {} exited ({exit}); restarting it (log: {})",
            slot.index,
            slot.log.display()
        ));
        slot.child = Some(spawn_worker(url, job_dir, slot)?);
    }
    Ok(())
}

fn kill_all(slots: &mut [Slot]) {
    for slot in slots {
        if let Some(mut child) = slot.child.take()
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
