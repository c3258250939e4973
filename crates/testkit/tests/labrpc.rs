//! The simulated network's self-tests: ports of 6.824 labrpc's own tests
//! (`reference/6824-test-catalog.md` §1.7), plus the fault modes Cairn's
//! suites rely on. Simulation only: run with `scripts/test` or
//! `scripts/sim-sweep testkit N`.
#![cfg(madsim)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_rpc::echo::echo_client::EchoClient;
use cairn_rpc::echo::echo_server::{Echo, EchoServer};
use cairn_rpc::echo::{EchoReply, EchoRequest};
use cairn_rpc::{ClientOptions, RpcClient, RpcError};
use cairn_storage::{Disk, OpenMode};
use cairn_testkit::{NodeContext, World, wait_until};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

const PORT: u16 = 7000;

/// The test handler: a non-empty text is answered with its length; an empty
/// text with a reply text of `number` characters; "sleep" sleeps 20 s.
#[derive(Clone, Default)]
struct TestEcho {
    handled: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl Echo for TestEcho {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let request = request.into_inner();
        if request.text == "sleep" {
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
        self.handled.fetch_add(1, Ordering::SeqCst);
        let reply = if request.text.is_empty() {
            EchoReply {
                text: "y".repeat(request.number as usize),
                number: 0,
            }
        } else {
            EchoReply {
                text: String::new(),
                number: request.text.len() as i64 + request.number,
            }
        };
        Ok(Response::new(reply))
    }
}

fn serve(handler: TestEcho) -> impl Fn(NodeContext) -> std::pin::Pin<Box<dyn Future<Output = ()>>> {
    move |context| {
        let handler = handler.clone();
        Box::pin(async move {
            tonic::transport::Server::builder()
                .add_service(EchoServer::new(handler))
                .serve(context.bind(PORT))
                .await
                .expect("echo server failed");
        })
    }
}

/// A world with one echo server and the named client nodes.
fn world_with(clients: &[&str]) -> (World, TestEcho) {
    cairn_testkit::init_logging();
    let mut world = World::new();
    let handler = TestEcho::default();
    world.add_node("server", serve(handler.clone()));
    for client in clients {
        world.add_client(client);
    }
    (world, handler)
}

fn client(deadline: Duration) -> RpcClient {
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(1),
        call_timeout: deadline,
    };
    RpcClient::new(format!("http://server:{PORT}"), options).unwrap()
}

async fn call(client: &RpcClient, text: &str, number: i64) -> Result<EchoReply, RpcError> {
    let request = EchoRequest {
        text: text.to_string(),
        number,
    };
    client
        .call(request, |channel, request| async move {
            EchoClient::new(channel).echo(request).await
        })
        .await
}

/// Runs `f` as a task on node `on` and waits for it.
async fn on<F: Future + Send + 'static>(world: &World, node: &str, f: F) -> F::Output
where
    F::Output: Send + 'static,
{
    world.spawn(node, f).await.expect("client task panicked")
}

#[madsim::test]
async fn basic() {
    let (world, _) = world_with(&["c"]);
    let (a, b) = on(&world, "c", async {
        let client = client(Duration::from_secs(5));
        (call(&client, "hello", 7).await, call(&client, "", 3).await)
    })
    .await;
    assert_eq!(a.unwrap().number, 12);
    assert_eq!(b.unwrap().text, "yyy");
}

#[madsim::test]
async fn disconnect() {
    let (world, handler) = world_with(&["c"]);
    world.disconnect("c");
    let result = on(&world, "c", async {
        call(&client(Duration::from_secs(5)), "x", 0).await
    })
    .await;
    assert!(
        matches!(result, Err(RpcError::Unavailable { .. })),
        "{result:?}"
    );
    // labrpc TestRegression1: a disabled end delivers nothing.
    assert_eq!(world.rpc_count("server"), 0);
    assert_eq!(handler.handled.load(Ordering::SeqCst), 0);
    world.connect("c");
    let result = on(&world, "c", async {
        call(&client(Duration::from_secs(5)), "x", 0).await
    })
    .await;
    assert_eq!(result.unwrap().number, 1);
    assert_eq!(world.rpc_count("server"), 1);
}

#[madsim::test]
async fn counts() {
    let (world, _) = world_with(&["c"]);
    on(&world, "c", async {
        let client = client(Duration::from_secs(5));
        for i in 0..17 {
            assert_eq!(call(&client, "abc", i).await.unwrap().number, 3 + i);
        }
    })
    .await;
    assert_eq!(world.rpc_count("server"), 17);
    assert_eq!(world.total_rpcs(), 17);
}

#[madsim::test]
async fn bytes() {
    let (world, _) = world_with(&["c"]);
    on(&world, "c", async {
        let client = client(Duration::from_secs(5));
        let text = "x".repeat(288);
        for _ in 0..17 {
            assert_eq!(call(&client, &text, 0).await.unwrap().number, 288);
        }
    })
    .await;
    let first = world.total_bytes();
    assert!(
        (4828..=6000).contains(&first),
        "288-byte args: {first} bytes"
    );
    on(&world, "c", async {
        let client = client(Duration::from_secs(5));
        for _ in 0..17 {
            assert_eq!(call(&client, "", 107).await.unwrap().text.len(), 107);
        }
    })
    .await;
    let second = world.total_bytes() - first;
    assert!(
        (1800..=2500).contains(&second),
        "107-byte replies: {second} bytes"
    );
}

#[madsim::test]
async fn unreliable_drops_some_requests_and_some_replies() {
    let (world, handler) = world_with(&["c"]);
    world.set_reliable(false);
    let results = on(&world, "c", async {
        let client = Arc::new(client(Duration::from_secs(5)));
        let calls = (0..300).map(|i| {
            let client = client.clone();
            tokio::spawn(async move { call(&client, "abc", i).await.is_ok() })
        });
        futures::future::join_all(calls).await
    })
    .await;
    let ok = results.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert!(
        ok > 0 && ok < 300,
        "neither all nor none: {ok}/300 succeeded"
    );
    // About 0.9 x 0.9 = 81% succeed; binomial spread is about 7.
    assert!(
        (200..=280).contains(&ok),
        "{ok}/300 succeeded, expected about 243"
    );
    let handled = handler.handled.load(Ordering::SeqCst) as usize;
    // Replies lost after the handler ran: the handler ran more often than
    // callers heard back, and requests lost before it ran: less than 300.
    assert!(handled > ok, "handled {handled}, ok {ok}");
    assert!(handled < 300, "handled {handled}");
    assert_eq!(world.rpc_count("server") as usize, handled);
}

#[madsim::test]
async fn many_concurrent_clients() {
    let names: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (world, _) = world_with(&refs);
    let tasks = names.iter().map(|name| {
        world.spawn(name, async {
            let client = client(Duration::from_secs(5));
            for i in 0..10 {
                assert_eq!(call(&client, "ab", i).await.unwrap().number, 2 + i);
            }
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.unwrap();
    }
    assert_eq!(world.rpc_count("server"), 200);
}

#[madsim::test]
async fn concurrent_calls_on_one_client() {
    let (world, _) = world_with(&["c"]);
    let total = on(&world, "c", async {
        let client = Arc::new(client(Duration::from_secs(5)));
        let calls = (0..20).map(|i| {
            let client = client.clone();
            async move { call(&client, "q", i).await.unwrap().number }
        });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .sum::<i64>()
    })
    .await;
    assert_eq!(total, (0..20).map(|i| 1 + i).sum::<i64>());
    assert_eq!(world.rpc_count("server"), 20);
}

#[madsim::test]
async fn killed_server_fails_calls_promptly() {
    let (mut world, _) = world_with(&["c"]);
    let pending = world.spawn("c", async {
        let client = client(Duration::from_secs(60));
        let request = EchoRequest {
            text: "sleep".into(),
            number: 0,
        };
        let result = client
            .call_with_deadline(
                request,
                Duration::from_secs(60),
                |channel, request| async move { EchoClient::new(channel).echo(request).await },
            )
            .await;
        (result, Instant::now())
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!pending.is_finished(), "the handler sleeps 20 s");
    world.kill("server");
    let killed_at = Instant::now();
    let (result, failed_at) = pending.await.unwrap();
    assert!(
        matches!(result, Err(RpcError::Unavailable { .. })),
        "{result:?}"
    );
    let after = failed_at - killed_at;
    assert!(
        after <= Duration::from_millis(110),
        "failed {after:?} after the kill"
    );
}

#[madsim::test]
async fn calls_over_a_cut_link_fail_fast_or_late_with_long_delays() {
    let (world, _) = world_with(&["c"]);
    world.disconnect("c");
    async fn timings(world: &World) -> Vec<Duration> {
        on(world, "c", async {
            let client = client(Duration::from_secs(30));
            let mut times = Vec::new();
            for _ in 0..30 {
                let start = Instant::now();
                assert!(call(&client, "x", 0).await.is_err());
                times.push(start.elapsed());
            }
            times
        })
        .await
    }
    let short = timings(&world).await;
    assert!(
        short.iter().all(|t| *t < Duration::from_millis(100)),
        "{short:?}"
    );
    world.set_long_delays(true);
    let long = timings(&world).await;
    assert!(
        long.iter().all(|t| *t < Duration::from_millis(7000)),
        "{long:?}"
    );
    assert!(
        long.iter()
            .filter(|t| **t > Duration::from_millis(100))
            .count()
            > 20,
        "{long:?}"
    );
}

#[madsim::test]
async fn long_reordering_delays_two_thirds_of_replies() {
    let (world, _) = world_with(&["c"]);
    world.set_long_reordering(true);
    let times = on(&world, "c", async {
        let client = Arc::new(client(Duration::from_secs(10)));
        // Calls start 20 ms apart so that they do not queue in the simulated
        // transport (about 1 ms per hop): only the reply delay is measured.
        let calls = (0..90).map(|i| {
            let client = client.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20) * i as u32).await;
                let start = Instant::now();
                call(&client, "r", i).await.unwrap();
                start.elapsed()
            }
        });
        futures::future::join_all(calls).await
    })
    .await;
    let delayed = times
        .iter()
        .filter(|t| **t >= Duration::from_millis(200))
        .count();
    assert!(
        (40..=80).contains(&delayed),
        "{delayed}/90 delayed, expected about 60"
    );
    // 200 + 1999 ms at most, plus the transport's own few milliseconds.
    assert!(
        times.iter().all(|t| *t < Duration::from_millis(2220)),
        "{times:?}"
    );
    assert!(
        times
            .iter()
            .filter(|t| **t < Duration::from_millis(20))
            .count()
            >= 10
    );
}

#[madsim::test]
async fn partitions_and_one_way_cuts() {
    cairn_testkit::init_logging();
    let mut world = World::new();
    for name in ["a", "b", "server"] {
        world.add_node(name, serve(TestEcho::default()));
    }
    async fn reach(world: &World, from: &str) -> bool {
        on(world, from, async {
            call(&client(Duration::from_secs(5)), "x", 0).await.is_ok()
        })
        .await
    }
    world.partition(&[&["a", "server"], &["b"]]);
    assert!(reach(&world, "a").await);
    assert!(!reach(&world, "b").await);
    world.partition(&[&["a"], &["b", "server"]]);
    assert!(!reach(&world, "a").await);
    assert!(reach(&world, "b").await);
    world.heal_all();
    world.cut_one_way("a", "server");
    assert!(!reach(&world, "a").await);
    assert!(world.link_is_up("server", "a"));
    world.heal("a", "server");
    assert!(reach(&world, "a").await);
    // A disconnected node stays cut off even inside a healed group.
    world.disconnect("server");
    world.partition(&[&["a", "b", "server"]]);
    assert!(!reach(&world, "a").await);
    world.connect("server");
    assert!(reach(&world, "a").await);
}

#[madsim::test]
async fn restart_reruns_init_on_the_surviving_disk() {
    cairn_testkit::init_logging();
    let mut world = World::new();
    world.add_node("n", |context: NodeContext| async move {
        let disk = context.disk;
        let boots = disk.read("boots".as_ref()).map(|b| b.len()).unwrap_or(0);
        let mut synced = disk.open("boots".as_ref(), OpenMode::Create).unwrap();
        synced.append(b"x").unwrap();
        synced.sync().unwrap();
        let mut unsynced = disk.open("scratch".as_ref(), OpenMode::Truncate).unwrap();
        // The files' names are durable once their directory is synced.
        disk.sync_dir("".as_ref()).unwrap();
        unsynced
            .write_at(0, format!("boot {boots}").as_bytes())
            .unwrap();
        assert_eq!(context.incarnation as usize, boots);
        std::future::pending::<()>().await;
    });
    let disk = world.disk("n");
    wait_until("first boot", Duration::from_secs(1), || {
        disk.file_size("boots".as_ref()) == Some(1)
    })
    .await;
    for boot in 2..5u64 {
        world.restart("n");
        wait_until("reboot", Duration::from_secs(1), || {
            disk.file_size("boots".as_ref()) == Some(boot)
        })
        .await;
        assert_eq!(disk.crashes(), boot - 1);
    }
    world.kill("n");
    assert!(!world.is_alive("n"));
    // "scratch" was truncated and rewritten at every boot without a sync: a
    // crash keeps what was durable with at most a torn prefix of the last
    // write laid over it, so some boot's text (or a prefix of it) is left.
    let scratch = disk.read("scratch".as_ref()).unwrap();
    let left = String::from_utf8(scratch).unwrap();
    assert!(
        (0..4).any(|boot| format!("boot {boot}").starts_with(&left)),
        "{left:?}"
    );
    assert_eq!(disk.crashes(), 4);
}
