//! The MapReduce workers of `cairn cluster --fs --mr-workers N`: worker N
//! runs beside chunkserver N (in turn), states it as its host, so that map
//! tasks of `fs://` inputs with a replica there go to it, serves its map
//! output on BASE_PORT + 20 + N, and works job after job for whichever
//! coordinator listens on BASE_PORT + 20 (`--stay`): one `cairn mr
//! coordinator --listen 127.0.0.1:BASE_PORT+20 ...` submits a job to them.

use std::path::Path;

use super::{ClusterArgs, Kind, Member};

/// Ports above the base port: the coordinator's, then worker N's is this
/// plus N.
const COORDINATOR_PORT_OFFSET: u64 = 20;

fn address(args: &ClusterArgs, offset: u64) -> String {
    format!("127.0.0.1:{}", u64::from(args.base_port) + offset)
}

/// The `--mr-workers` members, beside `chunkservers` (their URLs) in turn.
pub(super) fn members(args: &ClusterArgs, data_dir: &Path, chunkservers: &[String]) -> Vec<Member> {
    let coordinator = format!("http://{}", address(args, COORDINATOR_PORT_OFFSET));
    (1..=args.mr_workers)
        .map(|id| {
            let listen = address(args, COORDINATOR_PORT_OFFSET + id);
            let host = &chunkservers[(id as usize - 1) % chunkservers.len()];
            Member {
                id,
                kind: Kind::MrWorker,
                name: format!("mr-worker{id}"),
                url: format!("http://{listen}"),
                dir: data_dir.join(format!("mr-worker{id}")),
                args: [
                    "mr",
                    "worker",
                    "--stay",
                    "--coordinator",
                    &coordinator,
                    "--listen",
                    &listen,
                    "--host",
                    host,
                ]
                .map(String::from)
                .to_vec(),
                child: None,
            }
        })
        .collect()
}

/// The banner's line on submitting a job to the workers, if there are any;
/// `flag` names the masters when they are not the default ones.
pub(super) fn try_line(members: &[Member], flag: &str) -> String {
    let Some(worker) = members.iter().find(|m| m.kind == Kind::MrWorker) else {
        return String::new();
    };
    let port: u64 = worker
        .url
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or(0);
    let listen = format!("127.0.0.1:{}", port - worker.id);
    let masters = flag.replace("--masters", "--fs-masters");
    format!(
        "  cairn mr coordinator --listen {listen} --app wc --input fs:///docs/readme --output fs:///out{masters}\n"
    )
}
