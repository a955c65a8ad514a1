//! The identity calls over HTTP: sign-up, sign-in, refresh, log-out, guest
//! sessions, `me`, organizations, members, API keys, gate devices and the
//! audit log, as JSON, through the same `Identity` methods as gRPC.
//!
//! A browser asks for `"cookie": true` and gets HttpOnly, `SameSite=Strict`
//! cookies instead of tokens in the body (so page scripts never see them):
//! `usher_session` (the access token), `usher_refresh` (sent only to
//! `/api/auth/…`) or `usher_guest`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use usher_proto::v1 as pb;

use crate::doors::{GUEST_COOKIE, REFRESH_COOKIE, SESSION_COOKIE};
use crate::error::ApiError;
use crate::json::{Call, Routes, body_or_default, idempotency_key, parse, query, ts};

use super::Identity;

/// The service's JSON routes, over its state.
pub(crate) fn routes(service: Identity) -> Router {
    Routes::new()
        .add("POST", "/api/auth/register", post(register))
        .add("POST", "/api/auth/login", post(login))
        .add("POST", "/api/auth/refresh", post(refresh))
        .add("POST", "/api/auth/logout", post(logout))
        .add("POST", "/api/auth/guest", post(guest))
        .add("GET", "/api/me", get(me))
        .add("GET", "/api/orgs", get(list_orgs))
        .add("POST", "/api/orgs", post(create_org))
        .add("GET", "/api/orgs/{org}/members", get(members))
        .add("PUT", "/api/orgs/{org}/members", put(set_member))
        .add("DELETE", "/api/orgs/{org}/members/{user}", delete(remove_member))
        .add("GET", "/api/orgs/{org}/api-keys", get(api_keys))
        .add("POST", "/api/orgs/{org}/api-keys", post(create_api_key))
        .add("DELETE", "/api/orgs/{org}/api-keys/{id}", delete(revoke_api_key))
        .add("GET", "/api/orgs/{org}/devices", get(devices))
        .add("POST", "/api/orgs/{org}/devices", post(create_device))
        .add("DELETE", "/api/orgs/{org}/devices/{id}", delete(revoke_device))
        .add("GET", "/api/orgs/{org}/audit", get(audit))
        .with_state(Arc::new(service))
}

fn me_json(m: &pb::MeResponse) -> Value {
    json!({
        "kind": m.kind, "id": m.id, "email": m.email, "name": m.name, "customer_id": m.customer_id, "admin": m.admin,
        "memberships": m.memberships.iter().map(|x| json!({"org_id": x.org_id, "org_name": x.org_name, "role": x.role})).collect::<Vec<_>>(),
        "org_id": m.org_id, "scopes": m.scopes, "event_ids": m.event_ids, "gate": m.gate,
    })
}

fn cookie(name: &str, value: &str, path: &str, max_age_s: i64) -> HeaderValue {
    // Secure is left to the deployment's TLS terminator; the storefront
    // here serves plain HTTP on loopback.
    HeaderValue::from_str(&format!("{name}={value}; Path={path}; Max-Age={max_age_s}; HttpOnly; SameSite=Strict"))
        .unwrap_or(HeaderValue::from_static(""))
}

fn seconds_until(t: &Option<prost_types::Timestamp>, now_s: i64) -> i64 {
    t.as_ref().map_or(0, |t| (t.seconds - now_s).max(0))
}

/// The session as JSON, or as cookies for a browser.
fn session(h: &Identity, s: pb::Session, as_cookie: bool, status: StatusCode) -> Response {
    let me = s.me.as_ref().map(me_json).unwrap_or(Value::Null);
    let body = if as_cookie {
        json!({"me": me, "access_expires_at": ts(&s.access_expires_at)})
    } else {
        json!({
            "access_token": s.access_token, "access_expires_at": ts(&s.access_expires_at),
            "refresh_token": s.refresh_token, "refresh_expires_at": ts(&s.refresh_expires_at), "me": me,
        })
    };
    let mut r = (status, Json(body)).into_response();
    if as_cookie {
        let now_s = h.ctx.now().0 / 1000;
        let hs = r.headers_mut();
        if s.refresh_token.is_empty() {
            hs.append(header::SET_COOKIE, cookie(GUEST_COOKIE, &s.access_token, "/", seconds_until(&s.access_expires_at, now_s)));
        } else {
            hs.append(header::SET_COOKIE, cookie(SESSION_COOKIE, &s.access_token, "/", seconds_until(&s.access_expires_at, now_s)));
            hs.append(
                header::SET_COOKIE,
                cookie(REFRESH_COOKIE, &s.refresh_token, "/api/auth", seconds_until(&s.refresh_expires_at, now_s)),
            );
        }
    }
    r
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
    name: String,
    cookie: bool,
}

async fn register(Call(h, c): Call<Identity>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let b: Credentials = parse(&headers, &body)?;
    let s = h.register(&c, pb::RegisterRequest { email: b.email, password: b.password, name: b.name }).await?;
    Ok(session(&h, s, b.cookie, StatusCode::CREATED))
}

async fn login(Call(h, c): Call<Identity>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let b: Credentials = parse(&headers, &body)?;
    let s = h.log_in(&c, pb::LogInRequest { email: b.email, password: b.password }).await?;
    Ok(session(&h, s, b.cookie, StatusCode::OK))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
    cookie: bool,
}

impl RefreshBody {
    /// The refresh token in the body, else the browser's refresh cookie
    /// (empty when neither is there), and whether to answer with cookies.
    fn token(self, headers: &HeaderMap) -> (String, bool) {
        if self.refresh_token.is_empty() {
            (crate::doors::cookie(headers, REFRESH_COOKIE).unwrap_or_default().to_owned(), true)
        } else {
            (self.refresh_token, self.cookie)
        }
    }
}

async fn refresh(Call(h, c): Call<Identity>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let (token, as_cookie) = body_or_default::<RefreshBody>(&headers, &body)?.token(&headers);
    let s = h.refresh(&c, pb::RefreshRequest { refresh_token: token }).await?;
    Ok(session(&h, s, as_cookie, StatusCode::OK))
}

async fn logout(State(h): State<Arc<Identity>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let (token, _) = body_or_default::<RefreshBody>(&headers, &body)?.token(&headers);
    h.log_out(pb::LogOutRequest { refresh_token: token }).await?;
    let mut r = Json(json!({})).into_response();
    for (name, path) in [(SESSION_COOKIE, "/"), (REFRESH_COOKIE, "/api/auth"), (GUEST_COOKIE, "/")] {
        r.headers_mut().append(header::SET_COOKIE, cookie(name, "", path, 0));
    }
    Ok(r)
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct GuestBody {
    cookie: bool,
}

async fn guest(Call(h, c): Call<Identity>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let b: GuestBody = body_or_default(&headers, &body)?;
    let s = h.guest(&c).await?;
    Ok(session(&h, s, b.cookie, StatusCode::CREATED))
}

async fn me(Call(h, c): Call<Identity>) -> Result<Json<Value>, ApiError> {
    Ok(Json(me_json(&h.me(&c).await?)))
}

fn org_json(o: &pb::Organization) -> Value {
    json!({"org_id": o.org_id, "name": o.name, "created_at": ts(&o.created_at)})
}

async fn list_orgs(Call(h, c): Call<Identity>) -> Result<Json<Value>, ApiError> {
    let r = h.list_orgs(&c).await?;
    Ok(Json(json!({"organizations": r.organizations.iter().map(org_json).collect::<Vec<_>>()})))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct OrgBody {
    name: String,
    owner_email: String,
    idempotency_key: String,
}

async fn create_org(Call(h, c): Call<Identity>, headers: HeaderMap, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b: OrgBody = parse(&headers, &body)?;
    let r = pb::CreateOrganizationRequest {
        idempotency_key: idempotency_key(&headers, &b.idempotency_key),
        name: b.name,
        owner_email: b.owner_email,
    };
    Ok((StatusCode::CREATED, Json(org_json(&h.create_org(&c, r).await?))))
}

fn member_json(m: &pb::Member) -> Value {
    json!({"org_id": m.org_id, "user_id": m.user_id, "email": m.email, "role": m.role, "added_at": ts(&m.added_at)})
}

async fn members(Call(h, c): Call<Identity>, Path(org): Path<String>) -> Result<Json<Value>, ApiError> {
    let r = h.members(&c, pb::ListMembersRequest { org_id: org }).await?;
    Ok(Json(json!({"members": r.members.iter().map(member_json).collect::<Vec<_>>()})))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct MemberBody {
    email: String,
    role: String,
    idempotency_key: String,
}

async fn set_member(Call(h, c): Call<Identity>, Path(org): Path<String>, headers: HeaderMap, body: Bytes) -> Result<Json<Value>, ApiError> {
    let b: MemberBody = parse(&headers, &body)?;
    let r =
        pb::SetMemberRequest { idempotency_key: idempotency_key(&headers, &b.idempotency_key), org_id: org, email: b.email, role: b.role };
    Ok(Json(member_json(&h.set_member(&c, r).await?)))
}

async fn remove_member(
    Call(h, c): Call<Identity>,
    Path((org, user)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let r = pb::RemoveMemberRequest { idempotency_key: idempotency_key(&headers, ""), org_id: org, user_id: user };
    h.remove_member(&c, r).await?;
    Ok(Json(json!({})))
}

fn key_json(k: &pb::ApiKey) -> Value {
    json!({
        "api_key_id": k.api_key_id, "partner_id": k.partner_id, "partner_name": k.partner_name, "org_id": k.org_id, "prefix": k.prefix,
        "scopes": k.scopes, "event_ids": k.event_ids, "expires_at": ts(&k.expires_at), "created_at": ts(&k.created_at),
        "last_used_at": ts(&k.last_used_at), "revoked_at": ts(&k.revoked_at),
    })
}

async fn api_keys(Call(h, c): Call<Identity>, Path(org): Path<String>) -> Result<Json<Value>, ApiError> {
    let r = h.api_keys(&c, pb::ListApiKeysRequest { org_id: org }).await?;
    Ok(Json(json!({"keys": r.keys.iter().map(key_json).collect::<Vec<_>>()})))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct KeyBody {
    partner_name: String,
    partner_id: String,
    scopes: Vec<String>,
    event_ids: Vec<String>,
    /// RFC 3339.
    expires_at: String,
    idempotency_key: String,
}

async fn create_api_key(
    Call(h, c): Call<Identity>,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b: KeyBody = parse(&headers, &body)?;
    let expires_at = if b.expires_at.is_empty() {
        None
    } else {
        Some(
            b.expires_at
                .parse::<prost_types::Timestamp>()
                .map_err(|_| ApiError::invalid("expires_at", "an RFC 3339 time, e.g. 2027-01-31T00:00:00Z"))?,
        )
    };
    let r = pb::CreateApiKeyRequest {
        idempotency_key: idempotency_key(&headers, &b.idempotency_key),
        org_id: org,
        partner_name: b.partner_name,
        partner_id: b.partner_id,
        scopes: b.scopes,
        event_ids: b.event_ids,
        expires_at,
    };
    let k = h.create_api_key(&c, r).await?;
    Ok((StatusCode::CREATED, Json(json!({"key": k.key.as_ref().map(key_json), "secret": k.secret}))))
}

async fn revoke_api_key(
    Call(h, c): Call<Identity>,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let r = pb::RevokeApiKeyRequest { idempotency_key: idempotency_key(&headers, ""), org_id: org, api_key_id: id };
    Ok(Json(key_json(&h.revoke_api_key(&c, r).await?)))
}

fn device_json(d: &pb::DeviceToken) -> Value {
    json!({
        "device_id": d.device_id, "org_id": d.org_id, "gate": d.gate, "prefix": d.prefix, "event_ids": d.event_ids,
        "created_at": ts(&d.created_at), "last_used_at": ts(&d.last_used_at), "revoked_at": ts(&d.revoked_at),
    })
}

async fn devices(Call(h, c): Call<Identity>, Path(org): Path<String>) -> Result<Json<Value>, ApiError> {
    let r = h.devices(&c, pb::ListDeviceTokensRequest { org_id: org }).await?;
    Ok(Json(json!({"devices": r.devices.iter().map(device_json).collect::<Vec<_>>()})))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct DeviceBody {
    gate: String,
    event_ids: Vec<String>,
    idempotency_key: String,
}

async fn create_device(
    Call(h, c): Call<Identity>,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b: DeviceBody = parse(&headers, &body)?;
    let r = pb::CreateDeviceTokenRequest {
        idempotency_key: idempotency_key(&headers, &b.idempotency_key),
        org_id: org,
        gate: b.gate,
        event_ids: b.event_ids,
    };
    let d = h.create_device(&c, r).await?;
    Ok((StatusCode::CREATED, Json(json!({"device": d.device.as_ref().map(device_json), "secret": d.secret}))))
}

async fn revoke_device(
    Call(h, c): Call<Identity>,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let r = pb::RevokeDeviceTokenRequest { idempotency_key: idempotency_key(&headers, ""), org_id: org, device_id: id };
    Ok(Json(device_json(&h.revoke_device(&c, r).await?)))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct AuditQuery {
    page_size: u32,
    page_token: String,
}

async fn audit(
    Call(h, c): Call<Identity>,
    Path(org): Path<String>,
    q: Result<axum::extract::Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let r = h.audit_log(&c, pb::ListAuditLogRequest { org_id: org, page_size: q.page_size, page_token: q.page_token }).await?;
    let records: Vec<Value> = r
        .records
        .iter()
        .map(|a| json!({"seq": a.seq, "at": ts(&a.at), "actor": a.actor, "address": a.address, "action": a.action, "target": a.target, "detail": a.detail}))
        .collect();
    Ok(Json(json!({"records": records, "next_page_token": r.next_page_token})))
}
