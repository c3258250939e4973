//! MapReduce under the simulator: a coordinator and workers as simulated
//! nodes, with workers killed and restarted, the coordinator restarted, and
//! an unreliable network; the output must always equal the sequential
//! run's. Run with `scripts/test` or `scripts/sim-sweep mapreduce N`.
#![cfg(madsim)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_mapreduce::{AppSpec, CoordinatorCore, JobConfig, SchedulerConfig, WorkerConfig};
use cairn_rpc::mapreduce::coordinator_client::CoordinatorClient;
use cairn_rpc::mapreduce::{
    GetTaskRequest, HeartbeatRequest, RegisterRequest, TaskKind, TaskProgress,
};
use cairn_rpc::{ClientOptions, RpcClient};
use cairn_storage::{Disk, MemDisk, OpenMode};
use cairn_testkit::{NodeContext, World, wait_until};
use rand::Rng;

const COORDINATOR_PORT: u16 = 7000;
const SHUFFLE_PORT: u16 = 7001;
const REDUCES: u32 = 5;

/// Input files of random words on the shared disk; returns their paths.
fn write_inputs(shared: &MemDisk) -> Vec<String> {
    let mut rng = madsim::rand::thread_rng();
    let vocabulary: Vec<String> = (0..300)
        .map(|_| {
            (0..rng.gen_range(1..9))
                .map(|_| rng.gen_range(b'a'..=b'z') as char)
                .collect()
        })
        .collect();
    shared.create_dir_all(Path::new("in")).unwrap();
    (0..6)
        .map(|file| {
            let mut text = String::new();
            for line in 0..rng.gen_range(50..400) {
                for _ in 0..rng.gen_range(0..12) {
                    text.push_str(&vocabulary[rng.gen_range(0..vocabulary.len())]);
                    text.push(if line % 7 == 0 { ',' } else { ' ' });
                }
                text.push('\n');
            }
            let path = format!("in/part-{file}.txt");
            let mut handle = shared.open(Path::new(&path), OpenMode::Truncate).unwrap();
            handle.write_at(0, text.as_bytes()).unwrap();
            handle.sync().unwrap();
            path
        })
        .collect()
}

fn sorted_lines(data: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = String::from_utf8_lossy(data)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

struct Job {
    world: World,
    shared: MemDisk,
    core: Arc<Mutex<Option<CoordinatorCore>>>,
    expected: Vec<String>,
    workers: Vec<String>,
}

fn job(app: &str, workers: usize, split_bytes: u64) -> Job {
    cairn_testkit::init_logging();
    let shared = MemDisk::new();
    let inputs = write_inputs(&shared);
    let spec = AppSpec::BuiltIn {
        name: app.into(),
        pattern: String::new(),
    };
    let app_impl = spec.build().unwrap();
    cairn_mapreduce::run_sequential(&*app_impl, &shared, &inputs, Path::new("expected")).unwrap();
    let expected = sorted_lines(&shared.read(Path::new("expected")).unwrap());
    assert!(expected.len() > 100, "the inputs make a non-trivial job");
    shared.create_dir_all(Path::new("out")).unwrap();
    let config = JobConfig {
        app: spec,
        inputs,
        reduces: REDUCES,
        split_bytes,
        output_dir: "out".into(),
        hadoop_names: false,
        scheduler: SchedulerConfig::default(),
        heartbeat_interval: Duration::from_millis(500),
    };
    let mut world = World::new();
    let core: Arc<Mutex<Option<CoordinatorCore>>> = Arc::default();
    {
        let (shared, core) = (shared.clone(), core.clone());
        world.add_node("coordinator", move |node: NodeContext| {
            let (shared, core, config) = (shared.clone(), core.clone(), config.clone());
            async move {
                let opened =
                    CoordinatorCore::open(&config, &shared, &node.disk, "coordinator".into())
                        .expect("the coordinator opens its journal");
                *core.lock().unwrap() = Some(opened.clone());
                let router = opened.router();
                let _server = cairn_mapreduce::serve(router, node.bind(COORDINATOR_PORT))
                    .await
                    .unwrap();
                opened
                    .run_until_released(Duration::from_secs(5))
                    .await
                    .expect("the coordinator writes its journal");
            }
        });
    }
    let names: Vec<String> = (1..=workers).map(|i| format!("worker{i}")).collect();
    for name in &names {
        let shared = shared.clone();
        world.add_node(name, move |node: NodeContext| {
            let shared = shared.clone();
            async move {
                let config = WorkerConfig {
                    coordinator: format!("http://coordinator:{COORDINATOR_PORT}"),
                    host: None,
                    listen: node.bind(SHUFFLE_PORT),
                    advertise: Some(node.url(SHUFFLE_PORT)),
                    scratch: Arc::new(node.disk.clone()),
                    scratch_dir: "scratch".into(),
                    shared: Arc::new(shared),
                    coordinator_timeout: Duration::from_secs(120),
                    app: None,
                };
                if let Err(error) = cairn_mapreduce::run_worker(config).await {
                    tracing::warn!("worker stopped: {error}");
                }
            }
        });
    }
    Job {
        world,
        shared,
        core,
        expected,
        workers: names,
    }
}

impl Job {
    fn done(&self) -> bool {
        self.core
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|core| core.status().done)
    }

    fn check_output(&self) {
        let mut all = Vec::new();
        for r in 0..REDUCES {
            all.extend(
                self.shared
                    .read(Path::new(&format!("out/mr-out-{r}")))
                    .unwrap(),
            );
        }
        let got = sorted_lines(&all);
        if got != self.expected {
            let first = got.iter().zip(&self.expected).position(|(a, b)| a != b);
            panic!(
                "output differs from the sequential run (seed {}): {} lines vs {}, first difference at {first:?}",
                self.world.seed(),
                got.len(),
                self.expected.len()
            );
        }
        let leftovers: Vec<String> = self
            .shared
            .list(Path::new("out"))
            .unwrap()
            .into_iter()
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        // Superseded attempts may leave temporary files; never a final name
        // with partial content, which the comparison above rules out.
        tracing::info!(?leftovers, "temporary files left by superseded attempts");
    }
}

#[madsim::test]
async fn word_count_equals_the_sequential_run() {
    let job = job("wc", 3, 4096);
    wait_until("the job finishes", Duration::from_secs(120), || job.done()).await;
    job.check_output();
}

#[madsim::test]
async fn indexer_survives_worker_kills_and_message_loss() {
    let mut job = job("indexer", 4, 1024);
    job.world.set_reliable(false);
    let mut rng = madsim::rand::thread_rng();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let mut faults = 0;
    while !job.done() {
        if tokio::time::Instant::now() >= deadline {
            let status = job.core.lock().unwrap().as_ref().map(|c| c.status());
            panic!(
                "the job did not finish (seed {}): {status:?}",
                job.world.seed()
            );
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..1500))).await;
        // A burst of faults, then a calm in which the job must finish.
        if job.done() || faults == 12 {
            continue;
        }
        faults += 1;
        let victim = job.workers[rng.gen_range(0..job.workers.len())].clone();
        if rng.gen_bool(0.5) {
            job.world.restart(&victim);
        } else {
            job.world.kill(&victim);
            let back_after = Duration::from_millis(rng.gen_range(0..3000));
            tokio::time::sleep(back_after).await;
            job.world.restart(&victim);
        }
    }
    job.world.set_reliable(true);
    assert!(
        faults >= 3,
        "only {faults} faults were injected before the job finished"
    );
    job.check_output();
}

#[madsim::test]
async fn a_restarted_coordinator_resumes_the_job() {
    let mut job = job("wc", 3, 2048);
    let status = |job: &Job| job.core.lock().unwrap().as_ref().map(|c| c.status());
    wait_until("some maps are done", Duration::from_secs(60), || {
        status(&job).is_some_and(|s| s.maps_done >= 3)
    })
    .await;
    let before = status(&job).unwrap();
    job.world.restart("coordinator");
    *job.core.lock().unwrap() = None;
    wait_until("the coordinator is back", Duration::from_secs(10), || {
        status(&job).is_some()
    })
    .await;
    let after = status(&job).unwrap();
    assert_eq!(after.job_id, before.job_id, "the same job resumes");
    assert!(
        after.maps_done >= before.maps_done.min(3),
        "finished maps stay finished: {after:?}"
    );
    wait_until("the job finishes", Duration::from_secs(300), || job.done()).await;
    job.check_output();
}

/// A worker that takes one task and then heartbeats forever without making
/// progress on it, like a streaming mapper that hangs: its liveness must not
/// keep the task. Sets `aborted` once the coordinator tells it to give the
/// attempt up.
async fn stuck_worker(held: Arc<Mutex<Option<TaskProgress>>>, aborted: Arc<AtomicBool>) {
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(1),
        call_timeout: Duration::from_secs(2),
    };
    let client = RpcClient::new(format!("http://coordinator:{COORDINATOR_PORT}"), options).unwrap();
    let register = RegisterRequest {
        shuffle_addr: format!("http://stuck:{SHUFFLE_PORT}"),
        host: "stuck".into(),
        pid: 0,
    };
    let worker_id = loop {
        let reply = client
            .call(register.clone(), |channel, request| async move {
                CoordinatorClient::new(channel).register(request).await
            })
            .await;
        match reply {
            Ok(reply) => break reply.worker_id,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let attempt = loop {
        let reply = client
            .call(
                GetTaskRequest { worker_id },
                |channel, request| async move {
                    CoordinatorClient::new(channel).get_task(request).await
                },
            )
            .await;
        match reply {
            Ok(reply)
                if reply.kind == TaskKind::Map as i32 || reply.kind == TaskKind::Reduce as i32 =>
            {
                break TaskProgress {
                    kind: reply.kind,
                    task: reply.task,
                    attempt: reply.attempt,
                    ..TaskProgress::default()
                };
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    *held.lock().unwrap() = Some(attempt);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let request = HeartbeatRequest {
            worker_id,
            running: vec![attempt],
        };
        let reply = client
            .call(request, |channel, request| async move {
                CoordinatorClient::new(channel).heartbeat(request).await
            })
            .await;
        if let Ok(reply) = reply
            && reply.abort.iter().any(|a| {
                (a.kind, a.task, a.attempt) == (attempt.kind, attempt.task, attempt.attempt)
            })
        {
            aborted.store(true, Ordering::SeqCst);
        }
    }
}

#[madsim::test]
async fn an_attempt_that_makes_no_progress_is_timed_out_and_run_elsewhere() {
    let mut job = job("wc", 2, 4096);
    let held: Arc<Mutex<Option<TaskProgress>>> = Arc::default();
    let aborted = Arc::new(AtomicBool::new(false));
    {
        let (held, aborted) = (held.clone(), aborted.clone());
        job.world.add_node("stuck", move |_node: NodeContext| {
            stuck_worker(held.clone(), aborted.clone())
        });
    }
    wait_until(
        "the stuck worker holds a task",
        Duration::from_secs(30),
        || held.lock().unwrap().is_some(),
    )
    .await;
    // The stuck worker heartbeats every 500 ms throughout: only the lack of
    // progress can give its attempt up (after the 10 s task timeout).
    wait_until("the job finishes", Duration::from_secs(120), || job.done()).await;
    job.check_output();
    let status = job.core.lock().unwrap().as_ref().unwrap().status();
    assert!(
        status.attempts_timed_out >= 1,
        "the stuck attempt counts as timed out: {status:?}"
    );
    wait_until(
        "the stuck worker is told to abandon its attempt",
        Duration::from_secs(5),
        || aborted.load(Ordering::SeqCst),
    )
    .await;
}
