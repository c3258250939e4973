//! A Rust [`App`] supplied by the embedding program, run by an in-process
//! coordinator and two in-process workers over real gRPC on loopback.
#![cfg(not(madsim))]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_mapreduce::{
    App, AppError, AppSpec, CoordinatorCore, Emit, JobConfig, MapInput, ReduceOutput,
    SchedulerConfig, Values, WorkerConfig,
};
use cairn_storage::{Disk, RealDisk};

/// How many lines have each length, with a combiner.
struct LineLengths;

impl App for LineLengths {
    fn map(&self, input: &MapInput<'_>, output: &mut dyn Emit) -> Result<(), AppError> {
        for line in input
            .contents
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
        {
            output.emit(format!("{:05}", line.len()).as_bytes(), b"1");
        }
        output.count("lines", "mapped", 1);
        Ok(())
    }

    fn reduce(
        &self,
        _: &[u8],
        values: &mut Values<'_>,
        out: &mut ReduceOutput<'_>,
    ) -> Result<(), AppError> {
        let mut total = 0u64;
        while let Some(v) = values.next() {
            total += std::str::from_utf8(v)?.parse::<u64>()?;
        }
        out.emit(total.to_string().as_bytes())?;
        Ok(())
    }

    fn has_combiner(&self) -> bool {
        true
    }

    fn combine(
        &self,
        key: &[u8],
        values: &mut Values<'_>,
        out: &mut dyn Emit,
    ) -> Result<(), AppError> {
        let mut total = 0u64;
        while let Some(v) = values.next() {
            total += std::str::from_utf8(v)?.parse::<u64>()?;
        }
        out.emit(key, total.to_string().as_bytes());
        Ok(())
    }
}

fn sorted_lines(bytes: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = String::from_utf8_lossy(bytes)
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_app_runs_on_in_process_workers() {
    let dir = tempfile::tempdir().unwrap();
    let disk = RealDisk::new(dir.path()).unwrap();
    let mut inputs = Vec::new();
    for file in 0..4 {
        let text: String = (0..3000)
            .map(|i| format!("{}\n", "x".repeat((i * 7 + file) % 50)))
            .collect();
        let name = format!("in-{file}.txt");
        std::fs::write(dir.path().join(&name), text).unwrap();
        inputs.push(name);
    }
    let app: Arc<dyn App> = Arc::new(LineLengths);
    cairn_mapreduce::run_sequential(&*app, &disk, &inputs, Path::new("expected")).unwrap();
    disk.create_dir_all(Path::new("out")).unwrap();

    let config = JobConfig {
        app: AppSpec::Library {
            name: "line-lengths".into(),
        },
        inputs,
        reduces: 3,
        split_bytes: 10_000,
        output_dir: "out".into(),
        hadoop_names: true,
        scheduler: SchedulerConfig::default(),
        heartbeat_interval: Duration::from_millis(100),
    };
    let core = CoordinatorCore::open(&config, &disk, &disk, "coordinator".into()).unwrap();
    let (addr, _server) = cairn_mapreduce::serve(core.router(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let shared: Arc<dyn Disk> = Arc::new(disk.clone());
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let config = WorkerConfig {
                coordinator: format!("http://{addr}"),
                host: None,
                listen: "127.0.0.1:0".parse().unwrap(),
                advertise: None,
                scratch: shared.clone(),
                scratch_dir: format!("scratch-{i}").into(),
                shared: shared.clone(),
                coordinator_timeout: Duration::from_secs(10),
                app: Some(app.clone()),
            };
            tokio::spawn(cairn_mapreduce::run_worker(config))
        })
        .collect();
    tokio::time::timeout(
        Duration::from_secs(30),
        core.run_until_released(Duration::from_secs(5)),
    )
    .await
    .expect("the job finishes")
    .expect("the coordinator writes its journal");
    for worker in workers {
        let summary = worker.await.unwrap().unwrap();
        assert_eq!(summary.failures, 0);
    }
    let status = core.status();
    assert!(status.done, "{status:?}");
    assert!(
        status.maps_total > 4,
        "files were split: {}",
        status.maps_total
    );
    let mapped = status
        .counters
        .iter()
        .find(|c| c.name == "user.lines.mapped")
        .map(|c| c.value);
    assert_eq!(
        mapped,
        Some(u64::from(status.maps_total)),
        "user counters count once per committed map"
    );

    let mut output = Vec::new();
    for name in &status.outputs {
        assert!(name.starts_with("part-r-"), "{name}");
        output.extend(disk.read(&Path::new("out").join(name)).unwrap());
    }
    assert_eq!(
        sorted_lines(&output),
        sorted_lines(&disk.read(Path::new("expected")).unwrap())
    );
}
