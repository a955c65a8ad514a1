//! `IdentityService`: sign-up, sign-in, refresh and log-out, guest sessions,
//! organizations and their members, partner API keys, gate device tokens,
//! the audit log and signing-key rotation. Inner methods return `ApiError`
//! and serve both doors; the permission table has already admitted the kind
//! of caller, and each method checks the organization it acts on.

use crate::limits::{AUDIT_PAGE_MAX, EMAIL_BYTES_MAX, GATE_BYTES_MAX, NAME_BYTES_MAX, PASSWORD_CHARS_MAX, PASSWORD_CHARS_MIN};
use std::sync::Arc;

use tonic::{Request, Response, Status};
use usher_actors::{ApiKeyRecord, AuditEntry, AuditRecord, DeviceRecord, MemberRecord, OrgRecord, RefreshRecord, RefreshUse, UserRecord};
use usher_engine::{ApiKeyId, Cap, DeviceId, EventId, Membership, Millis, OrgId, PartnerId, Principal, Role, Scope, UserId};
use usher_proto::v1::{self as pb, identity_service_server::IdentityService};

use crate::auth::rate::Bucket;
use crate::auth::{Auth, Caller, secrets};
use crate::convert;
use crate::ctx::Ctx;
use crate::ctx::KeySpace;
use crate::error::{ApiError, ErrorCode, Reason};

pub(crate) mod json;

#[derive(Clone)]
pub struct Identity {
    pub ctx: Ctx,
}

fn org_id(s: &str) -> Result<OrgId, ApiError> {
    Ok(OrgId::parse(s)?)
}

fn name(field: &'static str, s: &str, required: bool) -> Result<String, ApiError> {
    let s = s.trim();
    if required && s.is_empty() {
        return Err(ApiError::invalid(field, "is required"));
    }
    if s.len() > NAME_BYTES_MAX || s.chars().any(char::is_control) {
        return Err(ApiError::invalid(field, format!("at most {NAME_BYTES_MAX} bytes, no control characters")));
    }
    Ok(s.to_owned())
}

fn ts_opt(t: Option<Millis>) -> Option<prost_types::Timestamp> {
    t.map(convert::ts)
}

/// The organization a request names, once the caller may use `cap` there
/// (to anyone else it is not found).
fn org_for(c: &Caller, org_id: &str, cap: Cap) -> Result<OrgId, ApiError> {
    let org = OrgId::parse(org_id)?;
    c.may(org, cap, Reason::OrgNotFound, format_args!("organization {org}"))?;
    Ok(org)
}

/// The answer to a retry that arrives while the first request is still
/// creating `what`.
fn being_created(what: &str) -> ApiError {
    ApiError::new(ErrorCode::Unavailable, Reason::Unavailable, format!("the {what} is being created; retry with the same key"))
}

pub fn api_key_pb(k: &ApiKeyRecord) -> pb::ApiKey {
    pb::ApiKey {
        api_key_id: k.id.to_string(),
        partner_id: k.partner_id.to_string(),
        partner_name: k.partner_name.clone(),
        org_id: k.org.to_string(),
        prefix: k.prefix.clone(),
        scopes: k.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        event_ids: k.events.iter().map(ToString::to_string).collect(),
        expires_at: ts_opt(k.expires_at),
        created_at: Some(convert::ts(k.created_at)),
        last_used_at: ts_opt(k.last_used_at),
        revoked_at: ts_opt(k.revoked_at),
    }
}

pub fn device_pb(d: &DeviceRecord) -> pb::DeviceToken {
    pb::DeviceToken {
        device_id: d.id.to_string(),
        org_id: d.org.to_string(),
        gate: d.gate.clone(),
        prefix: d.prefix.clone(),
        event_ids: d.events.iter().map(ToString::to_string).collect(),
        created_at: Some(convert::ts(d.created_at)),
        last_used_at: ts_opt(d.last_used_at),
        revoked_at: ts_opt(d.revoked_at),
    }
}

fn member_pb(m: &MemberRecord) -> pb::Member {
    pb::Member {
        org_id: m.org.to_string(),
        user_id: m.user.to_string(),
        email: m.email.clone(),
        role: m.role.as_str().into(),
        added_at: Some(convert::ts(m.added_at)),
    }
}

fn org_pb(o: &OrgRecord) -> pb::Organization {
    pb::Organization { org_id: o.id.to_string(), name: o.name.clone(), created_at: Some(convert::ts(o.created_at)) }
}

fn audit_pb(r: &AuditRecord) -> pb::AuditRecord {
    pb::AuditRecord {
        seq: r.seq,
        at: Some(convert::ts(r.entry.at)),
        actor: r.entry.actor.clone(),
        address: r.entry.address.clone(),
        action: r.entry.action.clone(),
        target: r.entry.target.clone(),
        detail: r.entry.detail.clone(),
    }
}

impl Identity {
    fn auth(&self) -> &Arc<Auth> {
        &self.ctx.auth
    }

    fn audit(&self, c: &Caller, org: OrgId, action: &str, target: impl ToString, detail: impl Into<String>) -> AuditEntry {
        c.audit(org, self.ctx.now(), action, target, detail)
    }

    /// Claims a command's idempotency key for this caller: `Ok(None)` the
    /// first time, `Ok(Some(resource))` on a retry.
    async fn claim(&self, c: &Caller, kind: &str, key: &str, fp: &[u8], resource: &str) -> Result<Option<String>, ApiError> {
        self.ctx.claim_command(c, KeySpace { name: "identity", tag: usher_engine::FingerprintTag::Identity }, kind, key, fp, resource).await
    }

    /// A signed-in session for `user`: an access token with its current
    /// memberships, and the next refresh token of `family`.
    async fn session(&self, user: &UserRecord, family: uuid::Uuid) -> Result<pb::Session, ApiError> {
        let now = self.ctx.now();
        let memberships = self.auth().store.memberships(user.id).await?;
        let (access, access_exp) = self.auth().access_token(user.id, user.admin, &memberships, now)?;
        let refresh = secrets::new_refresh_token();
        let refresh_exp = now.plus_ms(self.auth().cfg.refresh_ttl_ms);
        self.auth()
            .store
            .insert_refresh(&RefreshRecord {
                hash: secrets::digest(&refresh),
                family,
                user: user.id,
                issued_at: now,
                expires_at: refresh_exp,
            })
            .await?;
        let me = self.describe_user(user, &memberships).await?;
        Ok(pb::Session {
            access_token: access,
            access_expires_at: Some(convert::ts(access_exp)),
            refresh_token: refresh,
            refresh_expires_at: Some(convert::ts(refresh_exp)),
            me: Some(me),
        })
    }

    async fn describe_user(&self, u: &UserRecord, memberships: &[Membership]) -> Result<pb::MeResponse, ApiError> {
        let mut ms = Vec::with_capacity(memberships.len());
        for m in memberships {
            let org_name = self.auth().store.get_org(m.org).await?.map(|o| o.name).unwrap_or_default();
            ms.push(pb::Membership { org_id: m.org.to_string(), org_name, role: m.role.as_str().into() });
        }
        let p = Principal::User(usher_engine::UserPrincipal { id: u.id, admin: u.admin, memberships: memberships.to_vec() });
        Ok(pb::MeResponse {
            kind: "user".into(),
            id: u.id.to_string(),
            email: u.email.clone(),
            name: u.name.clone(),
            customer_id: p.own_customer().map(|c| c.as_str().to_owned()).unwrap_or_default(),
            admin: u.admin,
            memberships: ms,
            ..Default::default()
        })
    }

    pub(crate) async fn register(&self, c: &Caller, r: pb::RegisterRequest) -> Result<pb::Session, ApiError> {
        let email = crate::convert::check_email(&r.email)?.to_lowercase();
        let n = r.password.chars().count();
        if !(PASSWORD_CHARS_MIN..=PASSWORD_CHARS_MAX).contains(&n) {
            return Err(ApiError::invalid(
                "password",
                format!("a password has {} to {} characters", PASSWORD_CHARS_MIN, PASSWORD_CHARS_MAX),
            ));
        }
        let display = name("name", &r.name, false)?;
        self.auth().limit(Bucket::Identities, c.network())?;
        let password = r.password;
        let hash = self
            .auth()
            .hash_slot(move || secrets::hash_password(&password))
            .await?
            .map_err(|e| ApiError::new(ErrorCode::Internal, Reason::Internal, format!("hashing: {e}")))?;
        let user = UserRecord {
            id: UserId(uuid::Uuid::new_v4()),
            email,
            name: display,
            password_hash: hash,
            admin: false,
            created_at: self.ctx.now(),
        };
        if !self.auth().store.create_user(&user).await? {
            return Err(ApiError::new(ErrorCode::AlreadyExists, Reason::EmailTaken, "an account with this email exists; sign in instead"));
        }
        tracing::info!(user_id = %user.id, "user registered");
        self.session(&user, uuid::Uuid::new_v4()).await
    }

    pub(crate) async fn log_in(&self, c: &Caller, r: pb::LogInRequest) -> Result<pb::Session, ApiError> {
        let email = r.email.trim().to_lowercase();
        if email.is_empty() || email.len() > EMAIL_BYTES_MAX || r.password.len() > 4 * PASSWORD_CHARS_MAX {
            return Err(ApiError::invalid("email", "give the email and the password of an account"));
        }
        self.auth().limit(Bucket::LoginAddress, c.network())?;
        // Per account *and* address: a stranger's wrong guesses cannot lock
        // the owner out from elsewhere.
        self.auth().limit(Bucket::LoginAccount, format!("{email} {}", c.network()))?;
        let user = self.auth().store.user_by_email(&email).await?;
        let phc = user.as_ref().map(|u| u.password_hash.clone()).unwrap_or_else(|| secrets::decoy_hash().to_owned());
        let password = r.password;
        let ok = self.auth().hash_slot(move || secrets::verify_password(&password, &phc)).await?;
        match user {
            Some(u) if ok => {
                tracing::info!(user_id = %u.id, "signed in");
                self.session(&u, uuid::Uuid::new_v4()).await
            }
            _ => {
                tracing::info!(address = %c.address, "failed sign-in");
                Err(ApiError::new(ErrorCode::Unauthenticated, Reason::BadCredentials, "the email or the password is wrong"))
            }
        }
    }

    pub(crate) async fn refresh(&self, c: &Caller, r: pb::RefreshRequest) -> Result<pb::Session, ApiError> {
        let bad = || ApiError::new(ErrorCode::Unauthenticated, Reason::BadRefreshToken, "the refresh token is not valid; sign in again");
        if !r.refresh_token.starts_with(secrets::REFRESH_TOKEN_PREFIX) || r.refresh_token.len() > 100 {
            return Err(bad());
        }
        self.auth().limit(Bucket::Anonymous, c.network())?;
        match self.auth().store.use_refresh(&secrets::digest(&r.refresh_token), self.ctx.now()).await? {
            RefreshUse::Fresh(rec) => {
                let user = self.auth().store.get_user(rec.user).await?.ok_or_else(bad)?;
                self.session(&user, rec.family).await
            }
            RefreshUse::Reused { family, user } => {
                tracing::warn!(%user, %family, address = %c.address, "a spent refresh token was presented again: the sign-in is revoked");
                Err(ApiError::new(
                    ErrorCode::Unauthenticated,
                    Reason::RefreshTokenReused,
                    "this refresh token was already used, so the sign-in has been revoked; sign in again",
                ))
            }
            RefreshUse::Invalid => Err(bad()),
        }
    }

    pub(crate) async fn log_out(&self, r: pb::LogOutRequest) -> Result<pb::LogOutResponse, ApiError> {
        if r.refresh_token.starts_with(secrets::REFRESH_TOKEN_PREFIX) {
            self.auth().store.revoke_refresh(&secrets::digest(&r.refresh_token), self.ctx.now()).await?;
        }
        Ok(pb::LogOutResponse {})
    }

    pub(crate) async fn guest(&self, c: &Caller) -> Result<pb::Session, ApiError> {
        // Each guest is a customer with its own hold cap: guests are scarce per address.
        self.auth().limit(Bucket::GuestSessions, c.network())?;
        let (token, guest, exp) = self.auth().guest_token(self.ctx.now())?;
        let p = Principal::Guest(guest);
        Ok(pb::Session {
            access_token: token,
            access_expires_at: Some(convert::ts(exp)),
            me: Some(pb::MeResponse {
                kind: "guest".into(),
                id: guest.to_string(),
                customer_id: p.own_customer().map(|c| c.as_str().to_owned()).unwrap_or_default(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    pub(crate) async fn me(&self, c: &Caller) -> Result<pb::MeResponse, ApiError> {
        Ok(match &c.principal {
            Principal::User(u) => {
                let rec =
                    self.auth().store.get_user(u.id).await?.ok_or_else(|| {
                        ApiError::new(ErrorCode::Unauthenticated, Reason::Unauthenticated, "this account no longer exists")
                    })?;
                // The memberships as stored now, not as the token was issued.
                let ms = self.auth().store.memberships(u.id).await?;
                self.describe_user(&rec, &ms).await?
            }
            Principal::Guest(g) => pb::MeResponse {
                kind: "guest".into(),
                id: g.to_string(),
                customer_id: c.principal.own_customer().map(|c| c.as_str().to_owned()).unwrap_or_default(),
                ..Default::default()
            },
            Principal::Partner(p) => pb::MeResponse {
                kind: "partner".into(),
                id: p.partner_id.to_string(),
                name: self.auth().store.partner_name(p.org, p.partner_id).await?.unwrap_or_default(),
                org_id: p.org.to_string(),
                scopes: p.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
                event_ids: p.events.iter().map(ToString::to_string).collect(),
                ..Default::default()
            },
            Principal::Gate(g) => pb::MeResponse {
                kind: "gate".into(),
                id: g.device_id.to_string(),
                org_id: g.org.to_string(),
                gate: g.gate.clone(),
                event_ids: g.events.iter().map(ToString::to_string).collect(),
                ..Default::default()
            },
            Principal::Anonymous => return Err(ApiError::denied(usher_engine::Denied::Unauthenticated, Reason::NotFound, "")),
        })
    }

    pub(crate) async fn create_org(&self, c: &Caller, r: pb::CreateOrganizationRequest) -> Result<pb::Organization, ApiError> {
        let n = name("name", &r.name, true)?;
        let owner =
            if r.owner_email.trim().is_empty() {
                None
            } else {
                let email = r.owner_email.trim().to_lowercase();
                Some(
                    self.auth().store.user_by_email(&email).await?.ok_or_else(|| {
                        ApiError::new(ErrorCode::NotFound, Reason::UserNotFound, "no registered user has that owner_email")
                    })?,
                )
            };
        let fresh = OrgId(uuid::Uuid::new_v4());
        let fp = format!("{n}\n{}", r.owner_email.trim().to_lowercase());
        if let Some(id) = self.claim(c, "org", &r.idempotency_key, fp.as_bytes(), &fresh.to_string()).await? {
            let id = org_id(&id)?;
            return self.auth().store.get_org(id).await?.map(|o| org_pb(&o)).ok_or_else(|| being_created("organization"));
        }
        let org = OrgRecord { id: fresh, name: n.clone(), created_at: self.ctx.now() };
        self.auth().store.create_org(&org, &self.audit(c, fresh, "org.create", fresh, n)).await?;
        if let Some(u) = owner {
            self.auth().store.set_member(fresh, u.id, Role::Owner, &self.audit(c, fresh, "member.set", u.id, "owner")).await?;
        }
        Ok(org_pb(&org))
    }

    pub(crate) async fn list_orgs(&self, c: &Caller) -> Result<pb::ListOrganizationsResponse, ApiError> {
        let orgs = match &c.principal {
            p if p.is_admin() => self.auth().store.list_orgs().await?,
            Principal::User(u) => {
                let mut out = Vec::new();
                for m in self.auth().store.memberships(u.id).await? {
                    if let Some(o) = self.auth().store.get_org(m.org).await? {
                        out.push(o);
                    }
                }
                out
            }
            _ => Vec::new(),
        };
        Ok(pb::ListOrganizationsResponse { organizations: orgs.iter().map(org_pb).collect() })
    }

    pub(crate) async fn set_member(&self, c: &Caller, r: pb::SetMemberRequest) -> Result<pb::Member, ApiError> {
        let org = org_for(c, &r.org_id, Cap::ManageMembers)?;
        let role = Role::parse(&r.role)?;
        let email = r.email.trim().to_lowercase();
        let fp = format!("{org}\n{email}\n{}", role.as_str());
        self.claim(c, "member", &r.idempotency_key, fp.as_bytes(), &email).await?;
        let user = self.auth().store.user_by_email(&email).await?.ok_or_else(|| {
            ApiError::new(ErrorCode::NotFound, Reason::UserNotFound, "no registered user has that email; ask them to sign up first")
        })?;
        self.auth().store.set_member(org, user.id, role, &self.audit(c, org, "member.set", user.id, role.as_str())).await?;
        let members = self.auth().store.members(org).await?;
        members
            .iter()
            .find(|m| m.user == user.id)
            .map(member_pb)
            .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, Reason::Unavailable, "retry"))
    }

    pub(crate) async fn remove_member(&self, c: &Caller, r: pb::RemoveMemberRequest) -> Result<pb::RemoveMemberResponse, ApiError> {
        let org = org_for(c, &r.org_id, Cap::ManageMembers)?;
        let user = UserId::parse(&r.user_id)?;
        if self.claim(c, "unmember", &r.idempotency_key, format!("{org}\n{user}").as_bytes(), &user.to_string()).await?.is_some() {
            return Ok(pb::RemoveMemberResponse {});
        }
        if !self.auth().store.remove_member(org, user, &self.audit(c, org, "member.remove", user, "")).await? {
            return Err(ApiError::new(ErrorCode::NotFound, Reason::MemberNotFound, format!("user {user} is not a member")));
        }
        Ok(pb::RemoveMemberResponse {})
    }

    pub(crate) async fn members(&self, c: &Caller, r: pb::ListMembersRequest) -> Result<pb::ListMembersResponse, ApiError> {
        let org = org_for(c, &r.org_id, Cap::ManageMembers)?;
        Ok(pb::ListMembersResponse { members: self.auth().store.members(org).await?.iter().map(member_pb).collect() })
    }

    /// Events given to scope a key or device: each must be the organization's.
    async fn org_events(&self, org: OrgId, ids: &[String]) -> Result<Vec<EventId>, ApiError> {
        let events = crate::auth::event_ids(ids)?;
        for &e in &events {
            match self.ctx.store().get_event(e).await? {
                Some(cfg) if cfg.org_id == org => {}
                _ => return Err(ApiError::new(ErrorCode::NotFound, Reason::EventNotFound, format!("event {e} not found"))),
            }
        }
        Ok(events)
    }

    /// A key of `org`, as stored now.
    async fn api_key(&self, org: OrgId, id: ApiKeyId) -> Result<Option<ApiKeyRecord>, ApiError> {
        Ok(self.auth().store.api_keys(org).await?.into_iter().find(|k| k.id == id))
    }

    /// A gate device of `org`, as stored now.
    async fn device(&self, org: OrgId, id: DeviceId) -> Result<Option<DeviceRecord>, ApiError> {
        Ok(self.auth().store.devices(org).await?.into_iter().find(|d| d.id == id))
    }

    pub(crate) async fn create_api_key(&self, c: &Caller, r: pb::CreateApiKeyRequest) -> Result<pb::CreatedApiKey, ApiError> {
        let org = org_for(c, &r.org_id, Cap::ManageKeys)?;
        if r.scopes.is_empty() {
            return Err(ApiError::invalid("scopes", "give at least one of events:read, holds, orders, payments, tickets"));
        }
        let mut scopes = r.scopes.iter().map(|s| Scope::parse(s)).collect::<Result<Vec<_>, _>>()?;
        scopes.sort();
        scopes.dedup();
        let events = self.org_events(org, &r.event_ids).await?;
        let now = self.ctx.now();
        let expires_at = r.expires_at.as_ref().map(|t| convert::millis("expires_at", t)).transpose()?;
        if expires_at.is_some_and(|e| e <= now) {
            return Err(ApiError::invalid("expires_at", "must be in the future"));
        }
        let (partner_id, partner_name) = if r.partner_id.is_empty() {
            (PartnerId(uuid::Uuid::new_v4()), name("partner_name", &r.partner_name, true)?)
        } else {
            let p = PartnerId::parse(&r.partner_id)?;
            let n = self
                .auth()
                .store
                .partner_name(org, p)
                .await?
                .ok_or_else(|| ApiError::new(ErrorCode::NotFound, Reason::PartnerNotFound, format!("partner {p} not found")))?;
            (p, n)
        };
        let id = ApiKeyId(uuid::Uuid::new_v4());
        let fp = format!("{org}\n{}\n{}\n{:?}\n{:?}\n{:?}", r.partner_id, r.partner_name, scopes, events, expires_at);
        if let Some(prev) = self.claim(c, "api_key", &r.idempotency_key, fp.as_bytes(), &id.to_string()).await? {
            let prev = ApiKeyId::parse(&prev)?;
            let key = self.api_key(org, prev).await?.ok_or_else(|| being_created("key"))?;
            // The secret was shown once, in the first answer.
            return Ok(pb::CreatedApiKey { key: Some(api_key_pb(&key)), secret: String::new() });
        }
        let (secret, prefix) = secrets::new_keyed_secret(secrets::API_KEY_PREFIX);
        let rec = ApiKeyRecord {
            id,
            partner_id,
            partner_name,
            org,
            prefix: prefix.clone(),
            hash: secrets::digest(&secret),
            scopes,
            events,
            expires_at,
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        };
        let detail =
            format!("{prefix} for partner {} ({})", rec.partner_name, rec.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "));
        self.auth().store.create_api_key(&rec, &self.audit(c, org, "api_key.create", id, detail)).await?;
        Ok(pb::CreatedApiKey { key: Some(api_key_pb(&rec)), secret })
    }

    pub(crate) async fn api_keys(&self, c: &Caller, r: pb::ListApiKeysRequest) -> Result<pb::ListApiKeysResponse, ApiError> {
        let org = org_for(c, &r.org_id, Cap::ManageKeys)?;
        Ok(pb::ListApiKeysResponse { keys: self.auth().store.api_keys(org).await?.iter().map(api_key_pb).collect() })
    }

    pub(crate) async fn revoke_api_key(&self, c: &Caller, r: pb::RevokeApiKeyRequest) -> Result<pb::ApiKey, ApiError> {
        let org = org_for(c, &r.org_id, Cap::ManageKeys)?;
        let id = ApiKeyId::parse(&r.api_key_id)?;
        let not_found = || ApiError::new(ErrorCode::NotFound, Reason::ApiKeyNotFound, format!("API key {id} not found"));
        let key = self.api_key(org, id).await?.ok_or_else(not_found)?;
        if key.revoked_at.is_none() {
            self.auth().store.revoke_api_key(org, id, &self.audit(c, org, "api_key.revoke", id, key.prefix.clone())).await?;
            self.auth().forget_credentials();
        }
        let key = self.api_key(org, id).await?.ok_or_else(not_found)?;
        Ok(api_key_pb(&key))
    }

    pub(crate) async fn create_device(&self, c: &Caller, r: pb::CreateDeviceTokenRequest) -> Result<pb::CreatedDeviceToken, ApiError> {
        let org = org_for(c, &r.org_id, Cap::ManageKeys)?;
        let gate = usher_engine::token("gate", r.gate.trim(), GATE_BYTES_MAX)?;
        let gate = gate.as_str();
        let events = self.org_events(org, &r.event_ids).await?;
        let id = DeviceId(uuid::Uuid::new_v4());
        let fp = format!("{org}\n{gate}\n{events:?}");
        if let Some(prev) = self.claim(c, "device", &r.idempotency_key, fp.as_bytes(), &id.to_string()).await? {
            let prev = DeviceId::parse(&prev)?;
            let d = self.device(org, prev).await?.ok_or_else(|| being_created("device"))?;
            return Ok(pb::CreatedDeviceToken { device: Some(device_pb(&d)), secret: String::new() });
        }
        let (secret, prefix) = secrets::new_keyed_secret(secrets::DEVICE_TOKEN_PREFIX);
        let rec = DeviceRecord {
            id,
            org,
            gate: gate.to_owned(),
            prefix: prefix.clone(),
            hash: secrets::digest(&secret),
            events,
            created_at: self.ctx.now(),
            last_used_at: None,
            revoked_at: None,
        };
        self.auth().store.create_device(&rec, &self.audit(c, org, "device.create", id, format!("{prefix} at gate {gate}"))).await?;
        Ok(pb::CreatedDeviceToken { device: Some(device_pb(&rec)), secret })
    }

    pub(crate) async fn devices(&self, c: &Caller, r: pb::ListDeviceTokensRequest) -> Result<pb::ListDeviceTokensResponse, ApiError> {
        let org = org_for(c, &r.org_id, Cap::ManageKeys)?;
        Ok(pb::ListDeviceTokensResponse { devices: self.auth().store.devices(org).await?.iter().map(device_pb).collect() })
    }

    pub(crate) async fn revoke_device(&self, c: &Caller, r: pb::RevokeDeviceTokenRequest) -> Result<pb::DeviceToken, ApiError> {
        let org = org_for(c, &r.org_id, Cap::ManageKeys)?;
        let id = DeviceId::parse(&r.device_id)?;
        let not_found = || ApiError::new(ErrorCode::NotFound, Reason::DeviceNotFound, format!("device {id} not found"));
        let d = self.device(org, id).await?.ok_or_else(not_found)?;
        if d.revoked_at.is_none() {
            self.auth().store.revoke_device(org, id, &self.audit(c, org, "device.revoke", id, d.prefix.clone())).await?;
            self.auth().forget_credentials();
        }
        let d = self.device(org, id).await?.ok_or_else(not_found)?;
        Ok(device_pb(&d))
    }

    pub(crate) async fn audit_log(&self, c: &Caller, r: pb::ListAuditLogRequest) -> Result<pb::ListAuditLogResponse, ApiError> {
        let org = org_for(c, &r.org_id, Cap::ViewAudit)?;
        if r.page_size > AUDIT_PAGE_MAX {
            return Err(ApiError::invalid("page_size", format!("at most {AUDIT_PAGE_MAX}")));
        }
        let size = if r.page_size == 0 { 100 } else { r.page_size };
        let before = if r.page_token.is_empty() {
            None
        } else {
            Some(r.page_token.parse::<i64>().map_err(|_| ApiError::invalid("page_token", "not a token from a previous response"))?)
        };
        let records = self.auth().store.audit_log(org, before, size).await?;
        let next_page_token = match records.last() {
            Some(l) if records.len() == size as usize => l.seq.to_string(),
            _ => String::new(),
        };
        Ok(pb::ListAuditLogResponse { records: records.iter().map(audit_pb).collect(), next_page_token })
    }

    pub(crate) async fn rotate(&self, c: &Caller, r: pb::RotateSigningKeyRequest) -> Result<pb::RotateSigningKeyResponse, ApiError> {
        if let Some(kid) = self.claim(c, "rotate", &r.idempotency_key, b"rotate", "").await? {
            return Ok(pb::RotateSigningKeyResponse { kid });
        }
        let kid = self.auth().keys.rotate(self.ctx.now()).await?;
        tracing::info!(%kid, actor = %c.principal.actor(), "token-signing key rotated");
        Ok(pb::RotateSigningKeyResponse { kid })
    }
}

/// Unwraps a tonic request into its caller and message.
fn split<T>(req: Request<T>) -> Result<(Caller, T), Status> {
    let c = crate::doors::caller(&req)?;
    Ok((c, req.into_inner()))
}

#[tonic::async_trait]
impl IdentityService for Identity {
    async fn register(&self, req: Request<pb::RegisterRequest>) -> Result<Response<pb::Session>, Status> {
        let (c, r) = split(req)?;
        Ok(Response::new(Identity::register(self, &c, r).await?))
    }
    async fn log_in(&self, req: Request<pb::LogInRequest>) -> Result<Response<pb::Session>, Status> {
        let (c, r) = split(req)?;
        Ok(Response::new(Identity::log_in(self, &c, r).await?))
    }
    async fn refresh(&self, req: Request<pb::RefreshRequest>) -> Result<Response<pb::Session>, Status> {
        let (c, r) = split(req)?;
        Ok(Response::new(Identity::refresh(self, &c, r).await?))
    }
    async fn log_out(&self, req: Request<pb::LogOutRequest>) -> Result<Response<pb::LogOutResponse>, Status> {
        let (_, r) = split(req)?;
        Ok(Response::new(Identity::log_out(self, r).await?))
    }
    async fn start_guest_session(&self, req: Request<pb::StartGuestSessionRequest>) -> Result<Response<pb::Session>, Status> {
        let (c, _) = split(req)?;
        Ok(Response::new(self.guest(&c).await?))
    }
    async fn me(&self, req: Request<pb::MeRequest>) -> Result<Response<pb::MeResponse>, Status> {
        let (c, _) = split(req)?;
        Ok(Response::new(Identity::me(self, &c).await?))
    }
    async fn create_organization(&self, req: Request<pb::CreateOrganizationRequest>) -> Result<Response<pb::Organization>, Status> {
        let (c, r) = split(req)?;
        Ok(Response::new(self.create_org(&c, r).await?))
    }
    async fn list_organizations(
        &self,
        req: Request<pb::ListOrganizationsRequest>,
    ) -> Result<Response<pb::ListOrganizationsResponse>, Status> {
        let (c, _) = split(req)?;
        Ok(Response::new(self.list_orgs(&c).await?))
    }
    async fn set_member(&self, req: Request<pb::SetMemberRequest>) -> Result<Response<pb::Member>, Status> {
        let (c, r) = split(req)?;
        Ok(Response::new(Identity::set_member(self, &c, r).await?))
    }
    async fn remove_member(&self, req: Request<pb::RemoveMemberRequest>) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let (c, r) = split(req)?;
        Ok(Response::new(Identity::remove_member(self, &c, r).await?))
    }
    async fn list_members(&self, req: Request<pb::ListMembersRequest>) -> Result<Response<pb::ListMembersResponse>, Status> {
        let (c, r) = split(req)?;
        Ok(Response::new(self.members(&c, r).await?))
    }
    async fn create_api_key(&self, req: Request<pb::CreateApiKeyRequest>) -> Result<Response<pb::CreatedApiKey>, Status> {
        let (c, r) = split(req)?;
        Ok(Response::new(Identity::create_api_key(self, &c, r).await?))
    }
    async fn list_api_keys(&self, req: Request<pb::ListApiKeysRequest>) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let (c, r) = split(req)?;
        Ok(Response::new(self.api_keys(&c, r).await?))
    }
    async fn revoke_api_key(&self, req: Request<pb::RevokeApiKeyRequest>) -> Result<Response<pb::ApiKey>, Status> {
        let (c, r) = split(req)?;
        Ok(Response::new(Identity::revoke_api_key(self, &c, r).await?))
    }
    async fn create_device_token(&self, req: Request<pb::CreateDeviceTokenRequest>) -> Result<Response<pb::CreatedDeviceToken>, Status> {
        let (c, r) = split(req)?;
        Ok(Response::new(self.create_device(&c, r).await?))
    }
    async fn list_device_tokens(
        &self,
        req: Request<pb::ListDeviceTokensRequest>,
    ) -> Result<Response<pb::ListDeviceTokensResponse>, Status> {
        let (c, r) = split(req)?;
        Ok(Response::new(self.devices(&c, r).await?))
    }
    async fn revoke_device_token(&self, req: Request<pb::RevokeDeviceTokenRequest>) -> Result<Response<pb::DeviceToken>, Status> {
        let (c, r) = split(req)?;
        Ok(Response::new(self.revoke_device(&c, r).await?))
    }
    async fn list_audit_log(&self, req: Request<pb::ListAuditLogRequest>) -> Result<Response<pb::ListAuditLogResponse>, Status> {
        let (c, r) = split(req)?;
        Ok(Response::new(self.audit_log(&c, r).await?))
    }
    async fn rotate_signing_key(
        &self,
        req: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        let (c, r) = split(req)?;
        Ok(Response::new(self.rotate(&c, r).await?))
    }
}
