//! The permission table: every gRPC method and every HTTP route, and who may
//! call it. One table, read by one gRPC layer and one HTTP middleware; a door
//! that is not in it is refused (fail closed), and a test enumerates the
//! descriptor set and the router against it.
//!
//! The table checks the kind of caller (a customer, a partner with a scope,
//! a member whose role allows something somewhere, a gate). The handler then
//! checks the resource itself: its organization (`Principal::may`, another
//! tenant's resource is NOT_FOUND), or that the customer is the caller.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use usher_engine::{Cap, Millis, Scope, Who};

use crate::auth::{Auth, Caller};
use crate::error::{ApiError, Reason};

const ANYONE: &[Who] = &[Who::Anyone];
const SIGNED: &[Who] = &[Who::Signed];
const ADMIN: &[Who] = &[Who::Admin];
const USER: &[Who] = &[Who::User];
const MANAGE_VENUES: &[Who] = &[Who::Org(Cap::ManageVenues)];
const MANAGE_EVENTS: &[Who] = &[Who::Org(Cap::ManageEvents)];
const VENUE_READ: &[Who] = &[Who::Org(Cap::ViewOrders), Who::Org(Cap::ManageVenues), Who::Partner(Scope::EventsRead)];
const HOLDS: &[Who] = &[Who::Customer, Who::Partner(Scope::Holds), Who::Org(Cap::Sell)];
const HOLD_READ: &[Who] = &[Who::Customer, Who::Partner(Scope::Holds), Who::Org(Cap::ViewOrders)];
const ORDER_WRITE: &[Who] = &[Who::Customer, Who::Partner(Scope::Orders), Who::Org(Cap::Sell)];
const ORDER_READ: &[Who] = &[Who::Customer, Who::Partner(Scope::Orders), Who::Org(Cap::ViewOrders)];
const ORDER_CANCEL: &[Who] = &[Who::Customer, Who::Partner(Scope::Orders), Who::Org(Cap::ChangeOrders)];
const PAY: &[Who] = &[Who::Customer, Who::Partner(Scope::Payments), Who::Org(Cap::Sell)];
const PAYMENT_READ: &[Who] = &[Who::Customer, Who::Partner(Scope::Payments), Who::Org(Cap::ViewOrders)];
const TICKETS: &[Who] = &[Who::Customer, Who::Partner(Scope::Tickets), Who::Org(Cap::ViewOrders)];
const SCAN: &[Who] = &[Who::Gate, Who::Org(Cap::Scan)];
const MEMBERS: &[Who] = &[Who::Org(Cap::ManageMembers)];
const KEYS: &[Who] = &[Who::Org(Cap::ManageKeys)];
const AUDIT: &[Who] = &[Who::Org(Cap::ViewAudit)];
const REPORTS: &[Who] = &[Who::Org(Cap::ViewOrders)];
/// No principal: node-to-node calls are admitted by the cluster's shared
/// secret alone (`GrpcAuth`), before any client credential is looked at.
const NODES: &[Who] = &[];

/// Where a gRPC method runs in a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// On the node that took the call.
    Here,
    /// On the owner of the request's event: a node that finds the event
    /// owned elsewhere forwards the call once (`Ctx::routed`), and the
    /// owner serves it from its node service (`node_service`).
    ToOwner,
}

/// One gRPC method: the facts every layer reads (the permission check, the
/// metrics label, routing to the event's owner and the node service's
/// dispatch). Adding a method is one row below plus its handler.
#[derive(Debug)]
pub struct Method {
    /// The full path, `/package.Service/Method`: also the metrics label
    /// (`usher_grpc_requests_total{method}`), a `&'static str` from a closed set.
    pub path: &'static str,
    /// Who may call it (an empty list: node-to-node only).
    pub who: &'static [Who],
    pub route: Route,
}

impl Method {
    /// Whether a call is sent on to the event's owner.
    pub const fn to_owner(&self) -> bool {
        matches!(self.route, Route::ToOwner)
    }
}

/// Declares each method as a constant and lists them all in `GRPC`.
macro_rules! methods {
    ($($name:ident = $path:literal, $who:expr, $route:ident;)*) => {
        $(pub const $name: Method = Method { path: $path, who: $who, route: Route::$route };)*
        /// Every gRPC method, one row each (a test holds it against the
        /// descriptor sets both ways).
        pub const GRPC: &[&Method] = &[$(&$name),*];
    };
}

methods! {
    HEALTH_CHECK = "/grpc.health.v1.Health/Check", ANYONE, Here;
    HEALTH_WATCH = "/grpc.health.v1.Health/Watch", ANYONE, Here;
    REFLECTION_V1_SERVER_REFLECTION_INFO = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", ANYONE, Here;
    REFLECTION_V1ALPHA_SERVER_REFLECTION_INFO = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", ANYONE, Here;
    CATALOG_CREATE_VENUE = "/usher.v1.CatalogService/CreateVenue", MANAGE_VENUES, Here;
    CATALOG_GET_VENUE = "/usher.v1.CatalogService/GetVenue", VENUE_READ, Here;
    CATALOG_CREATE_EVENT = "/usher.v1.CatalogService/CreateEvent", MANAGE_EVENTS, Here;
    CATALOG_OPEN_SALES = "/usher.v1.CatalogService/OpenSales", MANAGE_EVENTS, ToOwner;
    CATALOG_CLOSE_SALES = "/usher.v1.CatalogService/CloseSales", MANAGE_EVENTS, ToOwner;
    CATALOG_CANCEL_EVENT = "/usher.v1.CatalogService/CancelEvent", MANAGE_EVENTS, ToOwner;
    CATALOG_BLOCK_SEATS = "/usher.v1.CatalogService/BlockSeats", MANAGE_EVENTS, ToOwner;
    CATALOG_UNBLOCK_SEATS = "/usher.v1.CatalogService/UnblockSeats", MANAGE_EVENTS, ToOwner;
    // Public: on-sale events; drafts and cancelled events only to their organization (checked in the handler).
    CATALOG_LIST_EVENTS = "/usher.v1.CatalogService/ListEvents", ANYONE, Here;
    CATALOG_GET_EVENT = "/usher.v1.CatalogService/GetEvent", ANYONE, ToOwner;
    CATALOG_GET_SEAT_MAP = "/usher.v1.CatalogService/GetSeatMap", ANYONE, ToOwner;
    CATALOG_WATCH_SEATS = "/usher.v1.CatalogService/WatchSeats", ANYONE, Here;
    CATALOG_GET_SEAT_LAYOUT = "/usher.v1.CatalogService/GetSeatLayout", ANYONE, ToOwner;
    CATALOG_GET_SEAT_STATUS = "/usher.v1.CatalogService/GetSeatStatus", ANYONE, ToOwner;
    INVENTORY_HOLD_SEATS = "/usher.v1.InventoryService/HoldSeats", HOLDS, ToOwner;
    INVENTORY_HOLD_BEST_AVAILABLE = "/usher.v1.InventoryService/HoldBestAvailable", HOLDS, ToOwner;
    INVENTORY_GET_HOLD = "/usher.v1.InventoryService/GetHold", HOLD_READ, ToOwner;
    INVENTORY_RELEASE_HOLD = "/usher.v1.InventoryService/ReleaseHold", HOLDS, ToOwner;
    ORDERING_CREATE_ORDER = "/usher.v1.OrderingService/CreateOrder", ORDER_WRITE, ToOwner;
    ORDERING_GET_ORDER = "/usher.v1.OrderingService/GetOrder", ORDER_READ, Here;
    ORDERING_LIST_ORDERS = "/usher.v1.OrderingService/ListOrders", ORDER_READ, Here;
    ORDERING_CANCEL_ORDER = "/usher.v1.OrderingService/CancelOrder", ORDER_CANCEL, ToOwner;
    PAYMENT_PAY_ORDER = "/usher.v1.PaymentService/PayOrder", PAY, ToOwner;
    PAYMENT_GET_PAYMENT = "/usher.v1.PaymentService/GetPayment", PAYMENT_READ, Here;
    FULFILLMENT_LIST_TICKETS = "/usher.v1.FulfillmentService/ListTickets", TICKETS, Here;
    FULFILLMENT_DOWNLOAD_TICKETS = "/usher.v1.FulfillmentService/DownloadTickets", TICKETS, Here;
    FULFILLMENT_GET_PUBLIC_KEY = "/usher.v1.FulfillmentService/GetPublicKey", ANYONE, Here;
    CHECK_IN_SCAN = "/usher.v1.CheckInService/Scan", SCAN, Here;
    REPORTING_GET_SALES_REPORT = "/usher.v1.ReportingService/GetSalesReport", REPORTS, Here;
    WEBHOOK_CREATE_WEBHOOK_ENDPOINT = "/usher.v1.WebhookService/CreateWebhookEndpoint", KEYS, Here;
    WEBHOOK_LIST_WEBHOOK_ENDPOINTS = "/usher.v1.WebhookService/ListWebhookEndpoints", KEYS, Here;
    WEBHOOK_ROTATE_WEBHOOK_SECRET = "/usher.v1.WebhookService/RotateWebhookSecret", KEYS, Here;
    WEBHOOK_DELETE_WEBHOOK_ENDPOINT = "/usher.v1.WebhookService/DeleteWebhookEndpoint", KEYS, Here;
    WEBHOOK_LIST_WEBHOOK_DELIVERIES = "/usher.v1.WebhookService/ListWebhookDeliveries", KEYS, Here;
    WEBHOOK_REDELIVER_WEBHOOK = "/usher.v1.WebhookService/RedeliverWebhook", KEYS, Here;
    IDENTITY_REGISTER = "/usher.v1.IdentityService/Register", ANYONE, Here;
    IDENTITY_LOG_IN = "/usher.v1.IdentityService/LogIn", ANYONE, Here;
    IDENTITY_REFRESH = "/usher.v1.IdentityService/Refresh", ANYONE, Here;
    IDENTITY_LOG_OUT = "/usher.v1.IdentityService/LogOut", ANYONE, Here;
    IDENTITY_START_GUEST_SESSION = "/usher.v1.IdentityService/StartGuestSession", ANYONE, Here;
    IDENTITY_ME = "/usher.v1.IdentityService/Me", SIGNED, Here;
    IDENTITY_CREATE_ORGANIZATION = "/usher.v1.IdentityService/CreateOrganization", ADMIN, Here;
    IDENTITY_LIST_ORGANIZATIONS = "/usher.v1.IdentityService/ListOrganizations", USER, Here;
    IDENTITY_SET_MEMBER = "/usher.v1.IdentityService/SetMember", MEMBERS, Here;
    IDENTITY_REMOVE_MEMBER = "/usher.v1.IdentityService/RemoveMember", MEMBERS, Here;
    IDENTITY_LIST_MEMBERS = "/usher.v1.IdentityService/ListMembers", MEMBERS, Here;
    IDENTITY_CREATE_API_KEY = "/usher.v1.IdentityService/CreateApiKey", KEYS, Here;
    IDENTITY_LIST_API_KEYS = "/usher.v1.IdentityService/ListApiKeys", KEYS, Here;
    IDENTITY_REVOKE_API_KEY = "/usher.v1.IdentityService/RevokeApiKey", KEYS, Here;
    IDENTITY_CREATE_DEVICE_TOKEN = "/usher.v1.IdentityService/CreateDeviceToken", KEYS, Here;
    IDENTITY_LIST_DEVICE_TOKENS = "/usher.v1.IdentityService/ListDeviceTokens", KEYS, Here;
    IDENTITY_REVOKE_DEVICE_TOKEN = "/usher.v1.IdentityService/RevokeDeviceToken", KEYS, Here;
    IDENTITY_LIST_AUDIT_LOG = "/usher.v1.IdentityService/ListAuditLog", AUDIT, Here;
    IDENTITY_ROTATE_SIGNING_KEY = "/usher.v1.IdentityService/RotateSigningKey", ADMIN, Here;
    NODE_FORWARD = "/usher.cluster.v1.NodeService/Forward", NODES, Here;
    NODE_WATCH = "/usher.cluster.v1.NodeService/Watch", NODES, Here;
}

/// The node-to-node methods' prefix (`NODES` in the table).
const NODE_PREFIX: &str = "/usher.cluster.";

/// Every HTTP route: `METHOD path-template` → who may call it.
pub const HTTP: &[(&str, &[Who])] = &[
    ("GET /", ANYONE),
    ("GET /healthz", ANYONE),
    ("GET /readyz", ANYONE),
    ("GET /api/events/{id}/sales", REPORTS),
    // The page holds no data; its script reads /api/events/{id}/sales.
    ("GET /sales/{id}", ANYONE),
    ("GET /.well-known/jwks.json", ANYONE),
    ("GET /api/events", ANYONE),
    ("GET /api/events/{id}", ANYONE),
    ("GET /api/events/{id}/seats", ANYONE),
    ("GET /api/events/{id}/seats/live", ANYONE),
    ("GET /api/events/{id}/seats/status", ANYONE),
    ("GET /api/events/{id}/layout", ANYONE),
    ("POST /api/events/{id}/holds", HOLDS),
    ("GET /api/holds/{id}", HOLD_READ),
    ("DELETE /api/holds/{id}", HOLDS),
    ("GET /api/orders", ORDER_READ),
    ("POST /api/orders", ORDER_WRITE),
    ("GET /api/orders/{id}", ORDER_READ),
    ("POST /api/orders/{id}/cancel", ORDER_CANCEL),
    ("POST /api/orders/{id}/pay", PAY),
    ("GET /api/orders/{id}/tickets", TICKETS),
    ("GET /api/orders/{id}/tickets.pdf", TICKETS),
    ("GET /api/ticket-key", ANYONE),
    // The emailed link: the order's secret in the query is the credential.
    ("GET /api/order-links/{id}", ANYONE),
    ("GET /api/order-links/{id}/tickets.pdf", ANYONE),
    ("POST /api/scans", SCAN),
    ("POST /api/auth/register", ANYONE),
    ("POST /api/auth/login", ANYONE),
    ("POST /api/auth/refresh", ANYONE),
    ("POST /api/auth/logout", ANYONE),
    ("POST /api/auth/guest", ANYONE),
    ("GET /api/me", SIGNED),
    ("GET /api/orgs", USER),
    ("POST /api/orgs", ADMIN),
    ("GET /api/orgs/{org}/members", MEMBERS),
    ("PUT /api/orgs/{org}/members", MEMBERS),
    ("DELETE /api/orgs/{org}/members/{user}", MEMBERS),
    ("GET /api/orgs/{org}/api-keys", KEYS),
    ("POST /api/orgs/{org}/api-keys", KEYS),
    ("DELETE /api/orgs/{org}/api-keys/{id}", KEYS),
    ("GET /api/orgs/{org}/devices", KEYS),
    ("POST /api/orgs/{org}/devices", KEYS),
    ("DELETE /api/orgs/{org}/devices/{id}", KEYS),
    ("GET /api/orgs/{org}/audit", AUDIT),
    ("GET /api/orgs/{org}/webhooks", KEYS),
    ("POST /api/orgs/{org}/webhooks", KEYS),
    ("DELETE /api/webhooks/{id}", KEYS),
    ("POST /api/webhooks/{id}/rotate-secret", KEYS),
    ("GET /api/webhooks/{id}/deliveries", KEYS),
    ("POST /api/webhook-deliveries/{id}/redeliver", KEYS),
];

/// The method with this path, if it has a row.
pub fn grpc_method(path: &str) -> Option<&'static Method> {
    GRPC.iter().copied().find(|m| m.path == path)
}

/// Who may call the method with this path (`None`: no row, nobody).
pub fn grpc_door(path: &str) -> Option<&'static [Who]> {
    grpc_method(path).map(|m| m.who)
}

pub fn http_door(method: &str, template: &str) -> Option<&'static [Who]> {
    HTTP.iter().find(|(d, _)| d.split_once(' ') == Some((method, template))).map(|(_, w)| *w)
}

/// Checks a caller against a door: credentials, rate, kind of caller.
/// `door` is `None` for a door missing from the table: refused.
pub async fn admit(
    auth: &Auth,
    door: Option<&'static [Who]>,
    bearer: Option<&str>,
    address: String,
    now: Millis,
) -> Result<Caller, ApiError> {
    let principal = match auth.authenticate(bearer, now).await {
        Ok(p) => p,
        Err(e) => {
            // Bad credentials are counted against the address, so guessing keys is rate limited too.
            auth.charge(&Caller::anonymous(address))?;
            return Err(e);
        }
    };
    check(auth, door, Caller::new(principal, address))
}

/// The door's rules for an authenticated caller.
fn check(auth: &Auth, door: Option<&'static [Who]>, caller: Caller) -> Result<Caller, ApiError> {
    let Some(who) = door else {
        return Err(ApiError::new(
            crate::error::ErrorCode::PermissionDenied,
            Reason::NoPermissionEntry,
            "this call has no entry in the permission table, so nobody may make it",
        ));
    };
    auth.charge(&caller)?;
    caller.principal.admitted(who).map_err(|d| ApiError::denied(d, Reason::NotFound, "resource"))?;
    Ok(caller)
}

fn bearer_of(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

// ---------------------------------------------------------------------------
// gRPC: a tower layer around every service.

/// Puts a `Caller` into every admitted request's extensions; answers the
/// others with the status of their refusal.
#[derive(Clone)]
pub struct GrpcAuthLayer {
    pub auth: Arc<Auth>,
    pub clock: usher_actors::Clock,
    /// In a cluster: the secret node-to-node calls carry, and this node's
    /// name (every answer's `usher-node`).
    pub cluster: Option<(crate::cluster::ClusterSecret, Arc<str>)>,
}

impl<S> tower::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;
    fn layer(&self, inner: S) -> GrpcAuth<S> {
        GrpcAuth { inner, auth: self.auth.clone(), clock: self.clock.clone(), cluster: self.cluster.clone() }
    }
}

#[derive(Clone)]
pub struct GrpcAuth<S> {
    inner: S,
    auth: Arc<Auth>,
    clock: usher_actors::Clock,
    cluster: Option<(crate::cluster::ClusterSecret, Arc<str>)>,
}

/// Runs `call` with this node as the one deciding (unless it forwards), and
/// returns its output with the name of the node that did decide.
pub(crate) async fn deciding<T>(node: Arc<str>, call: impl Future<Output = T>) -> (T, Option<String>) {
    crate::cluster::DECIDED_BY
        .scope(std::cell::RefCell::new(node.to_string()), async move { (call.await, crate::cluster::decided_by()) })
        .await
}

/// Names the node that decided in the answer's `usher-node` header.
fn name_node<B>(r: &mut http::Response<B>, by: Option<String>) {
    if let Some(v) = by.and_then(|n| http::HeaderValue::from_str(&n).ok()) {
        r.headers_mut().insert("usher-node", v);
    }
}

impl<S, B> tower::Service<http::Request<B>> for GrpcAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        let now = self.clock.now();
        let cluster = self.cluster.clone();
        Box::pin(async move {
            // Another node: the shared secret lets it in. Anyone else goes
            // through the table, whose entry admits no principal.
            if req.uri().path().starts_with(NODE_PREFIX)
                && let Some((secret, _)) = &cluster
                && secret.admits(bearer_of(req.headers()).as_deref())
            {
                return inner.call(req).await;
            }
            let address = req
                .extensions()
                .get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|i| i.remote_addr())
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let door = grpc_door(req.uri().path());
            match admit(&auth, door, bearer_of(req.headers()).as_deref(), address, now).await {
                Ok(mut caller) => {
                    caller.deadline = crate::conns::grpc_deadline(req.headers()).map(|d| std::time::Instant::now() + d);
                    req.extensions_mut().insert(caller);
                    match cluster {
                        None => inner.call(req).await,
                        Some((_, node)) => {
                            let (r, by) = deciding(node, inner.call(req)).await;
                            r.map(|mut r| {
                                name_node(&mut r, by);
                                r
                            })
                        }
                    }
                }
                Err(e) => Ok(tonic::Status::from(e).into_http()),
            }
        })
    }
}

/// The caller a gRPC handler serves (put there by `GrpcAuth`). Its absence
/// means the layer did not run: refused, never served anonymously.
pub fn caller<T>(req: &tonic::Request<T>) -> Result<Caller, tonic::Status> {
    req.extensions().get::<Caller>().cloned().ok_or_else(|| tonic::Status::internal("no caller on the request"))
}

// ---------------------------------------------------------------------------
// HTTP: a middleware on every route.

/// The storefront's cookies: a signed-in user's access token, or a guest's.
pub const SESSION_COOKIE: &str = "usher_session";
pub const GUEST_COOKIE: &str = "usher_guest";
/// The refresh token's cookie; sent only to `/api/auth/…`.
pub const REFRESH_COOKIE: &str = "usher_refresh";

/// The value of the request's cookie `name`, if it sent one.
pub(crate) fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[derive(Clone)]
pub struct HttpAuthState {
    pub auth: Arc<Auth>,
    pub clock: usher_actors::Clock,
    /// In a cluster, this node's name (every answer's `usher-node`).
    pub node: Option<Arc<str>>,
}

pub async fn http_auth(
    axum::extract::State(s): axum::extract::State<HttpAuthState>,
    matched: Option<axum::extract::MatchedPath>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let door = matched.as_ref().and_then(|m| http_door(req.method().as_str(), m.as_str()));
    let address = peer.ip().to_string();
    let now = s.clock.now();
    let headers = req.headers();
    let admitted = match bearer_of(headers) {
        // An explicit credential must be good.
        Some(b) => admit(&s.auth, door, Some(&b), address, now).await,
        None => {
            // Cookies are ambient: a stale one is ignored (the page then
            // refreshes or signs in), the session before the guest's.
            let mut principal = usher_engine::Principal::Anonymous;
            for name in [SESSION_COOKIE, GUEST_COOKIE] {
                if let Some(t) = cookie(headers, name)
                    && let Ok(p) = s.auth.authenticate(Some(t), now).await
                {
                    principal = p;
                    break;
                }
            }
            // Cookies ride along on cross-site requests: a state-changing
            // request carrying any of ours (the refresh cookie included,
            // which the auth routes act on) must come from this origin.
            let has_cookie = [SESSION_COOKIE, GUEST_COOKIE, REFRESH_COOKIE].iter().any(|n| cookie(headers, n).is_some());
            if has_cookie && req.method() != http::Method::GET && !same_origin(headers) {
                return ApiError::new(
                    crate::error::ErrorCode::PermissionDenied,
                    Reason::CrossOrigin,
                    "a request signed in by cookie must come from this site",
                )
                .into_response();
            }
            check(&s.auth, door, Caller::new(principal, address))
        }
    };
    match admitted {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            match s.node.clone() {
                None => next.run(req).await,
                Some(node) => {
                    let (mut r, by) = deciding(node, next.run(req)).await;
                    name_node(&mut r, by);
                    r
                }
            }
        }
        Err(e) => e.into_response(),
    }
}

/// No `Origin`, or one whose host is this request's `Host`.
fn same_origin(headers: &http::HeaderMap) -> bool {
    let Some(origin) = headers.get(http::header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    origin.split_once("://").is_some_and(|(_, h)| h == host)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every method in the descriptor set has exactly one entry, and every
    /// entry names a real method (no stale doors).
    #[test]
    fn every_grpc_method_has_one_entry() {
        use prost::Message;
        let mut methods = Vec::new();
        for set in [usher_proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET] {
            let fds = prost_types::FileDescriptorSet::decode(set).unwrap();
            for f in fds.file {
                for s in &f.service {
                    for m in &s.method {
                        methods.push(format!("/{}.{}/{}", f.package(), s.name(), m.name()));
                    }
                }
            }
        }
        methods.push("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo".into());
        methods.push("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo".into());
        for m in &methods {
            assert_eq!(GRPC.iter().filter(|r| r.path == m).count(), 1, "{m} needs exactly one entry in doors::GRPC");
        }
        for r in GRPC {
            assert!(methods.iter().any(|m| m == r.path), "doors::GRPC names {}, which no service has", r.path);
        }
    }

    #[test]
    fn http_entries_are_unique() {
        for (d, _) in HTTP {
            assert_eq!(HTTP.iter().filter(|(x, _)| x == d).count(), 1, "{d} is listed twice");
        }
    }
}
