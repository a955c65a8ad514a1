//! `usher`: the server (`usher serve`) and a small client.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use usher_gateway::{Application, Config, client};
use usher_proto::v1::HoldBestAvailableRequest;

#[derive(Parser)]
#[command(name = "usher", version, about = "Usher: an actor-system ticketing engine")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct Addr {
    /// Server address.
    #[arg(long, env = "USHER_ADDR", default_value = "127.0.0.1:50051", global = true)]
    addr: String,
    /// Credentials: an access token, a partner API key (usk_…) or a gate
    /// device token (usg_…). Default: the session saved by `usher login`.
    #[arg(long, env = "USHER_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

impl Addr {
    async fn connect(&self) -> anyhow::Result<client::Ch> {
        client::connect(&self.addr, self.token.as_deref()).await
    }
}

/// What every command that changes something takes besides its own
/// arguments: an idempotency key, and the server.
#[derive(Args)]
struct Change {
    /// Idempotency key; a fresh one by default. Repeat it to retry safely.
    #[arg(long)]
    key: Option<String>,
    #[command(flatten)]
    a: Addr,
}

impl Change {
    /// The key given, or a fresh one.
    fn key(self) -> String {
        self.key.unwrap_or_else(client::new_key)
    }
}

/// Where the deployment's configuration and database are (`usher serve`
/// and `usher admin` read the same).
#[derive(Args)]
struct Store {
    /// TOML configuration file (also USHER_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory of the embedded default (also USHER_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// postgres://… to use PostgreSQL (also USHER_DATABASE_URL).
    #[arg(long)]
    database_url: Option<String>,
}

impl Store {
    /// The file, then the environment, then these flags.
    fn config(&self) -> anyhow::Result<Config> {
        let mut c = Config::load(self.config.as_deref(), |k| std::env::var(k).ok())?;
        if let Some(v) = &self.data_dir {
            c.data_dir = v.clone();
        }
        if let Some(v) = &self.database_url {
            c.database_url = v.clone();
        }
        Ok(c)
    }

    async fn open(&self) -> anyhow::Result<std::sync::Arc<dyn usher_actors::IdentityStore>> {
        usher_gateway::admin::open(&self.config()?).await
    }
}

#[derive(Subcommand)]
enum Admin {
    /// Create a user; the password is read from USHER_PASSWORD or one line of standard input.
    CreateUser {
        email: String,
        #[arg(long, default_value = "")]
        name: String,
        /// A platform administrator (creates organizations, sees all).
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        s: Store,
    },
    /// Create an organization, optionally with an owner (a registered user).
    CreateOrg {
        name: String,
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        s: Store,
    },
    /// Add a user to an organization with a role (owner, manager, box_office, viewer).
    AddMember {
        org: String,
        email: String,
        role: String,
        #[command(flatten)]
        s: Store,
    },
    /// Create a partner API key (prints the secret once).
    CreateApiKey {
        #[arg(long)]
        org: String,
        #[arg(long)]
        partner: String,
        /// Scopes (events:read, holds, orders, payments, tickets); default all.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Events it may sell; default every event of the organization.
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        #[command(flatten)]
        s: Store,
    },
    /// Create a gate device token (prints the secret once).
    CreateDevice {
        #[arg(long)]
        org: String,
        #[arg(long)]
        gate: String,
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        #[command(flatten)]
        s: Store,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server. With no configuration: embedded SQLite in ./usher-data and demo data.
    Serve(ServeArgs),
    /// A cluster of nodes (see README "Several nodes").
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// A live look at running nodes, from their admin listeners: loaded
    /// events and the deepest queues, sagas, and the lag of each background
    /// queue (PDFs, email, outbox). Given one node of a cluster, shows
    /// every node it sees.
    Status {
        /// A node's admin listener, host:port (repeat for several).
        #[arg(long = "admin", default_value = "127.0.0.1:9464")]
        admin: Vec<String>,
        /// JSON (one array of nodes) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The stream of domain events (see README "The event stream").
    #[command(subcommand)]
    Stream(StreamCmd),
    /// The sales read model.
    #[command(subcommand)]
    Reports(ReportsCmd),
    /// Sign in; the session is kept in ~/.config/usher (mode 0600) for later
    /// commands. The password is read from USHER_PASSWORD or standard input.
    Login {
        email: String,
        #[command(flatten)]
        a: Addr,
    },
    /// Sign out (revokes the saved session).
    Logout {
        #[command(flatten)]
        a: Addr,
    },
    /// Who the credentials in use belong to.
    Whoami {
        #[command(flatten)]
        a: Addr,
    },
    /// Bootstrap a deployment: users, organizations, keys (works on the database directly).
    #[command(subcommand)]
    Admin(Admin),
    /// List events.
    Events {
        #[command(flatten)]
        a: Addr,
    },
    /// Show an event's seat map.
    Seats {
        event: String,
        #[command(flatten)]
        a: Addr,
    },
    /// Hold seats, e.g. `usher hold EVENT SC-A-12 SC-A-13`.
    Hold {
        event: String,
        #[arg(required = true)]
        seats: Vec<String>,
        /// For a partner or a box office: its reference for the customer.
        #[arg(long, default_value = "")]
        customer: String,
        #[command(flatten)]
        c: Change,
    },
    /// Hold the best available seats.
    Best {
        event: String,
        quantity: u32,
        #[arg(long, default_value = "")]
        section: String,
        #[arg(long, default_value = "")]
        category: String,
        /// For a partner or a box office: its reference for the customer.
        #[arg(long, default_value = "")]
        customer: String,
        #[command(flatten)]
        c: Change,
    },
    /// Show a hold.
    ShowHold {
        hold: String,
        #[command(flatten)]
        a: Addr,
    },
    /// Release a hold.
    Release {
        hold: String,
        #[command(flatten)]
        c: Change,
    },
    /// Order the seats of one or more holds (prices come from the event).
    Order {
        #[arg(required = true)]
        holds: Vec<String>,
        /// Where the tickets are sent.
        #[arg(long)]
        email: String,
        /// For a partner or a box office: its reference for the customer.
        #[arg(long, default_value = "")]
        customer: String,
        #[command(flatten)]
        c: Change,
    },
    /// Show an order.
    ShowOrder {
        order: String,
        #[command(flatten)]
        a: Addr,
    },
    /// Cancel an unpaid order (its seats become available).
    CancelOrder {
        order: String,
        /// For a partner or a box office: its reference for the customer.
        #[arg(long, default_value = "")]
        customer: String,
        #[command(flatten)]
        c: Change,
    },
    /// Pay an order with a card number (see the README's test cards) and wait for the tickets.
    Pay {
        order: String,
        card: String,
        #[command(flatten)]
        c: Change,
    },
    /// List an order's tickets and their codes; `--pdf FILE` downloads the PDF.
    Tickets {
        order: String,
        #[arg(long)]
        pdf: Option<PathBuf>,
        #[command(flatten)]
        a: Addr,
    },
    /// Scan a ticket code at a gate.
    Scan {
        event: String,
        code: String,
        #[arg(long, default_value = "gate-1")]
        gate: String,
        #[command(flatten)]
        c: Change,
    },
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    store: Store,
    /// Every setting `usher serve` takes as a flag (also its USHER_…
    /// variable or the file's key; see README "Configuration").
    #[command(flatten)]
    settings: usher_gateway::config::ConfigFlags,
    /// Load the demo venue and events (default: on for the embedded default).
    #[arg(long, conflicts_with = "no_demo_data")]
    demo_data: bool,
    #[arg(long)]
    no_demo_data: bool,
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// The cluster's nodes, the events each owns with their fencing epochs,
    /// and every lease, as the cluster's Redis has them.
    Status {
        /// The cluster's Redis.
        #[arg(long, env = "USHER_REDIS_URL")]
        redis_url: String,
        #[arg(long, env = "USHER_CLUSTER_KEY_PREFIX", default_value = "usher:")]
        key_prefix: String,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum StreamCmd {
    /// Prints the stream's messages as they are published, one line each:
    /// topic, event, its sequence number, message id and type, the time, and
    /// the payload decoded. Reads Kafka with --kafka-brokers, else the
    /// embedded stream in the database (--database-url / --data-dir).
    Tail {
        #[command(flatten)]
        store: Store,
        /// Kafka brokers, host:port[,host:port] (also USHER_KAFKA_BROKERS).
        #[arg(long, env = "USHER_KAFKA_BROKERS", default_value = "")]
        kafka_brokers: String,
        #[arg(long, env = "USHER_KAFKA_TOPIC_PREFIX", default_value = "")]
        topic_prefix: String,
        /// Only these topics (repeat the flag); default: all of Usher's.
        #[arg(long)]
        topic: Vec<String>,
        /// Start at the oldest message kept instead of the next one.
        #[arg(long)]
        from_start: bool,
        /// Stop after this many messages (default: run until stopped).
        #[arg(long)]
        limit: Option<u64>,
        /// One JSON object per line, the payload as base64.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ReportsCmd {
    /// An event's sales: seats by category and channel, orders by status,
    /// revenue, check-ins (for members who may view the event's orders).
    Sales {
        event: String,
        #[command(flatten)]
        a: Addr,
    },
    /// Empties the sales read model and rebuilds it from the beginning of
    /// the stream (Kafka's retention, or the outbox rows still kept). Works
    /// on the database directly; running nodes start over within 2 s.
    Rebuild {
        #[command(flatten)]
        store: Store,
    },
}

async fn reports(cmd: ReportsCmd) -> anyhow::Result<()> {
    match cmd {
        ReportsCmd::Sales { event, a } => client::sales_report(a.connect().await?, event).await,
        ReportsCmd::Rebuild { store } => {
            let c = store.config()?;
            let e = usher_adapters::connect_everything(&c.store_url()).await.map_err(|e| anyhow::anyhow!("opening the store: {e}"))?;
            let g = e.sales.reset().await.map_err(|e| anyhow::anyhow!("resetting the read model: {e}"))?;
            println!("usher: the sales read model is empty and rebuilds from the start of the stream (generation {g})");
            Ok(())
        }
    }
}

async fn stream(cmd: StreamCmd) -> anyhow::Result<()> {
    let StreamCmd::Tail { store, kafka_brokers, topic_prefix, topic, from_start, limit, json } = cmd;
    for t in &topic {
        if usher_adapters::outbox::message_type(t).is_none() {
            let all: Vec<&str> = usher_adapters::outbox::TOPICS.iter().map(|(t, _)| *t).collect();
            anyhow::bail!("--topic {t:?} is not one of Usher's topics: {}", all.join(", "));
        }
    }
    let wanted = |m: &usher_actors::StreamMessage| topic.is_empty() || topic.contains(&m.topic);
    let mut printed = 0u64;
    let mut print = |m: &usher_actors::StreamMessage| -> bool {
        let at = usher_adapters::kafka::rfc3339(m.occurred_at);
        if json {
            use base64::Engine as _;
            let line = serde_json::json!({
                "topic": m.topic, "event_id": m.key, "event_seq": m.event_seq, "message_id": m.message_id,
                "message_type": m.message_type, "schema_version": m.schema_version, "occurred_at": at,
                "traceparent": m.traceparent, "offset": m.offset,
                "payload": base64::engine::general_purpose::STANDARD.encode(&m.payload),
            });
            println!("{line}");
        } else {
            let body = usher_adapters::outbox::describe_payload(&m.message_type, &m.payload).unwrap_or_else(|e| format!("<{e}>"));
            println!("{at} {} event {} #{} {} {body}", m.topic, m.key, m.event_seq, m.message_id);
        }
        printed += 1;
        limit.is_some_and(|l| printed >= l)
    };
    if !kafka_brokers.is_empty() {
        use rdkafka::consumer::Consumer as _;
        let cfg = usher_adapters::kafka::KafkaConfig {
            brokers: kafka_brokers,
            topic_prefix,
            partitions: 1,
            replication: 1,
            retention_ms: 0,
            client_id: "usher-stream-tail".into(),
            message_timeout_ms: 10_000,
        };
        let topics: Vec<&str> = if topic.is_empty() {
            usher_adapters::outbox::TOPICS.iter().map(|(t, _)| *t).collect()
        } else {
            topic.iter().map(String::as_str).collect()
        };
        // A group of its own: a tail never takes messages from a real consumer.
        let group = format!("usher-tail-{}", uuid::Uuid::new_v4());
        let consumer = usher_adapters::kafka::consumer(&cfg, &group, from_start, &topics).map_err(|e| anyhow::anyhow!(e))?;
        loop {
            let m = consumer.recv().await.map_err(|e| anyhow::anyhow!("reading from {}: {e}", cfg.brokers))?;
            match usher_adapters::kafka::decode(&cfg, &m) {
                Ok(m) => {
                    if print(&m) {
                        consumer.unsubscribe();
                        return Ok(());
                    }
                }
                Err(e) => eprintln!("usher: skipping {} offset {}: {e}", rdkafka::Message::topic(&m), rdkafka::Message::offset(&m)),
            }
        }
    }
    let c = store.config()?;
    let (_, s) = usher_adapters::connect_with_stream(&c.store_url()).await.map_err(|e| anyhow::anyhow!("opening the store: {e}"))?;
    // The next offset: the relay's cursor, or 1 from the start.
    let mut next = if from_start { 1 } else { s.stream_end().await.map_err(|e| anyhow::anyhow!("{e}"))? };
    loop {
        let batch = s.read_local(next, 500).await.map_err(|e| anyhow::anyhow!("reading the embedded stream: {e}"))?;
        if batch.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        }
        for m in &batch {
            next = m.offset.unwrap_or(next) + 1;
            if wanted(m) && print(m) {
                return Ok(());
            }
        }
    }
}

async fn cluster(cmd: ClusterCmd) -> anyhow::Result<()> {
    match cmd {
        ClusterCmd::Status { redis_url, key_prefix, json } => {
            let (nodes, leases) = usher_adapters::lease::cluster_view(&redis_url, &key_prefix)
                .await
                .map_err(|e| anyhow::anyhow!("reading the cluster at {}: {e}", usher_gateway::config::redact_url(&redis_url)))?;
            if json {
                let leases: Vec<serde_json::Value> =
                    leases.iter().map(|l| serde_json::json!({ "event_id": l.event_id, "node": l.node, "ttl_ms": l.ttl_ms })).collect();
                println!("{}", serde_json::json!({ "nodes": nodes, "leases": leases }));
                return Ok(());
            }
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
            println!("{} node(s), {} lease(s)", nodes.len(), leases.len());
            for n in &nodes {
                println!(
                    "node {} ({})  grpc {}  http {}  up {} s  heartbeat {} ms ago  owns {} event(s)  fenced writes {}",
                    n.name,
                    n.node,
                    n.grpc_addr,
                    n.http_addr,
                    (now - n.started_ms) / 1000,
                    now - n.heartbeat_ms,
                    n.events.len(),
                    n.fenced_writes
                );
                for (e, epoch) in &n.events {
                    println!("  event {e}  epoch {epoch}");
                }
            }
            let owned: std::collections::HashSet<_> = nodes.iter().flat_map(|n| n.events.iter().map(|(e, _)| *e)).collect();
            for l in leases.iter().filter(|l| !owned.contains(&l.event_id)) {
                println!("lease of event {} held by {} ({} ms left), not yet in its node's record", l.event_id, l.node, l.ttl_ms);
            }
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let mut c = a.store.config()?;
    a.settings.apply(&mut c);
    if a.demo_data {
        c.demo_data = Some(true);
    }
    if a.no_demo_data {
        c.demo_data = Some(false);
    }
    let telemetry = usher_gateway::telemetry::init(&c)?;
    let app = Application::build(&c).await?;
    let store = if c.is_embedded() {
        format!("embedded SQLite at {}", c.store_url().trim_start_matches("sqlite://"))
    } else {
        "PostgreSQL".to_owned()
    };
    println!("usher: store: {store}{}", if c.demo_data() { " (demo data loaded)" } else { "" });
    println!("usher: events: {}", app.ownership);
    println!("usher: grpc listening on http://{} (reflection v1 and v1alpha, grpc.health.v1)", app.grpc_addr());
    println!("usher: storefront on http://{}/ (JSON API under /api)", app.http_addr());
    let mail = if c.smtp_url.is_empty() { format!("maildir {}", c.mail_dir().join("new").display()) } else { "SMTP".to_owned() };
    println!("usher: email to {mail}; ticket PDFs in {}", c.pdf_dir().display());
    println!("usher: domain events to {}", app.ctx.relay.status().destination);
    println!("usher: metrics on http://{0}/metrics (status /status, liveness /livez, readiness /readyz)", app.admin_addr());
    if !c.otlp_endpoint.is_empty() {
        println!("usher: traces to {} (OTLP/gRPC)", c.otlp_endpoint);
    }
    if let Some(d) = &app.demo {
        println!("usher: sign in to the demo (kept in {}):", c.data_dir.join("demo-credentials.json").display());
        println!("usher:   organizer  {} / {}   (owner of the demo organization)", d.organizer_email, d.organizer_password);
        println!("usher:   customer   {} / {}", d.customer_email, d.customer_password);
        println!("usher:   admin      {} / {}   (platform administrator)", d.admin_email, d.admin_password);
        println!("usher:   partner API key  {}", d.partner_key);
        println!("usher:   gate token       {}   (gate north)", d.gate_token);
        println!(
            "usher:   e.g. USHER_PASSWORD={} usher login {}   or   usher events --token {}",
            d.customer_password, d.customer_email, d.partner_key
        );
    } else {
        println!("usher: no demo data; make the first users with `usher admin create-user` and `usher admin create-org`");
    }
    let ctx = app.ctx.clone();
    app.run(shutdown_signal()).await?;
    println!("usher: group commit: {}", ctx.registry.stats().summary());
    println!("usher: saga writes: {}", ctx.sagas.deps.writer.summary());
    for s in ctx.registry.store().commit_stats() {
        println!("usher: commit path: {s}");
    }
    telemetry.shutdown();
    println!("usher: stopped cleanly");
    Ok(())
}

#[tokio::main]
async fn main() {
    // `usher seats EVENT | head`: Rust ignores SIGPIPE, so println! panics
    // once the reader has gone. Without unsafe code to restore the signal,
    // end quietly the way a program killed by SIGPIPE does (status 141).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload().downcast_ref::<String>().map(String::as_str).unwrap_or_default();
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    // A user sees the error chain, not a backtrace.
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("usher: {e:#}");
        std::process::exit(1);
    }
}

/// A password from USHER_PASSWORD, or one line of standard input (so it
/// never shows in the process list or the shell's history).
fn password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("USHER_PASSWORD") {
        return Ok(p);
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("password: ");
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn admin(cmd: Admin) -> anyhow::Result<()> {
    use usher_gateway::admin;
    match cmd {
        Admin::CreateUser { email, name, admin: is_admin, s } => {
            let id = admin::create_user(s.open().await?.as_ref(), &email, &password()?, &name, is_admin).await?;
            println!("user {id} <{email}>{}", if is_admin { " (platform administrator)" } else { "" });
        }
        Admin::CreateOrg { name, owner, s } => {
            let id = admin::create_org(s.open().await?.as_ref(), &name, owner.as_deref()).await?;
            println!("organization {id} {name:?}");
        }
        Admin::AddMember { org, email, role, s } => {
            admin::add_member(s.open().await?.as_ref(), &org, &email, &role).await?;
            println!("{email} is {role} of {org}");
        }
        Admin::CreateApiKey { org, partner, scopes, events, s } => {
            let (id, secret) = admin::create_api_key(s.open().await?.as_ref(), &org, &partner, &scopes, &events).await?;
            println!("api key {id} for partner {partner:?}; the secret is shown this once:");
            println!("{secret}");
        }
        Admin::CreateDevice { org, gate, events, s } => {
            let (id, secret) = admin::create_device(s.open().await?.as_ref(), &org, &gate, &events).await?;
            println!("device {id} at gate {gate:?}; the token is shown this once:");
            println!("{secret}");
        }
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Serve(a) => serve(a).await,
        Cmd::Cluster(cmd) => cluster(cmd).await,
        Cmd::Status { admin, json } => usher_gateway::observe::print_status(&admin, json).await,
        Cmd::Stream(cmd) => stream(cmd).await,
        Cmd::Reports(cmd) => reports(cmd).await,
        Cmd::Login { email, a } => client::login(&a.addr, email, password()?).await,
        Cmd::Logout { a } => client::logout(&a.addr).await,
        Cmd::Whoami { a } => client::whoami(a.connect().await?).await,
        Cmd::Admin(cmd) => admin(cmd).await,
        Cmd::Events { a } => client::events(a.connect().await?).await,
        Cmd::Seats { event, a } => client::seats(a.connect().await?, event).await,
        Cmd::Hold { event, seats, customer, c } => client::hold(c.a.connect().await?, event, seats, customer, c.key()).await,
        Cmd::Best { event, quantity, section, category, customer, c } => {
            let ch = c.a.connect().await?;
            let r =
                HoldBestAvailableRequest { idempotency_key: c.key(), event_id: event, customer_id: customer, quantity, section, category };
            client::best(ch, r).await
        }
        Cmd::ShowHold { hold, a } => client::show_hold(a.connect().await?, hold).await,
        Cmd::Release { hold, c } => client::release(c.a.connect().await?, hold, c.key()).await,
        Cmd::Order { holds, email, customer, c } => client::order(c.a.connect().await?, holds, customer, email, c.key()).await,
        Cmd::ShowOrder { order, a } => client::show_order(a.connect().await?, order).await,
        Cmd::CancelOrder { order, customer, c } => client::cancel_order(c.a.connect().await?, order, customer, c.key()).await,
        Cmd::Pay { order, card, c } => client::pay(c.a.connect().await?, order, card, c.key()).await,
        Cmd::Tickets { order, pdf, a } => client::tickets(a.connect().await?, order, pdf).await,
        Cmd::Scan { event, code, gate, c } => client::scan(c.a.connect().await?, event, code, gate, c.key()).await,
    }
}
