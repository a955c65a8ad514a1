//! Typed configuration: defaults, then a TOML file, then `USHER_*`
//! environment variables, then command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::limits;

/// How log lines are written (`--log-format`, `USHER_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per record, `time LEVEL target: message key=value…`;
    /// coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line: `timestamp` (RFC 3339), `level`, `target`,
    /// `fields` (with `message`), and `span` (the innermost span's name and
    /// fields) when the record happened inside one.
    Json,
}

/// `Debug` is written by hand: the database and SMTP URLs may carry
/// passwords, which never print.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the embedded default keeps its SQLite file.
    pub data_dir: PathBuf,
    /// Empty: SQLite in `data_dir`. `postgres://…` for PostgreSQL.
    pub database_url: String,
    /// gRPC listen address; port 0 picks a free port.
    pub grpc_addr: SocketAddr,
    /// HTTP listen address (storefront and JSON API); port 0 picks one.
    pub http_addr: SocketAddr,
    /// The admin listener: `/metrics` (Prometheus), `/livez`, `/readyz`,
    /// `/status`. No credentials are asked there: keep it on loopback or a
    /// private network. Port 0 picks one.
    pub admin_addr: SocketAddr,
    /// Load the demo venue and events on start (idempotent). Defaults to on
    /// for the embedded default and off for PostgreSQL.
    pub demo_data: Option<bool>,
    /// tracing filter, e.g. `info` or `usher=debug`.
    pub log: String,
    /// Where spans go, over OTLP/gRPC (`http://collector:4317`); empty: no
    /// traces (the default).
    pub otlp_endpoint: String,
    /// How log lines are written to stderr: `text` for people, `json` for a
    /// log shipper (one JSON object per line).
    pub log_format: LogFormat,
    /// `smtp://host:port` sends email to that server; empty: into the maildir.
    pub smtp_url: String,
    /// Maildir for email when no SMTP server is set (default: DATA_DIR/mail).
    pub mail_dir: Option<PathBuf>,
    /// Sender of customer email.
    pub mail_from: String,
    /// Longest wait between delivery attempts while the mail server is down.
    pub mail_retry_ms_max: u64,
    /// Where ticket PDFs are kept (default: DATA_DIR/tickets).
    pub pdf_dir: Option<PathBuf>,
    /// The Ed25519 key that signs ticket codes: 32 raw bytes, base64url
    /// (default: DATA_DIR/ticket-signing.key, made at first start).
    pub ticket_key_file: Option<PathBuf>,
    /// How long a saga waits for the payment provider before asking for the
    /// attempt's status.
    pub payment_timeout_ms: u64,
    /// The simulated provider's memory (default: DATA_DIR/payment-sim.jsonl).
    pub payment_ledger: Option<PathBuf>,
    /// How long the simulated provider's slow test card takes.
    pub sim_payment_delay_ms: u64,
    /// PDFs rendered at once.
    pub render_workers: usize,
    /// Fault injection for crash tests only: pause between a captured
    /// payment and ticket issuing.
    pub test_issue_delay_ms: u64,
    /// `iss` and `aud` of access tokens (the same for every node of a deployment).
    pub token_issuer: String,
    pub token_audience: String,
    /// Lifetime of an access token; a refresh token lives 30 days.
    pub access_token_ttl_ms: u64,
    /// The storefront's URL as people reach it, for the order links in
    /// emails (default: `http://` and the HTTP listener's address).
    pub public_url: String,
    /// Open connections per door; past the cap a new one is closed at once.
    pub http_connections_max: usize,
    pub grpc_connections_max: usize,
    /// Time for an HTTP request's head, and for an idle keep-alive connection.
    pub http_header_read_ms: u64,
    /// Time for an HTTP request's whole body, from its head.
    pub http_body_ms: u64,
    /// A gRPC connection with no call in flight this long is closed.
    pub grpc_idle_ms: u64,
    /// Live seat feeds (`WatchSeats`, the storefront's server-sent events)
    /// one client, and the whole node, may hold open.
    pub seat_streams_per_client_max: usize,
    pub seat_streams_per_node_max: usize,
    /// A feed whose watcher takes nothing this long while items wait is dropped.
    pub seat_feed_stall_ms: u64,
    /// Rate limits per kind of caller (`[rates]` in the file).
    pub rates: crate::auth::rate::RateConfig,
    /// What one organization may hold (`[quotas]` in the file): venues,
    /// seats across them, upcoming events.
    pub quotas: usher_engine::Quotas,
    /// `redis://host:port` joins a cluster of nodes on one PostgreSQL
    /// database, with a lease per event in this Redis. Empty: one node.
    pub redis_url: String,
    /// This node's name in the cluster (default: the host name).
    pub node_name: String,
    /// Where the other nodes reach this node's gRPC server, `host:port`
    /// (default: the gRPC listener's address; set it when that is 0.0.0.0).
    pub advertise_addr: String,
    /// The secret every node of a cluster shares: requests forwarded between
    /// nodes carry it. At least 16 characters; never printed.
    pub cluster_secret: String,
    /// How long an event's lease lasts without renewal: the longest an
    /// event goes unserved after its owner dies.
    pub lease_ttl_ms: u64,
    /// How often a node renews its leases (at most half the TTL).
    pub lease_renew_ms: u64,
    /// Prefix of the cluster's Redis keys, so clusters can share a Redis.
    pub cluster_key_prefix: String,
    /// `host:port[,host:port…]` of Kafka brokers: the relay publishes the
    /// outbox there (librdkafka `bootstrap.servers`). Empty: the embedded
    /// stream in the database, to the same consumers.
    pub kafka_brokers: String,
    /// Put before every topic name (empty: `seats-sold`, ...).
    pub kafka_topic_prefix: String,
    /// Partitions, replicas and `retention.ms` of the topics Usher creates
    /// when they are missing (existing topics are left alone).
    pub kafka_partitions: u32,
    pub kafka_replication: u32,
    pub kafka_retention_ms: u64,
    /// How long published outbox rows stay in the database (the embedded
    /// stream's retention too).
    pub outbox_retention_ms: u64,
    /// Not ready (`/readyz` 503, gRPC health `usher.relay` NOT_SERVING)
    /// while the oldest unpublished outbox row is older than this.
    pub relay_behind_ms: u64,
    /// Fault injection for crash tests only: the relay's pause between its
    /// delivery reports and marking rows published.
    pub test_relay_mark_delay_ms: u64,
    /// Waits between a webhook's attempts (ms); after the last, it fails.
    /// Default: Standard Webhooks' 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    pub webhook_retry_schedule_ms: Vec<u64>,
    /// One webhook attempt's time for an answer (ms).
    pub webhook_timeout_ms: u64,
    /// A PEM file of CA certificates trusted for `https://` webhook
    /// endpoints besides Mozilla's roots (a private CA); read at start.
    pub webhook_ca_file: Option<PathBuf>,
    /// `false` (USHER_RELAY=off) for benchmarks only: the relay publishes
    /// nothing and the outbox grows.
    pub relay_enabled: bool,
    /// `false` (USHER_STREAM_CONSUMERS=off) for benchmarks only: neither
    /// the sales read model nor the webhook queue reads the stream, so the
    /// relay's own cost can be told from theirs.
    pub consumers_enabled: bool,
    /// `false` (USHER_METRICS=off) for benchmarks only: no metrics recorder
    /// is installed, so every recording is a no-op and `/metrics` is empty;
    /// the bench weighs what metrics cost against it.
    pub metrics_enabled: bool,
}

/// A URL with any `user:password@` part replaced by `***@`.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url))
            .field("grpc_addr", &self.grpc_addr)
            .field("http_addr", &self.http_addr)
            .field("admin_addr", &self.admin_addr)
            .field("demo_data", &self.demo_data)
            .field("log", &self.log)
            .field("log_format", &self.log_format)
            .field("smtp_url", &redact_url(&self.smtp_url))
            .field("mail_from", &self.mail_from)
            .field("public_url", &self.public_url)
            .field("token_issuer", &self.token_issuer)
            .field("token_audience", &self.token_audience)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("node_name", &self.node_name)
            .field("lease_ttl_ms", &self.lease_ttl_ms)
            .field("kafka_brokers", &self.kafka_brokers)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("usher-data"),
            database_url: String::new(),
            grpc_addr: "127.0.0.1:50051".parse().expect("valid address"),
            http_addr: "127.0.0.1:8080".parse().expect("valid address"),
            // 9464: the port OpenTelemetry's Prometheus exporters use.
            admin_addr: "127.0.0.1:9464".parse().expect("valid address"),
            demo_data: None,
            log: "info".into(),
            log_format: LogFormat::Text,
            otlp_endpoint: String::new(),
            smtp_url: String::new(),
            mail_dir: None,
            mail_from: "Usher Tickets <tickets@usher.local>".into(),
            mail_retry_ms_max: 60_000,
            pdf_dir: None,
            ticket_key_file: None,
            payment_timeout_ms: 30_000,
            payment_ledger: None,
            sim_payment_delay_ms: 3_000,
            render_workers: 2,
            test_issue_delay_ms: 0,
            token_issuer: "usher".into(),
            token_audience: "usher".into(),
            access_token_ttl_ms: 15 * 60 * 1000,
            public_url: String::new(),
            http_connections_max: limits::HTTP_CONNECTIONS_MAX_DEFAULT,
            grpc_connections_max: limits::GRPC_CONNECTIONS_MAX_DEFAULT,
            http_header_read_ms: limits::HTTP_HEADER_READ_MS_DEFAULT,
            http_body_ms: limits::HTTP_BODY_MS_DEFAULT,
            grpc_idle_ms: limits::GRPC_IDLE_MS_DEFAULT,
            seat_streams_per_client_max: limits::SEAT_STREAMS_PER_CLIENT_MAX,
            seat_streams_per_node_max: limits::SEAT_STREAMS_PER_NODE_MAX,
            seat_feed_stall_ms: limits::SEAT_FEED_STALL_MS_DEFAULT,
            rates: crate::auth::rate::RateConfig::default(),
            quotas: usher_engine::Quotas::default(),
            redis_url: String::new(),
            node_name: String::new(),
            advertise_addr: String::new(),
            cluster_secret: String::new(),
            lease_ttl_ms: limits::LEASE_TTL_MS_DEFAULT,
            lease_renew_ms: limits::LEASE_RENEW_MS_DEFAULT,
            cluster_key_prefix: "usher:".into(),
            kafka_brokers: String::new(),
            kafka_topic_prefix: String::new(),
            kafka_partitions: limits::KAFKA_PARTITIONS_DEFAULT,
            kafka_replication: 1,
            kafka_retention_ms: usher_engine::limits::OUTBOX_RETENTION_MS_DEFAULT,
            outbox_retention_ms: usher_engine::limits::OUTBOX_RETENTION_MS_DEFAULT,
            relay_behind_ms: usher_engine::limits::RELAY_BEHIND_MS_DEFAULT,
            test_relay_mark_delay_ms: 0,
            webhook_retry_schedule_ms: usher_adapters::webhooks::RETRY_SCHEDULE_MS_DEFAULT.to_vec(),
            webhook_timeout_ms: 10_000,
            webhook_ca_file: None,
            relay_enabled: true,
            consumers_enabled: true,
            metrics_enabled: true,
        }
    }
}

impl Config {
    /// Reads the file (if any) and the environment.
    pub fn load(file: Option<&std::path::Path>, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let file = file.map(PathBuf::from).or_else(|| env("USHER_CONFIG").map(PathBuf::from));
        let mut c = match file {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?
            }
            None => Config::default(),
        };
        if let Some(v) = env("USHER_DATA_DIR") {
            c.data_dir = v.into();
        }
        if let Some(v) = env("USHER_DATABASE_URL") {
            c.database_url = v;
        }
        if let Some(v) = env("USHER_GRPC_ADDR") {
            c.grpc_addr = v.parse().map_err(|e| anyhow::anyhow!("USHER_GRPC_ADDR={v:?}: {e}"))?;
        }
        if let Some(v) = env("USHER_HTTP_ADDR") {
            c.http_addr = v.parse().map_err(|e| anyhow::anyhow!("USHER_HTTP_ADDR={v:?}: {e}"))?;
        }
        if let Some(v) = env("USHER_OTLP_ENDPOINT") {
            c.otlp_endpoint = v;
        }
        if let Some(v) = env("USHER_ADMIN_ADDR") {
            c.admin_addr = v.parse().map_err(|e| anyhow::anyhow!("USHER_ADMIN_ADDR={v:?}: {e}"))?;
        }
        if let Some(v) = env("USHER_DEMO_DATA") {
            c.demo_data = Some(matches!(v.as_str(), "1" | "true" | "yes" | "on"));
        }
        if let Some(v) = env("USHER_LOG") {
            c.log = v;
        }
        if let Some(v) = env("USHER_LOG_FORMAT") {
            c.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => anyhow::bail!("USHER_LOG_FORMAT={v:?}: give text or json"),
            };
        }
        if let Some(v) = env("USHER_SMTP_URL") {
            c.smtp_url = v;
        }
        if let Some(v) = env("USHER_MAIL_DIR") {
            c.mail_dir = Some(v.into());
        }
        if let Some(v) = env("USHER_MAIL_FROM") {
            c.mail_from = v;
        }
        if let Some(v) = env("USHER_PDF_DIR") {
            c.pdf_dir = Some(v.into());
        }
        if let Some(v) = env("USHER_TICKET_KEY_FILE") {
            c.ticket_key_file = Some(v.into());
        }
        if let Some(v) = env("USHER_PAYMENT_LEDGER") {
            c.payment_ledger = Some(v.into());
        }
        let num = |name: &str, v: String| v.parse::<u64>().map_err(|e| anyhow::anyhow!("{name}={v:?}: {e}"));
        if let Some(v) = env("USHER_MAIL_RETRY_MS_MAX") {
            c.mail_retry_ms_max = num("USHER_MAIL_RETRY_MS_MAX", v)?;
        }
        if let Some(v) = env("USHER_PAYMENT_TIMEOUT_MS") {
            c.payment_timeout_ms = num("USHER_PAYMENT_TIMEOUT_MS", v)?;
        }
        if let Some(v) = env("USHER_SIM_PAYMENT_DELAY_MS") {
            c.sim_payment_delay_ms = num("USHER_SIM_PAYMENT_DELAY_MS", v)?;
        }
        if let Some(v) = env("USHER_TEST_ISSUE_DELAY_MS") {
            c.test_issue_delay_ms = num("USHER_TEST_ISSUE_DELAY_MS", v)?;
        }
        if let Some(v) = env("USHER_PARTNER_RATE_PER_S") {
            let n = num("USHER_PARTNER_RATE_PER_S", v)?.clamp(1, u64::from(u32::MAX / 4)) as u32;
            c.rates.partner = crate::auth::rate::Rate { per_s: n, burst: n.saturating_mul(4) };
        }
        if let Some(v) = env("USHER_PUBLIC_URL") {
            c.public_url = v;
        }
        if let Some(v) = env("USHER_TOKEN_ISSUER") {
            c.token_issuer = v;
        }
        if let Some(v) = env("USHER_TOKEN_AUDIENCE") {
            c.token_audience = v;
        }
        let count = |name: &str, v: String| num(name, v).map(|n| n.clamp(1, u64::from(u32::MAX)) as usize);
        if let Some(v) = env("USHER_SEAT_STREAMS_PER_CLIENT_MAX") {
            c.seat_streams_per_client_max = count("USHER_SEAT_STREAMS_PER_CLIENT_MAX", v)?;
        }
        if let Some(v) = env("USHER_SEAT_STREAMS_PER_NODE_MAX") {
            c.seat_streams_per_node_max = count("USHER_SEAT_STREAMS_PER_NODE_MAX", v)?;
        }
        if let Some(v) = env("USHER_HTTP_CONNECTIONS_MAX") {
            c.http_connections_max = count("USHER_HTTP_CONNECTIONS_MAX", v)?;
        }
        if let Some(v) = env("USHER_GRPC_CONNECTIONS_MAX") {
            c.grpc_connections_max = count("USHER_GRPC_CONNECTIONS_MAX", v)?;
        }
        if let Some(v) = env("USHER_HTTP_HEADER_READ_MS") {
            c.http_header_read_ms = num("USHER_HTTP_HEADER_READ_MS", v)?;
        }
        if let Some(v) = env("USHER_HTTP_BODY_MS") {
            c.http_body_ms = num("USHER_HTTP_BODY_MS", v)?;
        }
        if let Some(v) = env("USHER_GRPC_IDLE_MS") {
            c.grpc_idle_ms = num("USHER_GRPC_IDLE_MS", v)?;
        }
        if let Some(v) = env("USHER_RENDER_WORKERS") {
            c.render_workers = num("USHER_RENDER_WORKERS", v)?.clamp(1, 64) as usize;
        }
        if let Some(v) = env("USHER_REDIS_URL") {
            c.redis_url = v;
        }
        if let Some(v) = env("USHER_NODE_NAME") {
            c.node_name = v;
        }
        if let Some(v) = env("USHER_ADVERTISE_ADDR") {
            c.advertise_addr = v;
        }
        if let Some(v) = env("USHER_CLUSTER_SECRET") {
            c.cluster_secret = v;
        }
        if let Some(v) = env("USHER_LEASE_TTL_MS") {
            c.lease_ttl_ms = num("USHER_LEASE_TTL_MS", v)?;
        }
        if let Some(v) = env("USHER_LEASE_RENEW_MS") {
            c.lease_renew_ms = num("USHER_LEASE_RENEW_MS", v)?;
        }
        if let Some(v) = env("USHER_CLUSTER_KEY_PREFIX") {
            c.cluster_key_prefix = v;
        }
        if let Some(v) = env("USHER_KAFKA_BROKERS") {
            c.kafka_brokers = v;
        }
        if let Some(v) = env("USHER_KAFKA_TOPIC_PREFIX") {
            c.kafka_topic_prefix = v;
        }
        if let Some(v) = env("USHER_KAFKA_PARTITIONS") {
            c.kafka_partitions = num("USHER_KAFKA_PARTITIONS", v)?.clamp(1, 10_000) as u32;
        }
        if let Some(v) = env("USHER_KAFKA_REPLICATION") {
            c.kafka_replication = num("USHER_KAFKA_REPLICATION", v)?.clamp(1, 16) as u32;
        }
        if let Some(v) = env("USHER_KAFKA_RETENTION_MS") {
            c.kafka_retention_ms = num("USHER_KAFKA_RETENTION_MS", v)?;
        }
        if let Some(v) = env("USHER_OUTBOX_RETENTION_MS") {
            c.outbox_retention_ms = num("USHER_OUTBOX_RETENTION_MS", v)?;
        }
        if let Some(v) = env("USHER_RELAY_BEHIND_MS") {
            c.relay_behind_ms = num("USHER_RELAY_BEHIND_MS", v)?;
        }
        if let Some(v) = env("USHER_WEBHOOK_RETRY_SCHEDULE_MS") {
            c.webhook_retry_schedule_ms =
                v.split(',').map(|n| num("USHER_WEBHOOK_RETRY_SCHEDULE_MS", n.trim().to_owned())).collect::<Result<_, _>>()?;
        }
        if let Some(v) = env("USHER_RELAY") {
            c.relay_enabled = !matches!(v.as_str(), "off" | "0" | "false" | "no");
        }
        if let Some(v) = env("USHER_METRICS") {
            c.metrics_enabled = !matches!(v.as_str(), "off" | "0" | "false" | "no");
        }
        if let Some(v) = env("USHER_STREAM_CONSUMERS") {
            c.consumers_enabled = !matches!(v.as_str(), "off" | "0" | "false" | "no");
        }
        if let Some(v) = env("USHER_WEBHOOK_TIMEOUT_MS") {
            c.webhook_timeout_ms = num("USHER_WEBHOOK_TIMEOUT_MS", v)?;
        }
        if let Some(v) = env("USHER_WEBHOOK_CA_FILE") {
            c.webhook_ca_file = (!v.is_empty()).then(|| PathBuf::from(v));
        }
        if let Some(v) = env("USHER_TEST_RELAY_MARK_DELAY_MS") {
            c.test_relay_mark_delay_ms = num("USHER_TEST_RELAY_MARK_DELAY_MS", v)?;
        }
        Ok(c)
    }

    /// The caps and timeouts of both doors' connections (zero times and
    /// caps are raised to the least that works: 1 ms, one connection).
    pub fn conn_limits(&self) -> crate::conns::ConnLimits {
        let ms = |n: u64| std::time::Duration::from_millis(n.max(1));
        crate::conns::ConnLimits {
            http_connections_max: self.http_connections_max.max(1),
            http_header_read: ms(self.http_header_read_ms),
            http_body: ms(self.http_body_ms),
            grpc_connections_max: self.grpc_connections_max.max(1),
            grpc_idle: ms(self.grpc_idle_ms),
        }
    }

    /// The token and rate settings.
    pub fn auth(&self) -> crate::auth::AuthConfig {
        crate::auth::AuthConfig {
            issuer: self.token_issuer.clone(),
            audience: self.token_audience.clone(),
            access_ttl_ms: self.access_token_ttl_ms.clamp(60_000, 24 * 60 * 60 * 1000),
            rates: self.rates.clone(),
            ..crate::auth::AuthConfig::default()
        }
    }

    /// Kafka settings when brokers are configured.
    pub fn kafka(&self) -> Option<usher_adapters::kafka::KafkaConfig> {
        (!self.kafka_brokers.is_empty()).then(|| usher_adapters::kafka::KafkaConfig {
            brokers: self.kafka_brokers.clone(),
            topic_prefix: self.kafka_topic_prefix.clone(),
            partitions: self.kafka_partitions.clamp(1, 10_000) as i32,
            replication: self.kafka_replication.clamp(1, 16) as i32,
            retention_ms: self.kafka_retention_ms,
            client_id: self.node_name(),
            message_timeout_ms: limits::KAFKA_MESSAGE_TIMEOUT_MS,
        })
    }

    /// The webhook sender's settings.
    ///
    /// # Errors
    /// `webhook_ca_file` cannot be read.
    pub fn webhook_sender(&self) -> anyhow::Result<usher_adapters::webhooks::SenderConfig> {
        let extra_ca_pem = match &self.webhook_ca_file {
            Some(p) => std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read the webhook CA file {}: {e}", p.display()))?,
            None => Vec::new(),
        };
        Ok(usher_adapters::webhooks::SenderConfig {
            retry_schedule_ms: self.webhook_retry_schedule_ms.clone(),
            attempt_timeout_ms: self.webhook_timeout_ms.max(1),
            extra_ca_pem,
            ..usher_adapters::webhooks::SenderConfig::default()
        })
    }

    /// The relay's settings.
    pub fn relay(&self) -> usher_actors::RelayConfig {
        usher_actors::RelayConfig {
            retention_ms: self.outbox_retention_ms,
            behind_ms: self.relay_behind_ms.max(1),
            test_mark_delay_ms: self.test_relay_mark_delay_ms,
            enabled: self.relay_enabled,
            ..usher_actors::RelayConfig::default()
        }
    }

    /// This node's name: `node_name`, or the host's name.
    pub fn node_name(&self) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "node".into())
    }

    /// Clustered: a Redis for leases is set.
    pub fn is_clustered(&self) -> bool {
        !self.redis_url.is_empty()
    }

    /// The cluster's settings, checked: PostgreSQL (SQLite is one node's
    /// file), a shared secret, a renewal well inside the TTL.
    pub fn check_cluster(&self) -> anyhow::Result<()> {
        if !self.is_clustered() {
            return Ok(());
        }
        if self.is_embedded() {
            anyhow::bail!(
                "a cluster needs PostgreSQL (--database-url postgres://…): the embedded SQLite database is one node's file, so SQLite runs single-node only; drop --redis-url or use PostgreSQL"
            );
        }
        if self.cluster_secret.len() < 16 {
            anyhow::bail!("a cluster needs a shared secret of at least 16 characters in USHER_CLUSTER_SECRET (the same on every node)");
        }
        if self.lease_ttl_ms < 500 || self.lease_renew_ms == 0 || self.lease_renew_ms * 2 > self.lease_ttl_ms {
            anyhow::bail!(
                "lease_ttl_ms must be at least 500 and lease_renew_ms at most half of it (got {} and {})",
                self.lease_ttl_ms,
                self.lease_renew_ms
            );
        }
        Ok(())
    }

    pub fn is_embedded(&self) -> bool {
        self.database_url.is_empty() || self.database_url.starts_with("sqlite:")
    }

    pub fn store_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("usher.db").display())
        } else {
            self.database_url.clone()
        }
    }

    pub fn mail_dir(&self) -> PathBuf {
        self.mail_dir.clone().unwrap_or_else(|| self.data_dir.join("mail"))
    }
    pub fn pdf_dir(&self) -> PathBuf {
        self.pdf_dir.clone().unwrap_or_else(|| self.data_dir.join("tickets"))
    }
    pub fn ticket_key_file(&self) -> PathBuf {
        self.ticket_key_file.clone().unwrap_or_else(|| self.data_dir.join("ticket-signing.key"))
    }
    pub fn payment_ledger(&self) -> PathBuf {
        self.payment_ledger.clone().unwrap_or_else(|| self.data_dir.join("payment-sim.jsonl"))
    }

    pub fn demo_data(&self) -> bool {
        self.demo_data.unwrap_or(self.is_embedded())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_defaults() {
        let dir = std::env::temp_dir().join(format!("usher-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("usher.toml");
        std::fs::write(&f, "grpc_addr = \"127.0.0.1:7000\"\nlog = \"debug\"\n").unwrap();
        let env = |k: &str| (k == "USHER_LOG").then(|| "warn".to_string());
        let c = Config::load(Some(&f), env).unwrap();
        assert_eq!(c.grpc_addr.port(), 7000);
        assert_eq!(c.log, "warn");
        assert!(c.is_embedded() && c.demo_data());
        assert!(c.store_url().ends_with("usher-data/usher.db"));
        std::fs::write(&f, "grpc_port = 1\n").unwrap();
        assert!(Config::load(Some(&f), |_| None).unwrap_err().to_string().contains("grpc_port"));
    }

    #[test]
    fn passwords_in_urls_never_print() {
        let c = Config {
            database_url: "postgres://usher:s3cret@db:5432/usher".into(),
            smtp_url: "smtp://mailer:hunter22@smtp.example.com:587".into(),
            ..Config::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("hunter22") && !shown.contains("mailer:"), "{shown}");
        assert!(shown.contains("postgres://***@db:5432/usher") && shown.contains("smtp://***@smtp.example.com:587"), "{shown}");
        assert_eq!(redact_url("postgres://db/usher"), "postgres://db/usher");
        assert_eq!(redact_url("smtp://a@b@host/x"), "smtp://***@host/x");
    }

    #[test]
    fn postgres_turns_demo_data_off_by_default() {
        let c = Config::load(None, |k| (k == "USHER_DATABASE_URL").then(|| "postgres://x/y".into())).unwrap();
        assert!(!c.is_embedded() && !c.demo_data());
    }
}
