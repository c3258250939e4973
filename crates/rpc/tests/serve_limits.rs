//! The server's limits over real sockets on loopback: a bounded number of
//! connections (the excess closed at once), a deadline for the HTTP/2
//! handshake, idle connections closed, and a bounded number of requests in
//! flight (the excess answered `overloaded` at once). Each limit is
//! shortened through `ServeOptions`; the tests wait on conditions with a
//! deadline, never on a fixed sleep.
#![cfg(not(madsim))]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cairn_rpc::echo::echo_client::EchoClient;
use cairn_rpc::echo::echo_server::{Echo, EchoServer};
use cairn_rpc::echo::{EchoReply, EchoRequest};
use cairn_rpc::{ClientOptions, RpcClient, RpcError, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tonic::{Code, Request, Response, Status};

/// How long a test waits for a condition before it fails.
const TEST_DEADLINE: Duration = Duration::from_secs(20);

/// The client's HTTP/2 connection preface (RFC 9113 section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame, then an acknowledgement of the server's.
const SETTINGS_AND_ACK: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];

/// Echoes; a request with `number == 1` waits for a permit of `release`
/// first, counted in `in_flight` meanwhile.
#[derive(Clone)]
struct Service {
    in_flight: Arc<AtomicUsize>,
    release: Arc<Semaphore>,
}

#[tonic::async_trait]
impl Echo for Service {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let request = request.into_inner();
        if request.number == 1 {
            self.in_flight.fetch_add(1, SeqCst);
            self.release.acquire().await.unwrap().forget();
            self.in_flight.fetch_sub(1, SeqCst);
        }
        Ok(Response::new(EchoReply {
            text: request.text,
            number: request.number,
        }))
    }
}

async fn start(options: ServeOptions) -> (SocketAddr, Service, cairn_rpc::ServerTask) {
    let service = Service {
        in_flight: Arc::default(),
        release: Arc::new(Semaphore::new(0)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let routes = tonic::service::Routes::new(EchoServer::new(service.clone()));
    let (addr, task) = cairn_rpc::serve_routes_on(routes, listener, &options).unwrap();
    (addr, service, task)
}

fn client(addr: SocketAddr) -> RpcClient {
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(2),
        call_timeout: Duration::from_secs(5),
    };
    RpcClient::new(format!("http://{addr}"), options).unwrap()
}

async fn echo(client: &RpcClient, number: i64) -> Result<EchoReply, RpcError> {
    let request = EchoRequest {
        text: "hello".into(),
        number,
    };
    client
        .call(request, |channel, request| async move {
            EchoClient::new(channel).echo(request).await
        })
        .await
}

/// Reads (and discards) until the server closes the connection; returns
/// how long that took, or panics after [`TEST_DEADLINE`].
async fn wait_closed(stream: &mut TcpStream, what: &str) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + TEST_DEADLINE).into(), stream.read(&mut buffer))
            .await
        {
            Err(_) => panic!("{what}: still open after {TEST_DEADLINE:?}"),
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
        }
    }
}

/// Retries `probe` until it returns `Some`, or panics after
/// [`TEST_DEADLINE`].
async fn wait_for<T, F: Future<Output = Option<T>>>(what: &str, mut probe: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + TEST_DEADLINE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_at_once_and_calls_succeed_after() {
    let options = ServeOptions {
        max_connections: 8,
        handshake_timeout: Duration::from_secs(600),
        idle_timeout: Duration::from_secs(600),
        ..ServeOptions::default()
    };
    let (addr, _service, _server) = start(options).await;
    // Ten connections that never speak: two more than the limit.
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut holders = Vec::new();
    for index in 0..10 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let closed_tx = closed_tx.clone();
        holders.push(tokio::spawn(async move {
            wait_closed(&mut stream, "an idle connection").await;
            let _ = closed_tx.send(index);
        }));
    }
    let mut closed = Vec::new();
    while closed.len() < 2 {
        let index = tokio::time::timeout(TEST_DEADLINE, closed_rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("only {closed:?} of 10 connections were closed with a limit of 8")
            })
            .unwrap();
        closed.push(index);
    }
    assert!(
        closed_rx.try_recv().is_err(),
        "more than the excess was closed"
    );
    // The limit is full: a client is turned away.
    let rpc = client(addr);
    let refused = echo(&rpc, 0).await;
    assert!(refused.is_err(), "a 9th connection was served: {refused:?}");
    // The idle connections go away; the server serves again.
    for holder in &holders {
        holder.abort();
    }
    wait_for("a call to succeed once connections are free", || async {
        echo(&rpc, 0).await.ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_preface_is_closed_after_the_handshake_timeout() {
    let handshake_timeout = Duration::from_millis(300);
    let options = ServeOptions {
        handshake_timeout,
        ..ServeOptions::default()
    };
    let (addr, _service, _server) = start(options).await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&PREFACE[..10]).await.unwrap();
    wait_closed(&mut stream, "a connection with half a preface").await;
    assert!(
        started.elapsed() >= handshake_timeout,
        "closed after {:?}, before the handshake timeout",
        started.elapsed()
    );
    // A client that completes its handshake is served.
    assert_eq!(echo(&client(addr), 7).await.unwrap().number, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_gets_the_connection_limits_too() {
    let options = ServeOptions {
        handshake_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let service = Service {
        in_flight: Arc::default(),
        release: Arc::new(Semaphore::new(0)),
    };
    let router = tonic::transport::Server::builder().add_service(EchoServer::new(service));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, _server) = cairn_rpc::serve_on_with(router, listener, &options).unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&PREFACE[..10]).await.unwrap();
    wait_closed(&mut stream, "a connection with half a preface").await;
    assert_eq!(echo(&client(addr), 7).await.unwrap().number, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let idle_timeout = Duration::from_secs(1);
    let options = ServeOptions {
        handshake_timeout: Duration::from_millis(200),
        idle_timeout,
        ..ServeOptions::default()
    };
    let (addr, _service, _server) = start(options).await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(SETTINGS_AND_ACK).await.unwrap();
    wait_closed(&mut stream, "an idle connection").await;
    // Past the handshake timeout: the handshake completed, and the idle
    // timeout closed it.
    assert!(
        started.elapsed() >= idle_timeout,
        "closed after {:?}, before the idle timeout",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_limit_are_answered_overloaded_at_once() {
    let options = ServeOptions {
        max_concurrent_requests: 2,
        ..ServeOptions::default()
    };
    let (addr, service, _server) = start(options).await;
    let rpc = Arc::new(client(addr));
    let mut blocked = Vec::new();
    for _ in 0..2 {
        let rpc = rpc.clone();
        blocked.push(tokio::spawn(async move { echo(&rpc, 1).await }));
    }
    wait_for("two requests in flight", || async {
        (service.in_flight.load(SeqCst) == 2).then_some(())
    })
    .await;
    let started = Instant::now();
    let error = echo(&rpc, 0).await.expect_err("a third request ran");
    let status = error
        .status()
        .unwrap_or_else(|| panic!("not a status: {error}"));
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().starts_with("overloaded:"),
        "{}",
        status.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the overloaded answer took {:?}",
        started.elapsed()
    );
    service.release.add_permits(2);
    for call in blocked {
        assert_eq!(call.await.unwrap().unwrap().number, 1);
    }
    assert_eq!(echo(&rpc, 3).await.unwrap().number, 3);
}
