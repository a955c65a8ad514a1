//! Typed configuration: defaults, then a TOML file, then `USHER_*`
//! environment variables, then command-line flags, all from one list of
//! settings (`settings!`).

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

/// Declares every setting once: its type, default, where it may come from
/// (`env "USHER_…"`, or `file` only) and whether `usher serve` takes it as
/// a flag (`flag`: `--the-field-name`). From that one list come the
/// `Config` struct (the TOML file's shape), its defaults, the environment
/// overlay, the flags (`ConfigFlags`, help from the same doc comments) and
/// `SETTINGS`, which a test holds the README's table against.
macro_rules! settings {
    ($($(#[$doc:meta])* $field:ident: $ty:ty = $default:expr, $from:ident $($env:literal)? $(, $flag:ident)?;)*) => {
        /// `Debug` is written by hand: the database and SMTP URLs may carry
        /// passwords, which never print.
        #[derive(Clone, Deserialize, PartialEq)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $($(#[$doc])* pub $field: $ty,)*
        }

        impl Default for Config {
            fn default() -> Config {
                Config { $($field: $default,)* }
            }
        }

        /// Every setting: its name in the file, its environment variable
        /// and whether `usher serve` takes it as a flag.
        pub const SETTINGS: &[Setting] = &[$(Setting { name: stringify!($field), env: settings!(@env $($env)?), flag: settings!(@flag $($flag)?) },)*];

        impl Config {
            /// Each `USHER_…` variable that is set replaces its setting.
            fn overlay_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
                $(settings!(@read self, env, $field $($env)?);)*
                Ok(())
            }
        }

        settings!(@flags [] [] $([$(#[$doc])* $field: $ty $(, $flag)?])*);
    };
    (@env) => { None };
    (@env $env:literal) => { Some($env) };
    (@flag) => { false };
    (@flag flag) => { true };
    (@read $c:ident, $get:ident, $field:ident) => {};
    (@read $c:ident, $get:ident, $field:ident $env:literal) => {
        if let Some(v) = $get($env) {
            $c.$field = FromEnv::from_env($env, &v)?;
        }
    };
    // Gathers the flagged fields, then writes the flags' struct.
    (@flags [$($acc:tt)*] [$($set:ident)*]) => {
        /// The settings `usher serve` takes as flags; each overrides the
        /// file and the environment.
        #[derive(clap::Args, Debug, Default)]
        pub struct ConfigFlags {
            $($acc)*
        }

        impl ConfigFlags {
            /// Puts every flag given into `c`.
            pub fn apply(self, c: &mut Config) {
                $(if let Some(v) = self.$set {
                    c.$set = v;
                })*
            }
        }
    };
    (@flags [$($acc:tt)*] [$($set:ident)*] [$(#[$doc:meta])* $field:ident: $ty:ty, flag] $($rest:tt)*) => {
        settings!(@flags [$($acc)* $(#[$doc])* #[arg(long)] pub $field: Option<$ty>,] [$($set)* $field] $($rest)*);
    };
    (@flags [$($acc:tt)*] [$($set:ident)*] [$(#[$doc:meta])* $field:ident: $ty:ty] $($rest:tt)*) => {
        settings!(@flags [$($acc)*] [$($set)*] $($rest)*);
    };
}

/// One setting, as `SETTINGS` lists it.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// The field's name: the key in the TOML file.
    pub name: &'static str,
    /// Its environment variable, if it has one.
    pub env: Option<&'static str>,
    /// Whether `usher serve` takes it as `--name-with-dashes`.
    pub flag: bool,
}

settings! {
    /// Where the embedded default keeps its SQLite file.
    data_dir: PathBuf = PathBuf::from("usher-data"), env "USHER_DATA_DIR";
    /// Empty: SQLite in `data_dir`. `postgres://…` for PostgreSQL.
    database_url: String = String::new(), env "USHER_DATABASE_URL";
    /// gRPC listen address; port 0 picks a free port.
    grpc_addr: SocketAddr = "127.0.0.1:50051".parse().expect("valid address"), env "USHER_GRPC_ADDR", flag;
    /// HTTP listen address (storefront and JSON API); port 0 picks one.
    http_addr: SocketAddr = "127.0.0.1:8080".parse().expect("valid address"), env "USHER_HTTP_ADDR", flag;
    /// The admin listener: `/metrics` (Prometheus), `/livez`, `/readyz`,
    /// `/status`. No credentials are asked there: keep it on loopback or a
    /// private network. Port 0 picks one.
    admin_addr: SocketAddr = "127.0.0.1:9464".parse().expect("valid address") /* OpenTelemetry's Prometheus port */, env "USHER_ADMIN_ADDR", flag;
    /// Load the demo venue and events on start (idempotent). Defaults to on
    /// for the embedded default and off for PostgreSQL.
    demo_data: Option<bool> = None, env "USHER_DEMO_DATA";
    /// tracing filter, e.g. `info` or `usher=debug`.
    log: String = "info".into(), env "USHER_LOG";
    /// Where spans go, over OTLP/gRPC (`http://collector:4317`); empty: no
    /// traces (the default).
    otlp_endpoint: String = String::new(), env "USHER_OTLP_ENDPOINT", flag;
    /// How log lines are written to stderr: `text` for people, `json` for a
    /// log shipper (one JSON object per line).
    log_format: LogFormat = LogFormat::Text, env "USHER_LOG_FORMAT", flag;
    /// `smtp://host:port` sends email to that server; empty: into the maildir.
    smtp_url: String = String::new(), env "USHER_SMTP_URL", flag;
    /// Maildir for email when no SMTP server is set (default: DATA_DIR/mail).
    mail_dir: Option<PathBuf> = None, env "USHER_MAIL_DIR";
    /// Sender of customer email.
    mail_from: String = "Usher Tickets <tickets@usher.local>".into(), env "USHER_MAIL_FROM";
    /// Longest wait between delivery attempts while the mail server is down.
    mail_retry_ms_max: u64 = 60_000, env "USHER_MAIL_RETRY_MS_MAX";
    /// Where ticket PDFs are kept (default: DATA_DIR/tickets).
    pdf_dir: Option<PathBuf> = None, env "USHER_PDF_DIR";
    /// The Ed25519 key that signs ticket codes: 32 raw bytes, base64url
    /// (default: DATA_DIR/ticket-signing.key, made at first start).
    ticket_key_file: Option<PathBuf> = None, env "USHER_TICKET_KEY_FILE";
    /// How long a saga waits for the payment provider before asking for the
    /// attempt's status.
    payment_timeout_ms: u64 = 30_000, env "USHER_PAYMENT_TIMEOUT_MS";
    /// The simulated provider's memory (default: DATA_DIR/payment-sim.jsonl).
    payment_ledger: Option<PathBuf> = None, env "USHER_PAYMENT_LEDGER";
    /// How long the simulated provider's slow test card takes.
    sim_payment_delay_ms: u64 = 3_000, env "USHER_SIM_PAYMENT_DELAY_MS";
    /// PDFs rendered at once.
    render_workers: usize = 2, env "USHER_RENDER_WORKERS";
    /// Fault injection for crash tests only: pause between a captured
    /// payment and ticket issuing.
    test_issue_delay_ms: u64 = 0, env "USHER_TEST_ISSUE_DELAY_MS";
    /// `iss` and `aud` of access tokens (the same for every node of a deployment).
    token_issuer: String = "usher".into(), env "USHER_TOKEN_ISSUER";
    token_audience: String = "usher".into(), env "USHER_TOKEN_AUDIENCE";
    /// Lifetime of an access token; a refresh token lives 30 days.
    access_token_ttl_ms: u64 = 15 * 60 * 1000, file;
    /// The storefront's URL as people reach it, for the order links in
    /// emails (default: `http://` and the HTTP listener's address).
    public_url: String = String::new(), env "USHER_PUBLIC_URL";
    /// Open connections per door; past the cap a new one is closed at once.
    http_connections_max: usize = limits::HTTP_CONNECTIONS_MAX_DEFAULT, env "USHER_HTTP_CONNECTIONS_MAX";
    grpc_connections_max: usize = limits::GRPC_CONNECTIONS_MAX_DEFAULT, env "USHER_GRPC_CONNECTIONS_MAX";
    /// Time for an HTTP request's head, and for an idle keep-alive connection.
    http_header_read_ms: u64 = limits::HTTP_HEADER_READ_MS_DEFAULT, env "USHER_HTTP_HEADER_READ_MS";
    /// Time for an HTTP request's whole body, from its head.
    http_body_ms: u64 = limits::HTTP_BODY_MS_DEFAULT, env "USHER_HTTP_BODY_MS";
    /// A gRPC connection with no call in flight this long is closed.
    grpc_idle_ms: u64 = limits::GRPC_IDLE_MS_DEFAULT, env "USHER_GRPC_IDLE_MS";
    /// Live seat feeds (`WatchSeats`, the storefront's server-sent events)
    /// one client, and the whole node, may hold open.
    seat_streams_per_client_max: usize = limits::SEAT_STREAMS_PER_CLIENT_MAX, env "USHER_SEAT_STREAMS_PER_CLIENT_MAX";
    seat_streams_per_node_max: usize = limits::SEAT_STREAMS_PER_NODE_MAX, env "USHER_SEAT_STREAMS_PER_NODE_MAX";
    /// A feed whose watcher takes nothing this long while items wait is dropped.
    seat_feed_stall_ms: u64 = limits::SEAT_FEED_STALL_MS_DEFAULT, file;
    /// Rate limits per kind of caller (`[rates]` in the file).
    rates: crate::auth::rate::RateConfig = crate::auth::rate::RateConfig::default(), file;
    /// What one organization may hold (`[quotas]` in the file): venues,
    /// seats across them, upcoming events.
    quotas: usher_engine::Quotas = usher_engine::Quotas::default(), file;
    /// `redis://host:port` joins a cluster of nodes on one PostgreSQL
    /// database, with a lease per event in this Redis. Empty: one node.
    redis_url: String = String::new(), env "USHER_REDIS_URL", flag;
    /// This node's name in the cluster (default: the host name).
    node_name: String = String::new(), env "USHER_NODE_NAME", flag;
    /// Where the other nodes reach this node's gRPC server, `host:port`
    /// (default: the gRPC listener's address; set it when that is 0.0.0.0).
    advertise_addr: String = String::new(), env "USHER_ADVERTISE_ADDR", flag;
    /// The secret every node of a cluster shares: requests forwarded between
    /// nodes carry it. At least 16 characters; never printed.
    cluster_secret: String = String::new(), env "USHER_CLUSTER_SECRET";
    /// How long an event's lease lasts without renewal: the longest an
    /// event goes unserved after its owner dies.
    lease_ttl_ms: u64 = limits::LEASE_TTL_MS_DEFAULT, env "USHER_LEASE_TTL_MS";
    /// How often a node renews its leases (at most half the TTL).
    lease_renew_ms: u64 = limits::LEASE_RENEW_MS_DEFAULT, env "USHER_LEASE_RENEW_MS";
    /// Prefix of the cluster's Redis keys, so clusters can share a Redis.
    cluster_key_prefix: String = "usher:".into(), env "USHER_CLUSTER_KEY_PREFIX";
    /// `host:port[,host:port…]` of Kafka brokers: the relay publishes the
    /// outbox there (librdkafka `bootstrap.servers`). Empty: the embedded
    /// stream in the database, to the same consumers.
    kafka_brokers: String = String::new(), env "USHER_KAFKA_BROKERS", flag;
    /// Put before every topic name (empty: `seats-sold`, ...).
    kafka_topic_prefix: String = String::new(), env "USHER_KAFKA_TOPIC_PREFIX";
    /// Partitions, replicas and `retention.ms` of the topics Usher creates
    /// when they are missing (existing topics are left alone).
    kafka_partitions: u32 = limits::KAFKA_PARTITIONS_DEFAULT, env "USHER_KAFKA_PARTITIONS";
    kafka_replication: u32 = 1, env "USHER_KAFKA_REPLICATION";
    kafka_retention_ms: u64 = usher_engine::limits::OUTBOX_RETENTION_MS_DEFAULT, env "USHER_KAFKA_RETENTION_MS";
    /// How long published outbox rows stay in the database (the embedded
    /// stream's retention too).
    outbox_retention_ms: u64 = usher_engine::limits::OUTBOX_RETENTION_MS_DEFAULT, env "USHER_OUTBOX_RETENTION_MS";
    /// Not ready (`/readyz` 503, gRPC health `usher.relay` NOT_SERVING)
    /// while the oldest unpublished outbox row is older than this.
    relay_behind_ms: u64 = usher_engine::limits::RELAY_BEHIND_MS_DEFAULT, env "USHER_RELAY_BEHIND_MS";
    /// Fault injection for crash tests only: the relay's pause between its
    /// delivery reports and marking rows published.
    test_relay_mark_delay_ms: u64 = 0, env "USHER_TEST_RELAY_MARK_DELAY_MS";
    /// Waits between a webhook's attempts (ms); after the last, it fails.
    /// Default: Standard Webhooks' 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    webhook_retry_schedule_ms: Vec<u64> = usher_adapters::webhooks::RETRY_SCHEDULE_MS_DEFAULT.to_vec(), env "USHER_WEBHOOK_RETRY_SCHEDULE_MS";
    /// One webhook attempt's time for an answer (ms).
    webhook_timeout_ms: u64 = 10_000, env "USHER_WEBHOOK_TIMEOUT_MS";
    /// A PEM file of CA certificates trusted for `https://` webhook
    /// endpoints besides Mozilla's roots (a private CA); read at start.
    webhook_ca_file: Option<PathBuf> = None, env "USHER_WEBHOOK_CA_FILE";
    /// `false` (USHER_RELAY=off) for benchmarks only: the relay publishes
    /// nothing and the outbox grows.
    relay_enabled: bool = true, env "USHER_RELAY";
    /// `false` (USHER_STREAM_CONSUMERS=off) for benchmarks only: neither
    /// the sales read model nor the webhook queue reads the stream, so the
    /// relay's own cost can be told from theirs.
    consumers_enabled: bool = true, env "USHER_STREAM_CONSUMERS";
    /// `false` (USHER_METRICS=off) for benchmarks only: no metrics recorder
    /// is installed, so every recording is a no-op and `/metrics` is empty;
    /// the bench weighs what metrics cost against it.
    metrics_enabled: bool = true, env "USHER_METRICS";
}

/// A setting's value as an environment variable spells it; the error names
/// the variable.
trait FromEnv: Sized {
    fn from_env(name: &str, v: &str) -> anyhow::Result<Self>;
}

impl FromEnv for String {
    fn from_env(_: &str, v: &str) -> anyhow::Result<String> {
        Ok(v.to_owned())
    }
}

impl FromEnv for PathBuf {
    fn from_env(_: &str, v: &str) -> anyhow::Result<PathBuf> {
        Ok(v.into())
    }
}

/// Empty is none.
impl FromEnv for Option<PathBuf> {
    fn from_env(_: &str, v: &str) -> anyhow::Result<Option<PathBuf>> {
        Ok((!v.is_empty()).then(|| PathBuf::from(v)))
    }
}

impl FromEnv for SocketAddr {
    fn from_env(name: &str, v: &str) -> anyhow::Result<SocketAddr> {
        v.parse().map_err(|e| anyhow::anyhow!("{name}={v:?}: {e}"))
    }
}

impl FromEnv for u64 {
    fn from_env(name: &str, v: &str) -> anyhow::Result<u64> {
        v.parse().map_err(|e| anyhow::anyhow!("{name}={v:?}: {e}"))
    }
}

/// A count: at least one.
impl FromEnv for u32 {
    fn from_env(name: &str, v: &str) -> anyhow::Result<u32> {
        Ok(u64::from_env(name, v)?.clamp(1, u64::from(u32::MAX)) as u32)
    }
}

/// A count: at least one, at most `u32::MAX`.
impl FromEnv for usize {
    fn from_env(name: &str, v: &str) -> anyhow::Result<usize> {
        Ok(u32::from_env(name, v)? as usize)
    }
}

/// A switch: on unless `off`, `0`, `false` or `no`.
impl FromEnv for bool {
    fn from_env(_: &str, v: &str) -> anyhow::Result<bool> {
        Ok(!matches!(v, "off" | "0" | "false" | "no"))
    }
}

/// A choice that has a default: on for `1`, `true`, `yes` or `on`.
impl FromEnv for Option<bool> {
    fn from_env(_: &str, v: &str) -> anyhow::Result<Option<bool>> {
        Ok(Some(matches!(v, "1" | "true" | "yes" | "on")))
    }
}

/// Comma-separated numbers.
impl FromEnv for Vec<u64> {
    fn from_env(name: &str, v: &str) -> anyhow::Result<Vec<u64>> {
        v.split(',').map(|n| u64::from_env(name, n.trim())).collect()
    }
}

impl FromEnv for LogFormat {
    fn from_env(name: &str, v: &str) -> anyhow::Result<LogFormat> {
        match v {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => anyhow::bail!("{name}={v:?}: give text or json"),
        }
    }
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
        c.overlay_env(&env)?;
        if let Some(v) = env("USHER_PARTNER_RATE_PER_S") {
            let n = u64::from_env("USHER_PARTNER_RATE_PER_S", &v)?.clamp(1, u64::from(u32::MAX / 4)) as u32;
            c.rates.partner = crate::auth::rate::Rate { per_s: n, burst: n.saturating_mul(4) };
        }
        c.keep_in_range();
        Ok(c)
    }

    /// Settings whose useful range is narrower than their type's, held to
    /// it whichever layer set them: at least one render worker and at most
    /// 64; Kafka partitions 1 to 10,000 and replicas 1 to 16.
    fn keep_in_range(&mut self) {
        self.render_workers = self.render_workers.clamp(1, 64);
        self.kafka_partitions = self.kafka_partitions.clamp(1, 10_000);
        self.kafka_replication = self.kafka_replication.clamp(1, 16);
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
