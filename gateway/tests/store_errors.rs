//! Storage failures reach callers as what they are: the database refusing a
//! seat claimed twice is INTERNAL (logged at ERROR, no SQL in the answer);
//! a database that cannot be reached is UNAVAILABLE, in plain words, and
//! service resumes when it is back.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tonic::Code;
use usher_proto::v1::inventory_service_client::InventoryServiceClient;

fn leaks_driver_text(m: &str) -> bool {
    let m = m.to_lowercase();
    ["seat_claims", "unique", "duplicate", "constraint", "sqlx", "insert", "select", "error returned from database", "{"]
        .iter()
        .any(|w| m.contains(w))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_claimed_twice_in_storage_answers_internal_and_logs_error() {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let log = db.data_dir.join("server.log");
    let (mut server, addr, token) = start_binary(&db, &[], std::fs::File::create(&log).unwrap().into()).await;
    let ch = connect_as(addr, &token).await;
    let mut cat = usher_proto::v1::catalog_service_client::CatalogServiceClient::new(ch.clone());
    let venue = create_venue(&mut cat, 1, 1, 5).await;
    let event = cat.create_event(event_request(&venue.venue_id, 0)).await.unwrap().into_inner().event_id;
    let mut inv = InventoryServiceClient::new(ch);
    let ann = inv.hold_seats(hold_req(&event, "ann", &["A-1-2"])).await.unwrap().into_inner();
    // Somebody wrote a claim on seat A-1-1 behind the actor's back: the
    // database's key now refuses the actor's own claim of it.
    db.exec("INSERT INTO seat_claims (event_id, seat_idx, hold_id, kind) VALUES ($1, 0, $2, 'held')", &[&event, &ann.hold_id]).await;
    let e = inv.hold_seats(hold_req(&event, "bob", &["A-1-1"])).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert!(!leaks_driver_text(e.message()), "driver text reached the caller: {}", e.message());
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().any(|l| l.contains("ERROR") && l.contains("constraint")), "an ERROR names the broken constraint:\n{text}");
}

/// A TCP proxy in front of PostgreSQL that the test can cut and restore.
struct Proxy {
    port: u16,
    task: tokio::task::JoinHandle<()>,
    links: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let links: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let l2 = links.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                l2.lock().unwrap().push(link);
            }
        });
        Proxy { port, task, links }
    }

    /// Drops every connection and refuses new ones.
    fn cut(self) -> u16 {
        self.task.abort();
        for l in self.links.lock().unwrap().drain(..) {
            l.abort();
        }
        self.port
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_database_connection_answers_unavailable_and_service_resumes() {
    let mut db = TestDb::fresh(Backend::Postgres).await;
    let proxy = Proxy::start(0).await;
    // The app reaches PostgreSQL through the proxy; the test's own checks go direct.
    let direct = db.url.clone();
    db.url = direct.replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port), 1);
    assert_ne!(db.url, direct, "the test URL names 127.0.0.1:5432");
    let app = TestApp::spawn_on(db).await;
    let event = create_event(&app, 1, 2, 5).await;
    let mut inv = app.inventory().await;
    inv.hold_seats(hold_req(&event, "ann", &["A-1-1"])).await.unwrap();
    let port = proxy.cut();
    let e = inv.hold_seats(hold_req(&event, "bob", &["A-1-2"])).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("retry"), "{}", e.message());
    assert!(!leaks_driver_text(e.message()) && !e.message().contains("Connection refused"), "driver text: {}", e.message());
    // The database is back: the same request (same key) goes through.
    let _proxy = Proxy::start(port).await;
    let again = hold_req(&event, "bob", &["A-1-2"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match inv.hold_seats(again.clone()).await {
            Ok(h) => {
                assert_eq!(h.into_inner().seats.len(), 1);
                break;
            }
            Err(s) => assert!(s.code() == Code::Unavailable && Instant::now() < deadline, "service did not resume: {s:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    app.stop().await;
}

/// A NUL in a name, which PostgreSQL refuses in text, is refused at the
/// edge as INVALID_ARGUMENT (not a retryable UNAVAILABLE with the
/// database's message), and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_a_nul_is_refused_at_the_edge_and_nothing_is_stored() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let mut cat = app.catalog().await;
    let venue = create_venue(&mut cat, 1, 1, 5).await;
    let mut req = event_request(&venue.venue_id, 0);
    req.name = "Opening\0Night".into();
    let e = cat.create_event(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("name has a control character") && !leaks_driver_text(e.message()), "{}", e.message());
    let mut req = event_request(&venue.venue_id, 0);
    req.description = "a\0b".into();
    assert_eq!(cat.create_event(req).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM events", &[]).await, 0);
    app.stop().await;
}

/// One `usher serve` per database: a second one on the same data refuses
/// to start, says why in a sentence, and leaves the first serving; once the
/// first is gone (even killed) the database can be served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_one_database_refuses_to_start() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::fresh(backend).await;
        let (mut first, addr, token) = start_binary(&db, &[], std::process::Stdio::null()).await;
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_usher"))
            .arg("serve")
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--no-demo-data"])
            .args(["--database-url", &db.url])
            .arg("--data-dir")
            .arg(&db.data_dir)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), out).await.expect("the second server exits").unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{backend:?}: the second server started");
        assert!(stderr.contains("another usher process already serves"), "{backend:?}: {stderr}");
        // The first still serves.
        let mut cat = usher_proto::v1::catalog_service_client::CatalogServiceClient::new(connect_as(addr, &token).await);
        create_venue(&mut cat, 1, 1, 2).await;
        first.start_kill().unwrap();
        first.wait().await.unwrap();
        let (mut again, _, _) = start_binary(&db, &[], std::process::Stdio::null()).await;
        again.start_kill().unwrap();
        again.wait().await.unwrap();
    }
}
