//! Wiring: store → registry → gRPC server. `Application::build` binds (port 0
//! works) and returns the bound address; `run` serves until the shutdown
//! future resolves, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;
use usher_actors::{CardVault, Clock, Mailer, Registry, RegistryConfig, SagaConfig, SagaDeps, Sagas};
use usher_engine::SigningKey;

use crate::auth::Auth;
use crate::config::Config;
use crate::ctx::Ctx;

pub struct Application {
    pub ctx: Ctx,
    listeners: Listeners,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    conn_limits: crate::conns::ConnLimits,
    registry_join: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
    postman: ractor::ActorRef<usher_actors::postman::PostmanMsg>,
    /// The stream consumers' tasks (they end when `stop` turns true).
    consumers: Vec<tokio::task::JoinHandle<()>>,
    /// Where email goes, for the start banner.
    pub mail_to: String,
    /// The demo credentials, when demo data was loaded (for the start banner).
    pub demo: Option<crate::demo::DemoCredentials>,
    /// What grants this node its events (for the start banner).
    pub ownership: String,
}

impl Application {
    pub async fn build(config: &Config) -> anyhow::Result<Application> {
        config.check_cluster()?;
        let Prepared { metrics, webhook_cfg, webhook_tls, node_lock, cluster_lock } = prepare(config).await?;
        let everything =
            usher_adapters::connect_everything(&config.store_url()).await.map_err(|e| anyhow::anyhow!("opening the store: {e}"))?;
        let (store, orders, identity) = everything.stores.clone();
        let clock = Clock::system();
        let auth = Auth::start(identity, config.auth(), clock.now()).await?;
        let demo =
            if config.demo_data() { Some(crate::demo::load(store.as_ref(), &auth, &config.data_dir, clock.now()).await?) } else { None };
        // Bound before any event is taken: a cluster advertises the address.
        let listeners = Listeners::bind(config).await?;
        let (ownership, cluster) = ownership(config, &listeners, store.clone(), node_lock, cluster_lock).await?;
        let ownership_is = ownership.describe();
        let mut rc = RegistryConfig::new(store, ownership);
        rc.clock = clock.clone();
        let (registry, registry_join) = Registry::start(rc).await?;
        let signing_key = Arc::new(load_or_make_key(&config.ticket_key_file())?);
        let public_url = if config.public_url.is_empty() { format!("http://{}", listeners.http_addr) } else { config.public_url.clone() };
        let links = Arc::new(crate::auth::links::OrderLinks::new(&public_url, &signing_key.to_bytes()));
        let sagas = start_sagas(config, &registry, orders.clone(), signing_key, clock.clone()).await?;
        let (postman, mail_to) = start_postman(config, &sagas, links.clone()).await?;
        let relay = Arc::new(start_relay(config, everything.stream.clone(), clock.clone())?);
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let mut consumers = start_consumers(config, &everything, &relay, &clock, &stopping);
        consumers.push(usher_adapters::webhooks::start_sender(
            everything.webhook_sender.clone(),
            webhook_cfg,
            webhook_tls,
            clock.clone(),
            stopping.clone(),
        ));
        let usher_adapters::Everything { sales, reports, webhooks, .. } = everything;
        let stall = std::time::Duration::from_millis(config.seat_feed_stall_ms.max(1));
        Ok(Application {
            ctx: Ctx {
                registry,
                orders,
                sagas,
                clock,
                auth,
                links,
                stopping: stopping.clone(),
                quotas: config.quotas,
                streams: Arc::new(crate::streams::StreamSlots::new(
                    config.seat_streams_per_node_max.max(1),
                    config.seat_streams_per_client_max.max(1),
                    stall,
                )),
                hubs: Arc::new(crate::streams::Hubs::new(stopping.clone(), stall)),
                cluster,
                relay,
                reports,
                sales,
                webhooks,
            },
            consumers,
            demo,
            ownership: ownership_is,
            listeners,
            metrics,
            conn_limits: config.conn_limits(),
            registry_join,
            stop,
            postman,
            mail_to,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.listeners.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.listeners.http_addr
    }

    /// Where `/metrics`, `/livez`, `/readyz` and `/status` answer.
    pub fn admin_addr(&self) -> SocketAddr {
        self.listeners.admin_addr
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let grpc = crate::grpc::service(&self.ctx).await?;
        let stop = self.stop;
        tokio::spawn(async move {
            shutdown.await;
            info!("shutting down: no new calls; finishing the ones in flight");
            let _ = stop.send(true);
        });
        let router = crate::http::router(self.ctx.clone());
        let stopping = self.ctx.stopping.clone();
        // The admin listener outlives the doors' drain: a scrape during
        // shutdown still answers (readiness says "stopping").
        let (admin, refresher) = crate::observe::Admin::start(self.ctx.clone(), self.metrics);
        let admin_listener = self.listeners.admin;
        let (admin_stop, admin_stopping) = tokio::sync::oneshot::channel::<()>();
        let mut admin_task = tokio::spawn(async move {
            let serving = axum::serve(admin_listener, crate::observe::admin_router(admin)).with_graceful_shutdown(async move {
                let _ = admin_stopping.await;
            });
            if let Err(e) = serving.await {
                tracing::warn!(error = %e, "the admin listener stopped");
            }
        });
        tokio::join!(
            crate::conns::serve_grpc(self.listeners.grpc, grpc, self.conn_limits.clone(), stopping.clone()),
            crate::conns::serve_http(self.listeners.http, router, self.conn_limits, stopping),
        );
        // The server no longer accepts and every in-flight call has its
        // answer: now let each actor finish its batch and stop.
        self.postman.stop(Some("shutdown".into()));
        self.ctx.sagas.shutdown().await;
        info!(batches = %self.ctx.registry.stats().summary(), "draining event actors");
        self.ctx.registry.shutdown().await;
        let _ = self.registry_join.await;
        for c in self.consumers {
            let _ = c.await;
        }
        // Last: rows the drain committed are published by the next relay.
        // The refresher holds the context: it ends before the relay is
        // taken back (and a restart on the same database finds the node's
        // lock free). The admin listener's handlers hold none of it.
        refresher.abort();
        let _ = refresher.await;
        let _ = admin_stop.send(());
        if tokio::time::timeout(std::time::Duration::from_secs(5), &mut admin_task).await.is_err() {
            admin_task.abort();
        }
        match Arc::try_unwrap(self.ctx.relay) {
            Ok(relay) => relay.stop().await,
            Err(_) => tracing::warn!("the outbox relay is still referenced at shutdown; it stops with the process"),
        }
        Ok(())
    }
}

/// What comes before the store: settings that can be wrong, checked;
/// the metrics recorder; the data directory; the database's lock.
struct Prepared {
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    webhook_cfg: usher_adapters::webhooks::SenderConfig,
    webhook_tls: usher_adapters::webhooks::TlsConfig,
    node_lock: Option<usher_adapters::NodeLock>,
    cluster_lock: Option<usher_adapters::NodeLock>,
}

async fn prepare(config: &Config) -> anyhow::Result<Prepared> {
    // First: what starts below already counts. Off (benchmarks only), a
    // recorder that is never installed renders an empty page.
    let metrics = if config.metrics_enabled {
        crate::observe::recorder()?
    } else {
        metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle()
    };
    // Settings that can be wrong are read before anything starts.
    let webhook_cfg = config.webhook_sender()?;
    let webhook_tls = usher_adapters::webhooks::tls_config(&webhook_cfg.extra_ca_pem).map_err(anyhow::Error::msg)?;
    // Usher's own directory: keys, tickets, mail, the embedded database.
    create_private_dir(&config.data_dir)?;
    // One process per database in single-node mode: the lock comes
    // before the store, so a second `usher serve` changes nothing. A
    // cluster's nodes share the database under leases instead.
    let (node_lock, cluster_lock) = if config.is_clustered() {
        (None, Some(usher_adapters::lock_cluster_node(&config.store_url()).await?))
    } else {
        (Some(usher_adapters::lock_node(&config.store_url()).await?), None)
    };
    Ok(Prepared { metrics, webhook_cfg, webhook_tls, node_lock, cluster_lock })
}

/// The three listeners, bound (port 0 works) before anything else starts.
struct Listeners {
    grpc: TcpListener,
    grpc_addr: SocketAddr,
    http: TcpListener,
    http_addr: SocketAddr,
    admin: TcpListener,
    admin_addr: SocketAddr,
}

impl Listeners {
    async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let grpc = TcpListener::bind(config.grpc_addr).await.map_err(|e| anyhow::anyhow!("binding {}: {e}", config.grpc_addr))?;
        let http = TcpListener::bind(config.http_addr).await.map_err(|e| anyhow::anyhow!("binding {}: {e}", config.http_addr))?;
        let admin = TcpListener::bind(config.admin_addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding the admin listener {}: {e}", config.admin_addr))?;
        Ok(Listeners { grpc_addr: grpc.local_addr()?, http_addr: http.local_addr()?, admin_addr: admin.local_addr()?, grpc, http, admin })
    }
}

/// What grants this node its events: the node's lock on its database, or
/// (in a cluster) Redis leases fenced by the database, with this node's
/// place in the cluster.
async fn ownership(
    config: &Config,
    l: &Listeners,
    store: Arc<dyn usher_actors::Store>,
    node_lock: Option<usher_adapters::NodeLock>,
    cluster_lock: Option<usher_adapters::NodeLock>,
) -> anyhow::Result<(Arc<dyn usher_actors::Ownership>, Option<Arc<crate::cluster::Cluster>>)> {
    Ok(match node_lock {
        Some(lock) => (Arc::new(usher_actors::LocalOwnership::new(store.clone(), Box::new(lock))), None),
        None => {
            let leases = usher_adapters::lease::RedisLeases::start(
                usher_adapters::lease::LeaseConfig {
                    redis_url: config.redis_url.clone(),
                    node_name: config.node_name(),
                    grpc_addr: if config.advertise_addr.is_empty() { l.grpc_addr.to_string() } else { config.advertise_addr.clone() },
                    http_addr: l.http_addr.to_string(),
                    admin_addr: advertised_admin(config, l.admin_addr),
                    ttl_ms: config.lease_ttl_ms,
                    renew_ms: config.lease_renew_ms,
                    key_prefix: config.cluster_key_prefix.clone(),
                },
                store.clone(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("joining the cluster at {}: {e}", crate::config::redact_url(&config.redis_url)))?;
            let secret = crate::cluster::ClusterSecret::new(config.cluster_secret.clone());
            (leases.clone() as Arc<dyn usher_actors::Ownership>, Some(Arc::new(crate::cluster::Cluster::new(leases, secret, cluster_lock))))
        }
    })
}

/// The order sagas, with the payment provider, the renderer and the
/// ticket-signing key.
async fn start_sagas(
    config: &Config,
    registry: &Registry,
    orders: Arc<dyn usher_actors::OrderStore>,
    signing_key: Arc<SigningKey>,
    clock: Clock,
) -> anyhow::Result<Sagas> {
    let provider = Arc::new(
        usher_adapters::payment::SimulatedProvider::open(
            Some(config.payment_ledger()),
            std::time::Duration::from_millis(config.sim_payment_delay_ms),
        )
        .map_err(|e| anyhow::anyhow!("opening the payment ledger {}: {e}", config.payment_ledger().display()))?,
    );
    let deps = SagaDeps {
        orders: orders.clone(),
        store: registry.store().clone(),
        registry: registry.clone(),
        provider,
        renderer: Arc::new(usher_adapters::pdf::TypstRenderer::new()),
        render_slots: usher_actors::RenderQueue::new(config.render_workers),
        signing_key,
        pdf_dir: config.pdf_dir(),
        clock,
        cfg: SagaConfig {
            payment_timeout_ms: config.payment_timeout_ms,
            render_workers: config.render_workers,
            issue_delay_ms: config.test_issue_delay_ms,
            ..SagaConfig::default()
        },
        cards: Arc::new(CardVault::default()),
        mail_queued: Arc::new(tokio::sync::Notify::new()),
        writer: usher_actors::OrderWriter::start(orders.clone()),
        mail_traces: Default::default(),
    };
    let (sagas, _sagas_join) = Sagas::start(deps).await?;
    Ok(sagas)
}

/// The postman, which delivers the email queue; and where email goes (for
/// the start banner).
async fn start_postman(
    config: &Config,
    sagas: &Sagas,
    links: Arc<crate::auth::links::OrderLinks>,
) -> anyhow::Result<(ractor::ActorRef<usher_actors::postman::PostmanMsg>, String)> {
    let mailer: Arc<dyn Mailer> = if config.smtp_url.is_empty() {
        Arc::new(usher_adapters::mail::MaildirMailer::new(config.mail_dir()))
    } else {
        Arc::new(usher_adapters::mail::SmtpMailer::from_url(&config.smtp_url).map_err(|e| anyhow::anyhow!("--smtp-url: {e}"))?)
    };
    let mail_to = mailer.describe();
    let postman_cfg = usher_actors::postman::PostmanConfig {
        from: config.mail_from.clone(),
        retry_ms_max: config.mail_retry_ms_max,
        retry_ms_min: config.mail_retry_ms_max.min(1_000),
        order_link: Some(Arc::new(move |order| links.link(order))),
        ..Default::default()
    };
    let postman = usher_actors::postman::start(usher_actors::postman::PostmanArgs { mailer, sagas: sagas.clone(), cfg: postman_cfg })
        .await
        .map_err(|e| anyhow::anyhow!("starting the postman: {e}"))?;
    Ok((postman, mail_to))
}

/// The stream's consumers: the sales read model and the webhook queue,
/// from Kafka or from the embedded stream (woken by the relay); they end
/// when `stopping` turns true.
fn start_consumers(
    config: &Config,
    all: &usher_adapters::Everything,
    relay: &usher_actors::Relay,
    clock: &Clock,
    stopping: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    // The stream's consumers: from Kafka (partitions by assignment), or from the
    // embedded stream, woken by the relay.
    let mut consumers = Vec::new();
    let consumed = if config.consumers_enabled { vec![all.sales.clone(), all.webhook_queue.clone()] } else { Vec::new() };
    for p in consumed {
        consumers.push(match config.kafka() {
            Some(k) => tokio::spawn(usher_adapters::kafka::run_projection(k, p, clock.clone(), relay.subscribe(), stopping.clone())),
            None => usher_actors::consumers::run_embedded(all.stream.clone(), p, clock.clone(), relay.published(), stopping.clone()),
        });
    }
    consumers
}

/// The outbox relay: to Kafka when brokers are configured (the topics are
/// created in the background, so a broker that is down at start only delays
/// publishing), else to the embedded stream.
fn start_relay(config: &Config, stream: Arc<dyn usher_actors::StreamStore>, clock: Clock) -> anyhow::Result<usher_actors::Relay> {
    let publisher: Arc<dyn usher_actors::Publisher> = match config.kafka() {
        Some(k) => {
            let publisher = usher_adapters::kafka::KafkaPublisher::new(k.clone()).map_err(|e| anyhow::anyhow!("--kafka-brokers: {e}"))?;
            tokio::spawn(async move {
                let mut wait = std::time::Duration::from_secs(1);
                loop {
                    match usher_adapters::kafka::ensure_topics(&k).await {
                        Ok(()) => return info!(brokers = %k.brokers, "kafka topics are in place"),
                        Err(e) => tracing::warn!(error = %e, "cannot create the kafka topics yet; trying again"),
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(30));
                }
            });
            Arc::new(publisher)
        }
        None => Arc::new(usher_adapters::stream::EmbeddedStream),
    };
    Ok(usher_actors::Relay::start(stream, publisher, clock, config.relay()))
}

/// Where other nodes and `usher status` reach this node's admin listener:
/// the bound address, or, when it is a wildcard (`0.0.0.0`), the host of
/// `advertise_addr` with the admin port.
fn advertised_admin(config: &Config, bound: SocketAddr) -> String {
    if !bound.ip().is_unspecified() || config.advertise_addr.is_empty() {
        return bound.to_string();
    }
    let host = config.advertise_addr.rsplit_once(':').map_or(config.advertise_addr.as_str(), |(h, _)| h);
    format!("{host}:{}", bound.port())
}

/// Makes `dir` (and its parents) and leaves it readable by its owner only.
fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    #[cfg(unix)]
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| anyhow::anyhow!("making {} private: {e}", dir.display()))?;
    Ok(())
}

/// The deployment's ticket-signing key: read from `path`, or made (from the
/// OS's randomness) and written there with owner-only permissions.
fn load_or_make_key(path: &std::path::Path) -> anyhow::Result<SigningKey> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = b64.decode(text.trim()).map_err(|e| anyhow::anyhow!("ticket key {}: not base64url: {e}", path.display()))?;
            let arr: [u8; 32] = bytes.try_into().map_err(|_| anyhow::anyhow!("ticket key {}: needs 32 bytes", path.display()))?;
            Ok(SigningKey::from_bytes(&arr))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut seed)?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = match opts.open(path) {
                Ok(f) => f,
                // Another node of a cluster sharing the directory made it
                // first: use that one (written and synced before we read).
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    return load_or_make_key(path);
                }
                Err(e) => return Err(anyhow::anyhow!("writing ticket key {}: {e}", path.display())),
            };
            std::io::Write::write_all(&mut f, format!("{}\n", b64.encode(seed)).as_bytes())?;
            f.sync_all()?;
            info!(path = %path.display(), "made a new ticket-signing key");
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) => Err(anyhow::anyhow!("ticket key {}: {e}", path.display())),
    }
}
