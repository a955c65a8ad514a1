//! `WebhookService`: an organization's webhook endpoints and their delivery
//! log, for members who manage its keys (`Cap::ManageKeys`), over gRPC and
//! as JSON (the routes are listed above `routes`).

use tonic::{Request, Response, Status};
use usher_actors::{WebhookDeliveryRecord, WebhookEndpointRecord};
use usher_engine::{Cap, OrgId};
use usher_proto::v1::{self as pb, webhook_service_server::WebhookService};

use crate::auth::Caller;
use crate::convert;
use crate::ctx::{Ctx, KeySpace};
use crate::doors::caller;
use crate::error::{ApiError, ErrorCode, Reason};

pub(crate) mod json;

/// How long a rotated-out secret still signs (ms): a day.
pub const WEBHOOK_OLD_SECRET_MS: u64 = 24 * 60 * 60 * 1000;
/// Endpoints one organization may have (deleted ones not counted).
pub const WEBHOOK_ENDPOINTS_PER_ORG_MAX: usize = 20;
/// The longest endpoint URL (bytes).
pub const WEBHOOK_URL_BYTES_MAX: usize = 2_000;
/// Deliveries one listing returns at most.
pub const WEBHOOK_DELIVERIES_PAGE_MAX: u32 = 500;

#[derive(Clone)]
pub struct Webhooks {
    pub ctx: Ctx,
}

fn endpoint_pb(e: &WebhookEndpointRecord) -> pb::WebhookEndpoint {
    pb::WebhookEndpoint {
        endpoint_id: e.id.to_string(),
        org_id: e.org.to_string(),
        url: e.url.clone(),
        topics: e.topics.clone(),
        description: e.description.clone(),
        created_at: Some(convert::ts(e.created_at)),
        deleted_at: e.deleted_at.map(convert::ts),
    }
}

fn delivery_pb(d: &WebhookDeliveryRecord) -> pb::WebhookDelivery {
    pb::WebhookDelivery {
        delivery_id: d.id.to_string(),
        endpoint_id: d.endpoint.to_string(),
        message_id: d.message_id.clone(),
        topic: d.topic.clone(),
        event_id: d.event_id.clone(),
        status: d.status.clone(),
        attempts: d.attempts,
        next_attempt_at: Some(convert::ts(d.next_attempt_at)),
        last_status: d.last_status,
        last_error: d.last_error.clone(),
        created_at: Some(convert::ts(d.created_at)),
        delivered_at: d.delivered_at.map(convert::ts),
    }
}

fn uuid_of(field: &str, s: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(s).map_err(|_| ApiError::invalid(field, "is not a UUID"))
}

/// An endpoint URL: `https://` or `http://`, a host, no user name or
/// password (the URL is shown in listings; credentials would leak there).
fn endpoint_url(s: &str) -> Result<String, ApiError> {
    if s.len() > WEBHOOK_URL_BYTES_MAX {
        return Err(ApiError::invalid("url", format!("is longer than {WEBHOOK_URL_BYTES_MAX} bytes")));
    }
    let u = url::Url::parse(s).map_err(|e| ApiError::invalid("url", format!("is not a URL: {e}")))?;
    if !matches!(u.scheme(), "https" | "http") {
        return Err(ApiError::invalid("url", format!("has the scheme {:?}; give an https:// (or http://) URL", u.scheme())));
    }
    if u.host_str().is_none_or(str::is_empty) || !u.username().is_empty() || u.password().is_some() {
        return Err(ApiError::invalid("url", "needs a host and no user name or password"));
    }
    Ok(u.to_string())
}

fn topics(list: &[String]) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::with_capacity(list.len());
    for t in list {
        if usher_adapters::outbox::message_type(t).is_none() {
            let all: Vec<&str> = usher_adapters::outbox::TOPICS.iter().map(|(t, _)| *t).collect();
            return Err(ApiError::invalid("topics", format!("{t:?} is not one of Usher's topics: {}", all.join(", "))));
        }
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out.sort();
    Ok(out)
}

impl Webhooks {
    /// Claims `key` for this caller's command of `kind` on `resource`.
    async fn claim(&self, c: &Caller, kind: &str, key: &str, fp: &str, resource: &str) -> Result<Option<String>, ApiError> {
        self.ctx
            .claim_command(
                c,
                KeySpace { name: "webhooks", tag: usher_engine::FingerprintTag::Webhooks },
                kind,
                key,
                fp.as_bytes(),
                resource,
            )
            .await
    }

    /// The endpoint, if the caller manages its organization's keys
    /// (NOT_FOUND otherwise, as for a missing one).
    async fn endpoint_as(&self, c: &Caller, id: &str) -> Result<WebhookEndpointRecord, ApiError> {
        let id = uuid_of("endpoint_id", id)?;
        let not_found = || ApiError::new(ErrorCode::NotFound, Reason::WebhookNotFound, format!("webhook endpoint {id} not found"));
        let e = self.ctx.webhooks.get_endpoint(id).await?.ok_or_else(not_found)?;
        c.may(e.org, Cap::ManageKeys, Reason::WebhookNotFound, format_args!("webhook endpoint {id}")).map_err(|_| not_found())?;
        Ok(e)
    }

    pub(crate) async fn create(&self, c: &Caller, r: pb::CreateWebhookEndpointRequest) -> Result<pb::CreatedWebhookEndpoint, ApiError> {
        let org = OrgId::parse(&r.org_id)?;
        c.may(org, Cap::ManageKeys, Reason::OrgNotFound, format_args!("organization {org}"))?;
        let url = endpoint_url(&r.url)?;
        let topics = topics(&r.topics)?;
        if r.description.len() > usher_engine::limits::DESCRIPTION_BYTES_MAX {
            return Err(ApiError::invalid("description", format!("is longer than {} bytes", usher_engine::limits::DESCRIPTION_BYTES_MAX)));
        }
        let id = uuid::Uuid::new_v4();
        let fp = format!("{org}\n{url}\n{topics:?}\n{}", r.description);
        if let Some(prev) = self.claim(c, "create", &r.idempotency_key, &fp, &id.to_string()).await? {
            // The secret was shown once, in the first answer.
            let e = self.endpoint_as(c, &prev).await?;
            return Ok(pb::CreatedWebhookEndpoint { endpoint: Some(endpoint_pb(&e)), secret: String::new() });
        }
        let live = self.ctx.webhooks.list_endpoints(org).await?.iter().filter(|e| e.deleted_at.is_none()).count();
        if live >= WEBHOOK_ENDPOINTS_PER_ORG_MAX {
            return Err(ApiError::new(
                ErrorCode::ResourceExhausted,
                Reason::QuotaExceeded,
                format!("the organization has {live} webhook endpoints, the most it may have; delete one first"),
            ));
        }
        let e = WebhookEndpointRecord { id, org, url, topics, description: r.description, created_at: self.ctx.now(), deleted_at: None };
        let secret = usher_adapters::webhooks::new_secret();
        self.ctx.webhooks.create_endpoint(&e, &secret).await?;
        Ok(pb::CreatedWebhookEndpoint { endpoint: Some(endpoint_pb(&e)), secret })
    }

    pub(crate) async fn list(&self, c: &Caller, r: pb::ListWebhookEndpointsRequest) -> Result<pb::ListWebhookEndpointsResponse, ApiError> {
        let org = OrgId::parse(&r.org_id)?;
        c.may(org, Cap::ManageKeys, Reason::OrgNotFound, format_args!("organization {org}"))?;
        Ok(pb::ListWebhookEndpointsResponse { endpoints: self.ctx.webhooks.list_endpoints(org).await?.iter().map(endpoint_pb).collect() })
    }

    pub(crate) async fn rotate(&self, c: &Caller, r: pb::RotateWebhookSecretRequest) -> Result<pb::CreatedWebhookEndpoint, ApiError> {
        let e = self.endpoint_as(c, &r.endpoint_id).await?;
        if e.deleted_at.is_some() {
            return Err(ApiError::new(ErrorCode::FailedPrecondition, Reason::WebhookDeleted, "the endpoint was deleted"));
        }
        if self.claim(c, "rotate", &r.idempotency_key, &e.id.to_string(), &e.id.to_string()).await?.is_some() {
            return Ok(pb::CreatedWebhookEndpoint { endpoint: Some(endpoint_pb(&e)), secret: String::new() });
        }
        let secret = usher_adapters::webhooks::new_secret();
        self.ctx.webhooks.rotate_secret(e.id, &secret, self.ctx.now().plus_ms(WEBHOOK_OLD_SECRET_MS)).await?;
        Ok(pb::CreatedWebhookEndpoint { endpoint: Some(endpoint_pb(&e)), secret })
    }

    pub(crate) async fn delete(&self, c: &Caller, r: pb::DeleteWebhookEndpointRequest) -> Result<pb::WebhookEndpoint, ApiError> {
        let e = self.endpoint_as(c, &r.endpoint_id).await?;
        self.claim(c, "delete", &r.idempotency_key, &e.id.to_string(), &e.id.to_string()).await?;
        self.ctx.webhooks.delete_endpoint(e.id, self.ctx.now()).await?;
        let e = self.endpoint_as(c, &r.endpoint_id).await?;
        Ok(endpoint_pb(&e))
    }

    pub(crate) async fn deliveries(
        &self,
        c: &Caller,
        r: pb::ListWebhookDeliveriesRequest,
    ) -> Result<pb::ListWebhookDeliveriesResponse, ApiError> {
        let e = self.endpoint_as(c, &r.endpoint_id).await?;
        let status = match r.status.as_str() {
            "" => None,
            s @ ("pending" | "delivered" | "failed") => Some(s),
            other => return Err(ApiError::invalid("status", format!("{other:?} is not pending, delivered or failed"))),
        };
        let limit = if r.page_size == 0 { 100 } else { r.page_size.min(WEBHOOK_DELIVERIES_PAGE_MAX) };
        let list = self.ctx.webhooks.list_deliveries(e.id, status, limit).await?;
        Ok(pb::ListWebhookDeliveriesResponse { deliveries: list.iter().map(delivery_pb).collect() })
    }

    pub(crate) async fn redeliver(&self, c: &Caller, r: pb::RedeliverWebhookRequest) -> Result<pb::WebhookDelivery, ApiError> {
        let id = uuid_of("delivery_id", &r.delivery_id)?;
        let not_found = || ApiError::new(ErrorCode::NotFound, Reason::WebhookDeliveryNotFound, format!("webhook delivery {id} not found"));
        let d = self.ctx.webhooks.get_delivery(id).await?.ok_or_else(not_found)?;
        self.endpoint_as(c, &d.endpoint.to_string()).await.map_err(|_| not_found())?;
        if self.claim(c, "redeliver", &r.idempotency_key, &id.to_string(), &id.to_string()).await?.is_none() {
            self.ctx.webhooks.redeliver(id, self.ctx.now()).await?;
        }
        let d = self.ctx.webhooks.get_delivery(id).await?.ok_or_else(not_found)?;
        Ok(delivery_pb(&d))
    }
}

#[tonic::async_trait]
impl WebhookService for Webhooks {
    async fn create_webhook_endpoint(
        &self,
        req: Request<pb::CreateWebhookEndpointRequest>,
    ) -> Result<Response<pb::CreatedWebhookEndpoint>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.create(&c, req.into_inner()).await?))
    }
    async fn list_webhook_endpoints(
        &self,
        req: Request<pb::ListWebhookEndpointsRequest>,
    ) -> Result<Response<pb::ListWebhookEndpointsResponse>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.list(&c, req.into_inner()).await?))
    }
    async fn rotate_webhook_secret(
        &self,
        req: Request<pb::RotateWebhookSecretRequest>,
    ) -> Result<Response<pb::CreatedWebhookEndpoint>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.rotate(&c, req.into_inner()).await?))
    }
    async fn delete_webhook_endpoint(
        &self,
        req: Request<pb::DeleteWebhookEndpointRequest>,
    ) -> Result<Response<pb::WebhookEndpoint>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.delete(&c, req.into_inner()).await?))
    }
    async fn list_webhook_deliveries(
        &self,
        req: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.deliveries(&c, req.into_inner()).await?))
    }
    async fn redeliver_webhook(&self, req: Request<pb::RedeliverWebhookRequest>) -> Result<Response<pb::WebhookDelivery>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.redeliver(&c, req.into_inner()).await?))
    }
}
