//! Wiring: store → registry → gRPC server. `Application::build` binds (port 0
//! works) and returns the bound address; `run` serves until the shutdown
//! future resolves, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;
use usher_actors::{CardVault, Clock, Mailer, OrderStore, Registry, RegistryConfig, SagaConfig, SagaDeps, Sagas, Store};
use usher_engine::{Millis, SigningKey};
use usher_proto::v1::{
    catalog_service_server::CatalogServiceServer, check_in_service_server::CheckInServiceServer,
    fulfillment_service_server::FulfillmentServiceServer, identity_service_server::IdentityServiceServer,
    inventory_service_server::InventoryServiceServer, ordering_service_server::OrderingServiceServer,
    payment_service_server::PaymentServiceServer,
};

use crate::auth::Auth;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::identity::Identity;
use crate::inventory::Inventory;
use crate::orders::Orders;

/// What every request handler needs.
#[derive(Clone)]
pub struct Ctx {
    pub registry: Registry,
    pub orders: Arc<dyn OrderStore>,
    pub sagas: Sagas,
    pub clock: Clock,
    /// Credentials, tokens, rate limits and the identity store.
    pub auth: Arc<Auth>,
    /// The emailed links that open one order without signing in.
    pub links: Arc<crate::auth::links::OrderLinks>,
    /// Turns true when the node starts shutting down: open streams end, so
    /// that the server can drain.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// What one organization may hold.
    pub quotas: usher_engine::Quotas,
    /// The node's live seat feeds, under their caps.
    pub streams: Arc<crate::streams::StreamSlots>,
    /// One frame maker per watched event, shared by its watchers.
    pub hubs: Arc<crate::streams::Hubs>,
    /// This node's place in a cluster; `None` for a single node.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The outbox relay (this node's part in it) and its status.
    pub relay: Arc<usher_actors::Relay>,
    /// The sales read model's reads.
    pub reports: Arc<dyn usher_actors::Reports>,
    /// The sales read model's consumer side (rebuilds).
    pub sales: Arc<dyn usher_actors::Projection>,
    /// Webhook endpoints and their delivery log.
    pub webhooks: Arc<dyn usher_actors::Webhooks>,
}

impl Ctx {
    pub fn store(&self) -> &Arc<dyn Store> {
        self.registry.store()
    }
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// Claims a command's idempotency key for this caller, in the key space
    /// `space`: `Ok(None)` the first time, `Ok(Some(resource))` on a retry
    /// with the same request (`fp`), ALREADY_EXISTS `IDEMPOTENCY_KEY_REUSED`
    /// for the same key with a different request. Keys are scoped per
    /// caller, so two callers never collide.
    pub(crate) async fn claim_command(
        &self,
        c: &crate::auth::Caller,
        space: KeySpace,
        kind: &str,
        key: &str,
        fp: &[u8],
        resource: &str,
    ) -> Result<Option<String>, crate::error::ApiError> {
        use crate::error::{ApiError, ErrorCode};
        let KeySpace { name: space, tag } = space;
        let key = crate::convert::key(key)?;
        let scope = c.principal.key_scope().ok_or_else(|| ApiError::denied(usher_engine::Denied::Unauthenticated, "", ""))?;
        let scoped = format!("{space}:{kind}:{scope}/{}", key.as_str());
        match self.orders.claim_command(&scoped, usher_engine::fingerprint_bytes(tag, fp), resource, self.now()).await? {
            usher_actors::Created::New(_) => Ok(None),
            usher_actors::Created::Replayed(r) => Ok(Some(r)),
            usher_actors::Created::KeyReused => Err(ApiError::new(
                ErrorCode::AlreadyExists,
                "IDEMPOTENCY_KEY_REUSED",
                "idempotency_key: this key was already used for a different request",
            )),
        }
    }
}

/// A family of commands whose idempotency keys live apart from others':
/// its name prefixes the stored key, its tag seeds the fingerprint.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeySpace {
    pub name: &'static str,
    pub tag: u8,
}

pub struct Application {
    pub ctx: Ctx,
    listener: TcpListener,
    grpc_addr: SocketAddr,
    http_listener: TcpListener,
    http_addr: SocketAddr,
    admin_listener: TcpListener,
    admin_addr: SocketAddr,
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
        let usher_adapters::Everything {
            stores: (store, orders, identity),
            stream,
            sales,
            reports,
            webhooks,
            webhook_queue,
            webhook_sender,
        } = usher_adapters::connect_everything(&config.store_url()).await.map_err(|e| anyhow::anyhow!("opening the store: {e}"))?;
        let clock = Clock::system();
        let auth = Auth::start(identity, config.auth(), clock.now()).await?;
        let demo =
            if config.demo_data() { Some(crate::demo::load(store.as_ref(), &auth, &config.data_dir, clock.now()).await?) } else { None };
        // Bound before any event is taken: a cluster advertises the address.
        let listener = TcpListener::bind(config.grpc_addr).await.map_err(|e| anyhow::anyhow!("binding {}: {e}", config.grpc_addr))?;
        let grpc_addr = listener.local_addr()?;
        let http_listener = TcpListener::bind(config.http_addr).await.map_err(|e| anyhow::anyhow!("binding {}: {e}", config.http_addr))?;
        let http_addr = http_listener.local_addr()?;
        let admin_listener = TcpListener::bind(config.admin_addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding the admin listener {}: {e}", config.admin_addr))?;
        let admin_addr = admin_listener.local_addr()?;
        let (ownership, cluster): (Arc<dyn usher_actors::Ownership>, _) = match node_lock {
            Some(lock) => (Arc::new(usher_actors::LocalOwnership::new(store.clone(), Box::new(lock))), None),
            None => {
                let leases = usher_adapters::lease::RedisLeases::start(
                    usher_adapters::lease::LeaseConfig {
                        redis_url: config.redis_url.clone(),
                        node_name: config.node_name(),
                        grpc_addr: if config.advertise_addr.is_empty() { grpc_addr.to_string() } else { config.advertise_addr.clone() },
                        http_addr: http_addr.to_string(),
                        admin_addr: advertised_admin(config, admin_addr),
                        ttl_ms: config.lease_ttl_ms,
                        renew_ms: config.lease_renew_ms,
                        key_prefix: config.cluster_key_prefix.clone(),
                    },
                    store.clone(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("joining the cluster at {}: {e}", crate::config::redact_url(&config.redis_url)))?;
                let secret = crate::cluster::ClusterSecret::new(config.cluster_secret.clone());
                (
                    leases.clone() as Arc<dyn usher_actors::Ownership>,
                    Some(Arc::new(crate::cluster::Cluster::new(leases, secret, cluster_lock))),
                )
            }
        };
        let ownership_is = ownership.describe();
        let mut rc = RegistryConfig::new(store, ownership);
        rc.clock = clock.clone();
        let (registry, registry_join) = Registry::start(rc).await?;
        let signing_key = Arc::new(load_or_make_key(&config.ticket_key_file())?);
        let public_url = if config.public_url.is_empty() { format!("http://{http_addr}") } else { config.public_url.clone() };
        let links = Arc::new(crate::auth::links::OrderLinks::new(&public_url, &signing_key.to_bytes()));
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
            clock: clock.clone(),
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
            order_link: Some({
                let links = links.clone();
                Arc::new(move |order| links.link(order))
            }),
            ..Default::default()
        };
        let postman = usher_actors::postman::start(usher_actors::postman::PostmanArgs { mailer, sagas: sagas.clone(), cfg: postman_cfg })
            .await
            .map_err(|e| anyhow::anyhow!("starting the postman: {e}"))?;
        let relay = Arc::new(start_relay(config, stream.clone(), clock.clone())?);
        let (stop, stopping) = tokio::sync::watch::channel(false);
        // The stream's consumers: from Kafka's consumer groups, or from the
        // embedded stream, woken by the relay.
        let mut consumers = Vec::new();
        let consumed = if config.consumers_enabled { vec![sales.clone(), webhook_queue] } else { Vec::new() };
        for p in consumed {
            consumers.push(match config.kafka() {
                Some(k) => tokio::spawn(usher_adapters::kafka::run_projection(k, p, clock.clone(), relay.subscribe(), stopping.clone())),
                None => usher_actors::consumers::run_embedded(stream.clone(), p, clock.clone(), relay.published(), stopping.clone()),
            });
        }
        consumers.push(usher_adapters::webhooks::start_sender(webhook_sender, webhook_cfg, webhook_tls, clock.clone(), stopping.clone()));
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
                    std::time::Duration::from_millis(config.seat_feed_stall_ms.max(1)),
                )),
                hubs: Arc::new(crate::streams::Hubs::new(
                    stopping.clone(),
                    std::time::Duration::from_millis(config.seat_feed_stall_ms.max(1)),
                )),
                cluster,
                relay,
                reports,
                sales,
                webhooks,
            },
            consumers,
            demo,
            ownership: ownership_is,
            listener,
            grpc_addr,
            http_listener,
            http_addr,
            admin_listener,
            admin_addr,
            metrics,
            conn_limits: config.conn_limits(),
            registry_join,
            stop,
            postman,
            mail_to,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where `/metrics`, `/livez`, `/readyz` and `/status` answer.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<CatalogServiceServer<Catalog>>().await;
        health_reporter.set_serving::<InventoryServiceServer<Inventory>>().await;
        health_reporter.set_serving::<OrderingServiceServer<Orders>>().await;
        health_reporter.set_serving::<PaymentServiceServer<Orders>>().await;
        health_reporter.set_serving::<FulfillmentServiceServer<Orders>>().await;
        health_reporter.set_serving::<CheckInServiceServer<Orders>>().await;
        health_reporter.set_serving::<IdentityServiceServer<Identity>>().await;
        health_reporter
            .set_serving::<usher_proto::v1::reporting_service_server::ReportingServiceServer<crate::reporting::Reporting>>()
            .await;
        health_reporter.set_serving::<usher_proto::v1::webhook_service_server::WebhookServiceServer<crate::webhooks::Webhooks>>().await;
        // `usher.relay`: SERVING while the outbox keeps up.
        {
            let mut status = self.ctx.relay.subscribe();
            let reporter = health_reporter.clone();
            tokio::spawn(async move {
                loop {
                    let behind = status.borrow_and_update().behind;
                    let s = if behind { tonic_health::ServingStatus::NotServing } else { tonic_health::ServingStatus::Serving };
                    reporter.set_service_status(crate::limits::RELAY_HEALTH_SERVICE, s).await;
                    if status.changed().await.is_err() {
                        return;
                    }
                }
            });
        }
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(usher_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        // Many clients (Python grpcio, older grpcurl) speak only v1alpha.
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(usher_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let orders = Orders { ctx: self.ctx.clone() };
        let node = self.ctx.cluster.as_ref().map(|_| {
            usher_proto::cluster::node_service_server::NodeServiceServer::new(crate::cluster::Node {
                ctx: self.ctx.clone(),
                catalog: Catalog { ctx: self.ctx.clone() },
                inventory: Inventory { ctx: self.ctx.clone() },
                orders: orders.clone(),
            })
        });
        // Every service takes and sends messages up to the same sizes.
        macro_rules! sized {
            ($server:expr) => {
                $server
                    .max_decoding_message_size(crate::limits::GRPC_DECODING_BYTES_MAX)
                    .max_encoding_message_size(crate::limits::GRPC_ENCODING_BYTES_MAX)
            };
        }
        let mut routes = tonic::service::Routes::builder();
        routes
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(sized!(CatalogServiceServer::new(Catalog { ctx: self.ctx.clone() })))
            .add_service(sized!(InventoryServiceServer::new(Inventory { ctx: self.ctx.clone() })))
            .add_service(sized!(OrderingServiceServer::new(orders.clone())))
            .add_service(sized!(PaymentServiceServer::new(orders.clone())))
            .add_service(sized!(FulfillmentServiceServer::new(orders.clone())))
            .add_service(sized!(CheckInServiceServer::new(orders)))
            .add_service(sized!(IdentityServiceServer::new(Identity { ctx: self.ctx.clone() })))
            .add_service(sized!(usher_proto::v1::reporting_service_server::ReportingServiceServer::new(crate::reporting::Reporting {
                ctx: self.ctx.clone()
            })))
            .add_service(sized!(usher_proto::v1::webhook_service_server::WebhookServiceServer::new(crate::webhooks::Webhooks {
                ctx: self.ctx.clone()
            })));
        if let Some(node) = node {
            routes.add_service(sized!(node));
        }
        let doors = crate::doors::GrpcAuthLayer {
            auth: self.ctx.auth.clone(),
            clock: self.ctx.clock.clone(),
            cluster: self.ctx.cluster.as_ref().map(|c| (c.secret().clone(), Arc::from(c.name()))),
        };
        let grpc = tower::Layer::layer(&crate::observe::GrpcMetricsLayer, tower::Layer::layer(&doors, routes.routes().prepare()));
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
        let admin_listener = self.admin_listener;
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
            crate::conns::serve_grpc(self.listener, grpc, self.conn_limits.clone(), stopping.clone()),
            crate::conns::serve_http(self.http_listener, router, self.conn_limits, stopping),
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
