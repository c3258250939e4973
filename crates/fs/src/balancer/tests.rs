use super::*;

fn server(url: &str, used_bytes: u64) -> ServerFill {
    ServerFill {
        url: url.to_string(),
        used_bytes,
        capacity_bytes: 100,
        takes_new: true,
    }
}

fn chunk(handle: ChunkHandle, length: u64, replicas: &[&str]) -> Movable {
    Movable {
        handle,
        length,
        healthy: true,
        replicas: replicas.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn servers_within_the_threshold_are_balanced() {
    let servers = [server("a", 40), server("b", 35), server("c", 45)];
    assert_eq!(plan(&servers, &[], 10, |_| 2), Plan::Balanced);
}

#[test]
fn a_new_empty_server_takes_replicas_from_the_fullest_and_never_one_it_holds() {
    // Mean 30%: a and b are 15 points above, c is 60 below... d is empty.
    let servers = [
        server("a", 60),
        server("b", 50),
        server("c", 10),
        server("d", 0),
    ];
    let chunks = [
        chunk(1, 10, &["a", "b", "d"]),
        chunk(2, 10, &["a", "b"]),
        chunk(3, 10, &["a", "c"]),
        chunk(4, 10, &["b", "c"]),
    ];
    let Plan::Moves(moves) = plan(&servers, &chunks, 10, |_| 1) else {
        panic!("moves expected");
    };
    // One clone per server at once: a -> d (chunk 2: d holds chunk 1),
    // then b -> c (chunk 1: c holds chunk 4).
    let expected = [(2, "a", "d"), (1, "b", "c")].map(|(handle, source, target)| Move {
        handle,
        source: source.into(),
        target: target.into(),
    });
    assert_eq!(moves, expected);
    let Plan::Moves(more) = plan(&servers, &chunks, 10, |_| 5) else {
        panic!("moves expected");
    };
    for m in &more {
        let chunk = chunks.iter().find(|c| c.handle == m.handle).unwrap();
        assert!(chunk.replicas.contains(&m.source), "{m:?}");
        assert!(!chunk.replicas.contains(&m.target), "{m:?}");
        assert!(["a", "b"].contains(&m.source.as_str()), "{m:?}");
    }
}

#[test]
fn busy_or_short_chunks_are_not_moved_and_the_round_waits() {
    let servers = [server("a", 60), server("b", 0)];
    let mut busy = chunk(1, 10, &["a"]);
    busy.healthy = false;
    assert_eq!(plan(&servers, &[busy], 10, |_| 2), Plan::Wait);
}

#[test]
fn a_chunk_larger_than_the_spread_allows_leaves_the_balancer_stuck() {
    // Mean 50%: moving the 60-byte chunk would take b to 60+ above it.
    let servers = [server("a", 80), server("b", 20)];
    let chunks = [chunk(1, 60, &["a"])];
    assert!(matches!(plan(&servers, &chunks, 10, |_| 2), Plan::Stuck(_)));
}

#[test]
fn a_move_s_source_is_the_replica_deleted_once_it_is_cloned() {
    let mut balancer = Balancer::new(10);
    let m = Move {
        handle: 7,
        source: "a".into(),
        target: "b".into(),
    };
    balancer.start(std::slice::from_ref(&m), Instant::now());
    assert_eq!(
        balancer.source_to_delete(7),
        None,
        "not before the clone counts"
    );
    balancer.cloned(7, true);
    assert_eq!(balancer.source_to_delete(7), Some("a"));
    balancer.deleted("b", 7);
    assert_eq!(balancer.moves_done, 0);
    balancer.deleted("a", 7);
    assert_eq!((balancer.moves_done, balancer.in_flight()), (1, 0));
}
