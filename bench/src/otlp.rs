//! An OTLP/gRPC trace receiver inside the bench, for `-traced` targets: it
//! counts the spans a node exports and drops them, so the node pays the
//! whole cost of tracing (spans, batching, encoding, sending) and the
//! receiver little (decoding on the bench's side of the machine).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};

/// Counts spans received. Cheap to clone.
#[derive(Clone, Default)]
pub struct Receiver(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = req.into_inner().resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Receiver {
    /// Listens on a free loopback port; returns the receiver and its
    /// endpoint (`http://127.0.0.1:port`).
    pub async fn start() -> anyhow::Result<(Receiver, String)> {
        let r = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(r.clone()).max_decoding_message_size(64 << 20))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        Ok((r, endpoint))
    }

    /// Spans received so far.
    pub fn spans(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
