use super::*;

fn chunk(handle: ChunkHandle, good: &[&str]) -> ChunkHealth {
    let good: Vec<String> = good.iter().map(|s| s.to_string()).collect();
    ChunkHealth {
        handle,
        version: 1,
        goal: 3,
        replicas: good.clone(),
        good,
        busy: false,
    }
}

fn server(url: &str, free_bytes: u64) -> ServerLoad {
    ServerLoad {
        url: url.to_string(),
        free_bytes,
        takes_new: true,
    }
}

fn now() -> Instant {
    Instant::now()
}

#[test]
fn one_replica_left_goes_first_then_the_furthest_below_the_goal() {
    let mut chunks = vec![
        chunk(1, &["a", "b"]),
        chunk(2, &["a"]),
        chunk(3, &["b"]),
        chunk(4, &["a", "b", "c"]),
        chunk(5, &["c", "d"]),
    ];
    chunks[4].goal = 5;
    let servers: Vec<ServerLoad> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|u| server(u, 100))
        .collect();
    let orders = Healing::default().plan(&chunks, &servers, 10, now());
    let handles: Vec<ChunkHandle> = orders.iter().map(|o| o.handle).collect();
    // 2 and 3 have one replica; 5 is 3 below its goal, 1 only 1 below;
    // 4 has its goal.
    assert_eq!(handles, [2, 3, 5, 1]);
    for order in &orders {
        let chunk = chunks.iter().find(|c| c.handle == order.handle).unwrap();
        assert!(chunk.good.contains(&order.source));
        assert!(!chunk.good.contains(&order.target));
    }
}

#[test]
fn clones_per_server_are_bounded_as_source_and_target() {
    let chunks: Vec<ChunkHealth> = (1..=10).map(|h| chunk(h, &["a"])).collect();
    let servers = vec![server("a", 0), server("b", 100), server("c", 50)];
    let mut healing = Healing::default();
    let orders = healing.plan(&chunks, &servers, 2, now());
    // Every chunk's only source is a: two clones at most.
    assert_eq!(orders.len(), 2);
    // The target with the most free space first, then the other.
    assert_eq!(orders[0].target, "b");
    healing.start(&orders);
    assert_eq!(healing.status().peak_per_server, 2);
    // While they run, no more from a.
    assert!(healing.plan(&chunks, &servers, 2, now()).is_empty());
    healing.finish(orders[0].handle, true, now(), Duration::from_secs(1));
    let next = healing.plan(&chunks, &servers, 2, now());
    assert_eq!(next.len(), 1);
    assert!(
        next.iter().all(|o| !healing.cloning(o.handle)),
        "a chunk in flight is not planned again"
    );
}

#[test]
fn a_round_starts_at_most_its_limit() {
    let chunks: Vec<ChunkHealth> = (1..=500)
        .map(|h| chunk(h, &[["a", "b", "c"][h as usize % 3]]))
        .collect();
    let servers: Vec<ServerLoad> = (0..200).map(|i| server(&format!("s{i}"), 10)).collect();
    let mut all: Vec<ServerLoad> = servers.clone();
    all.extend(["a", "b", "c"].iter().map(|u| server(u, 10)));
    let orders = Healing::default().plan(&chunks, &all, 1000, now());
    assert_eq!(orders.len(), MAX_CLONES_PER_ROUND);
}

#[test]
fn busy_helpless_and_unplaceable_chunks_are_left() {
    let mut busy = chunk(1, &["a"]);
    busy.busy = true;
    let chunks = vec![busy, chunk(2, &[]), chunk(3, &["a", "b"])];
    // The only server besides the holders is full or draining.
    let mut full = server("c", 0);
    full.takes_new = false;
    let servers = vec![server("a", 9), server("b", 9), full];
    assert!(
        Healing::default()
            .plan(&chunks, &servers, 5, now())
            .is_empty()
    );
}

#[test]
fn a_failed_target_is_avoided_for_a_while_and_the_history_says_so() {
    let chunks = vec![chunk(7, &["a"])];
    let servers = vec![server("a", 1), server("b", 100), server("c", 50)];
    let mut healing = Healing::default();
    let start = now();
    let first = healing.plan(&chunks, &servers, 2, start);
    assert_eq!(first[0].target, "b");
    healing.start(&first);
    healing.finish(7, false, start, Duration::from_secs(5));
    let retry = healing.plan(&chunks, &servers, 2, start);
    assert_eq!(retry[0].target, "c", "another target after a failure");
    let later = healing.plan(&chunks, &servers, 2, start + Duration::from_secs(6));
    assert_eq!(later[0].target, "b");
    let status = healing.status();
    assert_eq!(status.history.len(), 1);
    assert_eq!(status.history[0].succeeded, Some(false));
    assert!(status.in_flight.is_empty());
}

#[test]
fn a_chunk_only_on_a_decommissioning_server_is_copied_from_it() {
    let mut draining = chunk(1, &[]);
    draining.replicas = vec!["old".to_string()];
    let mut servers = vec![server("old", 1000), server("a", 100)];
    servers[0].takes_new = false;
    let orders = Healing::default().plan(&[draining], &servers, 10, now());
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(
        (orders[0].source.as_str(), orders[0].target.as_str()),
        ("old", "a")
    );
    assert_eq!(orders[0].good, vec!["old".to_string()]);
}
