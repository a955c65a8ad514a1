//! What every handler is given: `Ctx`, the node's lower-level handles (the
//! registry, the stores, the sagas, identity, the feeds' caps and this
//! node's place in a cluster), and the two things every command does with
//! them: claim its idempotency key, and run where the event's owner is.
//!
//! A leaf of the gateway: it names no service, so every service can take it
//! without the wiring (`app`) or each other.

use std::future::Future;
use std::sync::Arc;

use prost::Message;
use usher_actors::{Clock, OrderStore, Registry, Sagas, Store};
use usher_engine::Millis;

use crate::auth::{Auth, Caller};
use crate::doors::Method;
use crate::error::{ApiError, Reason};

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
        c: &Caller,
        space: KeySpace,
        kind: &str,
        key: &str,
        fp: &[u8],
        resource: &str,
    ) -> Result<Option<String>, ApiError> {
        use crate::error::ErrorCode;
        let KeySpace { name: space, tag } = space;
        let key = crate::convert::key(key)?;
        let scope = c.principal.key_scope().ok_or_else(|| ApiError::denied(usher_engine::Denied::Unauthenticated, Reason::NotFound, ""))?;
        let scoped = format!("{space}:{kind}:{scope}/{}", key.as_str());
        match self.orders.claim_command(&scoped, usher_engine::fingerprint_bytes(tag, fp), resource, self.now()).await? {
            usher_actors::Created::New(_) => Ok(None),
            usher_actors::Created::Replayed(r) => Ok(Some(r)),
            usher_actors::Created::KeyReused => Err(ApiError::new(
                ErrorCode::AlreadyExists,
                Reason::IdempotencyKeyReused,
                "idempotency_key: this key was already used for a different request",
            )),
        }
    }

    /// Runs `local` here; if the event turns out to be another node's, sends
    /// `r` to that node instead (once: a forwarded request is run with
    /// `local` directly, never routed again). One node: `local`, as is.
    /// `method` is the table's row, which says it may be forwarded.
    pub(crate) async fn routed<Req, Rep, Fut>(
        &self,
        c: &Caller,
        method: &'static Method,
        r: Req,
        local: impl FnOnce(Req) -> Fut,
    ) -> Result<Rep, ApiError>
    where
        Req: Message + Clone,
        Rep: Message + Default,
        Fut: Future<Output = Result<Rep, ApiError>>,
    {
        debug_assert!(method.to_owner(), "{} is not forwarded to the event's owner in doors::GRPC", method.path);
        let Some(cluster) = &self.cluster else { return local(r).await };
        if c.forwarded {
            return local(r).await;
        }
        let copy = r.clone();
        match local(r).await {
            Err(ApiError { owner: Some(owner), .. }) => cluster.forward(&owner, c, method.path, &copy).await,
            other => other,
        }
    }
}

/// A family of commands whose idempotency keys live apart from others':
/// its name prefixes the stored key, its tag seeds the fingerprint.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeySpace {
    pub name: &'static str,
    pub tag: usher_engine::FingerprintTag,
}
