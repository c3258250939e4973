//! Tests of calling the leader of a group: statuses that end a request, refusals, pauses.

use std::sync::atomic::AtomicUsize;

use super::*;

fn replicas(deadline: Duration) -> Replicas {
    let endpoints = ["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()];
    Replicas::new(&endpoints, Duration::from_millis(100), deadline).unwrap()
}

fn rejected(code: Code) -> RpcError {
    RpcError::Rejected {
        addr: "x".into(),
        status: Status::new(code, "decoded message length too large"),
    }
}

#[tokio::test]
async fn a_status_no_retry_can_change_ends_the_request_at_once() {
    let servers = replicas(Duration::from_secs(30));
    let calls = AtomicUsize::new(0);
    let result: Result<(), _> = servers
        .call_leader(|_| {
            calls.fetch_add(1, Relaxed);
            async { Err(rejected(Code::OutOfRange)) }
        })
        .await;
    assert!(
        matches!(
            result,
            Err(ReplicaError::Refused {
                code: Code::OutOfRange,
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(calls.load(Relaxed), 1, "the request was retried");
}

#[tokio::test]
async fn a_retryable_status_is_retried_with_growing_pauses_until_the_deadline() {
    let servers = replicas(Duration::from_millis(300));
    let calls = AtomicUsize::new(0);
    let result: Result<(), _> = servers
        .call_leader(|_| {
            calls.fetch_add(1, Relaxed);
            async { Err(rejected(Code::Unavailable)) }
        })
        .await;
    assert!(
        matches!(result, Err(ReplicaError::Timeout { .. })),
        "{result:?}"
    );
    // Pauses of 2.5-5, 5-10, 10-20, ... ms per round of two servers: a
    // handful of rounds in 300 ms, not a tight loop.
    let calls = calls.load(Relaxed);
    assert!((4..=30).contains(&calls), "{calls} calls in 300 ms");
}

/// An overloaded leader is retried in place with growing pauses: the
/// clerk neither spins nor moves its load to the followers.
#[tokio::test]
async fn an_overloaded_server_is_retried_in_place_with_back_off() {
    let servers = replicas(Duration::from_millis(300));
    let calls = [AtomicUsize::new(0), AtomicUsize::new(0)];
    let result: Result<(), _> = servers
        .call_leader(|client| {
            let which = usize::from(client.addr().ends_with(":2"));
            calls[which].fetch_add(1, Relaxed);
            async { Err(rejected(Code::ResourceExhausted)) }
        })
        .await;
    assert!(
        matches!(result, Err(ReplicaError::Timeout { .. })),
        "{result:?}"
    );
    let (first, second) = (calls[0].load(Relaxed), calls[1].load(Relaxed));
    assert_eq!(second, 0, "the load moved to another server");
    assert!((3..=30).contains(&first), "{first} calls in 300 ms");
}

fn refused(addr: &str) -> RpcError {
    RpcError::ConnectionRefused {
        addr: addr.into(),
        reason: "Connection refused (os error 111)".into(),
    }
}

/// Issue 19: a clerk given only a follower waited out its deadline and
/// reported "not the leader; node 3 at ... is".
/// A follower that knows the leader's id but not its address says so,
/// rather than "no leader is known", and the clerk moves to its next server.
#[tokio::test]
async fn a_leader_id_without_an_address_is_reported_and_the_next_server_tried() {
    let status = not_leader(Some(4), None);
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("node 4 is"),
        "{}",
        status.message()
    );
    assert!(
        !status.message().contains("no leader"),
        "{}",
        status.message()
    );
    assert_eq!(
        status
            .metadata()
            .get(LEADER_ID_KEY)
            .unwrap()
            .to_str()
            .unwrap(),
        "4"
    );
    assert!(status.metadata().get(LEADER_URL_KEY).is_none());
    let endpoints = ["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()];
    let servers = Replicas::new(
        &endpoints,
        Duration::from_millis(100),
        Duration::from_secs(30),
    )
    .unwrap();
    let call = |client: &RpcClient| {
        let addr = client.addr().to_string();
        async move {
            if addr.ends_with(":1") {
                Err(RpcError::Rejected {
                    addr,
                    status: not_leader(Some(4), None),
                })
            } else {
                Ok(addr)
            }
        }
    };
    assert_eq!(
        servers.call_leader(call).await.unwrap(),
        "http://127.0.0.1:2"
    );
}

#[tokio::test]
async fn a_hint_naming_a_server_not_given_is_followed() {
    let endpoints = ["127.0.0.1:1".to_string()];
    let servers = Replicas::new(
        &endpoints,
        Duration::from_millis(100),
        Duration::from_secs(30),
    )
    .unwrap();
    let calls = AtomicUsize::new(0);
    let call = |client: &RpcClient| {
        calls.fetch_add(1, Relaxed);
        let addr = client.addr().to_string();
        async move {
            if addr.ends_with(":1") {
                Err(RpcError::Rejected {
                    addr,
                    status: not_leader(Some(3), Some("http://127.0.0.1:3")),
                })
            } else {
                Ok(addr)
            }
        }
    };
    let started = std::time::Instant::now();
    assert_eq!(
        servers.call_leader(call).await.unwrap(),
        "http://127.0.0.1:3"
    );
    assert_eq!(calls.load(Relaxed), 2, "the follower, then the leader");
    assert!(started.elapsed() < Duration::from_secs(1));
    // The next request goes straight to the leader learned.
    assert_eq!(
        servers.call_leader(call).await.unwrap(),
        "http://127.0.0.1:3"
    );
    assert_eq!(calls.load(Relaxed), 3);
    assert_eq!(servers.len(), 1, "len() counts the servers given");
    assert_eq!(
        servers.addresses(),
        ["http://127.0.0.1:1", "http://127.0.0.1:3"]
    );
}

/// A leader refusing for a while (a store in safemode) while a follower
/// points back at it: the request ends with the leader's reason, not
/// with the follower's redirect that came last.
#[tokio::test]
async fn a_timeout_reports_the_leader_s_refusal_not_the_redirect_after_it() {
    let servers = replicas(Duration::from_millis(300));
    let result: Result<(), _> = servers
        .call_leader(|client| {
            let addr = client.addr().to_string();
            async move {
                let status = if addr.ends_with(":1") {
                    Status::unavailable("the master is in safemode; retry in a few seconds")
                } else {
                    not_leader(Some(1), Some("http://127.0.0.1:1"))
                };
                Err(RpcError::Rejected { addr, status })
            }
        })
        .await;
    match result {
        Err(ReplicaError::Timeout { last, .. }) => {
            assert!(last.contains("safemode"), "{last}")
        }
        other => panic!("{other:?}"),
    }
}

/// Hints naming ever new servers fill the room to learn them, and no
/// more; the request still ends at its deadline.
#[tokio::test]
async fn the_servers_learned_from_hints_are_bounded() {
    let servers = replicas(Duration::from_millis(300));
    let next = AtomicUsize::new(100);
    let result: Result<(), _> = servers
        .call_leader(|client| {
            let leader = format!("http://127.0.0.1:{}", next.fetch_add(1, Relaxed));
            let addr = client.addr().to_string();
            async move {
                Err(RpcError::Rejected {
                    addr,
                    status: not_leader(Some(7), Some(&leader)),
                })
            }
        })
        .await;
    assert!(
        matches!(result, Err(ReplicaError::Timeout { .. })),
        "{result:?}"
    );
    assert_eq!(servers.addresses().len(), 2 + MAX_LEARNED_SERVERS);
}

/// Issue 19: with no cluster running, every command waited its whole
/// deadline although every connection was refused at once.
#[tokio::test]
async fn every_server_refusing_ends_the_request_early() {
    let servers = replicas(Duration::from_secs(30));
    let calls = AtomicUsize::new(0);
    let started = std::time::Instant::now();
    let result: Result<(), _> = servers
        .call_leader(|client| {
            calls.fetch_add(1, Relaxed);
            let error = refused(client.addr());
            async move { Err(error) }
        })
        .await;
    let Err(ReplicaError::Unreachable { endpoints, last }) = result else {
        panic!("{result:?}");
    };
    assert_eq!(endpoints, ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
    assert!(last.contains("refused"), "{last}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= REFUSED_GIVE_UP && elapsed < REFUSED_GIVE_UP * 3,
        "{elapsed:?}"
    );
    let calls = calls.load(Relaxed);
    assert!(
        calls >= 6,
        "only {calls} calls: a couple of rounds at least"
    );
    let message = ReplicaError::Unreachable { endpoints, last }.to_string();
    assert!(message.contains("http://127.0.0.1:2"), "{message}");
}

/// A server that refuses while another does not answer is a slow or
/// partitioned cluster, not a missing one: the whole deadline applies.
/// So it does when the clerk was told its servers may be starting.
#[tokio::test]
async fn a_refusal_ends_nothing_early_unless_every_server_refuses() {
    let deadline = REFUSED_GIVE_UP + Duration::from_millis(500);
    let servers = replicas(deadline);
    let started = std::time::Instant::now();
    let result: Result<(), _> = servers
        .call_leader(|client| {
            let error = if client.addr().ends_with(":1") {
                refused(client.addr())
            } else {
                RpcError::Unavailable {
                    addr: client.addr().into(),
                    reason: "partitioned".into(),
                }
            };
            async move { Err(error) }
        })
        .await;
    assert!(
        matches!(result, Err(ReplicaError::Timeout { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() >= deadline);

    let servers = replicas(deadline).wait_while_refused();
    let started = std::time::Instant::now();
    let result: Result<(), _> = servers
        .call_leader(|client| {
            let error = refused(client.addr());
            async move { Err(error) }
        })
        .await;
    assert!(
        matches!(result, Err(ReplicaError::Unreachable { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() >= deadline);
}

#[test]
fn jitter_stays_in_the_upper_half() {
    let servers = replicas(Duration::from_secs(1));
    for _ in 0..100 {
        let pause = servers.jitter(Duration::from_millis(100));
        assert!(pause >= Duration::from_millis(50) && pause <= Duration::from_millis(100));
    }
}
