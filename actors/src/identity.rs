//! The identity port: organizations, users and memberships, refresh tokens,
//! partner API keys, gate device tokens, the token-signing keys and the
//! audit log. Secrets never reach this port in clear: passwords arrive as
//! argon2id PHC strings, tokens and keys as SHA-256 digests (hex).
//!
//! Every method that changes what an organization can do takes the
//! `AuditEntry` to write in the same transaction.

use usher_engine::{ApiKeyId, DeviceId, EventId, Membership, Millis, OrgId, PartnerId, Role, Scope, UserId};

pub use crate::ports::AuditEntry;
use crate::ports::{BoxFuture, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRecord {
    pub id: OrgId,
    pub name: String,
    pub created_at: Millis,
}

/// A user as stored. `email` is stored lower-cased and is unique.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: UserId,
    pub email: String,
    pub name: String,
    /// argon2id in PHC string format (`$argon2id$v=19$m=…`), never the password.
    pub password_hash: String,
    pub admin: bool,
    pub created_at: Millis,
}

/// Never prints the password hash.
impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord").field("id", &self.id).field("email", &self.email).field("admin", &self.admin).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub org: OrgId,
    pub user: UserId,
    pub email: String,
    pub role: Role,
    pub added_at: Millis,
}

/// One refresh token of a sign-in. Every refresh spends the token and issues
/// the next of the same family; presenting a spent token again revokes the
/// family (someone copied it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// SHA-256 of the token, hex.
    pub hash: String,
    pub family: uuid::Uuid,
    pub user: UserId,
    pub issued_at: Millis,
    pub expires_at: Millis,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// Live: it is now spent, and the caller issues the next one.
    Fresh(RefreshRecord),
    /// Spent before (or its family revoked): the whole family is now revoked.
    Reused { family: uuid::Uuid, user: UserId },
    /// Unknown or expired.
    Invalid,
}

/// A partner's API key. The secret is shown once, at creation; only its
/// digest is kept. `prefix` (e.g. `usk_3f9a1c2b`) is what people see in
/// lists and logs, and how the key is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub partner_id: PartnerId,
    pub partner_name: String,
    pub org: OrgId,
    pub prefix: String,
    /// SHA-256 of the whole key, hex.
    pub hash: String,
    pub scopes: Vec<Scope>,
    /// Empty: every event of the organization.
    pub events: Vec<EventId>,
    pub expires_at: Option<Millis>,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

/// A gate device's token, kept like an API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub org: OrgId,
    pub gate: String,
    pub prefix: String,
    pub hash: String,
    pub events: Vec<EventId>,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

/// One key that signs access tokens (Ed25519). The newest unretired key
/// signs; every key not yet past `retired_at + access token lifetime` is
/// published in the JWKS, so a rotation logs nobody out.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    /// The JWT `kid`.
    pub kid: String,
    /// The Ed25519 seed (32 bytes).
    pub seed: Vec<u8>,
    pub created_at: Millis,
    pub retired_at: Option<Millis>,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord").field("kid", &self.kid).field("retired_at", &self.retired_at).finish_non_exhaustive()
    }
}

/// An audit entry as listed, with its position (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub entry: AuditEntry,
}

pub trait IdentityStore: Send + Sync + 'static {
    // -- organizations and members
    fn create_org<'a>(&'a self, org: &'a OrgRecord, audit: &'a AuditEntry) -> BoxFuture<'a, Result<(), StoreError>>;
    fn get_org(&self, id: OrgId) -> BoxFuture<'_, Result<Option<OrgRecord>, StoreError>>;
    /// Every organization (for a platform admin), by name.
    fn list_orgs(&self) -> BoxFuture<'_, Result<Vec<OrgRecord>, StoreError>>;
    /// Adds a member or changes its role.
    fn set_member<'a>(&'a self, org: OrgId, user: UserId, role: Role, audit: &'a AuditEntry) -> BoxFuture<'a, Result<(), StoreError>>;
    /// False if the user was not a member.
    fn remove_member<'a>(&'a self, org: OrgId, user: UserId, audit: &'a AuditEntry) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn members(&self, org: OrgId) -> BoxFuture<'_, Result<Vec<MemberRecord>, StoreError>>;
    fn memberships(&self, user: UserId) -> BoxFuture<'_, Result<Vec<Membership>, StoreError>>;

    // -- users
    /// False if the email is taken.
    fn create_user<'a>(&'a self, user: &'a UserRecord) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn user_by_email<'a>(&'a self, email: &'a str) -> BoxFuture<'a, Result<Option<UserRecord>, StoreError>>;
    fn get_user(&self, id: UserId) -> BoxFuture<'_, Result<Option<UserRecord>, StoreError>>;

    // -- refresh tokens
    fn insert_refresh<'a>(&'a self, r: &'a RefreshRecord) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Spends a refresh token atomically (of two concurrent uses, one is
    /// `Fresh` and the other `Reused`).
    fn use_refresh<'a>(&'a self, hash: &'a str, now: Millis) -> BoxFuture<'a, Result<RefreshUse, StoreError>>;
    /// Revokes the family of a token (log out). False if the token is unknown.
    fn revoke_refresh<'a>(&'a self, hash: &'a str, now: Millis) -> BoxFuture<'a, Result<bool, StoreError>>;

    // -- partner API keys
    /// Creates the key; with a new `partner_id`, the partner too.
    fn create_api_key<'a>(&'a self, key: &'a ApiKeyRecord, audit: &'a AuditEntry) -> BoxFuture<'a, Result<(), StoreError>>;
    fn api_key_by_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Option<ApiKeyRecord>, StoreError>>;
    fn api_keys(&self, org: OrgId) -> BoxFuture<'_, Result<Vec<ApiKeyRecord>, StoreError>>;
    /// The partner's name, if the partner belongs to `org`.
    fn partner_name(&self, org: OrgId, partner: PartnerId) -> BoxFuture<'_, Result<Option<String>, StoreError>>;
    /// False if no live key of `org` has that id.
    fn revoke_api_key<'a>(&'a self, org: OrgId, id: ApiKeyId, audit: &'a AuditEntry) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn touch_api_key(&self, id: ApiKeyId, now: Millis) -> BoxFuture<'_, Result<(), StoreError>>;

    // -- gate devices
    fn create_device<'a>(&'a self, d: &'a DeviceRecord, audit: &'a AuditEntry) -> BoxFuture<'a, Result<(), StoreError>>;
    fn device_by_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Option<DeviceRecord>, StoreError>>;
    fn devices(&self, org: OrgId) -> BoxFuture<'_, Result<Vec<DeviceRecord>, StoreError>>;
    fn revoke_device<'a>(&'a self, org: OrgId, id: DeviceId, audit: &'a AuditEntry) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn touch_device(&self, id: DeviceId, now: Millis) -> BoxFuture<'_, Result<(), StoreError>>;

    // -- access-token signing keys
    fn signing_keys(&self) -> BoxFuture<'_, Result<Vec<SigningKeyRecord>, StoreError>>;
    /// Adds a key and retires every older unretired one at `key.created_at`.
    fn add_signing_key<'a>(&'a self, key: &'a SigningKeyRecord) -> BoxFuture<'a, Result<(), StoreError>>;

    // -- audit log
    fn audit<'a>(&'a self, entry: &'a AuditEntry) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Newest first; `before` is the `seq` of the last entry of the previous page.
    fn audit_log(&self, org: OrgId, before: Option<i64>, limit: u32) -> BoxFuture<'_, Result<Vec<AuditRecord>, StoreError>>;
}
