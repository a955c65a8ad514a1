//! `usher-bench`: drives Usher (embedded SQLite and PostgreSQL) and the
//! lock-per-seat baseline with the same scenarios over many HTTP/2
//! connections, with a fixed seed, and reports a table plus JSON.
//! Servers run as separate processes (the `usher` and `usher-baseline`
//! binaries next to this one).
//!
//! Usher wants credentials on every call. Before a server starts, the bench
//! bootstraps its store with `usher admin`: an owner, an organization of
//! theirs and a partner API key with every scope. The owner (an access token
//! from `LogIn`) sets up the catalog; every buyer request carries the
//! partner key, as a box-office integration's would. The baseline has no
//! authentication and gets no token.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde::Serialize;
use sqlx::{Connection, Executor, Row};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use usher_gateway::client::{Bearer, Ch};
use usher_proto::v1::{
    self as pb, catalog_service_client::CatalogServiceClient, identity_service_client::IdentityServiceClient,
    inventory_service_client::InventoryServiceClient,
};

mod cluster;
mod funnel;
mod readers;

#[derive(Parser, Clone)]
#[command(about = "Onsale load generator for Usher, with the lock-per-seat baseline side by side")]
struct Args {
    /// hot-seat, stadium, memory, funnel, pdf, pdf-memory, readers,
    /// big-orders, many-events (comma-separated), or all (all but
    /// many-events, which is for `--nodes`).
    #[arg(long, default_value = "all")]
    scenarios: String,
    /// usher-sqlite, usher-pg, baseline (comma-separated); also
    /// usher-sqlite-before and usher-pg-before: the same store served by the
    /// `--before-bin` binary, to weigh a change in one run; usher-pg-kafka
    /// (the outbox relayed to a tansu broker the bench starts, and the
    /// relay's lag measured), usher-pg-kafka-noconsumers (the same with the
    /// read model and webhook queue not reading) and usher-pg-norelay (the
    /// relay off), to weigh the relay and its consumers in one run;
    /// usher-pg-nometrics (no metrics recorder) and usher-pg-traced (every
    /// call traced, spans exported over OTLP to a receiver in the bench) to
    /// weigh metrics and traces against usher-pg.
    #[arg(long, default_value = "usher-sqlite,usher-pg,baseline")]
    targets: String,
    /// An `usher` binary built before identity (no authentication), for the
    /// `-before` targets: the cost of authentication measured in the same run.
    #[arg(long)]
    before_bin: Option<PathBuf>,
    #[arg(long, default_value_t = 1_000)]
    hot_buyers: usize,
    #[arg(long, default_value_t = 50_000)]
    seats: usize,
    #[arg(long, default_value_t = 200_000)]
    buyers: usize,
    /// Requests in flight at once (virtual buyers acting at the same moment).
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// HTTP/2 connections the buyers share.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pg_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Nodes of a cluster serving `usher-pg` (one PostgreSQL database, the
    /// Redis at `--redis-url`); the buyers' connections are spread over them.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Events of the many-events scenario, and seats in each.
    #[arg(long, default_value_t = 200)]
    events: usize,
    #[arg(long, default_value_t = 2_000)]
    event_seats: usize,
    /// Hold requests the many-events scenario sends.
    #[arg(long, default_value_t = 50_000)]
    many_requests: usize,
    /// Orders the funnel scenario buys (hold → order → pay → tickets → PDF → email).
    #[arg(long, default_value_t = 400)]
    funnel_orders: usize,
    /// Orders the funnel scenario then creates and leaves unpaid, to weigh a waiting saga.
    #[arg(long, default_value_t = 4_000)]
    funnel_unpaid: usize,
    /// Buyers in the funnel at once.
    #[arg(long, default_value_t = 32)]
    funnel_in_flight: usize,
    /// PDFs the pdf scenario renders per set.
    #[arg(long, default_value_t = 200)]
    pdf_count: usize,
    /// Threads rendering at once in the pdf scenario.
    #[arg(long, default_value_t = 2)]
    pdf_workers: usize,
    /// PDFs the pdf-memory scenario renders (one in 100 of them large).
    #[arg(long, default_value_t = 1_000)]
    pdf_memory_renders: usize,
    /// Tickets in each large PDF of the pdf-memory scenario (the most one order may have).
    #[arg(long, default_value_t = usher_engine::limits::ORDER_SEATS_MAX)]
    pdf_large_tickets: usize,
    /// Render the pdf-memory scenario on tokio's blocking pool instead of the render queue's threads.
    #[arg(long)]
    pdf_memory_blocking_pool: bool,
    /// Live seat feeds (storefront pages) open during the readers scenario's onsale.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Readers fetching the compact seat status during the readers scenario.
    #[arg(long, default_value_t = 100)]
    readers: usize,
    /// How often each reader fetches it (a page whose feed broke polls every 2 s).
    #[arg(long, default_value_t = 2_000)]
    reader_interval_ms: u64,
    /// Where the JSON report goes.
    #[arg(long, default_value = "bench/results/latest.json")]
    json: PathBuf,
    /// The tansu binary for the usher-pg-kafka target (scripts/test
    /// installs it there).
    #[arg(long, env = "USHER_TEST_TANSU", default_value = "tansu")]
    tansu: PathBuf,
}

// ---------------------------------------------------------------- servers

struct Server {
    child: Child,
    /// The other nodes of a cluster (`--nodes`), and every node's gRPC
    /// address, the first node's first.
    extra: Vec<Child>,
    addrs: Vec<String>,
    /// The server's last "group commit" line (printed when it stops).
    commits: Arc<std::sync::Mutex<Option<String>>>,
    addr: String,
    pg_db: Option<String>,
    data_dir: Option<PathBuf>,
    /// The organization the bootstrap made (Usher only).
    org_id: String,
    /// The owner's access token, from `LogIn`: catalog setup (Usher only).
    owner_token: Option<String>,
    /// The partner API key (`usk_…`, every scope): every buyer request (Usher only).
    partner_key: Option<String>,
    /// The storefront's address (Usher only).
    http: Option<String>,
    /// The OTLP receiver the node exports to (`-traced` targets).
    traces: Option<usher_test_support::otlp::Receiver>,
}

/// Who the buyers and the catalog setup are, as the reports say it.
const PRINCIPAL_USHER: &str = "buyers authenticate with a partner API key; catalog setup with an owner access token";
const PRINCIPAL_BASELINE: &str = "no authentication (the baseline, or an usher built before identity)";

/// The partner rate `usher serve` gets (`USHER_PARTNER_RATE_PER_S`, burst 4×):
/// far above anything the bench sends, so the limiter never refuses a buyer.
/// The default, 5,000/s, would throttle the stadium onsale.
const PARTNER_RATE_PER_S: &str = "10000000";

/// The owner the bootstrap makes on every fresh store.
const OWNER_EMAIL: &str = "owner@bench.example.com";

fn sibling(bin: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let p = me.with_file_name(bin);
    if !p.exists() {
        bail!("{} not found: build it first (cargo build --release --bins)", p.display());
    }
    Ok(p)
}

async fn pg_create(args: &Args, name: &str) -> anyhow::Result<String> {
    let mut c = sqlx::PgConnection::connect(&format!("{}/postgres", args.pg_url)).await.context("PostgreSQL")?;
    c.execute(format!("DROP DATABASE IF EXISTS {name}").as_str()).await?;
    c.execute(format!("CREATE DATABASE {name}").as_str()).await?;
    Ok(format!("{}/{name}", args.pg_url))
}

/// What the bootstrap made: the organization and the partner key.
struct Bootstrap {
    org_id: String,
    partner_key: String,
    owner_password: String,
}

/// Runs `usher admin ARGS… STORE…` and answers its standard output.
async fn admin(args: &[&str], store: &[std::ffi::OsString], password: Option<&str>) -> anyhow::Result<String> {
    let mut c = Command::new(sibling("usher")?);
    c.arg("admin").args(args).args(store).stdin(Stdio::null()).kill_on_drop(true);
    if let Some(p) = password {
        c.env("USHER_PASSWORD", p);
    }
    let out = c.output().await.context("running usher admin")?;
    if !out.status.success() {
        bail!("usher admin {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Before the server starts, on its store (`--data-dir` / `--database-url`):
/// an owner, their organization, and a partner API key with every scope.
async fn bootstrap(store: &[std::ffi::OsString]) -> anyhow::Result<Bootstrap> {
    let owner_password = format!("bench-{}", uuid::Uuid::new_v4().simple());
    admin(&["create-user", OWNER_EMAIL, "--name", "Bench owner"], store, Some(&owner_password)).await?;
    // `organization <uuid> "NAME"`
    let out = admin(&["create-org", "Bench Arena", "--owner", OWNER_EMAIL], store, None).await?;
    let org_id = out
        .split_whitespace()
        .nth(1)
        .filter(|_| out.starts_with("organization "))
        .with_context(|| format!("usher admin create-org said {out:?}"))?
        .to_owned();
    // A line about the key, then the secret alone on the next line.
    let out = admin(&["create-api-key", "--org", &org_id, "--partner", "bench box office"], store, None).await?;
    let partner_key = out
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with("usk_"))
        .context("usher admin create-api-key printed no key (usk_…)")?
        .to_owned();
    Ok(Bootstrap { org_id, partner_key, owner_password })
}

/// The owner's access token, from `IdentityService/LogIn`.
async fn log_in(addr: &str, password: &str) -> anyhow::Result<String> {
    let ch = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    let s = IdentityServiceClient::new(ch)
        .log_in(pb::LogInRequest { email: OWNER_EMAIL.into(), password: password.into() })
        .await
        .context("signing in as the bench's owner")?
        .into_inner();
    anyhow::ensure!(!s.access_token.is_empty(), "LogIn answered no access token");
    Ok(s.access_token)
}

/// The store a target runs on: `usher-sqlite-before` is `usher-sqlite`.
fn base(target: &str) -> &str {
    target
        .trim_end_matches("-before")
        .trim_end_matches("-noconsumers")
        .trim_end_matches("-kafka")
        .trim_end_matches("-norelay")
        .trim_end_matches("-nometrics")
        .trim_end_matches("-traced")
}

async fn start(args: &Args, target: &str) -> anyhow::Result<Server> {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let before = target.ends_with("-before");
    let usher = match (&args.before_bin, before) {
        (_, false) => sibling("usher")?,
        (Some(bin), true) => bin.clone(),
        (None, true) => bail!("{target} needs --before-bin (an usher binary built before identity)"),
    };
    let (mut cmd, pg_db, data_dir, store) = match base(target) {
        "usher-sqlite" => {
            let dir = std::env::temp_dir().join(format!("usher-bench-{tag}"));
            let store = vec!["--data-dir".into(), dir.clone().into_os_string()];
            let mut c = Command::new(&usher);
            c.args(["serve", "--no-demo-data", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]).args(&store);
            (c, None, Some(dir), Some(store))
        }
        "usher-pg" => {
            let name = format!("usher_bench_{tag}");
            let url = pg_create(args, &name).await?;
            // PostgreSQL keeps the data; the directory holds the PDFs and mail.
            let dir = std::env::temp_dir().join(format!("usher-bench-{tag}"));
            let store = vec!["--database-url".into(), url.into(), "--data-dir".into(), dir.clone().into_os_string()];
            let mut c = Command::new(&usher);
            c.args(["serve", "--no-demo-data", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]).args(&store);
            (c, Some(name), Some(dir), Some(store))
        }
        "baseline" => {
            let name = format!("usher_bench_{tag}");
            let url = pg_create(args, &name).await?;
            let mut c = Command::new(sibling("usher-baseline")?);
            c.args(["--grpc-addr", "127.0.0.1:0", "--database-url", &url, "--redis-url", &args.redis_url]);
            (c, Some(name), None, None)
        }
        other => bail!("unknown target {other}"),
    };
    // A binary from before identity has no credentials to make or check,
    // nor an admin listener (whose default port would collide).
    let store = if before { None } else { store };
    if !before && base(target) != "baseline" {
        cmd.args(["--admin-addr", "127.0.0.1:0"]);
    }
    let boot = match &store {
        Some(store) => {
            // The buyers are one partner: lift its rate limit far above the load.
            cmd.env("USHER_PARTNER_RATE_PER_S", PARTNER_RATE_PER_S);
            // The readers scenario's crowd is that partner too, from one address.
            for var in ["USHER_SEAT_STREAMS_PER_CLIENT_MAX", "USHER_SEAT_STREAMS_PER_NODE_MAX", "USHER_HTTP_CONNECTIONS_MAX"] {
                cmd.env(var, "1000000");
            }
            Some(bootstrap(store).await.with_context(|| format!("bootstrapping credentials for {target}"))?)
        }
        None => None,
    };
    // Several nodes: a cluster on the bench's Redis, keys of this run's own.
    let nodes = if base(target) == "usher-pg" { args.nodes.max(1) } else { 1 };
    if args.nodes > 1 && base(target) == "usher-sqlite" {
        bail!("--nodes {}: SQLite is one node's file; cluster usher-pg instead", args.nodes);
    }
    let cluster_env: Vec<(String, String)> = if nodes > 1 {
        vec![
            ("USHER_REDIS_URL".into(), args.redis_url.clone()),
            ("USHER_CLUSTER_SECRET".into(), cluster::SECRET.into()),
            ("USHER_CLUSTER_KEY_PREFIX".into(), format!("usher-bench-{tag}:")),
            ("USHER_PARTNER_RATE_PER_S".into(), PARTNER_RATE_PER_S.into()),
        ]
    } else {
        Vec::new()
    };
    let cluster_store = store.clone();
    if nodes > 1 {
        cmd.envs(cluster_env.clone()).env("USHER_NODE_NAME", cluster::node_name(0));
    }
    // The relay: to a broker of the bench's own, or off.
    let mut broker = None;
    if target.ends_with("-kafka") || target.ends_with("-kafka-noconsumers") {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let url = format!("tcp://127.0.0.1:{port}");
        let b = Command::new(&args.tansu)
            .args(["broker", "--storage-engine", "memory://tansu/", "--listener-url", &url, "--advertised-listener-url", &url, "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} (--tansu)", args.tansu.display()))?;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cmd.env("USHER_KAFKA_BROKERS", format!("127.0.0.1:{port}"));
        broker = Some(b);
    }
    if target.ends_with("-norelay") {
        cmd.env("USHER_RELAY", "off");
    }
    if target.ends_with("-noconsumers") {
        cmd.env("USHER_STREAM_CONSUMERS", "off");
    }
    if target.ends_with("-nometrics") {
        cmd.env("USHER_METRICS", "off");
    }
    // Traces on: every call a span, exported to a receiver in this process.
    let traces = if target.ends_with("-traced") {
        let (receiver, endpoint) = usher_test_support::otlp::Receiver::start(false).await?;
        cmd.env("USHER_OTLP_ENDPOINT", endpoint);
        Some(receiver)
    } else {
        None
    };
    let mut child = cmd.env("USHER_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true).spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix("usher: grpc listening on http://") {
                return Ok(rest.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
        bail!("{target} exited before listening")
    })
    .await
    .context("server start")??;
    // Usher prints its storefront's address next.
    let http = if base(target) == "baseline" {
        None
    } else {
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("usher: storefront on http://") {
                    return Ok(rest.split('/').next().unwrap_or_default().to_owned());
                }
            }
            bail!("{target} printed no storefront address")
        })
        .await
        .ok()
        .transpose()?
    };
    let commits: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let seen = commits.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix("usher: group commit: ") {
                *seen.lock().expect("not poisoned") = Some(rest.to_owned());
            }
        }
    });
    let (org_id, owner_token, partner_key) = match boot {
        Some(b) => (b.org_id, Some(log_in(&addr, &b.owner_password).await?), Some(b.partner_key)),
        None => (String::new(), None, None),
    };
    // The cluster's other nodes: the same store and settings, their own names.
    let mut extra = Vec::new();
    let mut addrs = vec![addr.clone()];
    for i in 1..nodes {
        let (store, env) = (cluster_store.clone().unwrap_or_default(), cluster_env.clone());
        let mut c = Command::new(&usher);
        c.args(["serve", "--no-demo-data", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .args(&store)
            .envs(env);
        c.env("USHER_NODE_NAME", cluster::node_name(i));
        let mut child = c.env("USHER_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true).spawn()?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let a = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("usher: grpc listening on http://") {
                    return Ok(rest.split_whitespace().next().unwrap_or_default().to_owned());
                }
            }
            bail!("node {} exited before listening", cluster::node_name(i))
        })
        .await
        .context("node start")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        addrs.push(a);
        extra.push(child);
    }
    extra.extend(broker);
    Ok(Server { child, extra, addrs, commits, addr, pg_db, data_dir, org_id, owner_token, partner_key, http, traces })
}

impl Server {
    /// Stops the server; returns its group-commit summary, if it printed one.
    async fn stop(mut self, args: &Args) -> anyhow::Result<Option<String>> {
        for c in self.extra.iter().chain(std::iter::once(&self.child)) {
            if let Some(pid) = c.id() {
                let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            }
        }
        for c in &mut self.extra {
            let _ = tokio::time::timeout(Duration::from_secs(30), c.wait()).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        // Let the reader take the last lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let commits = self.commits.lock().expect("not poisoned").clone();
        if let Some(db) = self.pg_db {
            let mut c = sqlx::PgConnection::connect(&format!("{}/postgres", args.pg_url)).await?;
            c.execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str()).await?;
        }
        if let Some(d) = self.data_dir {
            let _ = std::fs::remove_dir_all(d);
        }
        Ok(commits)
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The relay's lag over every outbox row published: from the row's
    /// time (its batch's decision, a few ms before COMMIT) to its marking,
    /// right after the broker's delivery report. Waits up to 60 s for the
    /// outbox to drain first. `None` without PostgreSQL or when nothing was
    /// published (the relay off).
    async fn relay_lag(&self, args: &Args) -> anyhow::Result<Option<RelayLag>> {
        let Some(db) = &self.pg_db else { return Ok(None) };
        let mut c = sqlx::PgConnection::connect(&format!("{}/{db}", args.pg_url)).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let published = loop {
            let (left, done): (i64, i64) = sqlx::query_as(
                "SELECT COUNT(*) FILTER (WHERE published_at IS NULL), COUNT(*) FILTER (WHERE published_at IS NOT NULL) FROM bc_inventory.outbox",
            )
            .fetch_one(&mut c)
            .await?;
            if done == 0 {
                return Ok(None);
            }
            if left == 0 || Instant::now() > deadline {
                break done;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let (p50, p99, max): (f64, f64, i64) = sqlx::query_as(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY published_at - created_at), \
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY published_at - created_at), \
                    MAX(published_at - created_at) FROM bc_inventory.outbox WHERE published_at IS NOT NULL",
        )
        .fetch_one(&mut c)
        .await?;
        Ok(Some(RelayLag { messages: published, p50_ms: p50, p99_ms: p99, max_ms: max }))
    }

    /// `n` connections whose every call carries the partner key: the buyers,
    /// spread over the nodes in turn (connection `i` is node `i % nodes`).
    async fn buyers(&self, n: usize) -> anyhow::Result<Vec<Ch>> {
        let mut v = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            v.extend(channels(&self.addrs[i % self.addrs.len()], 1, self.partner_key.as_deref()).await?);
        }
        Ok(v)
    }

    /// Nodes serving this target (1 unless `--nodes` clustered it).
    fn nodes(&self) -> usize {
        self.addrs.len()
    }

    /// One connection with the owner's access token: catalog setup.
    async fn owner(&self) -> anyhow::Result<Ch> {
        Ok(channels(&self.addr, 1, self.owner_token.as_deref()).await?.remove(0))
    }

    fn principal(&self) -> &'static str {
        if self.partner_key.is_some() { PRINCIPAL_USHER } else { PRINCIPAL_BASELINE }
    }
}

/// `n` HTTP/2 connections, each sending `authorization: Bearer TOKEN` with
/// every call (nothing without a token).
async fn channels(addr: &str, n: usize, token: Option<&str>) -> anyhow::Result<Vec<Ch>> {
    let bearer = Bearer::new(token)?;
    let mut v = Vec::with_capacity(n.max(1));
    for _ in 0..n.max(1) {
        let ch = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
        v.push(InterceptedService::new(ch, bearer.clone()));
    }
    Ok(v)
}

/// A catalog call by the owner, waiting out a rate-limit refusal: an access
/// token is limited like any signed-in user (20/s, burst 100, by default),
/// which only the memory scenario's hundred events come near. A refused call
/// did nothing, so it is resent as it was (same idempotency key).
async fn paced<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut tries = 0;
    loop {
        match call().await {
            Err(s) if s.code() == Code::ResourceExhausted && tries < 60 => {
                tries += 1;
                let secs = s.metadata().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(1u64);
                tokio::time::sleep(Duration::from_secs(secs.clamp(1, 10))).await;
            }
            r => return r.map(tonic::Response::into_inner),
        }
    }
}

// ---------------------------------------------------------------- workload

use usher_test_support::Rng;

/// A stadium: `sections` sections of `rows` × `per_row`, listed best first.
/// `org_id`: the owner's organization (empty for the baseline).
fn venue(org_id: &str, sections: usize, rows: usize, per_row: u32) -> pb::CreateVenueRequest {
    pb::CreateVenueRequest {
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        org_id: org_id.to_owned(),
        name: "Bench Stadium".into(),
        // Empty: UTC.
        time_zone: String::new(),
        categories: vec![
            pb::PriceCategory { code: "P1".into(), name: "Front".into() },
            pb::PriceCategory { code: "P2".into(), name: "Back".into() },
        ],
        sections: (0..sections)
            .map(|s| pb::SectionSpec {
                code: format!("S{s}"),
                name: format!("Section {s}"),
                category: if s < sections / 2 { "P1".into() } else { "P2".into() },
                x: (s % 10) as f32 * (per_row as f32 + 2.0),
                y: (s / 10) as f32 * (rows as f32 + 2.0),
                rows: (0..rows).map(|r| pb::RowSpec { label: (r + 1).to_string(), seats: per_row, first_number: 1 }).collect(),
            })
            .collect(),
    }
}

fn ts(offset_s: i64) -> prost_types::Timestamp {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    prost_types::Timestamp { seconds: now + offset_s, nanos: 0 }
}

/// An event on sale in `venue_id` named `name`, starting `starts_in_s` from
/// now, priced P1 and P2 (EUR minor units).
fn on_sale(venue_id: String, name: &str, starts_in_s: i64, [p1, p2]: [i64; 2]) -> pb::CreateEventRequest {
    pb::CreateEventRequest {
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        venue_id,
        name: name.into(),
        starts_at: Some(ts(starts_in_s)),
        currency: "EUR".into(),
        prices: vec![
            pb::CategoryPrice { category: "P1".into(), amount_minor: p1 },
            pb::CategoryPrice { category: "P2".into(), amount_minor: p2 },
        ],
        open_sales: true,
        ..Default::default()
    }
}

/// `req`'s venue, made by the owner's catalog client `c` (see `paced`).
async fn make_venue(c: &CatalogServiceClient<Ch>, req: pb::CreateVenueRequest) -> Result<pb::Venue, tonic::Status> {
    paced(|| {
        let (mut c, req) = (c.clone(), req.clone());
        async move { c.create_venue(req).await }
    })
    .await
}

/// `req`'s event, made by the owner's catalog client `c` (see `paced`).
async fn make_event(c: &CatalogServiceClient<Ch>, req: pb::CreateEventRequest) -> Result<pb::Event, tonic::Status> {
    paced(|| {
        let (mut c, req) = (c.clone(), req.clone());
        async move { c.create_event(req).await }
    })
    .await
}

/// A venue and an on-sale event in it, made by the server's owner.
async fn create_event(server: &Server, sections: usize, rows: usize, per_row: u32) -> anyhow::Result<String> {
    let c = CatalogServiceClient::new(server.owner().await?);
    let v = make_venue(&c, venue(&server.org_id, sections, rows, per_row)).await?;
    let req = pb::CreateEventRequest {
        sales_start: Some(ts(-60)),
        sales_end: Some(ts(86_400 * 29)),
        ..on_sale(v.venue_id, "Onsale", 86_400 * 30, [12_000, 6_000])
    };
    Ok(make_event(&c, req).await?.event_id)
}

#[derive(Serialize, Clone, Default, Debug)]
struct Latency {
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn latency(mut us: Vec<u64>) -> Latency {
    if us.is_empty() {
        return Latency::default();
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() as f64 * q) as usize).min(us.len() - 1)] as f64 / 1000.0;
    Latency { p50_ms: at(0.50), p95_ms: at(0.95), p99_ms: at(0.99), max_ms: *us.last().expect("non-empty") as f64 / 1000.0 }
}

#[derive(Serialize, Clone, Debug)]
struct HotSeat {
    buyers: usize,
    winners: usize,
    taken: usize,
    other_errors: usize,
    all_answered_ms: f64,
    latency: Latency,
}

async fn hot_seat(args: &Args, server: &Server) -> anyhow::Result<HotSeat> {
    let chans = server.buyers(args.connections).await?;
    let event = create_event(server, 1, 10, 20).await?;
    let n = args.hot_buyers;
    let barrier = Arc::new(tokio::sync::Barrier::new(n + 1));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = InventoryServiceClient::new(chans[i % chans.len()].clone());
        let req = pb::HoldSeatsRequest {
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            event_id: event.clone(),
            customer_id: format!("hot-{i}"),
            seat_ids: vec!["S0-5-10".into()],
        };
        let b = barrier.clone();
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            let t = Instant::now();
            let r = c.hold_seats(req).await;
            (r.map(|_| ()).map_err(|s| s.code()), t.elapsed())
        }));
    }
    barrier.wait().await;
    let (mut winners, mut taken, mut other) = (0, 0, 0);
    let mut lat = Vec::with_capacity(n);
    let mut last = Duration::ZERO;
    for t in tasks {
        let (r, d) = t.await?;
        lat.push(d.as_micros() as u64);
        last = last.max(d);
        match r {
            Ok(()) => winners += 1,
            Err(Code::FailedPrecondition) => taken += 1,
            Err(_) => other += 1,
        }
    }
    Ok(HotSeat { buyers: n, winners, taken, other_errors: other, all_answered_ms: last.as_secs_f64() * 1000.0, latency: latency(lat) })
}

#[derive(Serialize, Clone, Debug)]
struct RelayLag {
    messages: i64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: i64,
}

#[derive(Serialize, Clone, Debug)]
struct Stadium {
    seats: usize,
    buyers: usize,
    buyers_served: usize,
    holds: u64,
    seats_held: u64,
    requests: u64,
    conflicts: u64,
    retries: u64,
    other_errors: u64,
    sold_out_ms: Option<f64>,
    /// When 99% of the seats were held: the end of the window below.
    ninety_nine_ms: Option<f64>,
    /// Holds per second until 99% of the seats were held (or until the
    /// buyers ran out): the sustained rate, not diluted by the sold-out tail.
    holds_per_s: f64,
    requests_per_s: f64,
    latency: Latency,
    seats_held_twice: i64,
    storage_consistent: bool,
    /// The server's group-commit counters (Usher only).
    group_commit: Option<String>,
    /// Who the buyers and the catalog setup authenticate as.
    principal: String,
    /// Nodes serving the target, and the share of answers decided by a
    /// node other than the one asked (forwarded to the event's owner).
    nodes: usize,
    forwarded_share: Option<f64>,
    /// The outbox relay's lag during the onsale (`-kafka` targets).
    relay_lag: Option<RelayLag>,
    /// Spans the node had exported when the onsale ended (`-traced`).
    spans_exported: Option<u64>,
}

/// Per-buyer choice: how many seats, and where.
enum Want {
    Best { q: u32 },
    Specific { seats: Vec<String> },
}

fn grid(seats: usize) -> (usize, usize, u32) {
    // 50 seats a row, 50 rows a section; sections to fit.
    let per_row = 50u32;
    let rows = 50usize;
    let sections = seats.div_ceil(per_row as usize * rows).max(1);
    (sections, rows, per_row)
}

fn pick(rng: &mut Rng, sections: usize, rows: usize, per_row: u32) -> Want {
    // 1–6 seats, pairs most common.
    let q = match rng.below(100) {
        0..15 => 1,
        15..55 => 2,
        55..70 => 3,
        70..90 => 4,
        90..95 => 5,
        _ => 6,
    };
    if rng.below(100) < 30 {
        return Want::Best { q };
    }
    // Popularity: front sections and front rows first (a power curve).
    let s = ((rng.unit().powf(2.0)) * sections as f64) as usize;
    let r = ((rng.unit().powf(1.5)) * rows as f64) as usize;
    let first = rng.below(u64::from(per_row - q + 1)) as u32 + 1;
    Want::Specific { seats: (0..q).map(|i| format!("S{}-{}-{}", s.min(sections - 1), r.min(rows - 1) + 1, first + i)).collect() }
}

async fn stadium(args: &Args, target: &str, server: &Server) -> anyhow::Result<Stadium> {
    Ok(stadium_watched(args, target, server, false).await?.0)
}

/// The stadium onsale; with `crowd`, while the readers scenario's crowd
/// watches the event (its feeds open before the first hold).
async fn stadium_watched(args: &Args, target: &str, server: &Server, crowd: bool) -> anyhow::Result<(Stadium, Option<readers::Crowd>)> {
    let chans = server.buyers(args.connections).await?;
    let (sections, rows, per_row) = grid(args.seats);
    let seats = sections * rows * per_row as usize;
    let event = create_event(server, sections, rows, per_row).await?;
    if base(target) != "usher-sqlite" {
        // Fresh tables after a bulk load: plans must see real statistics.
        analyze(args, server).await?;
    }
    let watching = match (crowd, &server.http, &server.partner_key, server.pid()) {
        (false, ..) => None,
        (true, Some(http), Some(key), Some(pid)) => {
            Some(readers::watch(http, key, &event, pid, args.streams, args.readers, Duration::from_millis(args.reader_interval_ms)).await?)
        }
        (true, ..) => bail!("{target} has no storefront to watch"),
    };
    let next = Arc::new(AtomicUsize::new(0));
    let sold_out = Arc::new(AtomicBool::new(false));
    let (holds, held, requests, conflicts, retries, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let start = Instant::now();
    let sold_out_at = Arc::new(AtomicU64::new(0));
    let (at99, holds99) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // A monitor watches availability, as a storefront would, and closes the
    // doors once nothing is left.
    let monitor = {
        let (sold_out, sold_out_at, ch, event) = (sold_out.clone(), sold_out_at.clone(), chans[0].clone(), event.clone());
        let (at99, holds99, holds) = (at99.clone(), holds99.clone(), holds.clone());
        tokio::spawn(async move {
            let mut c = CatalogServiceClient::new(ch);
            while !sold_out.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let Ok(e) = c.get_event(pb::GetEventRequest { event_id: event.clone() }).await else { continue };
                let Some(n) = e.get_ref().counts else { continue };
                let now = start.elapsed().as_micros() as u64;
                if at99.load(Ordering::Relaxed) == 0 && (n.available as usize) * 100 <= seats {
                    holds99.store(holds.load(Ordering::Relaxed), Ordering::Relaxed);
                    at99.store(now, Ordering::Relaxed);
                }
                if n.available == 0 {
                    sold_out_at.store(now, Ordering::Relaxed);
                    sold_out.store(true, Ordering::Relaxed);
                }
            }
        })
    };
    let nodes = server.nodes();
    let forwarded = Arc::new(cluster::Forwarded::default());
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let conn = w % chans.len();
        let mut c = InventoryServiceClient::new(chans[conn].clone());
        let (next, sold_out, event, forwarded) = (next.clone(), sold_out.clone(), event.clone(), forwarded.clone());
        let (holds, held, requests, conflicts, retries, other) =
            (holds.clone(), held.clone(), requests.clone(), conflicts.clone(), retries.clone(), other.clone());
        let buyers = args.buyers;
        let seed = args.seed;
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= buyers || sold_out.load(Ordering::Relaxed) {
                    return (lat, b.min(buyers));
                }
                let mut rng = Rng(seed ^ (b as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
                // A buyer tries up to 4 times, choosing again after a conflict.
                for attempt in 0..4 {
                    if attempt > 0 {
                        retries.fetch_add(1, Ordering::Relaxed);
                    }
                    let want = pick(&mut rng, sections, rows, per_row);
                    let key = uuid::Uuid::new_v4().to_string();
                    let customer = format!("b{b}");
                    let t = Instant::now();
                    let r = match &want {
                        Want::Best { q } => c
                            .hold_best_available(pb::HoldBestAvailableRequest {
                                idempotency_key: key,
                                event_id: event.clone(),
                                customer_id: customer,
                                quantity: *q,
                                ..Default::default()
                            })
                            .await
                            .map(|h| {
                                forwarded.count(nodes, conn, h.metadata().get("usher-node"));
                                h.into_inner().seats.len()
                            }),
                        Want::Specific { seats } => c
                            .hold_seats(pb::HoldSeatsRequest {
                                idempotency_key: key,
                                event_id: event.clone(),
                                customer_id: customer,
                                seat_ids: seats.clone(),
                            })
                            .await
                            .map(|h| {
                                forwarded.count(nodes, conn, h.metadata().get("usher-node"));
                                h.into_inner().seats.len()
                            }),
                    };
                    lat.push(t.elapsed().as_micros() as u64);
                    requests.fetch_add(1, Ordering::Relaxed);
                    match r {
                        Ok(n) => {
                            holds.fetch_add(1, Ordering::Relaxed);
                            held.fetch_add(n as u64, Ordering::Relaxed);
                            break;
                        }
                        Err(s) if s.code() == Code::FailedPrecondition => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            other.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
        }));
    }
    let mut all = Vec::new();
    let mut served = 0;
    for w in workers {
        let (lat, b) = w.await?;
        served = served.max(b);
        all.extend(lat);
    }
    let elapsed = start.elapsed();
    sold_out.store(true, Ordering::Relaxed);
    let _ = monitor.await;
    let crowd = match watching {
        Some(w) => Some(w.finish().await),
        None => None,
    };
    let at = sold_out_at.load(Ordering::Relaxed);
    let t99 = at99.load(Ordering::Relaxed);
    let (window, holds_in_window) =
        if t99 > 0 { (Duration::from_micros(t99), holds99.load(Ordering::Relaxed)) } else { (elapsed, holds.load(Ordering::Relaxed)) };
    let (twice, consistent) = check_storage(args, target, server, &event).await?;
    let h = holds.load(Ordering::Relaxed);
    let req = requests.load(Ordering::Relaxed);
    Ok((
        Stadium {
            seats,
            buyers: args.buyers,
            buyers_served: served,
            holds: h,
            seats_held: held.load(Ordering::Relaxed),
            requests: req,
            conflicts: conflicts.load(Ordering::Relaxed),
            retries: retries.load(Ordering::Relaxed),
            other_errors: other.load(Ordering::Relaxed),
            sold_out_ms: (at > 0).then(|| at as f64 / 1000.0),
            ninety_nine_ms: (t99 > 0).then(|| t99 as f64 / 1000.0),
            holds_per_s: holds_in_window as f64 / window.as_secs_f64(),
            requests_per_s: req as f64 / elapsed.as_secs_f64(),
            latency: latency(all),
            seats_held_twice: twice,
            storage_consistent: consistent,
            group_commit: None,
            principal: server.principal().to_owned(),
            nodes,
            forwarded_share: forwarded.share(),
            relay_lag: server.relay_lag(args).await?,
            spans_exported: server.traces.as_ref().map(usher_test_support::otlp::Receiver::count),
        },
        crowd,
    ))
}

async fn analyze(args: &Args, server: &Server) -> anyhow::Result<()> {
    if let Some(db) = &server.pg_db {
        let mut c = sqlx::PgConnection::connect(&format!("{}/{db}", args.pg_url)).await?;
        c.execute("ANALYZE").await?;
    }
    Ok(())
}

/// After the run, ask the database itself: how many seats are in more than
/// one live hold (must be 0), and do claims agree with holds?
async fn check_storage(args: &Args, target: &str, server: &Server, event: &str) -> anyhow::Result<(i64, bool)> {
    // Per store: seats in more than one live hold; seats held, by the holds;
    // seats held, by the claims (the baseline: by its seat rows).
    let (mut db, [twice, held, claimed]) = match base(target) {
        "usher-sqlite" => {
            let path = server.data_dir.as_ref().expect("sqlite dir").join("usher.db");
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await?;
            let sqls = [
                "SELECT COUNT(*) FROM (SELECT j.value FROM holds h, json_each(h.seats) j \
                 WHERE h.event_id = $1 AND h.state IN ('active', 'confirmed') GROUP BY j.value HAVING COUNT(*) > 1)",
                "SELECT COALESCE(SUM(seat_count), 0) FROM holds WHERE event_id = $1 AND state = 'active'",
                "SELECT COUNT(*) FROM seat_claims WHERE event_id = $1 AND kind = 'held'",
            ];
            (Db::Sqlite(pool), sqls)
        }
        pg_target => {
            let db = server.pg_db.as_ref().expect("pg db");
            let c = sqlx::PgConnection::connect(&format!("{}/{db}", args.pg_url)).await?;
            let sqls = if pg_target == "usher-pg" {
                [
                    "SELECT COUNT(*) FROM (SELECT j.value FROM bc_inventory.holds h, json_array_elements_text(h.seats::json) j \
                     WHERE h.event_id = $1 AND h.state IN ('active', 'confirmed') GROUP BY j.value HAVING COUNT(*) > 1) x",
                    "SELECT COALESCE(SUM(seat_count), 0)::bigint FROM bc_inventory.holds WHERE event_id = $1 AND state = 'active'",
                    "SELECT COUNT(*) FROM bc_inventory.seat_claims WHERE event_id = $1 AND kind = 'held'",
                ]
            } else {
                [
                    "SELECT COUNT(*) FROM (SELECT s FROM baseline.holds h, unnest(h.seats) s WHERE h.event_id = $1 GROUP BY s HAVING COUNT(*) > 1) x",
                    "SELECT COALESCE(SUM(cardinality(seats)), 0)::bigint FROM baseline.holds WHERE event_id = $1",
                    "SELECT COUNT(*) FROM baseline.seats WHERE event_id = $1 AND status = 'held'",
                ]
            };
            (Db::Pg(c), sqls)
        }
    };
    let twice = db.count(twice, event).await?;
    let held = db.count(held, event).await?;
    Ok((twice, held == db.count(claimed, event).await?))
}

/// A connection to a run's database, to count what it holds.
enum Db {
    Sqlite(sqlx::SqlitePool),
    Pg(sqlx::PgConnection),
}

impl Db {
    /// The one number `sql` gives for `event` (bound as `$1`).
    async fn count(&mut self, sql: &str, event: &str) -> anyhow::Result<i64> {
        Ok(match self {
            Db::Sqlite(pool) => sqlx::query(sql).bind(event).fetch_one(&*pool).await?.get(0),
            Db::Pg(c) => sqlx::query(sql).bind(event).fetch_one(c).await?.get(0),
        })
    }
}

// ---------------------------------------------------------------- memory

#[derive(Serialize, Clone, Debug)]
struct Memory {
    idle_rss_mib: f64,
    one_100k_event_rss_mib: f64,
    bytes_per_seat_100k: f64,
    hundred_10k_events_rss_mib: f64,
    bytes_per_seat_100x10k: f64,
}

pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).context("VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

async fn memory(args: &Args) -> anyhow::Result<Memory> {
    // Two fresh servers, so each figure is its own.
    let measure = |events: usize, sections: usize| {
        let args = args.clone();
        async move {
            let server = start(&args, "usher-sqlite").await?;
            let pid = server.pid().context("pid")?;
            // The owner makes the events; reading them, the partner (a
            // reader's rate is its principal's, and the partner's is lifted).
            let owner = CatalogServiceClient::new(server.owner().await?);
            let mut reader = CatalogServiceClient::new(server.buyers(1).await?.remove(0));
            tokio::time::sleep(Duration::from_millis(500)).await;
            let idle = rss_kib(pid)?;
            let v = make_venue(&owner, venue(&server.org_id, sections, 50, 40)).await?;
            for _ in 0..events {
                let e = make_event(&owner, on_sale(v.venue_id.clone(), "m", 86_400, [1, 1])).await?;
                // Loads the event's actor and seat map.
                reader.get_event(pb::GetEventRequest { event_id: e.event_id }).await?;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let loaded = rss_kib(pid)?;
            server.stop(&args).await?;
            anyhow::Ok((idle, loaded, v.seat_count as u64 * events as u64))
        }
    };
    // 50 sections × 50 rows × 40 = 100,000 seats; 5 × 50 × 40 = 10,000.
    let (idle, one, seats_one) = measure(1, 50).await?;
    let (idle2, hundred, seats_hundred) = measure(100, 5).await?;
    Ok(Memory {
        idle_rss_mib: idle as f64 / 1024.0,
        one_100k_event_rss_mib: one as f64 / 1024.0,
        bytes_per_seat_100k: (one.saturating_sub(idle) * 1024) as f64 / seats_one as f64,
        hundred_10k_events_rss_mib: hundred as f64 / 1024.0,
        bytes_per_seat_100x10k: (hundred.saturating_sub(idle2) * 1024) as f64 / seats_hundred as f64,
    })
}

// ---------------------------------------------------------------- main

/// The readers scenario: the same onsale alone and watched, on one server.
#[derive(Serialize, Debug)]
struct Readers {
    alone: Stadium,
    watched: Stadium,
    crowd: readers::Crowd,
    /// Watched holds/s over alone holds/s.
    holds_ratio: f64,
}

#[derive(Serialize, Default)]
struct Report {
    machine: String,
    seed: u64,
    concurrency: usize,
    connections: usize,
    hot_seat: Vec<(String, HotSeat)>,
    stadium: Vec<(String, Stadium)>,
    memory: Option<Memory>,
    funnel: Vec<(String, funnel::Funnel)>,
    pdf: Option<funnel::PdfRender>,
    pdf_memory: Option<funnel::PdfMemory>,
    readers: Vec<(String, Readers)>,
    big_orders: Vec<(String, funnel::BigOrders)>,
    many_events: Vec<(String, cluster::ManyEvents)>,
    /// `--nodes`: nodes serving usher-pg.
    nodes: usize,
    ratios: Vec<(String, f64)>,
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned()))
        .unwrap_or_default();
    format!("{cpus} cores, {model}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let scenarios: Vec<&str> = if args.scenarios == "all" {
        vec!["hot-seat", "stadium", "memory", "funnel", "pdf", "pdf-memory", "readers", "big-orders"]
    } else {
        args.scenarios.split(',').collect()
    };
    let targets: Vec<&str> = args.targets.split(',').collect();
    let mut report = Report {
        machine: machine(),
        seed: args.seed,
        concurrency: args.concurrency,
        connections: args.connections,
        nodes: args.nodes,
        ..Default::default()
    };
    println!("usher-bench: {} | seed {} | {} in flight over {} connections", report.machine, args.seed, args.concurrency, args.connections);
    for t in &targets {
        if scenarios.contains(&"hot-seat") {
            let s = start(&args, t).await?;
            let r = hot_seat(&args, &s).await?;
            println!(
                "hot-seat   {t:<13} winners {} taken {} errors {} | all answered {:.1} ms | p50 {:.1} p99 {:.1} max {:.1} ms",
                r.winners, r.taken, r.other_errors, r.all_answered_ms, r.latency.p50_ms, r.latency.p99_ms, r.latency.max_ms
            );
            report.hot_seat.push((t.to_string(), r));
            s.stop(&args).await?;
        }
        if scenarios.contains(&"stadium") {
            let s = start(&args, t).await?;
            let mut r = stadium(&args, t, &s).await?;
            r.group_commit = s.stop(&args).await?;
            println!(
                "stadium    {t:<13} {:.0} holds/s | p50 {:.1} p95 {:.1} p99 {:.1} max {:.1} ms | holds {} seats {} of {} | 99% at {} sold out {} | requests {} conflicts {} retries {} errors {} | held twice {} | consistent {}",
                r.holds_per_s,
                r.latency.p50_ms,
                r.latency.p95_ms,
                r.latency.p99_ms,
                r.latency.max_ms,
                r.holds,
                r.seats_held,
                r.seats,
                r.ninety_nine_ms.map(|m| format!("{:.2} s", m / 1000.0)).unwrap_or_else(|| "never".into()),
                r.sold_out_ms.map(|m| format!("{:.2} s", m / 1000.0)).unwrap_or_else(|| "no".into()),
                r.requests,
                r.conflicts,
                r.retries,
                r.other_errors,
                r.seats_held_twice,
                r.storage_consistent
            );
            println!("           {t:<13} principal: {}", r.principal);
            if let Some(f) = r.forwarded_share {
                println!("           {t:<13} {} nodes: {:.1}% of answers forwarded to the event's owner", r.nodes, f * 100.0);
            }
            if let Some(g) = &r.group_commit {
                println!("           {t:<13} group commit: {g}");
            }
            report.stadium.push((t.to_string(), r));
        }
        if scenarios.contains(&"readers") && *t != "baseline" {
            // One server, one run: the onsale alone, then again while the crowd watches.
            let s = start(&args, t).await?;
            let (alone, _) = stadium_watched(&args, t, &s, false).await?;
            let (watched, crowd) = stadium_watched(&args, t, &s, true).await?;
            s.stop(&args).await?;
            let c = crowd.unwrap_or_default();
            let ratio = watched.holds_per_s / alone.holds_per_s;
            println!(
                "readers    {t:<13} {} feeds + {} readers: {:.0} holds/s p99 {:.1} ms (alone {:.0} holds/s p99 {:.1} ms, ratio {ratio:.2}) | {:.2} KiB resident per feed | {:.0} B per feed and {:.0} B per reader per minute",
                c.streams,
                c.readers,
                watched.holds_per_s,
                watched.latency.p99_ms,
                alone.holds_per_s,
                alone.latency.p99_ms,
                c.rss_per_stream_kib,
                c.stream_bytes_per_min,
                c.reader_bytes_per_min
            );
            report.readers.push((t.to_string(), Readers { alone, watched, crowd: c, holds_ratio: ratio }));
        }
        if scenarios.contains(&"many-events") && *t != "baseline" {
            let s = start(&args, t).await?;
            let r = cluster::many_events(&args, &s).await?;
            s.stop(&args).await?;
            println!(
                "many-events {t:<12} {} nodes, {} events of {} seats: {:.0} holds/s | p50 {:.1} p99 {:.1} ms | {} requests, {} holds, {} conflicts, {} errors | forwarded {}",
                r.nodes,
                r.events,
                r.seats_per_event,
                r.holds_per_s,
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.requests,
                r.holds,
                r.conflicts,
                r.other_errors,
                r.forwarded_share.map(|f| format!("{:.1}%", f * 100.0)).unwrap_or_else(|| "none (one node)".into())
            );
            report.many_events.push((t.to_string(), r));
        }
        if scenarios.contains(&"funnel") && *t != "baseline" {
            let s = start(&args, t).await?;
            let r = funnel::funnel(&args, &s).await?;
            println!(
                "funnel     {t:<13} {:.1} orders/s = PDFs/s ({:.1} tickets/s) | {} of {} fulfilled, {} in flight, {:.1} s | p50 hold {:.1} order {:.1} pay {:.1} fulfil {:.1} end-to-end {:.1} ms (p99 {:.1}) | emails {} PDFs {} | {} unpaid orders: {:.0} B each",
                r.orders_per_s,
                r.tickets_per_s,
                r.fulfilled,
                r.orders,
                r.in_flight,
                r.wall_s,
                r.hold.p50_ms,
                r.create_order.p50_ms,
                r.pay.p50_ms,
                r.fulfil.p50_ms,
                r.end_to_end.p50_ms,
                r.end_to_end.p99_ms,
                r.emails,
                r.pdfs,
                r.unpaid_orders,
                r.bytes_per_unpaid_order
            );
            report.funnel.push((t.to_string(), r));
            s.stop(&args).await?;
        }
    }
    if scenarios.contains(&"big-orders") {
        for t in targets.iter().filter(|t| t.starts_with("usher")) {
            let s = start(&args, t).await?;
            let b = funnel::big_orders(&s, 12).await?;
            println!(
                "big-orders {t:<13} {} orders of {} seats and one of 1: the small one's tickets {:.0} ms after its payment; large ones done in {:.1} s | resident {:.0} MiB before, peak {:.0}, {:.0} 5 s after",
                b.large_orders, b.large_seats, b.small_fulfil_ms, b.large_wall_s, b.rss_before_mib, b.rss_peak_mib, b.rss_after_mib
            );
            report.big_orders.push((t.to_string(), b));
            s.stop(&args).await?;
        }
    }
    if scenarios.contains(&"pdf") {
        let p = tokio::task::spawn_blocking({
            let args = args.clone();
            move || funnel::pdf_render(&args)
        })
        .await??;
        for (tickets, s) in &p.tickets_per_pdf {
            println!(
                "pdf        {tickets} ticket(s)/PDF: median {:.1} ms (p95 {:.1}), {} KiB | {:.1} PDFs/s on one thread, {:.1} PDFs/s on {} threads",
                s.median_ms,
                s.p95_ms,
                s.bytes_median / 1024,
                s.per_s_one_thread,
                s.per_s_workers,
                s.workers
            );
        }
        report.pdf = Some(p);
    }
    if scenarios.contains(&"pdf-memory") {
        let m = funnel::pdf_memory(&args).await?;
        let last = m.rss_mib.last().map_or(0.0, |(_, mib)| *mib);
        let first = m.rss_mib.first().map_or(0.0, |(_, mib)| *mib);
        let peak = m.rss_mib.iter().map(|(_, mib)| *mib).fold(0.0, f64::max);
        println!(
            "pdf-memory {} PDFs ({} of {} tickets, 1 in 100 of {}), {} at once{} in {:.0} s: resident {:.1} MiB warm, {first:.1} after 100, {last:.1} after {}, peak {peak:.1}",
            m.renders,
            m.renders - m.renders / 100,
            m.small_tickets,
            m.large_tickets,
            m.workers,
            if m.blocking_pool { " on the blocking pool" } else { " in the render queue" },
            m.seconds,
            m.warm_rss_mib,
            m.renders
        );
        report.pdf_memory = Some(m);
    }
    let rate = |name: &str| report.stadium.iter().find(|(t, _)| t == name).map(|(_, s)| s.holds_per_s);
    if let Some(base) = rate("baseline") {
        for t in ["usher-pg", "usher-sqlite"] {
            if let Some(r) = rate(t) {
                let ratio = r / base;
                println!("ratio      {t} / baseline holds per second: {ratio:.1}x");
                report.ratios.push((format!("{t}/baseline holds_per_s"), ratio));
            }
        }
    }
    // What authentication costs: the same store and load, with and without it.
    for t in ["usher-pg", "usher-sqlite"] {
        if let (Some(with), Some(without)) = (rate(t), rate(&format!("{t}-before"))) {
            let ratio = with / without;
            println!("ratio      {t} / {t}-before holds per second (with / without authentication): {ratio:.3}");
            report.ratios.push((format!("{t}/{t}-before holds_per_s"), ratio));
        }
    }
    if scenarios.contains(&"memory") {
        let m = memory(&args).await?;
        println!(
            "memory     idle {:.1} MiB | one 100k-seat event {:.1} MiB ({:.0} B/seat) | 100 × 10k-seat events {:.1} MiB ({:.0} B/seat)",
            m.idle_rss_mib, m.one_100k_event_rss_mib, m.bytes_per_seat_100k, m.hundred_10k_events_rss_mib, m.bytes_per_seat_100x10k
        );
        report.memory = Some(m);
    }
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    println!("usher-bench: report written to {}", args.json.display());
    Ok(())
}
