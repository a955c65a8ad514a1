//! Webhooks: the endpoints' store, the queue a stream consumer fills (one
//! delivery per message and subscribed endpoint, recorded with the message
//! id so a repeat queues nothing), and the sender that POSTs them, signed
//! per Standard Webhooks (<https://www.standardwebhooks.com>, the
//! `standardwebhooks` crate): `webhook-id` (the stream message's id, the
//! same on every attempt), `webhook-timestamp` (Unix seconds of the
//! attempt), `webhook-signature` (`v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">` for each valid secret, space-separated, so a
//! receiver keeps verifying across a rotation).
//!
//! The body is JSON, `{"type": topic, "timestamp": RFC 3339, "data":
//! payload}`, the payload in protobuf's JSON mapping (`prost-reflect` over
//! Usher's descriptor set), fixed when queued.
//!
//! An endpoint gets the messages that happened after it was created (a
//! message's time against the endpoint's, so the queue may read the stream
//! from its start without sending the past).
//!
//! The sender claims due deliveries (a claim lasts `CLAIM_MS`, so two nodes
//! never send one at once), POSTs at most `IN_FLIGHT_MAX` at a time with a
//! timeout each, and records every attempt. A 2xx answer delivers; anything
//! else is tried again after the next step of the retry schedule (5 s, 5 min,
//! 30 min, 2 h, 5 h, 10 h, 10 h by default: about 28 hours), then marked
//! failed. Nothing here is on the path of a seat decision or of the relay.
//!
//! Endpoints are `https://` or `http://`. TLS is rustls (TLS 1.2 and 1.3,
//! the server's name and chain verified per RFC 5280 / RFC 6125 by
//! `webpki`) against Mozilla's root store (`webpki-roots`) plus the PEM
//! certificates of `SenderConfig::extra_ca_pem` (a private CA; the tests'
//! receiver). A certificate that does not verify fails the attempt, which is
//! retried like any other failure and logged with the reason.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost_reflect::{DescriptorPool, DynamicMessage};
use sqlx::Row;
use usher_actors::{BoxFuture, Projection, StoreError, StreamMessage, WebhookDeliveryRecord, WebhookEndpointRecord, Webhooks};
use usher_engine::{Millis, OrgId};

use crate::db_error::db_error;
use crate::sql::{PgStore, SqliteStore};

/// The webhook consumer's name.
pub const WEBHOOKS: &str = "webhooks";
/// How long a sender's claim on a delivery lasts (ms): longer than one
/// attempt's timeout.
pub const CLAIM_MS: i64 = 60_000;
/// Attempts in flight at once, per node.
pub const IN_FLIGHT_MAX: usize = 16;
/// The Standard Webhooks retry schedule, after the first attempt (ms).
pub const RETRY_SCHEDULE_MS_DEFAULT: [u64; 7] = [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000];

/// The sender's settings.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Waits between attempts; after the last one a delivery is failed.
    pub retry_schedule_ms: Vec<u64>,
    /// One attempt's time for an answer (ms).
    pub attempt_timeout_ms: u64,
    /// The wait between looks at the queue when nothing is due (ms).
    pub poll_ms: u64,
    /// PEM certificates trusted besides Mozilla's roots for `https://`
    /// endpoints (a private CA); empty: none.
    pub extra_ca_pem: Vec<u8>,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            retry_schedule_ms: RETRY_SCHEDULE_MS_DEFAULT.to_vec(),
            attempt_timeout_ms: 10_000,
            poll_ms: 500,
            extra_ca_pem: Vec::new(),
        }
    }
}

/// A new signing secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// `webhook-signature` for `body`: one `v1,…` per secret, space-separated.
pub fn sign(secrets: &[String], id: &str, timestamp_s: i64, body: &[u8]) -> Result<String, String> {
    let mut out = Vec::with_capacity(secrets.len());
    for s in secrets {
        let w = standardwebhooks::Webhook::new(s).map_err(|e| format!("a stored secret is not usable: {e}"))?;
        out.push(w.sign(id, timestamp_s, body).map_err(|e| format!("signing: {e}"))?);
    }
    Ok(out.join(" "))
}

fn pool() -> &'static DescriptorPool {
    static POOL: std::sync::OnceLock<DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(usher_proto::FILE_DESCRIPTOR_SET).expect("Usher's descriptor set decodes"))
}

/// The JSON body of a message's webhook.
pub fn body(m: &StreamMessage) -> Result<Vec<u8>, String> {
    let desc = pool().get_message_by_name(&m.message_type).ok_or_else(|| format!("unknown message type {}", m.message_type))?;
    let msg = DynamicMessage::decode(desc, m.payload.as_slice()).map_err(|e| format!("{} does not decode: {e}", m.message_type))?;
    let data = serde_json::to_value(&msg).map_err(|e| e.to_string())?;
    let v = serde_json::json!({
        "type": m.topic,
        "timestamp": crate::kafka::rfc3339(m.occurred_at),
        "event_id": m.key,
        "event_seq": m.event_seq,
        "data": data,
    });
    serde_json::to_vec(&v).map_err(|e| e.to_string())
}

/// A stored secret and when it stops being used (`None`: the current one).
#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct StoredSecret {
    secret: String,
    expires_at: Option<i64>,
}

fn topics_json(t: &[String]) -> String {
    serde_json::to_string(t).unwrap_or_else(|_| "[]".into())
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// One delivery to send.
struct Due {
    id: String,
    url: String,
    message_id: String,
    body: Vec<u8>,
    attempts: u32,
    secrets: Vec<String>,
    /// The stream message's trace: each attempt is a span of it.
    traceparent: Option<String>,
}

/// The webhook queue as a stream consumer, and the sender's claims.
/// (A type of its own so that the store can be another consumer too.)
pub struct WebhookQueue<S>(pub Arc<S>);

macro_rules! webhooks {
    ($store:ty, $db:ty, $claim:literal) => {
        impl $store {
            fn endpoint_of(r: &<$db as sqlx::Database>::Row) -> Result<WebhookEndpointRecord, StoreError> {
                let id: String = r.get("id");
                let org: String = r.get("org_id");
                let topics: String = r.get("topics");
                Ok(WebhookEndpointRecord {
                    id: uuid::Uuid::parse_str(&id).map_err(corrupt)?,
                    org: OrgId::parse(&org).map_err(corrupt)?,
                    url: r.get("url"),
                    topics: serde_json::from_str(&topics).map_err(corrupt)?,
                    description: r.get("description"),
                    created_at: Millis(r.get("created_at")),
                    deleted_at: r.get::<Option<i64>, _>("deleted_at").map(Millis),
                })
            }

            fn delivery_of(r: &<$db as sqlx::Database>::Row) -> Result<WebhookDeliveryRecord, StoreError> {
                let id: String = r.get("id");
                let endpoint: String = r.get("endpoint_id");
                Ok(WebhookDeliveryRecord {
                    id: uuid::Uuid::parse_str(&id).map_err(corrupt)?,
                    endpoint: uuid::Uuid::parse_str(&endpoint).map_err(corrupt)?,
                    message_id: r.get("message_id"),
                    topic: r.get("topic"),
                    event_id: r.get("event_id"),
                    status: r.get("status"),
                    attempts: u32::try_from(r.get::<i32, _>("attempts")).unwrap_or(0),
                    next_attempt_at: Millis(r.get("next_attempt_at")),
                    last_status: u32::try_from(r.get::<i32, _>("last_status")).unwrap_or(0),
                    last_error: r.get("last_error"),
                    created_at: Millis(r.get("created_at")),
                    delivered_at: r.get::<Option<i64>, _>("delivered_at").map(Millis),
                })
            }

            /// Queues `msgs` for every live endpoint of their events'
            /// organizations that takes their topic, once per message.
            async fn do_queue_webhooks(&self, msgs: &[StreamMessage], now: Millis) -> Result<usize, StoreError> {
                let mut tx = self.pool().begin().await.map_err(db_error)?;
                let mut new = 0;
                for m in msgs {
                    if !Self::first_time(&mut tx, WEBHOOKS, &m.message_id, now).await? {
                        continue;
                    }
                    new += 1;
                    let endpoints = sqlx::query(
                        "SELECT w.id, w.topics FROM webhook_endpoints w JOIN events e ON e.org_id = w.org_id \
                         WHERE e.id = $1 AND w.deleted_at IS NULL AND w.created_at <= $2",
                    )
                    .bind(&m.key)
                    .bind(m.occurred_at.0)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    let mut body_once: Option<Vec<u8>> = None;
                    for e in endpoints {
                        let topics: Vec<String> = serde_json::from_str(e.get::<&str, _>(1)).map_err(corrupt)?;
                        if !(topics.is_empty() || topics.iter().any(|t| *t == m.topic)) {
                            continue;
                        }
                        let b = match &body_once {
                            Some(b) => b.clone(),
                            None => match body(m) {
                                Ok(b) => body_once.insert(b).clone(),
                                Err(why) => {
                                    tracing::error!(message_id = %m.message_id, error = %why, "no webhook for a message that does not decode");
                                    break;
                                }
                            },
                        };
                        sqlx::query(
                            "INSERT INTO webhook_deliveries (id, endpoint_id, message_id, topic, event_id, body, status, attempts, \
                             next_attempt_at, claimed_until, last_status, last_error, created_at, traceparent) \
                             VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, 0, 0, '', $7, $8) ON CONFLICT (endpoint_id, message_id) DO NOTHING",
                        )
                        .bind(uuid::Uuid::new_v4().to_string())
                        .bind(e.get::<String, _>(0))
                        .bind(&m.message_id)
                        .bind(&m.topic)
                        .bind(&m.key)
                        .bind(b)
                        .bind(now.0)
                        .bind(&m.traceparent)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    }
                }
                Self::advance(&mut tx, WEBHOOKS, msgs).await?;
                tx.commit().await.map_err(db_error)?;
                Ok(new)
            }

            /// Claims up to `n` due deliveries of live endpoints.
            async fn claim_due(&self, now: Millis, n: usize) -> Result<Vec<Due>, StoreError> {
                let rows = sqlx::query($claim).bind(now.0).bind(now.0 + CLAIM_MS).bind(n as i64).fetch_all(self.pool()).await.map_err(db_error)?;
                let mut out = Vec::with_capacity(rows.len());
                let mut endpoints: std::collections::HashMap<String, (String, Vec<String>)> = std::collections::HashMap::new();
                for r in rows {
                    let endpoint: String = r.get("endpoint_id");
                    if !endpoints.contains_key(&endpoint) {
                        let (url, secrets): (String, String) = sqlx::query_as("SELECT url, secrets FROM webhook_endpoints WHERE id = $1")
                            .bind(&endpoint)
                            .fetch_one(self.pool())
                            .await
                            .map_err(db_error)?;
                        let secrets: Vec<StoredSecret> = serde_json::from_str(&secrets).map_err(corrupt)?;
                        let valid = secrets.into_iter().filter(|s| s.expires_at.is_none_or(|e| e > now.0)).map(|s| s.secret).collect();
                        endpoints.insert(endpoint.clone(), (url, valid));
                    }
                    let (url, secrets) = endpoints[&endpoint].clone();
                    out.push(Due {
                        id: r.get("id"),
                        url,
                        message_id: r.get("message_id"),
                        body: r.get("body"),
                        attempts: u32::try_from(r.get::<i32, _>("attempts")).unwrap_or(0),
                        secrets,
                        traceparent: r.get("traceparent"),
                    });
                }
                Ok(out)
            }

            /// Records an attempt: delivered, to try again at `next`, or
            /// failed for good (`next` is `None`).
            #[allow(clippy::too_many_arguments)]
            async fn record_attempt(
                &self,
                id: &str,
                attempt: u32,
                at: Millis,
                status: u16,
                error: &str,
                took_ms: i64,
                delivered: bool,
                next: Option<Millis>,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool().begin().await.map_err(db_error)?;
                let (state, next_at, delivered_at) = match (delivered, next) {
                    (true, _) => ("delivered", at.0, Some(at.0)),
                    (false, Some(n)) => ("pending", n.0, None),
                    (false, None) => ("failed", at.0, None),
                };
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt_at = $3, claimed_until = 0, \
                     last_status = $4, last_error = $5, delivered_at = COALESCE($6, delivered_at) WHERE id = $7",
                )
                .bind(state)
                .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
                .bind(next_at)
                .bind(i32::from(status))
                .bind(error)
                .bind(delivered_at)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                sqlx::query(
                    "INSERT INTO webhook_attempts (delivery_id, attempt, at, status, error, duration_ms) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (delivery_id, attempt) DO NOTHING",
                )
                .bind(id)
                .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
                .bind(at.0)
                .bind(i32::from(status))
                .bind(error)
                .bind(took_ms)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                tx.commit().await.map_err(db_error)
            }
        }

        impl Projection for WebhookQueue<$store> {
            fn name(&self) -> &'static str {
                WEBHOOKS
            }
            fn apply<'a>(&'a self, msgs: &'a [StreamMessage], now: Millis) -> BoxFuture<'a, Result<usize, StoreError>> {
                Box::pin(self.0.do_queue_webhooks(msgs, now))
            }
            fn kafka_offsets(&self) -> BoxFuture<'_, Result<Vec<usher_actors::KafkaPosition>, StoreError>> {
                Box::pin(self.0.kafka_positions(WEBHOOKS))
            }
            fn cursor(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
                Box::pin(async move { Ok(self.0.cursor_of(WEBHOOKS).await?.unwrap_or(1)) })
            }
            fn generation(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
                Box::pin(async { Ok(0) })
            }
            fn reset(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
                Box::pin(async { Err(StoreError::Conflict("the webhook queue is not rebuilt: it would send every message again".into())) })
            }
        }

        impl Webhooks for $store {
            fn create_endpoint<'a>(&'a self, e: &'a WebhookEndpointRecord, secret: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
                Box::pin(async move {
                    let secrets = serde_json::to_string(&[StoredSecret { secret: secret.to_owned(), expires_at: None }]).map_err(corrupt)?;
                    sqlx::query(
                        "INSERT INTO webhook_endpoints (id, org_id, url, topics, description, secrets, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(e.id.to_string())
                    .bind(e.org.to_string())
                    .bind(&e.url)
                    .bind(topics_json(&e.topics))
                    .bind(&e.description)
                    .bind(secrets)
                    .bind(e.created_at.0)
                    .execute(self.pool())
                    .await
                    .map_err(db_error)?;
                    Ok(())
                })
            }
            fn list_endpoints(&self, org: OrgId) -> BoxFuture<'_, Result<Vec<WebhookEndpointRecord>, StoreError>> {
                Box::pin(async move {
                    let rows = sqlx::query("SELECT * FROM webhook_endpoints WHERE org_id = $1 ORDER BY created_at DESC, id")
                        .bind(org.to_string())
                        .fetch_all(self.pool())
                        .await
                        .map_err(db_error)?;
                    rows.iter().map(Self::endpoint_of).collect()
                })
            }
            fn get_endpoint(&self, id: uuid::Uuid) -> BoxFuture<'_, Result<Option<WebhookEndpointRecord>, StoreError>> {
                Box::pin(async move {
                    let row = sqlx::query("SELECT * FROM webhook_endpoints WHERE id = $1")
                        .bind(id.to_string())
                        .fetch_optional(self.pool())
                        .await
                        .map_err(db_error)?;
                    row.as_ref().map(Self::endpoint_of).transpose()
                })
            }
            fn rotate_secret<'a>(&'a self, id: uuid::Uuid, secret: &'a str, old_until: Millis) -> BoxFuture<'a, Result<(), StoreError>> {
                Box::pin(async move {
                    let mut tx = self.pool().begin().await.map_err(db_error)?;
                    // A write first: SQLite takes its write lock now.
                    sqlx::query("UPDATE webhook_endpoints SET secrets = secrets WHERE id = $1").bind(id.to_string()).execute(&mut *tx).await.map_err(db_error)?;
                    let (old,): (String,) = sqlx::query_as("SELECT secrets FROM webhook_endpoints WHERE id = $1")
                        .bind(id.to_string())
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    let old: Vec<StoredSecret> = serde_json::from_str(&old).map_err(corrupt)?;
                    let mut all = vec![StoredSecret { secret: secret.to_owned(), expires_at: None }];
                    all.extend(old.into_iter().filter(|s| s.expires_at.is_none_or(|e| e > old_until.0 - 86_400_000)).map(|s| StoredSecret {
                        expires_at: Some(s.expires_at.map_or(old_until.0, |e| e.min(old_until.0))),
                        ..s
                    }));
                    // At most the new one and four before it.
                    all.truncate(5);
                    sqlx::query("UPDATE webhook_endpoints SET secrets = $1 WHERE id = $2")
                        .bind(serde_json::to_string(&all).map_err(corrupt)?)
                        .bind(id.to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    tx.commit().await.map_err(db_error)
                })
            }
            fn delete_endpoint(&self, id: uuid::Uuid, now: Millis) -> BoxFuture<'_, Result<(), StoreError>> {
                Box::pin(async move {
                    sqlx::query("UPDATE webhook_endpoints SET deleted_at = COALESCE(deleted_at, $1) WHERE id = $2")
                        .bind(now.0)
                        .bind(id.to_string())
                        .execute(self.pool())
                        .await
                        .map_err(db_error)?;
                    Ok(())
                })
            }
            fn list_deliveries<'a>(
                &'a self,
                endpoint: uuid::Uuid,
                status: Option<&'a str>,
                limit: u32,
            ) -> BoxFuture<'a, Result<Vec<WebhookDeliveryRecord>, StoreError>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT * FROM webhook_deliveries WHERE endpoint_id = $1 AND ($2 = '' OR status = $2) ORDER BY created_at DESC, id LIMIT $3",
                    )
                    .bind(endpoint.to_string())
                    .bind(status.unwrap_or(""))
                    .bind(i64::from(limit))
                    .fetch_all(self.pool())
                    .await
                    .map_err(db_error)?;
                    rows.iter().map(Self::delivery_of).collect()
                })
            }
            fn get_delivery(&self, id: uuid::Uuid) -> BoxFuture<'_, Result<Option<WebhookDeliveryRecord>, StoreError>> {
                Box::pin(async move {
                    let row = sqlx::query("SELECT * FROM webhook_deliveries WHERE id = $1")
                        .bind(id.to_string())
                        .fetch_optional(self.pool())
                        .await
                        .map_err(db_error)?;
                    row.as_ref().map(Self::delivery_of).transpose()
                })
            }
            fn redeliver(&self, id: uuid::Uuid, now: Millis) -> BoxFuture<'_, Result<(), StoreError>> {
                Box::pin(async move {
                    sqlx::query("UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, claimed_until = 0 WHERE id = $2")
                        .bind(now.0)
                        .bind(id.to_string())
                        .execute(self.pool())
                        .await
                        .map_err(db_error)?;
                    Ok(())
                })
            }
        }

        impl Sender for $store {
            fn claim_due(&self, now: Millis, n: usize) -> BoxFuture<'_, Result<Vec<Due>, StoreError>> {
                Box::pin(<$store>::claim_due(self, now, n))
            }
            fn record<'a>(&'a self, d: &'a Due, a: Attempt<'a>) -> BoxFuture<'a, Result<(), StoreError>> {
                Box::pin(self.record_attempt(&d.id, a.number, a.at, a.status, a.error, a.took_ms, a.delivered, a.next))
            }
        }
    };
}

/// One attempt's outcome.
struct Attempt<'a> {
    number: u32,
    at: Millis,
    status: u16,
    error: &'a str,
    took_ms: i64,
    delivered: bool,
    next: Option<Millis>,
}

/// What the sender needs of a store.
trait Sender: Send + Sync {
    fn claim_due(&self, now: Millis, n: usize) -> BoxFuture<'_, Result<Vec<Due>, StoreError>>;
    fn record<'a>(&'a self, d: &'a Due, a: Attempt<'a>) -> BoxFuture<'a, Result<(), StoreError>>;
}

webhooks!(
    SqliteStore,
    sqlx::Sqlite,
    "UPDATE webhook_deliveries SET claimed_until = $2 \
     WHERE id IN (SELECT d2.id FROM webhook_deliveries d2 JOIN webhook_endpoints w2 ON w2.id = d2.endpoint_id \
       WHERE d2.status = 'pending' AND d2.next_attempt_at <= $1 AND d2.claimed_until <= $1 AND w2.deleted_at IS NULL \
       ORDER BY d2.next_attempt_at LIMIT $3) \
     RETURNING id, endpoint_id, message_id, body, attempts, traceparent"
);
webhooks!(
    PgStore,
    sqlx::Postgres,
    "UPDATE webhook_deliveries SET claimed_until = $2 \
     WHERE id IN (SELECT d2.id FROM webhook_deliveries d2 JOIN webhook_endpoints w2 ON w2.id = d2.endpoint_id \
       WHERE d2.status = 'pending' AND d2.next_attempt_at <= $1 AND d2.claimed_until <= $1 AND w2.deleted_at IS NULL \
       ORDER BY d2.next_attempt_at LIMIT $3 FOR UPDATE OF d2 SKIP LOCKED) \
     RETURNING id, endpoint_id, message_id, body, attempts, traceparent"
);

/// The sender's HTTP client: HTTP/1.1 over TCP, or over TLS for https.
type WebClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The webhook sender's TLS settings (rustls), made by `tls_config`.
pub type TlsConfig = rustls::ClientConfig;

/// The TLS settings for `https://` endpoints: Mozilla's roots and the
/// certificates in `extra_ca_pem` (PEM, any number; other PEM sections
/// such as keys are ignored).
///
/// # Errors
/// A sentence when `extra_ca_pem` is not PEM, holds no certificate, or a
/// certificate is not one a root store takes.
pub fn tls_config(extra_ca_pem: &[u8]) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if !extra_ca_pem.is_empty() {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(extra_ca_pem) {
            let cert = cert.map_err(|e| format!("the webhook CA file is not PEM: {e}"))?;
            roots.add(cert).map_err(|e| format!("the webhook CA file holds a certificate that cannot be a root: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err("the webhook CA file holds no CERTIFICATE section".into());
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// The sender: runs until `stopping` turns true. `tls` is
/// `tls_config(&cfg.extra_ca_pem)`, made by the caller before anything
/// starts so that a bad CA file stops the start.
pub fn start_sender(
    store: Arc<dyn SenderStore>,
    cfg: SenderConfig,
    tls: rustls::ClientConfig,
    clock: usher_actors::Clock,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
    tokio::spawn(async move {
        let client: WebClient = Client::builder(TokioExecutor::new()).build(https);
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            if *stopping.borrow() {
                tasks.abort_all();
                return;
            }
            let room = IN_FLIGHT_MAX - tasks.len();
            let due = if room > 0 {
                match store.sender().claim_due(clock.now(), room).await {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the webhook queue");
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            let idle = due.is_empty();
            for d in due {
                let (store, client, cfg, clock) = (store.clone(), client.clone(), cfg.clone(), clock.clone());
                tasks.spawn(async move { send(store.sender(), &client, &cfg, &clock, d).await });
            }
            while tasks.try_join_next().is_some() {}
            if idle || tasks.len() >= IN_FLIGHT_MAX {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(cfg.poll_ms)) => {}
                    _ = tasks.join_next(), if !tasks.is_empty() => {}
                    _ = stopping.changed() => {}
                }
            }
        }
    })
}

/// Type-erased access to a store's sender side.
pub trait SenderStore: Send + Sync + 'static {
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn sender(&self) -> &dyn Sender;
}

impl SenderStore for SqliteStore {
    #[allow(private_interfaces)]
    fn sender(&self) -> &dyn Sender {
        self
    }
}

impl SenderStore for PgStore {
    #[allow(private_interfaces)]
    fn sender(&self) -> &dyn Sender {
        self
    }
}

/// An error and its causes, `outer: inner: …` (hyper's client error says
/// only "client error (Connect)"; the cause says which certificate or
/// address failed).
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = c.source();
    }
    out
}

async fn send(store: &dyn Sender, client: &WebClient, cfg: &SenderConfig, clock: &usher_actors::Clock, d: Due) {
    // Traced: the attempt is a span of the message's trace, and the
    // receiver gets that span as its parent (`traceparent`).
    let span = usher_actors::trace::joined(
        d.traceparent.as_deref(),
        || tracing::info_span!(parent: None, "webhook", attempt = d.attempts + 1, trace_id = tracing::field::Empty, span_id = tracing::field::Empty),
    );
    tracing::Instrument::instrument(send_in_span(store, client, cfg, clock, d), span).await
}

async fn send_in_span(store: &dyn Sender, client: &WebClient, cfg: &SenderConfig, clock: &usher_actors::Clock, d: Due) {
    let number = d.attempts + 1;
    let at = clock.now();
    let ts = at.0.div_euclid(1000);
    let started = std::time::Instant::now();
    let outcome: Result<u16, String> = async {
        let signature = sign(&d.secrets, &d.message_id, ts, &d.body)?;
        let req = hyper::Request::post(&d.url)
            .header("content-type", "application/json")
            .header("user-agent", "usher-webhooks")
            .header("webhook-id", &d.message_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature);
        let req = match usher_actors::trace::current() {
            Some(tp) => req.header("traceparent", tp),
            None => req,
        };
        let req = req.body(Full::new(Bytes::from(d.body.clone()))).map_err(|e| format!("bad request: {e}"))?;
        let res = tokio::time::timeout(Duration::from_millis(cfg.attempt_timeout_ms), client.request(req))
            .await
            .map_err(|_| format!("no answer within {} ms", cfg.attempt_timeout_ms))?
            .map_err(|e| format!("sending: {}", causes(&e)))?;
        let status = res.status().as_u16();
        // Read (and drop) at most a little of the answer.
        let _ = tokio::time::timeout(Duration::from_millis(cfg.attempt_timeout_ms), res.into_body().collect()).await;
        Ok(status)
    }
    .await;
    let took_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let (status, error, delivered) = match &outcome {
        Ok(s) if (200..300).contains(s) => (*s, String::new(), true),
        Ok(s) => (*s, format!("the endpoint answered {s}"), false),
        Err(e) => (0, e.clone(), false),
    };
    let next = (!delivered)
        .then(|| cfg.retry_schedule_ms.get(number as usize - 1).map(|ms| Millis(at.0 + i64::try_from(*ms).unwrap_or(i64::MAX / 2))))
        .flatten();
    metrics::histogram!(usher_actors::metrics::names::WEBHOOK_DELIVERY_DURATION).record(started.elapsed().as_secs_f64());
    let outcome = match (delivered, next) {
        (true, _) => "delivered",
        (false, Some(_)) => "failed",
        (false, None) => "gave_up",
    };
    metrics::counter!(usher_actors::metrics::names::WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
    if !delivered {
        match next {
            Some(n) => {
                tracing::info!(url = %d.url, attempt = number, error = %error, retry_at = n.0, "webhook not delivered; trying again later")
            }
            None => tracing::warn!(url = %d.url, attempt = number, error = %error, "webhook not delivered; giving up"),
        }
    }
    let a = Attempt { number, at, status, error: &error, took_ms, delivered, next };
    if let Err(e) = store.record(&d, a).await {
        // The claim runs out and the delivery is tried again.
        tracing::warn!(error = %e, "cannot record a webhook attempt");
    }
}
