//! The simulated network's rules, applied to every [`RpcClient`](crate::RpcClient) call in a
//! simulation build.
//!
//! The rules are those of the 6.824 `labrpc` package, number for number
//! (`reference/6824-test-catalog.md` §1.2):
//!
//! 1. A call over a link that is down (either end disconnected, the link cut,
//!    or the server dead) fails after a random 0-99 ms, or 0-6999 ms with
//!    [`set_long_delays`].
//! 2. On an unreliable network ([`set_reliable`]`(false)`) a request waits
//!    0-26 ms, then is dropped with probability 10% before the handler runs.
//! 3. While the handler runs, the link is checked every 100 ms; if the server
//!    dies or the link goes down, the caller gets a failure and the handler's
//!    reply is thrown away (and once more after the handler returns).
//! 4. On an unreliable network the reply is dropped with probability 10%,
//!    after the handler ran. With [`set_long_reordering`], 2/3 of replies are
//!    delayed by 200-2199 ms (skewed low).
//!
//! A message on a long-lived stream (the Raft transport's) meets rules 1-2
//! as a request does; one that carries only responses (what a call's reply
//! used to carry) also meets rule 4's long reordering and counts as a
//! reply (bytes only), so that delays and RPC counts mean what labrpc's
//! do: see [`stream_message`].
//!
//! Counters: every call counts toward [`total_rpcs`] and adds its request's
//! encoded size to [`total_bytes`]; a reply adds its size when delivered. A
//! call that reaches the server's handler counts toward [`rpc_count`] of that
//! server.
//!
//! The state lives in a thread-local: madsim runs each simulation on one
//! thread, and a test kit world calls [`reset`] when it starts, so seeds and
//! determinism-check reruns never see each other's state. Calls to a host that
//! was never [`register_node`]ed pass through with no rules (only counted).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use madsim::task::NodeId;
use rand::Rng;
use tonic::transport::Endpoint;

/// How often a call in flight checks that its server is still reachable.
const LIVENESS_POLL: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Node {
    name: String,
    alive: bool,
    /// Bumped when the node is killed, so that calls that began before a
    /// kill fail even if the node is restarted while they wait.
    incarnation: u64,
    /// Disconnected from every other node (labrpc `disconnect(i)`).
    isolated: bool,
    /// RPCs dispatched to this node's handlers.
    dispatched: u64,
}

#[derive(Debug, Default)]
struct Net {
    nodes: Vec<Node>,
    by_host: BTreeMap<String, usize>,
    by_sim_id: BTreeMap<NodeId, usize>,
    /// Directed links that are cut: (from, to).
    cut: BTreeSet<(usize, usize)>,
    unreliable: bool,
    long_delays: bool,
    long_reordering: bool,
    total_rpcs: u64,
    total_bytes: u64,
}

thread_local! {
    static NET: RefCell<Net> = RefCell::new(Net::default());
}

fn with<T>(f: impl FnOnce(&mut Net) -> T) -> T {
    NET.with(|net| f(&mut net.borrow_mut()))
}

impl Net {
    fn index(&self, name: &str) -> usize {
        *self
            .by_host
            .get(name)
            .unwrap_or_else(|| panic!("sim_net: no node named {name:?}"))
    }

    fn link_up(&self, link: &Link) -> bool {
        let Some(to) = link.to else { return true };
        let server = &self.nodes[to];
        if !server.alive || server.incarnation != link.incarnation || server.isolated {
            return false;
        }
        match link.from {
            Some(from) => !self.nodes[from].isolated && !self.cut.contains(&(from, to)),
            None => true,
        }
    }
}

/// A call's path: the calling node, the server, and the server's incarnation
/// when the call began. `None` stands for a node the network does not know
/// (the test driver itself), which is always connected.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    from: Option<usize>,
    to: Option<usize>,
    incarnation: u64,
}

/// Forgets every node and setting. A new simulated world calls this first.
pub fn reset() {
    with(|net| *net = Net::default());
}

/// Registers a node under its `name` and every other host string (such as
/// its IP address) that clients may use to reach it.
pub fn register_node(name: &str, sim_id: NodeId, hosts: &[String]) {
    with(|net| {
        assert!(
            !net.by_host.contains_key(name),
            "sim_net: node {name:?} registered twice"
        );
        let index = net.nodes.len();
        net.nodes.push(Node {
            name: name.to_string(),
            alive: true,
            incarnation: 0,
            isolated: false,
            dispatched: 0,
        });
        net.by_host.insert(name.to_string(), index);
        for host in hosts {
            net.by_host.insert(host.clone(), index);
        }
        net.by_sim_id.insert(sim_id, index);
    });
}

/// Marks a node dead (calls to it fail; calls in flight fail within 100 ms)
/// or alive again after a restart.
pub fn set_alive(name: &str, alive: bool) {
    with(|net| {
        let index = net.index(name);
        let node = &mut net.nodes[index];
        if node.alive && !alive {
            node.incarnation += 1;
        }
        node.alive = alive;
    });
}

/// Whether the node is alive.
pub fn is_alive(name: &str) -> bool {
    with(|net| {
        let index = net.index(name);
        net.nodes[index].alive
    })
}

/// Cuts (`false`) or restores (`true`) every link of a node at once, like
/// labrpc's `disconnect(i)`/`connect(i)`. Link cuts made with [`set_link`]
/// are kept and apply again once the node is connected.
pub fn set_connected(name: &str, connected: bool) {
    with(|net| {
        let index = net.index(name);
        net.nodes[index].isolated = !connected;
    });
}

/// Cuts (`up == false`) or heals the directed link `from -> to`.
pub fn set_link(from: &str, to: &str, up: bool) {
    with(|net| {
        let link = (net.index(from), net.index(to));
        if up {
            net.cut.remove(&link);
        } else {
            net.cut.insert(link);
        }
    });
}

/// Whether a call from `from` to `to` would currently be delivered.
pub fn link_is_up(from: &str, to: &str) -> bool {
    with(|net| {
        let (from, to) = (net.index(from), net.index(to));
        let link = Link {
            from: Some(from),
            to: Some(to),
            incarnation: net.nodes[to].incarnation,
        };
        net.link_up(&link)
    })
}

/// labrpc `Reliable(reliable)`.
pub fn set_reliable(reliable: bool) {
    with(|net| net.unreliable = !reliable);
}

/// labrpc `LongDelays(on)`: calls over a down link fail after 0-6999 ms.
pub fn set_long_delays(on: bool) {
    with(|net| net.long_delays = on);
}

/// labrpc `LongReordering(on)`: 2/3 of replies are delayed 200-2199 ms.
pub fn set_long_reordering(on: bool) {
    with(|net| net.long_reordering = on);
}

/// RPCs dispatched to the handlers of the named node.
pub fn rpc_count(name: &str) -> u64 {
    with(|net| {
        let index = net.index(name);
        net.nodes[index].dispatched
    })
}

/// Every call made, delivered or not.
pub fn total_rpcs() -> u64 {
    with(|net| net.total_rpcs)
}

/// Request bytes at send plus reply bytes at delivery.
pub fn total_bytes() -> u64 {
    with(|net| net.total_bytes)
}

/// The node names, in registration order.
pub fn node_names() -> Vec<String> {
    with(|net| net.nodes.iter().map(|n| n.name.clone()).collect())
}

enum RequestFate {
    Deliver(Duration, Link),
    Fail(Duration, &'static str),
}

/// Step 1-2 of the rules: decides and waits out the fate of a request of
/// `bytes` encoded bytes. Returns the link to watch, or why it failed.
pub(crate) async fn send_request(endpoint: &Endpoint, bytes: usize) -> Result<Link, String> {
    let host = endpoint.uri().host().unwrap_or_default().to_string();
    let current = madsim::plugin::node();
    let fate = with(|net| {
        net.total_rpcs += 1;
        net.total_bytes += bytes as u64;
        let from = net.by_sim_id.get(&current).copied();
        let Some(to) = net.by_host.get(&host).copied() else {
            let link = Link {
                from,
                to: None,
                incarnation: 0,
            };
            return RequestFate::Deliver(Duration::ZERO, link);
        };
        let link = Link {
            from,
            to: Some(to),
            incarnation: net.nodes[to].incarnation,
        };
        let mut rng = madsim::rand::thread_rng();
        if !net.link_up(&link) {
            let bound = if net.long_delays { 7000 } else { 100 };
            let wait = Duration::from_millis(rng.gen_range(0..bound));
            return RequestFate::Fail(wait, "link down or server dead (simulated)");
        }
        let mut delay = Duration::ZERO;
        if net.unreliable {
            delay = Duration::from_millis(rng.gen_range(0..27));
            if rng.gen_range(0..1000) < 100 {
                return RequestFate::Fail(delay, "request dropped (simulated)");
            }
        }
        RequestFate::Deliver(delay, link)
    });
    match fate {
        RequestFate::Deliver(delay, link) => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let delivered = with(|net| {
                let up = net.link_up(&link);
                if up && let Some(to) = link.to {
                    net.nodes[to].dispatched += 1;
                }
                up
            });
            if delivered {
                Ok(link)
            } else {
                Err("link went down before delivery (simulated)".to_string())
            }
        }
        RequestFate::Fail(delay, reason) => {
            tokio::time::sleep(delay).await;
            Err(reason.to_string())
        }
    }
}

/// Step 3 of the rules: runs the call while watching the link.
pub(crate) async fn await_reply<T>(
    link: Link,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::pin!(call);
    let reply = loop {
        tokio::select! {
            reply = &mut call => break reply,
            _ = tokio::time::sleep(LIVENESS_POLL) => {
                if !with(|net| net.link_up(&link)) {
                    return Err(tonic::Status::unavailable("server died or link cut during the call (simulated)"));
                }
            }
        }
    };
    if let (Err(status), Some(to)) = (&reply, link.to)
        && status.code() == tonic::Code::Unavailable
    {
        // The simulated transport refused the connection: no handler ran.
        with(|net| net.nodes[to].dispatched = net.nodes[to].dispatched.saturating_sub(1));
    }
    reply
}

/// Step 4 of the rules: decides the fate of a reply of `bytes` bytes, waits
/// out its delay, and counts it if delivered.
pub(crate) async fn deliver_reply(link: Link, bytes: usize) -> Result<(), String> {
    let (up, drop, delay) = with(|net| {
        if link.to.is_none() {
            return (true, false, Duration::ZERO);
        }
        let up = net.link_up(&link);
        let mut rng = madsim::rand::thread_rng();
        let drop = up && net.unreliable && rng.gen_range(0..1000) < 100;
        let delay = if up && !drop {
            reordering_delay(net, &mut rng)
        } else {
            Duration::ZERO
        };
        (up, drop, delay)
    });
    if !up {
        return Err("server died or link cut before the reply (simulated)".to_string());
    }
    if drop {
        return Err("reply dropped (simulated)".to_string());
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    with(|net| net.total_bytes += bytes as u64);
    Ok(())
}

/// Rule 4's long reordering: 2/3 of replies wait 200-2199 ms (skewed low).
fn reordering_delay(net: &Net, rng: &mut impl Rng) -> Duration {
    if net.long_reordering && rng.gen_range(0..900) < 600 {
        let spread = rng.gen_range(0..2000);
        Duration::from_millis(200 + rng.gen_range(0..=spread))
    } else {
        Duration::ZERO
    }
}

/// The fate of one message of `bytes` bytes sent on a stream to the server
/// of `endpoint`: rules 1-2 (lost over a down link; on an unreliable
/// network delayed 0-26 ms and lost 10% of the time); a message that is
/// not a `call` (it carries only responses) then meets rule 4's long
/// reordering, with the link checked again at delivery, and counts as a
/// reply. Waits out the delays; `Ok` when the message is to be delivered.
pub(crate) async fn stream_message(
    endpoint: &Endpoint,
    bytes: usize,
    call: bool,
) -> Result<(), String> {
    let link = match send_request(endpoint, bytes).await {
        Ok(link) => link,
        Err(reason) => {
            if !call {
                with(|net| net.total_rpcs -= 1);
            }
            return Err(reason);
        }
    };
    let delay = with(|net| {
        if !call {
            net.total_rpcs -= 1;
            if let Some(to) = link.to {
                net.nodes[to].dispatched -= 1;
            }
        }
        if call {
            Duration::ZERO
        } else {
            reordering_delay(net, &mut madsim::rand::thread_rng())
        }
    });
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
        if !with(|net| net.link_up(&link)) {
            return Err("link went down before delivery (simulated)".to_string());
        }
    }
    Ok(())
}
