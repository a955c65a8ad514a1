//! Authentication: who is calling. Credentials arrive as
//! `authorization: Bearer <token>` (gRPC metadata or an HTTP header) or, on
//! the HTTP side, as the storefront's HttpOnly cookies. A token is one of:
//! an access JWT (a signed-in user), a guest JWT (a storefront guest), a
//! partner API key (`usk_…`) or a gate device token (`usg_…`). Bad or
//! expired credentials are refused even on public doors, so a client learns
//! its token is stale. What a principal may do is decided by the permission
//! table (`crate::doors`) and by the handlers with `usher_engine::Principal`.

pub mod links;
pub mod rate;
pub mod secrets;
pub mod tokens;

use crate::limits::{
    CREDENTIAL_CACHE_ENTRIES_MAX, CREDENTIAL_CACHE_MS, LAST_USED_WRITE_MS_MIN, PASSWORD_HASH_WAIT_MS_MAX, PASSWORD_HASHES_AT_ONCE_MAX,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use usher_actors::IdentityStore;
use usher_engine::{EventId, GatePrincipal, GuestId, Membership, Millis, OrgId, PartnerPrincipal, Principal, Role, UserId, UserPrincipal};

use crate::error::{ApiError, ErrorCode, Reason};
use rate::{Bucket, RateLimits};
use tokens::{Claims, KeyRing, TYP_ACCESS, TYP_GUEST, TokenError};

/// Token lifetimes and the names tokens carry.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `iss` of every token.
    pub issuer: String,
    /// `aud` of every token.
    pub audience: String,
    pub access_ttl_ms: u64,
    pub refresh_ttl_ms: u64,
    pub guest_ttl_ms: u64,
    pub rates: rate::RateConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: "usher".into(),
            audience: "usher".into(),
            access_ttl_ms: 15 * 60 * 1000,
            refresh_ttl_ms: 30 * 24 * 60 * 60 * 1000,
            guest_ttl_ms: 30 * 24 * 60 * 60 * 1000,
            rates: rate::RateConfig::default(),
        }
    }
}

/// The caller of one request: who, and from where.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The peer's IP address as this server saw it.
    pub address: String,
    /// Forwarded by another node of the cluster (`crate::cluster`): served
    /// here, never forwarded again.
    pub forwarded: bool,
    /// When the client's deadline passes (from gRPC's `grpc-timeout`), for a
    /// request this node forwards: the owner gets what is left of it.
    pub deadline: Option<std::time::Instant>,
}

impl Caller {
    /// A caller as the doors admit one: not forwarded, no deadline yet.
    pub fn new(principal: Principal, address: String) -> Caller {
        Caller { principal, address, forwarded: false, deadline: None }
    }

    pub fn anonymous(address: String) -> Caller {
        Caller::new(Principal::Anonymous, address)
    }

    /// The client the peer's address stands for, wherever a limit counts
    /// by address (rates, sign-ups, log-ins, guest sessions, seat feeds):
    /// the address itself, or for IPv6 its /64, one subscriber's network,
    /// in which a host picks any address at will.
    pub fn network(&self) -> String {
        match self.address.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => {
                    let s = a.segments();
                    format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                }
            },
            _ => self.address.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Partner,
    Gate,
}

/// A checked API key or device token, as the cache keeps it.
struct Checked {
    kind: KeyKind,
    id: uuid::Uuid,
    /// SHA-256 of the whole secret, hex.
    hash: String,
    revoked: bool,
    expires_at: Option<Millis>,
    principal: Principal,
}

/// Shared by both doors.
pub struct Auth {
    pub store: Arc<dyn IdentityStore>,
    pub keys: KeyRing,
    pub cfg: AuthConfig,
    pub rates: RateLimits,
    /// A key or device token → (checked at, what it proved).
    cache: Mutex<HashMap<String, (Millis, Arc<Checked>)>>,
    /// Key or device id → last `last_used_at` write.
    touched: Mutex<HashMap<uuid::Uuid, Millis>>,
    hashing: tokio::sync::Semaphore,
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, Reason::Unauthenticated, message)
}

impl Auth {
    pub async fn start(store: Arc<dyn IdentityStore>, cfg: AuthConfig, now: Millis) -> anyhow::Result<Arc<Auth>> {
        let keep = cfg.access_ttl_ms.max(cfg.guest_ttl_ms);
        let keys = KeyRing::load(store.clone(), cfg.issuer.clone(), cfg.audience.clone(), keep, now)
            .await
            .map_err(|e| anyhow::anyhow!("loading the token-signing keys: {e}"))?;
        let auth = Arc::new(Auth {
            store,
            keys,
            rates: RateLimits::new(&cfg.rates),
            cfg,
            cache: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
            hashing: tokio::sync::Semaphore::new(PASSWORD_HASHES_AT_ONCE_MAX),
        });
        // Idle rate-limit buckets are dropped every minute; the task ends with the node.
        let weak = Arc::downgrade(&auth);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(a) = weak.upgrade() else { return };
                a.rates.prune();
            }
        });
        Ok(auth)
    }

    /// Who sent `bearer` (the token of an `authorization: Bearer` header or
    /// a cookie). `None` is an anonymous caller.
    pub async fn authenticate(&self, bearer: Option<&str>, now: Millis) -> Result<Principal, ApiError> {
        let Some(token) = bearer.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Principal::Anonymous);
        };
        if token.starts_with(secrets::API_KEY_PREFIX) {
            return self.keyed(token, KeyKind::Partner, now).await;
        }
        if token.starts_with(secrets::DEVICE_TOKEN_PREFIX) {
            return self.keyed(token, KeyKind::Gate, now).await;
        }
        // A JWT: an access token, or a guest token.
        let claims = match self.keys.verify(token, TYP_ACCESS, now).await {
            Err(TokenError::Invalid("the token is of another type")) => self.keys.verify(token, TYP_GUEST, now).await,
            other => other,
        }
        .map_err(|e| match e {
            TokenError::Expired => unauthenticated("the access token has expired; refresh it or sign in again"),
            TokenError::Invalid(why) => unauthenticated(why),
        })?;
        principal_of(&claims).ok_or_else(|| unauthenticated("the token's subject is malformed"))
    }

    /// A partner API key or a gate device token: looked up by its visible
    /// prefix, compared by digest in constant time, cached for a while.
    async fn keyed(&self, token: &str, kind: KeyKind, now: Millis) -> Result<Principal, ApiError> {
        let what = match kind {
            KeyKind::Partner => "API key",
            KeyKind::Gate => "device token",
        };
        let bad = || unauthenticated(&format!("the {what} is not valid"));
        // The cache is keyed by the secret itself (it is in this process's
        // memory anyway while the request is served): a hit needs no digest.
        let checked = match self.cached(token, now) {
            Some(c) if c.kind == kind => c,
            _ => {
                let digest = secrets::digest(token);
                let prefix = secrets::prefix_of(token).ok_or_else(bad)?;
                let checked = match kind {
                    KeyKind::Partner => {
                        let r = self.store.api_key_by_prefix(prefix).await?.ok_or_else(bad)?;
                        Checked {
                            kind,
                            id: r.id.0,
                            hash: r.hash,
                            revoked: r.revoked_at.is_some(),
                            expires_at: r.expires_at,
                            principal: Principal::Partner(PartnerPrincipal {
                                key_id: r.id,
                                partner_id: r.partner_id,
                                org: r.org,
                                scopes: r.scopes,
                                events: r.events,
                            }),
                        }
                    }
                    KeyKind::Gate => {
                        let r = self.store.device_by_prefix(prefix).await?.ok_or_else(bad)?;
                        Checked {
                            kind,
                            id: r.id.0,
                            hash: r.hash,
                            revoked: r.revoked_at.is_some(),
                            expires_at: None,
                            principal: Principal::Gate(GatePrincipal { device_id: r.id, org: r.org, gate: r.gate, events: r.events }),
                        }
                    }
                };
                if !secrets::same(&checked.hash, &digest) {
                    return Err(bad());
                }
                let checked = Arc::new(checked);
                self.remember(token.to_owned(), now, checked.clone());
                checked
            }
        };
        if checked.revoked {
            return Err(unauthenticated(&format!("the {what} has been revoked")));
        }
        if checked.expires_at.is_some_and(|e| e <= now) {
            return Err(unauthenticated(&format!("the {what} has expired")));
        }
        if self.due_touch(checked.id, now) {
            let _ = match kind {
                KeyKind::Partner => self.store.touch_api_key(usher_engine::ApiKeyId(checked.id), now).await,
                KeyKind::Gate => self.store.touch_device(usher_engine::DeviceId(checked.id), now).await,
            };
        }
        Ok(checked.principal.clone())
    }

    fn cached(&self, token: &str, now: Millis) -> Option<Arc<Checked>> {
        let cache = self.cache.lock().ok()?;
        let (at, c) = cache.get(token)?;
        (now.0 - at.0 <= CREDENTIAL_CACHE_MS).then(|| c.clone())
    }

    fn remember(&self, token: String, now: Millis, c: Arc<Checked>) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CREDENTIAL_CACHE_ENTRIES_MAX {
                cache.clear();
            }
            cache.insert(token, (now, c));
        }
    }

    /// Forgets every cached credential (after a revocation on this node).
    pub fn forget_credentials(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    fn due_touch(&self, id: uuid::Uuid, now: Millis) -> bool {
        let Ok(mut t) = self.touched.lock() else { return false };
        if t.len() >= CREDENTIAL_CACHE_ENTRIES_MAX {
            t.clear();
        }
        match t.get(&id) {
            Some(last) if now.0 - last.0 < LAST_USED_WRITE_MS_MIN => false,
            _ => {
                t.insert(id, now);
                true
            }
        }
    }

    /// Spends one request of the caller's rate; anonymous callers are
    /// counted by address.
    pub fn charge(&self, caller: &Caller) -> Result<(), ApiError> {
        let (bucket, key) = match &caller.principal {
            Principal::Anonymous => (Bucket::Anonymous, caller.network()),
            Principal::User(_) | Principal::Guest(_) => (Bucket::Customer, caller.principal.key_scope().unwrap_or_default()),
            Principal::Partner(_) => (Bucket::Partner, caller.principal.key_scope().unwrap_or_default()),
            Principal::Gate(_) => (Bucket::Gate, caller.principal.key_scope().unwrap_or_default()),
        };
        self.limit(bucket, key)
    }

    /// One request against `bucket` for `key`, refused with RESOURCE_EXHAUSTED
    /// / 429 and how long to wait.
    pub fn limit(&self, bucket: Bucket, key: impl Into<String>) -> Result<(), ApiError> {
        self.rates.check(bucket, key).map_err(|wait| {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut e = ApiError::new(
                ErrorCode::ResourceExhausted,
                Reason::RateLimited,
                format!("too many requests; retry in {secs} second{}", if secs == 1 { "" } else { "s" }),
            );
            e.retry_after_s = Some(secs.max(1));
            e
        })
    }

    /// Runs a password hash (or check) on the blocking pool, at most
    /// `PASSWORD_HASHES_AT_ONCE_MAX` at once; past a short wait the caller
    /// is told to retry (RESOURCE_EXHAUSTED / 429).
    pub async fn hash_slot<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let busy = || {
            let mut e = ApiError::new(ErrorCode::ResourceExhausted, Reason::Busy, "too many sign-ins at once; retry in a second");
            e.retry_after_s = Some(1);
            e
        };
        let _permit = tokio::time::timeout(std::time::Duration::from_millis(PASSWORD_HASH_WAIT_MS_MAX), self.hashing.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::new(ErrorCode::Internal, Reason::Internal, format!("hashing: {e}")))
    }

    /// An access token for a user with these memberships: (token, expiry).
    pub fn access_token(&self, user: UserId, admin: bool, memberships: &[Membership], now: Millis) -> Result<(String, Millis), ApiError> {
        let orgs = memberships.iter().map(|m| (m.org.to_string(), m.role.as_str().to_owned())).collect();
        self.sign_token(user.to_string(), TYP_ACCESS, admin, orgs, now, self.cfg.access_ttl_ms)
    }

    /// A guest token with a fresh guest id: (token, guest, expiry).
    pub fn guest_token(&self, now: Millis) -> Result<(String, GuestId, Millis), ApiError> {
        let guest = GuestId(uuid::Uuid::new_v4());
        let (t, exp) = self.sign_token(guest.to_string(), TYP_GUEST, false, Vec::new(), now, self.cfg.guest_ttl_ms)?;
        Ok((t, guest, exp))
    }

    /// A token of type `typ` for `sub` (with this server's issuer and
    /// audience and a fresh `jti`) that expires `ttl_ms` after `now`, to
    /// the second: (token, expiry).
    fn sign_token(
        &self,
        sub: String,
        typ: &str,
        adm: bool,
        orgs: Vec<(String, String)>,
        now: Millis,
        ttl_ms: u64,
    ) -> Result<(String, Millis), ApiError> {
        let claims = Claims {
            iss: self.keys.issuer().to_owned(),
            aud: self.keys.audience().to_owned(),
            sub,
            exp: now.plus_ms(ttl_ms).0 / 1000,
            iat: now.0 / 1000,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            typ: typ.into(),
            adm,
            orgs,
        };
        let t =
            self.keys.sign(&claims).map_err(|e| ApiError::new(ErrorCode::Internal, Reason::Internal, format!("signing a token: {e}")))?;
        Ok((t, Millis(claims.exp * 1000)))
    }
}

fn principal_of(c: &Claims) -> Option<Principal> {
    if c.typ == TYP_GUEST {
        return GuestId::parse(&c.sub).ok().map(Principal::Guest);
    }
    let id = UserId::parse(&c.sub).ok()?;
    let memberships = c
        .orgs
        .iter()
        .map(|(o, r)| Some(Membership { org: OrgId::parse(o).ok()?, role: Role::parse(r).ok()? }))
        .collect::<Option<Vec<_>>>()?;
    Some(Principal::User(UserPrincipal { id, admin: c.adm, memberships }))
}

/// Parses a list of event ids (API keys and devices are scoped to them).
pub fn event_ids(ids: &[String]) -> Result<Vec<EventId>, ApiError> {
    ids.iter().map(|e| Ok(EventId::parse(e)?)).collect()
}

impl Caller {
    /// The request's idempotency key, scoped to this caller: two callers'
    /// keys never meet, so nobody can replay another's key to read its answer.
    pub fn key(&self, raw: &str) -> Result<usher_engine::IdempotencyKey, ApiError> {
        let key = usher_engine::IdempotencyKey::parse(raw)?;
        let scope =
            self.principal.key_scope().ok_or_else(|| ApiError::denied(usher_engine::Denied::Unauthenticated, Reason::NotFound, ""))?;
        Ok(usher_engine::IdempotencyKey::scoped(&scope, &key))
    }

    /// May this caller use `cap` on a resource of `org`? Another tenant's
    /// resource answers `reason` NOT_FOUND naming `what`.
    pub fn may(
        &self,
        org: OrgId,
        cap: usher_engine::Cap,
        reason: crate::error::Reason,
        what: impl std::fmt::Display,
    ) -> Result<(), ApiError> {
        self.principal.may(org, cap).map_err(|d| ApiError::denied(d, reason, what))
    }

    /// An audit entry for an action of this caller on `org`.
    pub fn audit(
        &self,
        org: OrgId,
        now: Millis,
        action: &str,
        target: impl ToString,
        detail: impl Into<String>,
    ) -> usher_actors::AuditEntry {
        usher_actors::AuditEntry {
            org,
            at: now,
            actor: self.principal.actor(),
            address: self.address.clone(),
            action: action.into(),
            target: target.to_string(),
            detail: detail.into(),
        }
    }

    /// The same for an event's actor handle (its status as of the last
    /// batch): checked before anything about the event is validated, so a
    /// stranger learns nothing of a draft, not even its seat labels.
    pub fn sees_handle(&self, h: &usher_actors::EventHandle) -> bool {
        use usher_engine::EventStatus::*;
        matches!(h.status.get(), OnSale | SalesClosed) || self.principal.sees_unlisted(h.org, h.event_id)
    }

    /// Is an event with this status and organization visible to the caller?
    /// Drafts and cancelled events are their organization's only.
    pub fn sees(&self, config: &usher_engine::EventConfig) -> bool {
        use usher_engine::EventStatus::*;
        matches!(config.status, OnSale | SalesClosed) || self.principal.sees_unlisted(config.org_id, config.id)
    }
}
