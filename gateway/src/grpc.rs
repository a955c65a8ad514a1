//! The gRPC side: every service's server, health and reflection, and the
//! node service in a cluster, under the doors (`doors::GrpcAuthLayer`) and
//! the metrics layer. The gRPC twin of `http::router`: adding a service is
//! its file, its `add_service` line and its `set_serving` line here.

use std::sync::Arc;

use usher_proto::cluster::node_service_server::NodeServiceServer;
use usher_proto::v1::{
    catalog_service_server::CatalogServiceServer, check_in_service_server::CheckInServiceServer,
    fulfillment_service_server::FulfillmentServiceServer, identity_service_server::IdentityServiceServer,
    inventory_service_server::InventoryServiceServer, ordering_service_server::OrderingServiceServer,
    payment_service_server::PaymentServiceServer, reporting_service_server::ReportingServiceServer,
    webhook_service_server::WebhookServiceServer,
};

use crate::catalog::Catalog;
use crate::ctx::Ctx;
use crate::identity::Identity;
use crate::inventory::Inventory;
use crate::orders::Orders;
use crate::reporting::Reporting;
use crate::webhooks::Webhooks;

/// Every service takes and sends messages up to the same sizes.
macro_rules! sized {
    ($server:expr) => {
        $server
            .max_decoding_message_size(crate::limits::GRPC_DECODING_BYTES_MAX)
            .max_encoding_message_size(crate::limits::GRPC_ENCODING_BYTES_MAX)
    };
}

/// The service the gRPC listener serves (`conns::serve_grpc`).
pub async fn service(ctx: &Ctx) -> anyhow::Result<crate::observe::GrpcMetrics<crate::doors::GrpcAuth<tonic::service::Routes>>> {
    let orders = Orders { ctx: ctx.clone() };
    let mut routes = tonic::service::Routes::builder();
    add_reflection(&mut routes)?;
    routes
        .add_service(health(ctx).await)
        .add_service(sized!(CatalogServiceServer::new(Catalog { ctx: ctx.clone() })))
        .add_service(sized!(InventoryServiceServer::new(Inventory { ctx: ctx.clone() })))
        .add_service(sized!(OrderingServiceServer::new(orders.clone())))
        .add_service(sized!(PaymentServiceServer::new(orders.clone())))
        .add_service(sized!(FulfillmentServiceServer::new(orders.clone())))
        .add_service(sized!(CheckInServiceServer::new(orders)))
        .add_service(sized!(IdentityServiceServer::new(Identity { ctx: ctx.clone() })))
        .add_service(sized!(ReportingServiceServer::new(Reporting { ctx: ctx.clone() })))
        .add_service(sized!(WebhookServiceServer::new(Webhooks { ctx: ctx.clone() })));
    if ctx.cluster.is_some() {
        routes.add_service(sized!(node_service(ctx)));
    }
    let doors = crate::doors::GrpcAuthLayer {
        auth: ctx.auth.clone(),
        clock: ctx.clock.clone(),
        cluster: ctx.cluster.as_ref().map(|c| (c.secret().clone(), Arc::from(c.name()))),
    };
    Ok(tower::Layer::layer(&crate::observe::GrpcMetricsLayer, tower::Layer::layer(&doors, routes.routes().prepare())))
}

/// The standard health service: every service SERVING, and `usher.relay`
/// SERVING while the outbox keeps up.
async fn health(ctx: &Ctx) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<CatalogServiceServer<Catalog>>().await;
    health_reporter.set_serving::<InventoryServiceServer<Inventory>>().await;
    health_reporter.set_serving::<OrderingServiceServer<Orders>>().await;
    health_reporter.set_serving::<PaymentServiceServer<Orders>>().await;
    health_reporter.set_serving::<FulfillmentServiceServer<Orders>>().await;
    health_reporter.set_serving::<CheckInServiceServer<Orders>>().await;
    health_reporter.set_serving::<IdentityServiceServer<Identity>>().await;
    health_reporter.set_serving::<ReportingServiceServer<Reporting>>().await;
    health_reporter.set_serving::<WebhookServiceServer<Webhooks>>().await;
    let mut status = ctx.relay.subscribe();
    tokio::spawn(async move {
        loop {
            let behind = status.borrow_and_update().behind;
            let s = if behind { tonic_health::ServingStatus::NotServing } else { tonic_health::ServingStatus::Serving };
            health_reporter.set_service_status(crate::limits::RELAY_HEALTH_SERVICE, s).await;
            if status.changed().await.is_err() {
                return;
            }
        }
    });
    health
}

/// Server reflection over both descriptor sets (ours and health's), in
/// v1 and in v1alpha, which many clients (Python grpcio, older grpcurl)
/// speak only.
fn add_reflection(routes: &mut tonic::service::RoutesBuilder) -> anyhow::Result<()> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(usher_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    routes.add_service(builder().build_v1()?).add_service(builder().build_v1alpha()?);
    Ok(())
}

/// The node service, with every forwarded method's handler registered by
/// the service that owns it.
fn node_service(ctx: &Ctx) -> NodeServiceServer<crate::node_service::Node> {
    let mut handlers = crate::node_service::Handlers::default();
    Catalog { ctx: ctx.clone() }.serve_forwarded(&mut handlers);
    Inventory { ctx: ctx.clone() }.serve_forwarded(&mut handlers);
    Orders { ctx: ctx.clone() }.serve_forwarded(&mut handlers);
    NodeServiceServer::new(crate::node_service::Node::new(ctx.clone(), handlers))
}
