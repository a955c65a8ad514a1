//! Three real `usher serve` processes on one PostgreSQL database and one
//! Redis (a `redis-server` of each test's own, so a test can restart it):
//! one winner per seat whichever node is asked, takeover after SIGKILL and
//! SIGSTOP of the owner, a Redis that restarts empty, a rolling restart.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::process::Child;
use usher_proto::v1::{
    self as pb, catalog_service_client::CatalogServiceClient, inventory_service_client::InventoryServiceClient,
    ordering_service_client::OrderingServiceClient, payment_service_client::PaymentServiceClient,
};

const SECRET: &str = "a cluster secret for the tests";
/// The tests' lease TTL and renewal: the defaults.
const TTL_MS: u64 = 3_000;
const RENEW_MS: u64 = 1_000;

/// A `redis-server` of the test's own on a free port, keeping nothing on disk.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    async fn start(port: Option<u16>) -> Redis {
        let port = port.unwrap_or_else(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
        let child = tokio::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        let r = Redis { child, port };
        for _ in 0..100 {
            if r.cli(&["PING"]).trim() == "PONG" {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not answer on port {port}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Stopped and started again on the same port, empty.
    async fn restart_empty(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
        let again = Redis::start(Some(self.port)).await;
        self.child = again.child;
    }
}

struct Node {
    name: String,
    child: Option<Child>,
    addr: SocketAddr,
}

struct World {
    db: TestDb,
    redis: Redis,
    nodes: Vec<Node>,
    token: String,
}

/// Answers that name the node that decided them.
type Decided<T> = (Result<T, tonic::Status>, String);

impl World {
    async fn start(n: usize) -> World {
        let db = TestDb::fresh(Backend::Postgres).await;
        let redis = Redis::start(None).await;
        let mut w = World { db, redis, nodes: Vec::new(), token: String::new() };
        for i in 0..n {
            w.start_node(i).await;
        }
        w
    }

    async fn start_node(&mut self, i: usize) {
        self.start_node_with(i, &[]).await
    }

    async fn start_node_with(&mut self, i: usize, extra: &[(&str, &str)]) {
        while self.nodes.len() <= i {
            let name = format!("node-{}", self.nodes.len() + 1);
            self.nodes.push(Node { name, child: None, addr: "127.0.0.1:1".parse().unwrap() });
        }
        let name = self.nodes[i].name.clone();
        let (ttl, renew) = (TTL_MS.to_string(), RENEW_MS.to_string());
        let env = [
            ("USHER_REDIS_URL", self.redis.url()),
            ("USHER_NODE_NAME", name.clone()),
            ("USHER_CLUSTER_SECRET", SECRET.to_owned()),
            ("USHER_LEASE_TTL_MS", ttl),
            ("USHER_LEASE_RENEW_MS", renew),
            ("USHER_LOG", "warn,usher_adapters::lease=info".to_owned()),
        ];
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend_from_slice(extra);
        // A node comes back on its port: clients keep their addresses.
        let at = if self.nodes[i].addr.port() == 1 { "127.0.0.1:0".to_owned() } else { self.nodes[i].addr.to_string() };
        let (child, addr, token) = start_binary_at(&self.db, &env, Stdio::inherit(), &at).await;
        self.nodes[i].child = Some(child);
        self.nodes[i].addr = addr;
        self.token = token;
    }

    fn index_of(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.nodes[i].child.as_ref().and_then(|c| c.id()).expect("the node runs");
        assert!(std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
    }

    async fn kill(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("the node runs");
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }

    /// SIGTERM, and the exit status once it has drained.
    async fn terminate(&mut self, i: usize) -> std::process::ExitStatus {
        self.signal(i, "-TERM");
        let mut child = self.nodes[i].child.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("a node drains within 30 s").unwrap()
    }

    async fn inventories(&self) -> Vec<InventoryServiceClient<Ch>> {
        let mut out = Vec::new();
        for n in &self.nodes {
            out.push(InventoryServiceClient::new(connect_as(n.addr, &self.token).await));
        }
        out
    }

    /// `usher cluster status --json`.
    fn status(&self) -> serde_json::Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
            .args(["cluster", "status", "--json", "--redis-url", &self.redis.url()])
            .output()
            .unwrap();
        assert!(out.status.success(), "cluster status: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The name of the node holding `event`'s lease, if any.
    fn owner(&self, event: &str) -> Option<String> {
        let s = self.status();
        s["leases"].as_array().unwrap().iter().find(|l| l["event_id"] == event).map(|l| name_of(l["node"].as_str().unwrap()))
    }

    /// Fenced writes the node named `name` reported in its last heartbeat.
    fn fenced_writes(&self, name: &str) -> u64 {
        let s = self.status();
        s["nodes"].as_array().unwrap().iter().filter(|n| n["name"] == name).map(|n| n["fenced_writes"].as_u64().unwrap()).sum()
    }

    async fn event(&self, sections: usize, rows: usize, per_row: u32) -> String {
        let mut cat = CatalogServiceClient::new(connect_as(self.nodes[0].addr, &self.token).await);
        let venue = create_venue(&mut cat, sections, rows, per_row).await;
        cat.create_event(event_request(&venue.venue_id, 0)).await.unwrap().into_inner().event_id
    }
}

/// `node-1/ab12cd34` → `node-1`.
fn name_of(holder: &str) -> String {
    holder.split('/').next().unwrap().to_owned()
}

fn node_of<T>(md: &tonic::metadata::MetadataMap, _: &T) -> String {
    md.get("usher-node").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

/// One hold, through `clients[start]` and then the others in turn while the
/// answer is "retry" (UNAVAILABLE, a timeout, a refused connection), with
/// the same idempotency key, until `within` has passed.
async fn hold(clients: &[InventoryServiceClient<Ch>], start: usize, req: &pb::HoldSeatsRequest, within: Duration) -> Decided<pb::Hold> {
    let until = Instant::now() + within;
    let mut i = start;
    loop {
        let mut c = clients[i % clients.len()].clone();
        let mut r = tonic::Request::new(req.clone());
        r.set_timeout(Duration::from_millis(1_500));
        match c.hold_seats(r).await {
            Ok(rep) => {
                let node = node_of(rep.metadata(), &());
                return (Ok(rep.into_inner()), node);
            }
            Err(s) if retryable(&s) && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(25)).await;
                i += 1;
            }
            Err(s) => {
                let node = node_of(s.metadata(), &());
                return (Err(s), node);
            }
        }
    }
}

/// Worth asking again (with the same key): a server's UNAVAILABLE, or the
/// connection failing under the call (a node that drains sends GOAWAY; one
/// that dies resets it), which the client reports as its own error.
fn retryable(s: &tonic::Status) -> bool {
    let transport = std::error::Error::source(s).is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
    transport
        || matches!(s.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown)
}

/// The label of the `n`-th seat of a grid of sections of 10 rows of 20.
fn seat(n: usize) -> String {
    format!("{}-{}-{}", (b'A' + (n / 200) as u8) as char, (n % 200) / 20 + 1, n % 20 + 1)
}

/// Every acknowledged hold is active in storage with its seats, and no seat
/// is claimed twice (the claims table's key is the seat).
async fn assert_all_present(w: &World, event: &str, acked: &[pb::Hold]) {
    let claims = w.db.claims(event).await;
    let mut seats: Vec<i64> = claims.iter().map(|c| c.0).collect();
    seats.dedup();
    assert_eq!(seats.len(), claims.len(), "a seat is claimed twice");
    for h in acked {
        let n = w.db.scalar("SELECT COUNT(*) FROM holds WHERE id = $1 AND event_id = $2 AND state = 'active'", &[&h.hold_id, event]).await;
        assert_eq!(n, 1, "acknowledged hold {} is in storage", h.hold_id);
        let claimed = claims.iter().filter(|c| c.1.as_deref() == Some(h.hold_id.as_str())).count();
        assert_eq!(claimed, h.seats.len(), "hold {} claims its seats", h.hold_id);
    }
}

/// A load of single-seat holds on distinct seats through every node in
/// turn, retrying as a client should; returns what was acknowledged.
struct Load {
    acked: Arc<Mutex<Vec<(pb::Hold, String, Instant)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(clients: Vec<InventoryServiceClient<Ch>>, event: &str, workers: usize, seats: std::ops::Range<usize>) -> Load {
        let acked: Arc<Mutex<Vec<(pb::Hold, String, Instant)>>> = Arc::default();
        let mut tasks = Vec::new();
        for w in 0..workers {
            let (acked, event, clients) = (acked.clone(), event.to_owned(), clients.clone());
            let seats = seats.clone();
            tasks.push(tokio::spawn(async move {
                for n in seats.skip(w).step_by(workers) {
                    let req = hold_req(&event, &format!("buyer-{n}"), &[seat(n).as_str()]);
                    match hold(&clients, w + n, &req, Duration::from_secs(30)).await {
                        (Ok(h), node) => acked.lock().unwrap().push((h, node, Instant::now())),
                        (Err(s), _) => panic!("hold of seat {} failed for good: {s:?}", seat(n)),
                    }
                }
            }));
        }
        Load { acked, tasks }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn wait_for(&self, n: usize) {
        let until = Instant::now() + Duration::from_secs(60);
        while self.count() < n {
            assert!(Instant::now() < until, "the load stalled at {} holds", self.count());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The first hold acknowledged after `t` by a node other than `not`.
    async fn first_after(&self, t: Instant, not: &str) -> Instant {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(at) = self.acked.lock().unwrap().iter().filter(|(_, n, at)| *at > t && n != not).map(|(_, _, at)| *at).min() {
                return at;
            }
            assert!(Instant::now() < until, "no node decided after the owner went");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Every hold of the load, once all are acknowledged.
    async fn finish(self) -> Vec<(pb::Hold, String, Instant)> {
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seat_one_winner_across_three_nodes() {
    let w = World::start(3).await;
    let event = w.event(1, 1, 10).await;
    let clients = w.inventories().await;
    let mut tasks = Vec::new();
    for i in 0..1_000usize {
        let (clients, event) = (clients.clone(), event.clone());
        tasks.push(tokio::spawn(async move {
            let req = hold_req(&event, &format!("buyer-{i}"), &["A-1-1"]);
            hold(&clients, i % 3, &req, Duration::from_secs(30)).await
        }));
    }
    let (mut won, mut taken, mut deciders) = (0, 0, std::collections::BTreeMap::<String, usize>::new());
    for t in tasks {
        let (r, node) = t.await.unwrap();
        *deciders.entry(node).or_default() += 1;
        match r {
            Ok(_) => won += 1,
            Err(s) if reason(&s) == "SEATS_TAKEN" => taken += 1,
            Err(s) => panic!("unexpected answer: {s:?}"),
        }
    }
    println!("1,000 buyers on one seat: {won} won, {taken} SEATS_TAKEN; decided by {deciders:?}");
    assert_eq!((won, taken), (1, 999));
    // One node decided them all: the event's owner, whichever node was asked.
    let owner = w.owner(&event).expect("the event has an owner");
    assert_eq!(deciders.len(), 1, "one decider: {deciders:?}");
    assert_eq!(deciders.keys().next().unwrap(), &owner);
    assert_eq!(w.db.claims(&event).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_killed_under_load_is_replaced_within_the_lease_and_loses_nothing() {
    let mut w = World::start(3).await;
    let event = w.event(10, 10, 20).await; // 2,000 seats
    const ROUNDS: usize = 10;
    let per_round = 2_000 / ROUNDS;
    let mut takeovers = Vec::new();
    let mut all = Vec::new();
    for round in 0..ROUNDS {
        let clients = w.inventories().await;
        let first = round * per_round;
        let load = Load::start(clients, &event, 8, first..first + per_round);
        load.wait_for(per_round / 4).await;
        let owner = w.owner(&event).expect("the event has an owner");
        let i = w.index_of(&owner);
        let killed_at = Instant::now();
        w.kill(i).await;
        let next = load.first_after(killed_at, &owner).await;
        takeovers.push(next - killed_at);
        let acked = load.finish().await;
        assert_eq!(acked.len(), per_round, "every hold of the round was acknowledged in the end");
        all.extend(acked.into_iter().map(|(h, _, _)| h));
        w.start_node(i).await;
    }
    assert_all_present(&w, &event, &all).await;
    assert_eq!(w.db.claims(&event).await.len(), 2_000);
    let p50 = percentile(&mut takeovers, 0.5);
    let p99 = percentile(&mut takeovers, 0.99);
    println!("takeover after SIGKILL of the owner, {ROUNDS} rounds: p50 {p50:?}, p99 {p99:?} (lease TTL {TTL_MS} ms): {takeovers:?}");
    // The promise: the lease's TTL, plus a renewal period for the next
    // node's sweep or request, plus a client's retry.
    assert!(p99 < Duration::from_millis(TTL_MS + RENEW_MS * 2 + 1_000), "takeover p99 {p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_owner_that_wakes_up_is_fenced_and_changes_nothing() {
    let w = World::start(3).await;
    let event = w.event(10, 10, 20).await;
    let clients = w.inventories().await;
    let mut rounds = 0;
    let mut all = Vec::new();
    let mut next_seat = 0usize;
    // Each round: a load through the other nodes, and holds sent straight
    // to the stalled owner that it reads only when it wakes.
    loop {
        rounds += 1;
        assert!(rounds <= 5, "no fenced write in 5 stalls");
        let owner = w.owner(&event).unwrap_or_else(|| {
            // Nobody owns it yet in the first round: make someone.
            String::new()
        });
        let owner = if owner.is_empty() {
            let req = hold_req(&event, "first", &[seat(next_seat).as_str()]);
            next_seat += 1;
            let (h, _) = hold(&clients, 0, &req, Duration::from_secs(10)).await;
            all.push(h.unwrap());
            w.owner(&event).unwrap()
        } else {
            owner
        };
        let i = w.index_of(&owner);
        let fenced_before = w.fenced_writes(&owner);
        let others: Vec<_> = (0..3).filter(|&j| j != i).map(|j| clients[j].clone()).collect();
        let stopped_at = Instant::now();
        w.signal(i, "-STOP");
        // Straight to the stalled owner: it reads these when it wakes.
        let mut direct = Vec::new();
        for k in 0..20 {
            let mut c = clients[i].clone();
            let req = hold_req(&event, &format!("direct-{rounds}-{k}"), &[seat(next_seat).as_str()]);
            next_seat += 1;
            direct.push(tokio::spawn(async move {
                let mut r = tonic::Request::new(req);
                r.set_timeout(Duration::from_secs(20));
                match c.hold_seats(r).await {
                    Ok(rep) => (Some(rep.get_ref().clone()), node_of(rep.metadata(), &())),
                    Err(s) => (None, format!("{:?} {}", s.code(), reason(&s))),
                }
            }));
        }
        let load = Load::start(others, &event, 4, next_seat..next_seat + 100);
        next_seat += 100;
        // Past the lease: another node takes the event and decides.
        let next = load.first_after(stopped_at, &owner).await;
        assert!(next - stopped_at < Duration::from_millis(TTL_MS + RENEW_MS * 2 + 1_000));
        tokio::time::sleep(Duration::from_millis(200)).await;
        w.signal(i, "-CONT");
        let acked = load.finish().await;
        for (h, node, _) in &acked {
            assert_ne!(node, &owner, "no answer of the stalled owner after it stalled ({})", h.hold_id);
        }
        all.extend(acked.into_iter().map(|(h, _, _)| h));
        for d in direct {
            let (h, node) = d.await.unwrap();
            // Answered (after the wake) by the new owner, or refused as retryable; never by the stalled one.
            assert_ne!(node, owner, "the stalled owner decided a hold after losing its lease");
            if let Some(h) = h {
                all.push(h);
            }
        }
        // Its heartbeat after the wake reports the fenced writes.
        tokio::time::sleep(Duration::from_millis(RENEW_MS * 2)).await;
        let fenced = w.fenced_writes(&owner);
        println!("stall {rounds}: {owner} fenced writes {fenced_before} -> {fenced}");
        if fenced > fenced_before {
            break;
        }
    }
    assert_all_present(&w, &event, &all).await;
    // Storage holds exactly the acknowledged holds: nothing the stalled owner wrote after it lost the lease.
    let active = w.db.scalar("SELECT COUNT(*) FROM holds WHERE event_id = $1 AND state = 'active'", &[&event]).await;
    assert_eq!(active as usize, all.len(), "only acknowledged holds are stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_under_load_sells_no_seat_twice_and_service_resumes() {
    let mut w = World::start(3).await;
    let event = w.event(10, 10, 20).await;
    let clients = w.inventories().await;
    let load = Load::start(clients.clone(), &event, 8, 0..1_000);
    load.wait_for(200).await;
    let at = Instant::now();
    w.redis.restart_empty().await;
    load.wait_for(load.count() + 100).await;
    println!("service resumed {:?} after Redis restarted empty", Instant::now() - at);
    let acked: Vec<pb::Hold> = load.finish().await.into_iter().map(|(h, _, _)| h).collect();
    assert_eq!(acked.len(), 1_000);
    assert_all_present(&w, &event, &acked).await;
    // Every seat was wanted by exactly one buyer: a seat sold twice would
    // show as a hold acknowledged to two buyers or a second claim.
    assert_eq!(w.db.claims(&event).await.len(), 1_000);
    let owner = w.owner(&event).expect("the event has an owner again");
    println!("owner after the restart: {owner}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_with_sigterm_hands_events_over_faster_than_the_lease() {
    let mut w = World::start(3).await;
    let event = w.event(10, 10, 20).await;
    let mut all = Vec::new();
    let mut handoffs = Vec::new();
    for (round, i) in (0..3).enumerate() {
        let clients = w.inventories().await;
        let first = round * 600;
        let load = Load::start(clients, &event, 8, first..first + 600);
        load.wait_for(150).await;
        let name = w.nodes[i].name.clone();
        let owned = w.owner(&event).as_deref() == Some(name.as_str());
        let at = Instant::now();
        let status = w.terminate(i).await;
        assert!(status.success(), "{name} exits cleanly on SIGTERM: {status:?}");
        if owned {
            let next = load.first_after(at, &name).await;
            handoffs.push(next - at);
        }
        let acked = load.finish().await;
        assert_eq!(acked.len(), 600);
        all.extend(acked.into_iter().map(|(h, _, _)| h));
        w.start_node(i).await;
    }
    assert_all_present(&w, &event, &all).await;
    assert_eq!(w.db.claims(&event).await.len(), 1_800);
    println!("handoffs of the event on SIGTERM of its owner: {handoffs:?} (lease TTL {TTL_MS} ms)");
    assert!(!handoffs.is_empty(), "the owner was restarted at least once");
    for h in &handoffs {
        assert!(*h < Duration::from_millis(TTL_MS), "a drain hands over before the lease would expire: {h:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_owner_dies_between_payment_and_tickets_is_finished_once_by_the_new_owner() {
    // Node 1 alone first, so it owns the event; it waits a minute between
    // capturing a payment and issuing tickets: the kill lands there.
    let mut w = World::start(0).await;
    w.start_node_with(0, &[("USHER_TEST_ISSUE_DELAY_MS", "60000")]).await;
    let event = w.event(1, 2, 10).await;
    let ch = connect_as(w.nodes[0].addr, &w.token).await;
    let seats = ["A-1-1", "A-1-2", "A-2-5"];
    let mut inv = InventoryServiceClient::new(ch.clone());
    let h1 = inv.hold_seats(hold_req(&event, "carol", &seats[..2])).await.unwrap().into_inner();
    let h2 = inv.hold_seats(hold_req(&event, "carol", &seats[2..])).await.unwrap().into_inner();
    w.start_node(1).await;
    w.start_node(2).await;
    // The order and its payment go through node 2, which forwards them to the owner.
    let ch2 = connect_as(w.nodes[1].addr, &w.token).await;
    let order = OrderingServiceClient::new(ch2.clone())
        .create_order(order_req("carol", "carol@example.com", vec![h1.hold_id, h2.hold_id]))
        .await
        .unwrap();
    assert_eq!(node_of(order.metadata(), &()), "node-1", "the owner decided the order");
    let order = order.into_inner();
    PaymentServiceClient::new(ch2.clone()).pay_order(pay_req(&order.order_id, "4242 4242 4242 4242", 10_000)).await.unwrap();
    order_reaching(&ch2, &order.order_id, Duration::from_secs(30), "paid/issue", |o| {
        o.status == pb::OrderStatus::Paid as i32 && o.step == "issue"
    })
    .await;
    let killed_at = Instant::now();
    w.kill(0).await; // SIGKILL: paid, no ticket yet
    assert_eq!(w.db.scalar("SELECT COUNT(*) FROM tickets", &[]).await, 0, "killed before any ticket");
    // No request needed: a node's sweep takes the orphaned event once its
    // lease expires, and resumes its order from storage.
    let o = order_reaching(&ch2, &order.order_id, Duration::from_secs(60), "done by the new owner", |o| o.step == "done").await;
    println!("order finished by the new owner {:?} after the kill", killed_at.elapsed());
    assert_eq!(o.status, pb::OrderStatus::Fulfilled as i32, "{o:?}");
    let owner = w.owner(&event).expect("a new owner");
    assert_ne!(owner, "node-1");
    assert_eq!(ticket_seats(&ch2, &order.order_id).await, seats, "exactly one ticket per seat");
    assert_eq!(w.db.scalar("SELECT COUNT(*) FROM tickets", &[]).await, 3);
    assert_eq!(w.db.payloads("payment-succeeded", &event).await.len(), 1, "one capture");
    assert_eq!(w.db.payloads("order-fulfilled", &event).await.len(), 1);
    // The provider captured once: one captured line in its shared ledger.
    let ledger = std::fs::read_to_string(w.db.data_dir.join("payment-sim.jsonl")).unwrap();
    assert_eq!(ledger.lines().filter(|l| l.contains("\"captured\"") || l.contains("\"Captured\"")).count(), 1, "{ledger}");
    // One email, even with three postmen on one queue.
    let mail = maildir_at_least(&w.db, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(maildir(&w.db).len(), 1, "exactly one email: {mail:?}");
}

/// A call made until it is answered for good: through `clients[start]` and
/// then the others in turn while the answer is "retry", with the same
/// request (and so the same idempotency key), for up to 60 s.
async fn until_answered<C: Clone, T, F, Fut>(clients: &[C], start: usize, call: F) -> Result<T, tonic::Status>
where
    F: Fn(C) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let until = Instant::now() + Duration::from_secs(60);
    let mut i = start;
    loop {
        match tokio::time::timeout(Duration::from_millis(2_000), call(clients[i % clients.len()].clone())).await {
            Ok(Ok(r)) => return Ok(r.into_inner()),
            Ok(Err(s)) if !retryable(&s) || Instant::now() >= until => return Err(s),
            Err(_) if Instant::now() >= until => return Err(tonic::Status::deadline_exceeded("no answer in 60 s")),
            _ => {
                tokio::time::sleep(Duration::from_millis(25)).await;
                i += 1;
            }
        }
    }
}

#[derive(Default)]
struct Ledger {
    /// Holds acknowledged and still live (neither released nor ordered).
    live: Vec<pb::Hold>,
    released: Vec<String>,
    /// Paid orders and their seat count.
    paid: Vec<(String, usize)>,
}

/// Buyers hold, release, order and pay for a bounded time while, every few
/// seconds, a random node is killed, stopped or restarted; afterwards every
/// acknowledged hold and paid order is accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_nodes_loses_no_hold_or_order_and_fulfils_each_paid_order_once() {
    let seed: u64 = std::env::var("USHER_CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    println!("churn seed {seed} (replay with USHER_CHURN_SEED={seed})");
    let mut w = World::start(3).await;
    let event = w.event(10, 10, 20).await;
    let run_for = Duration::from_secs(25);
    let started = Instant::now();
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let mut buyers = Vec::new();
    for b in 0..6usize {
        let mut chans = Vec::new();
        for n in &w.nodes {
            chans.push(connect_as(n.addr, &w.token).await);
        }
        let (event, ledger) = (event.clone(), ledger.clone());
        let mut rng = Rng(seed ^ (b as u64 + 1).wrapping_mul(0x9e37_79b9));
        buyers.push(tokio::spawn(async move {
            let inv: Vec<_> = chans.iter().cloned().map(InventoryServiceClient::new).collect();
            let ord: Vec<_> = chans.iter().cloned().map(OrderingServiceClient::new).collect();
            let pay: Vec<_> = chans.iter().cloned().map(PaymentServiceClient::new).collect();
            let mut k = 0usize;
            while started.elapsed() < run_for {
                k += 1;
                let customer = format!("b{b}-{k}");
                // Two buyers share each 300 seats, so they race for seats
                // while nodes fail over.
                let base = (b / 2) * 300;
                let first = rng.index(300);
                let seats: Vec<String> = (0..1 + rng.index(2)).map(|i| seat((first + i * 7) % 300 + base)).collect();
                let seat_refs: Vec<&str> = seats.iter().map(String::as_str).collect();
                let req = hold_req(&event, &customer, &seat_refs);
                let h = match until_answered(&inv, k, |mut c| {
                    let r = req.clone();
                    async move { c.hold_seats(r).await }
                })
                .await
                {
                    Ok(h) => h,
                    Err(s) if reason(&s) == "SEATS_TAKEN" => continue,
                    Err(s) => panic!("seed {seed}: hold {seats:?}: {s:?}"),
                };
                match rng.index(3) {
                    0 => {
                        ledger.lock().unwrap().live.push(h);
                    }
                    1 => {
                        let req = pb::ReleaseHoldRequest {
                            idempotency_key: key(),
                            hold_id: h.hold_id.clone(),
                            event_id: event.clone(),
                            customer_id: customer.clone(),
                        };
                        until_answered(&inv, k + 1, |mut c| {
                            let r = req.clone();
                            async move { c.release_hold(r).await }
                        })
                        .await
                        .unwrap_or_else(|s| panic!("seed {seed}: release {}: {s:?}", h.hold_id));
                        ledger.lock().unwrap().released.push(h.hold_id);
                    }
                    _ => {
                        let req = order_req(&customer, &format!("{customer}@example.com"), vec![h.hold_id.clone()]);
                        let o = until_answered(&ord, k + 2, |mut c| {
                            let r = req.clone();
                            async move { c.create_order(r).await }
                        })
                        .await
                        .unwrap_or_else(|s| panic!("seed {seed}: order of {}: {s:?}", h.hold_id));
                        let req = pay_req(&o.order_id, "4242 4242 4242 4242", 1_500);
                        until_answered(&pay, k + 3, |mut c| {
                            let r = req.clone();
                            async move { c.pay_order(r).await }
                        })
                        .await
                        .unwrap_or_else(|s| panic!("seed {seed}: pay {}: {s:?}", o.order_id));
                        ledger.lock().unwrap().paid.push((o.order_id, h.seats.len()));
                    }
                }
            }
        }));
    }
    // The chaos: one node at a time is killed, stopped or drained, then
    // brought back, every 2 to 4 seconds.
    let mut rng = Rng(seed);
    let mut actions = Vec::new();
    while started.elapsed() < run_for {
        tokio::time::sleep(Duration::from_millis(rng.range(2_000, 4_000))).await;
        let i = rng.index(3);
        match rng.index(3) {
            0 => {
                w.kill(i).await;
                w.start_node(i).await;
                actions.push(format!("kill node-{}", i + 1));
            }
            1 => {
                w.signal(i, "-STOP");
                tokio::time::sleep(Duration::from_millis(rng.range(1_000, 5_000))).await;
                w.signal(i, "-CONT");
                actions.push(format!("stop node-{}", i + 1));
            }
            _ => {
                let status = w.terminate(i).await;
                assert!(status.success(), "seed {seed}: node-{} drains cleanly: {status:?}", i + 1);
                w.start_node(i).await;
                actions.push(format!("restart node-{}", i + 1));
            }
        }
    }
    for b in buyers {
        b.await.unwrap_or_else(|e| panic!("seed {seed}: a buyer failed: {e:?}"));
    }
    println!("seed {seed}: chaos {actions:?}");
    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    println!("seed {seed}: {} live holds, {} released, {} paid orders", ledger.live.len(), ledger.released.len(), ledger.paid.len());
    // Every paid order is fulfilled, once.
    let ch = connect_as(w.nodes[0].addr, &w.token).await;
    // A node killed while its Pay call waited for the provider takes the
    // card number with it (never stored): the order fails with "pay again"
    // and nothing is taken. Any other end of a paid order is a bug.
    let mut fulfilled = Vec::new();
    for (order_id, seats) in &ledger.paid {
        // A node killed between claiming an order's email and sending it
        // leaves the email to the others when the claim runs out
        // (`MAIL_CLAIM_MS`, longer than a whole SMTP send): the order is
        // done after that, plus a poll of the mail state and a send.
        let until = Instant::now() + Duration::from_millis(usher_engine::limits::MAIL_CLAIM_MS + 30_000);
        loop {
            let o = get_order(&ch, order_id).await;
            if o.step == "done" {
                let interrupted = o.status == pb::OrderStatus::PaymentFailed as i32
                    && o.note == "the payment was interrupted before it reached the provider; pay again";
                if !interrupted {
                    assert_eq!(o.status, pb::OrderStatus::Fulfilled as i32, "seed {seed}: order {order_id} {o:?}");
                    fulfilled.push((order_id.clone(), *seats));
                }
                break;
            }
            assert!(Instant::now() < until, "seed {seed}: order {order_id} not fulfilled: {:?} {}", o.status, o.step);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let tickets = w.db.scalar("SELECT COUNT(*) FROM tickets WHERE order_id = $1", &[order_id]).await;
        let want = if fulfilled.last().is_some_and(|(o, _)| o == order_id) { *seats } else { 0 };
        assert_eq!(tickets as usize, want, "seed {seed}: one ticket per seat of order {order_id}, none if it failed");
    }
    println!("seed {seed}: {} of {} paid orders fulfilled, the others interrupted by a kill", fulfilled.len(), ledger.paid.len());
    assert!(fulfilled.len() * 2 >= ledger.paid.len(), "seed {seed}: most paid orders are fulfilled");
    let paid = fulfilled;
    assert_eq!(w.db.payloads("payment-succeeded", &event).await.len(), paid.len(), "seed {seed}: one capture per order");
    assert_eq!(w.db.payloads("order-fulfilled", &event).await.len(), paid.len(), "seed {seed}: fulfilled once each");
    // One email per paid order (and none for anything else), counted by
    // Message-ID: a node killed after its SMTP send and before it recorded
    // the send makes another node send the same message again (at least
    // once, same Message-ID: ARCHITECTURE.md "Known gaps"), so a file may
    // repeat a message, never add one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failed_mail = ledger.paid.len() - paid.len();
    let mail = maildir(&w.db);
    let messages: std::collections::BTreeSet<&str> = mail.iter().map(|m| message_id(m)).collect();
    if messages.len() < mail.len() {
        println!("seed {seed}: {} email(s) sent again after a kill, same Message-ID", mail.len() - messages.len());
    }
    assert_eq!(messages.len(), paid.len() + failed_mail, "seed {seed}: one email per paid order (fulfilled or told to pay again)");
    // Every live hold is there; every released one is released.
    assert_all_present(&w, &event, &ledger.live).await;
    for h in &ledger.released {
        let state = w.db.scalar("SELECT COUNT(*) FROM holds WHERE id = $1 AND state = 'released'", &[h]).await;
        assert_eq!(state, 1, "seed {seed}: hold {h} is released");
    }
    // Seats: claimed by exactly the live holds and the paid orders' tickets.
    let sold: usize = paid.iter().map(|(_, n)| n).sum();
    let live: usize = ledger.live.iter().map(|h| h.seats.len()).sum();
    assert_eq!(w.db.claims(&event).await.len(), sold + live, "seed {seed}: claims are exactly the live holds and the sold seats");
}

/// Reads the page feed on `r` until a server-sent event named `name`
/// arrives (within 10 s); returns its data line.
async fn sse_until(r: &mut tokio::io::BufReader<tokio::net::TcpStream>, name: &str) -> String {
    use tokio::io::AsyncBufReadExt;
    let until = Instant::now() + Duration::from_secs(10);
    let mut current = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout_at(until.into(), r.read_line(&mut line))
            .await
            .unwrap_or_else(|_| panic!("no {name} event within 10 s"))
            .unwrap();
        assert!(n > 0, "the feed ended before a {name} event");
        if let Some(e) = line.strip_prefix("event: ") {
            current = e.trim().to_owned();
        } else if let Some(d) = line.strip_prefix("data: ")
            && current == name
        {
            return d.trim().to_owned();
        }
    }
}

/// `WatchSeats` and the storefront's live feed work from nodes that do not
/// own the event (each mirrors the owner's feed), and a watcher whose
/// event changes hands is told to watch again, and can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_seat_feeds_work_from_every_node() {
    use tokio::io::AsyncWriteExt;
    let mut w = World::start(3).await;
    let event = w.event(1, 2, 10).await;
    let clients = w.inventories().await;
    // Node 1 takes the event.
    let (h, node) = hold(&clients, 0, &hold_req(&event, "first", &["A-1-1"]), Duration::from_secs(10)).await;
    h.unwrap();
    let owner = w.owner(&event).unwrap();
    assert_eq!(node, owner);
    let others: Vec<usize> = (0..3).filter(|&i| w.nodes[i].name != owner).collect();
    // A WatchSeats stream on one node that does not own the event.
    let mut cat = CatalogServiceClient::new(connect_as(w.nodes[others[0]].addr, &w.token).await);
    let mut feed = cat.watch_seats(pb::WatchSeatsRequest { event_id: event.clone(), compact: false }).await.unwrap().into_inner();
    let first = feed.message().await.unwrap().unwrap();
    assert!(first.snapshot);
    let a11 = first.changes.iter().find(|c| c.seat_id == "A-1-1").unwrap();
    assert_eq!(a11.status, pb::SeatStatus::Held as i32, "the snapshot is the owner's");
    // A storefront page on the other.
    let status = w.status();
    let http = status["nodes"].as_array().unwrap().iter().find(|n| n["name"] == w.nodes[others[1]].name.as_str()).unwrap()["http_addr"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut s = tokio::net::TcpStream::connect(&http).await.unwrap();
    s.write_all(format!("GET /api/events/{event}/seats/live HTTP/1.1\r\nHost: usher\r\nAccept: text/event-stream\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut page = tokio::io::BufReader::new(s);
    let snap = sse_until(&mut page, "snapshot").await;
    assert!(snap.contains("\"held\":1"), "{snap}");
    // A hold through the third path shows on both.
    let (h, _) = hold(&clients, others[1], &hold_req(&event, "second", &["A-2-5"]), Duration::from_secs(10)).await;
    h.unwrap();
    let changes = tokio::time::timeout(Duration::from_secs(10), feed.message()).await.unwrap().unwrap().unwrap();
    assert!(changes.changes.iter().any(|c| c.seat_id == "A-2-5" && c.status == pb::SeatStatus::Held as i32), "{changes:?}");
    let sse = sse_until(&mut page, "changes").await;
    assert!(sse.contains("\"held\":2"), "{sse}");
    // The owner dies: the mirrored feeds end with "watch again"; watching
    // again (once another node has the event) works, with what was held.
    let i = w.index_of(&owner);
    w.kill(i).await;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match feed.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(s) => return Some(s),
            }
        }
    })
    .await
    .expect("the mirrored feed ends when its owner dies");
    if let Some(s) = ended {
        assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
    }
    let until = Instant::now() + Duration::from_secs(20);
    let again = loop {
        // Any request makes a node take the event once the lease is gone.
        let _ = hold(&clients, others[0], &hold_req(&event, "third", &["A-2-9"]), Duration::from_secs(10)).await;
        match cat.watch_seats(pb::WatchSeatsRequest { event_id: event.clone(), compact: false }).await {
            Ok(s) => break s.into_inner(),
            Err(s) if retryable(&s) && Instant::now() < until => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(s) => panic!("watching again failed: {s:?}"),
        }
    };
    let mut again = again;
    let snap = again.message().await.unwrap().unwrap();
    let held: Vec<&str> = snap.changes.iter().filter(|c| c.status == pb::SeatStatus::Held as i32).map(|c| c.seat_id.as_str()).collect();
    assert!(held.contains(&"A-1-1") && held.contains(&"A-2-5"), "{held:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_stays_in_its_callers_trace() {
    use common::otlp::{Receiver, hex, new_trace, traced};
    let (receiver, endpoint) = Receiver::start(true).await.unwrap();
    let env = [("USHER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let mut w = World::start(0).await;
    w.start_node_with(0, &env).await;
    w.start_node_with(1, &env).await;
    let event = w.event(1, 1, 10).await;
    let clients = w.inventories().await;
    // Someone owns the event; the call goes to the other node.
    let (first, owner) = hold(&clients, 0, &hold_req(&event, "a", &["A-1-1"]), Duration::from_secs(30)).await;
    first.unwrap();
    let entry = 1 - w.index_of(&owner);
    let (trace_id, client_span, tp) = new_trace();
    let mut c = clients[entry].clone();
    let rep = c.hold_seats(traced(hold_req(&event, "b", &["A-1-2"]), &tp)).await.unwrap();
    assert_eq!(node_of(rep.metadata(), &()), owner, "the owner decided");

    let t = Instant::now();
    let (asked, served, commit) = loop {
        let spans = receiver.spans();
        let ours: Vec<_> = spans.iter().filter(|(_, s)| hex(&s.trace_id) == trace_id).collect();
        let asked = ours.iter().find(|(_, s)| s.name == "/usher.v1.InventoryService/HoldSeats").cloned();
        let served = ours.iter().find(|(_, s)| s.name == "/usher.cluster.v1.NodeService/Forward").cloned();
        let commit = served.as_ref().and_then(|(_, f)| {
            spans.iter().find(|(_, s)| s.name == "group_commit" && s.links.iter().any(|l| l.trace_id == f.trace_id)).cloned()
        });
        if let (Some(a), Some(s), Some(c)) = (asked, served, commit) {
            break (a.clone(), s.clone(), c);
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "spans of the trace: {:?}; all: {:?}",
            ours.iter().map(|(n, s)| (n, &s.name)).collect::<Vec<_>>(),
            spans.iter().map(|(n, s)| (n, &s.name, hex(&s.trace_id)[..8].to_owned(), hex(&s.parent_span_id))).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The node asked is a child of the client, the owner's serving span a
    // child of the node asked, and the owner's group commit links into the
    // same trace.
    assert_eq!(asked.0, w.nodes[entry].name);
    assert_eq!(hex(&asked.1.parent_span_id), client_span);
    assert_eq!(served.0, owner);
    assert_eq!(served.1.parent_span_id, asked.1.span_id, "the forward is a child of the call that forwarded it");
    assert_eq!(commit.0, owner);
}

/// A message's `Message-ID` header (RFC 5322 3.6.4), as the file has it.
fn message_id(mail: &str) -> &str {
    mail.lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("message-id")).map(|(_, v)| v.trim()))
        .unwrap_or_else(|| panic!("an email without a Message-ID:\n{mail}"))
}
