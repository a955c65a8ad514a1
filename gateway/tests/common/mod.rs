//! Test helpers: the real app on port 0 with a fresh database (a new SQLite
//! file or a new PostgreSQL database), typed gRPC clients, and direct SQL
//! access to check what storage holds.

#![allow(dead_code)]

#[allow(unused_imports)] // the trace tests use it
pub use usher_test_support::otlp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sqlx::{Executor, Row};
use tonic::transport::Channel;
use usher_gateway::{Application, Config};
use usher_proto::v1::{self as pb, catalog_service_client::CatalogServiceClient, inventory_service_client::InventoryServiceClient};

/// A connection that sends one principal's credentials with every call.
pub type Ch = usher_gateway::client::Ch;

/// The principals every test app starts with, in an organization of its own.
#[derive(Clone, Debug)]
pub struct Creds {
    pub org_id: String,
    /// The owner of the organization (may do everything there, and sell at
    /// the counter for customers named by reference).
    pub owner_email: String,
    pub owner_password: String,
    pub owner_token: String,
    /// A partner key with every scope, for the organization's events.
    pub partner_key: String,
    /// A gate device (gate `main`) for every event of the organization.
    pub gate_token: String,
}

/// Makes the test organization and its principals straight in the app's
/// identity store, and an owner access token.
pub async fn bootstrap(auth: &usher_gateway::auth::Auth, now: usher_engine::Millis) -> Creds {
    let store = auth.store.as_ref();
    let owner_email = format!("owner-{}@example.com", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let owner_password = "a long test password".to_owned();
    let user = usher_gateway::admin::create_user(store, &owner_email, &owner_password, "Owner", false).await.unwrap();
    let org = usher_gateway::admin::create_org(store, "Test Org", Some(&owner_email)).await.unwrap();
    let (_, partner_key) = usher_gateway::admin::create_api_key(store, &org.to_string(), "Test Partner", &[], &[]).await.unwrap();
    let (_, gate_token) = usher_gateway::admin::create_device(store, &org.to_string(), "main", &[]).await.unwrap();
    let memberships = store.memberships(user).await.unwrap();
    let (owner_token, _) = auth.access_token(user, false, &memberships, now).unwrap();
    Creds { org_id: org.to_string(), owner_email, owner_password, owner_token, partner_key, gate_token }
}

pub fn unlimited_rates() -> usher_gateway::auth::rate::RateConfig {
    use usher_gateway::auth::rate::{Rate, RateConfig};
    let r = Rate { per_s: 1_000_000, burst: 1_000_000 };
    RateConfig { anonymous: r, customer: r, partner: r, gate: r, ..RateConfig::default() }
}

/// A connection to `addr` that authenticates with `token` (no token: anonymous).
pub async fn connect_as(addr: SocketAddr, token: &str) -> Ch {
    let t = if token.is_empty() { None } else { Some(token) };
    tonic::service::interceptor::InterceptedService::new(connect(addr).await, usher_gateway::client::Bearer::new(t).unwrap())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where the PostgreSQL tests create their databases. The test command makes
/// sure a server is there; a missing one fails the tests, never skips them.
#[allow(unused_imports)] // each test binary uses a part of common
pub use usher_test_support::{Rng, pg_admin_url};

pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub data_dir: PathBuf,
    /// The principals made at the first start, kept across restarts.
    pub creds: Option<Creds>,
}

impl TestDb {
    pub async fn fresh(backend: Backend) -> TestDb {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let data_dir = std::env::temp_dir().join(format!("usher-test-{tag}"));
        std::fs::create_dir_all(&data_dir).unwrap();
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}", data_dir.join("usher.db").display()),
            Backend::Postgres => usher_test_support::fresh_pg_database("gw").await.1,
        };
        TestDb { backend, url, data_dir, creds: None }
    }

    pub fn config(&self) -> Config {
        Config {
            data_dir: self.data_dir.clone(),
            database_url: self.url.clone(),
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            demo_data: Some(false),
            log: "warn".into(),
            // Fast retries so outage tests finish in seconds.
            mail_retry_ms_max: 300,
            payment_timeout_ms: 1_000,
            sim_payment_delay_ms: 2_500,
            // Tests drive a whole load as one principal; the rate-limit
            // tests set their own.
            rates: unlimited_rates(),
            ..Config::default()
        }
    }

    /// A connection to the test database that sees the contexts' schemas.
    async fn pg(&self) -> sqlx::PgConnection {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&self.url).await.unwrap();
        conn.execute(
            "SET search_path TO bc_catalog, bc_inventory, bc_ordering, bc_fulfillment, bc_notification, bc_identity, bc_reporting, public",
        )
        .await
        .unwrap();
        conn
    }

    /// A pool on the test's SQLite file (close it when done).
    async fn sqlite(&self) -> sqlx::SqlitePool {
        sqlx::SqlitePool::connect(&self.url).await.unwrap()
    }

    /// One number from SQL, with `$1`… bound as text.
    pub async fn scalar(&self, sql: &str, args: &[&str]) -> i64 {
        match self.backend {
            Backend::Sqlite => {
                let pool = self.sqlite().await;
                let v: i64 = bound(sql, args).fetch_one(&pool).await.unwrap().get(0);
                pool.close().await;
                v
            }
            Backend::Postgres => bound(sql, args).fetch_one(&mut self.pg().await).await.unwrap().get::<i64, _>(0),
        }
    }

    /// Runs one statement with `$1`… bound as text (for tests that damage data).
    pub async fn exec(&self, sql: &str, args: &[&str]) {
        match self.backend {
            Backend::Sqlite => {
                let pool = self.sqlite().await;
                bound(sql, args).execute(&pool).await.unwrap();
                pool.close().await;
            }
            Backend::Postgres => {
                bound(sql, args).execute(&mut self.pg().await).await.unwrap();
            }
        }
    }

    /// The outbox payloads of one topic for one event, oldest first.
    pub async fn payloads(&self, topic: &str, event_id: &str) -> Vec<Vec<u8>> {
        let sql = "SELECT payload FROM outbox WHERE topic = $1 AND aggregate_id = $2 ORDER BY seq";
        match self.backend {
            Backend::Sqlite => {
                let pool = self.sqlite().await;
                let rows = bound(sql, &[topic, event_id]).fetch_all(&pool).await.unwrap();
                pool.close().await;
                rows.iter().map(|r| r.get(0)).collect()
            }
            Backend::Postgres => {
                let rows = bound(sql, &[topic, event_id]).fetch_all(&mut self.pg().await).await.unwrap();
                rows.iter().map(|r| r.get(0)).collect()
            }
        }
    }

    /// Every (seat_idx, hold_id) claim row of an event.
    pub async fn claims(&self, event_id: &str) -> Vec<(i64, Option<String>, String)> {
        let sql = "SELECT seat_idx, hold_id, kind FROM seat_claims WHERE event_id = $1 ORDER BY seat_idx";
        match self.backend {
            Backend::Sqlite => {
                let pool = self.sqlite().await;
                let rows = bound(sql, &[event_id]).fetch_all(&pool).await.unwrap();
                pool.close().await;
                rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
            }
            Backend::Postgres => {
                let rows = bound(sql, &[event_id]).fetch_all(&mut self.pg().await).await.unwrap();
                rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
            }
        }
    }
}

/// `sql` with `$1`… bound to `args`, as text.
fn bound<'q, DB: sqlx::Database>(sql: &'q str, args: &[&'q str]) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    args.iter().fold(sqlx::query(sql), |q, a| q.bind(*a))
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The storefront and JSON API.
    pub http: SocketAddr,
    /// The admin listener (`/metrics`, `/status`).
    pub admin: SocketAddr,
    pub db: TestDb,
    pub app_ctx: usher_gateway::ctx::Ctx,
    pub creds: Creds,
    bearer_header: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        let db = TestDb::fresh(backend).await;
        TestApp::spawn_on(db).await
    }

    pub async fn spawn_on(db: TestDb) -> TestApp {
        let cfg = db.config();
        TestApp::spawn_with(db, cfg).await
    }

    pub async fn spawn_with(mut db: TestDb, cfg: Config) -> TestApp {
        // A restart in the same process may find the previous app's node
        // lock still held for a moment: tasks it did not wait for (the
        // postman, the saga supervisor) let go of it as they end, and
        // PostgreSQL drops an advisory lock only once it sees the
        // connection close. A lock held for seconds is a leak: fail then.
        let started = std::time::Instant::now();
        let app = loop {
            match Application::build(&cfg).await {
                Ok(app) => break app,
                Err(e) if e.to_string().contains("already serves") && started.elapsed() < Duration::from_secs(5) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("app builds: {e:?}"),
            }
        };
        let addr = app.grpc_addr();
        let http = app.http_addr();
        let admin = app.admin_addr();
        let app_ctx = app.ctx.clone();
        let creds = match db.creds.clone() {
            Some(c) => c,
            None => bootstrap(&app_ctx.auth, app_ctx.now()).await,
        };
        db.creds = Some(creds.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let join = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        let bearer_header = format!("Bearer {}", creds.owner_token);
        TestApp { addr, http, admin, db, app_ctx, creds, bearer_header, shutdown: Some(tx), join: Some(join) }
    }

    /// A connection as the test organization's owner.
    pub async fn channel(&self) -> Ch {
        connect_as(self.addr, &self.creds.owner_token).await
    }

    /// A connection as someone else (a token, an API key, or "" for nobody).
    pub async fn channel_as(&self, token: &str) -> Ch {
        connect_as(self.addr, token).await
    }

    /// `Authorization` header for the JSON API, as the owner.
    pub fn bearer(&self) -> (&'static str, String) {
        ("Authorization", format!("Bearer {}", self.creds.owner_token))
    }

    /// The same, as a header for `http()`.
    pub fn bearer_ref(&self) -> (&'static str, &str) {
        ("Authorization", self.bearer_header.as_str())
    }

    pub async fn catalog(&self) -> CatalogServiceClient<Ch> {
        CatalogServiceClient::new(self.channel().await)
    }

    pub async fn inventory(&self) -> InventoryServiceClient<Ch> {
        InventoryServiceClient::new(self.channel().await)
    }

    pub async fn stop(mut self) -> TestDb {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(j) = self.join.take() {
            tokio::time::timeout(Duration::from_secs(30), j).await.expect("clean shutdown in time").unwrap().unwrap();
        }
        let TestApp { db, .. } = self;
        db
    }
}

pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

pub fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn now_ts(offset_s: i64) -> prost_types::Timestamp {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    prost_types::Timestamp { seconds: now + offset_s, nanos: 0 }
}

/// A grid venue: `sections` × `rows` × `per_row`, sections A, B, … rows 1, 2, …
/// (see `venue_request`).
pub async fn create_venue(c: &mut CatalogServiceClient<Ch>, sections: usize, rows: usize, per_row: u32) -> pb::Venue {
    c.create_venue(venue_request(sections, rows, per_row)).await.unwrap().into_inner()
}

/// "Test Hall": `sections` sections A, B, … (A priced P1, the rest P2) of
/// `rows` rows of `per_row` seats, in the caller's one organization, UTC.
pub fn venue_request(sections: usize, rows: usize, per_row: u32) -> pb::CreateVenueRequest {
    pb::CreateVenueRequest {
        idempotency_key: key(),
        // The caller's one organization.
        org_id: String::new(),
        name: "Test Hall".into(),
        // Empty: UTC.
        time_zone: String::new(),
        categories: vec![
            pb::PriceCategory { code: "P1".into(), name: "Premium".into() },
            pb::PriceCategory { code: "P2".into(), name: "Standard".into() },
        ],
        sections: (0..sections)
            .map(|s| pb::SectionSpec {
                code: ((b'A' + s as u8) as char).to_string(),
                name: format!("Section {s}"),
                category: if s % 2 == 0 { "P1".into() } else { "P2".into() },
                x: 0.0,
                y: (s * rows) as f32,
                rows: (0..rows).map(|r| pb::RowSpec { label: (r + 1).to_string(), seats: per_row, first_number: 1 }).collect(),
            })
            .collect(),
    }
}

pub fn event_request(venue_id: &str, hold_seconds: u32) -> pb::CreateEventRequest {
    pb::CreateEventRequest {
        idempotency_key: key(),
        venue_id: venue_id.into(),
        name: "Test Night".into(),
        description: "a test".into(),
        starts_at: Some(now_ts(86_400 * 10)),
        sales_start: Some(now_ts(-60)),
        sales_end: Some(now_ts(86_400 * 9)),
        hold_duration_seconds: hold_seconds,
        hold_seats_max: 6,
        currency: "EUR".into(),
        prices: vec![
            pb::CategoryPrice { category: "P1".into(), amount_minor: 9_000 },
            pb::CategoryPrice { category: "P2".into(), amount_minor: 5_000 },
        ],
        open_sales: true,
    }
}

/// A venue and an on-sale event; returns the event id.
pub async fn create_event(app: &TestApp, sections: usize, rows: usize, per_row: u32) -> String {
    let mut c = app.catalog().await;
    let v = create_venue(&mut c, sections, rows, per_row).await;
    c.create_event(event_request(&v.venue_id, 0)).await.unwrap().into_inner().event_id
}

pub fn hold_req(event_id: &str, customer: &str, seats: &[&str]) -> pb::HoldSeatsRequest {
    pb::HoldSeatsRequest {
        idempotency_key: key(),
        event_id: event_id.into(),
        customer_id: customer.into(),
        seat_ids: seats.iter().map(|s| s.to_string()).collect(),
    }
}

/// An order of `holds` for `customer` (a reference, or "" for the caller
/// itself), tickets to `email`, with a fresh key.
pub fn order_req(customer: &str, email: &str, holds: Vec<String>) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest { idempotency_key: key(), customer_id: customer.into(), email: email.into(), hold_ids: holds }
}

/// A payment of `order_id` with `card`, waiting up to `wait_ms` for the
/// provider's answer, with a fresh key.
pub fn pay_req(order_id: &str, card: &str, wait_ms: u32) -> pb::PayOrderRequest {
    pb::PayOrderRequest { idempotency_key: key(), order_id: order_id.into(), card_number: card.into(), wait_ms }
}

pub fn reason(s: &tonic::Status) -> String {
    s.metadata().get("usher-reason").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

/// Runs a scenario once per backend, as two tests.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            }
        )*
    };
}

/// A minimal HTTP/1.1 client (one request per connection): status and body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    // Chunked bodies: keep the JSON between the first '{' and the last '}'.
    let body = match (rest.find('{'), rest.rfind('}')) {
        (Some(a), Some(b)) if b >= a => rest[a..=b].to_owned(),
        _ => rest.to_owned(),
    };
    (status, body)
}

/// Spawns `cmd` with stdout piped and waits (up to `within`) for a line that
/// starts with `prefix`; returns the child and the rest of that line. Later
/// output is drained so the child never blocks on a full pipe.
pub async fn spawn_until_line(mut cmd: tokio::process::Command, prefix: &str, within: Duration) -> (tokio::process::Child, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = cmd.stdout(std::process::Stdio::piped()).kill_on_drop(true).spawn().expect("the process starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let rest = tokio::time::timeout(within, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
        panic!("the process exited before printing {prefix:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("no {prefix:?} line within {within:?}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, rest)
}

/// The owner `start_binary` makes on a test database.
pub const BIN_OWNER: &str = "bin-owner@example.com";
pub const BIN_PASSWORD: &str = "a long test password";

/// Starts the real `usher serve` binary on the test database and waits for
/// its address; returns a token of an organization's owner, made on the
/// database at the first start (as `usher admin` would) and signed in over
/// gRPC. One principal drives whole loads in these tests, so its rate limit
/// is lifted.
pub async fn start_binary(db: &TestDb, env: &[(&str, &str)], stderr: std::process::Stdio) -> (tokio::process::Child, SocketAddr, String) {
    start_binary_at(db, env, stderr, "127.0.0.1:0").await
}

/// `start_binary` with its gRPC listener at `grpc_addr` (a restarted node
/// comes back where its clients look for it).
pub async fn start_binary_at(
    db: &TestDb,
    env: &[(&str, &str)],
    stderr: std::process::Stdio,
    grpc_addr: &str,
) -> (tokio::process::Child, SocketAddr, String) {
    let store = usher_gateway::admin::open(&db.config()).await.unwrap();
    if store.user_by_email(BIN_OWNER).await.unwrap().is_none() {
        usher_gateway::admin::create_user(store.as_ref(), BIN_OWNER, BIN_PASSWORD, "Owner", false).await.unwrap();
        usher_gateway::admin::create_org(store.as_ref(), "Binary Org", Some(BIN_OWNER)).await.unwrap();
    }
    drop(store);
    let config = db.data_dir.join("usher.toml");
    let rate = "{ per_s = 1000000, burst = 1000000 }";
    std::fs::write(&config, format!("[rates]\ncustomer = {rate}\npartner = {rate}\nanonymous = {rate}\n")).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_usher"));
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["--grpc-addr", grpc_addr, "--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--no-demo-data"])
        .args(["--database-url", &db.url])
        .arg("--data-dir")
        .arg(&db.data_dir)
        .env("USHER_LOG", "warn")
        .envs(env.iter().copied())
        .stderr(stderr);
    let (child, rest) = spawn_until_line(cmd, "usher: grpc listening on http://", Duration::from_secs(30)).await;
    let addr: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
    let session = usher_proto::v1::identity_service_client::IdentityServiceClient::new(connect(addr).await)
        .log_in(pb::LogInRequest { email: BIN_OWNER.into(), password: BIN_PASSWORD.into() })
        .await
        .unwrap()
        .into_inner();
    (child, addr, session.access_token)
}

/// Messages the maildir mailer delivered (the embedded default), sorted.
pub fn maildir(db: &TestDb) -> Vec<String> {
    let dir = db.data_dir.join("mail").join("new");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| std::fs::read_to_string(e.path()).unwrap()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// A message's text as people read it: the part before any PDF attachment
/// (base64), with quoted-printable soft line breaks joined (RFC 2045 6.7),
/// so a phrase the mailer wrapped reads as one line.
pub fn mail_text(mail: &str) -> String {
    let text = mail.split("Content-Type: application/pdf").next().unwrap_or(mail);
    text.replace("=\r\n", "").replace("=\n", "")
}

/// The text (`mail_text`) of the maildir message about order `number`,
/// waiting up to 10 s for it.
pub async fn mail_for(db: &TestDb, number: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(m) = maildir(db).into_iter().find(|m| m.contains(number)) {
            return mail_text(&m);
        }
        assert!(std::time::Instant::now() < deadline, "no email about order {number}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The maildir messages once there are at least `n` of them, waiting up to
/// 10 s (then whatever is there).
pub async fn maildir_at_least(db: &TestDb, n: usize) -> Vec<String> {
    let t = std::time::Instant::now();
    while maildir(db).len() < n && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    maildir(db)
}

/// Runs a tool the test command installs (pdftotext, pdffonts, zbarimg, …)
/// and gives its standard output; panics, naming it, when it is missing or
/// fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} must be installed (the test command installs it): {e}"));
    assert!(out.status.success(), "{cmd} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An order as `GetOrder` answers it on `ch`.
pub async fn get_order(ch: &Ch, order_id: &str) -> pb::Order {
    usher_proto::v1::ordering_service_client::OrderingServiceClient::new(ch.clone())
        .get_order(pb::GetOrderRequest { order_id: order_id.into() })
        .await
        .unwrap()
        .into_inner()
}

/// The order once `reached` holds for it (polled every 50 ms), failing
/// after `within` and saying where it was (`what`: what was awaited).
pub async fn order_reaching(ch: &Ch, order_id: &str, within: Duration, what: &str, reached: impl Fn(&pb::Order) -> bool) -> pb::Order {
    let deadline = std::time::Instant::now() + within;
    loop {
        let o = get_order(ch, order_id).await;
        if reached(&o) {
            return o;
        }
        assert!(std::time::Instant::now() < deadline, "order {order_id} did not reach {what}: {:?} {}", o.status, o.step);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The seats of an order's tickets (`ListTickets` on `ch`), sorted.
pub async fn ticket_seats(ch: &Ch, order_id: &str) -> Vec<String> {
    let tickets = usher_proto::v1::fulfillment_service_client::FulfillmentServiceClient::new(ch.clone())
        .list_tickets(pb::ListTicketsRequest { order_id: order_id.into() })
        .await
        .unwrap()
        .into_inner()
        .tickets;
    let mut got: Vec<String> = tickets.into_iter().map(|t| t.seat_id).collect();
    got.sort();
    got
}
