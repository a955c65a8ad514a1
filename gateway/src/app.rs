//! Wiring: store → registry → gRPC server. `Application::build` binds (port 0
//! works) and returns the bound address; `run` serves until the shutdown
//! future resolves, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;
use usher_actors::{Clock, Registry, RegistryConfig, Store};
use usher_engine::Millis;
use usher_proto::v1::{catalog_service_server::CatalogServiceServer, inventory_service_server::InventoryServiceServer};

use crate::catalog::Catalog;
use crate::config::Config;
use crate::inventory::Inventory;

/// What every request handler needs.
#[derive(Clone)]
pub struct Ctx {
    pub registry: Registry,
    pub clock: Clock,
    /// Turns true when the node starts shutting down: open streams end, so
    /// that the server can drain.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

impl Ctx {
    pub fn store(&self) -> &Arc<dyn Store> {
        self.registry.store()
    }
    pub fn now(&self) -> Millis {
        self.clock.now()
    }
}

pub struct Application {
    pub ctx: Ctx,
    listener: TcpListener,
    grpc_addr: SocketAddr,
    http_listener: TcpListener,
    http_addr: SocketAddr,
    registry_join: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Application {
    pub async fn build(config: &Config) -> anyhow::Result<Application> {
        let store = usher_adapters::connect(&config.store_url()).await.map_err(|e| anyhow::anyhow!("opening the store: {e}"))?;
        let clock = Clock::system();
        if config.demo_data() {
            crate::demo::load(store.as_ref(), clock.now()).await?;
        }
        let mut rc = RegistryConfig::new(store);
        rc.clock = clock.clone();
        let (registry, registry_join) = Registry::start(rc).await?;
        let listener = TcpListener::bind(config.grpc_addr).await.map_err(|e| anyhow::anyhow!("binding {}: {e}", config.grpc_addr))?;
        let grpc_addr = listener.local_addr()?;
        let http_listener = TcpListener::bind(config.http_addr).await.map_err(|e| anyhow::anyhow!("binding {}: {e}", config.http_addr))?;
        let http_addr = http_listener.local_addr()?;
        let (stop, stopping) = tokio::sync::watch::channel(false);
        Ok(Application { ctx: Ctx { registry, clock, stopping }, listener, grpc_addr, http_listener, http_addr, registry_join, stop })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<CatalogServiceServer<Catalog>>().await;
        health_reporter.set_serving::<InventoryServiceServer<Inventory>>().await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(usher_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        // Many clients (Python grpcio, older grpcurl) speak only v1alpha.
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(usher_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let catalog = CatalogServiceServer::new(Catalog { ctx: self.ctx.clone() });
        let inventory = InventoryServiceServer::new(Inventory { ctx: self.ctx.clone() });
        let stop = self.stop;
        let shutdown = async move {
            shutdown.await;
            info!("shutting down: no new calls; finishing the ones in flight");
            let _ = stop.send(true);
        };
        let mut http_stopping = self.ctx.stopping.clone();
        let http = axum::serve(self.http_listener, crate::http::router(self.ctx.clone())).with_graceful_shutdown(async move {
            let _ = http_stopping.wait_for(|s| *s).await;
        });
        let grpc = tonic::transport::Server::builder()
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(catalog)
            .add_service(inventory)
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), shutdown);
        let (g, h) = tokio::join!(grpc, async { http.await });
        g?;
        h?;
        // The server no longer accepts and every in-flight call has its
        // answer: now let each actor finish its batch and stop.
        info!(batches = %self.ctx.registry.stats().summary(), "draining event actors");
        self.ctx.registry.shutdown().await;
        let _ = self.registry_join.await;
        Ok(())
    }
}
