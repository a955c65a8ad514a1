//! `usher admin …`: bootstraps a deployment without demo data, straight on
//! its database (nobody has credentials yet): users, organizations,
//! members, partner API keys and gate device tokens. Each action is audited
//! as `admin-cli` from `local`.

use usher_actors::{ApiKeyRecord, AuditEntry, DeviceRecord, IdentityStore, OrgRecord, UserRecord};
use usher_engine::{ApiKeyId, DeviceId, EventId, Millis, OrgId, PartnerId, Role, Scope, UserId};

use crate::auth::secrets;

fn now() -> Millis {
    Millis(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0))
}

fn audit(org: OrgId, action: &str, target: impl ToString, detail: impl Into<String>) -> AuditEntry {
    AuditEntry {
        org,
        at: now(),
        actor: "admin-cli".into(),
        address: "local".into(),
        action: action.into(),
        target: target.to_string(),
        detail: detail.into(),
    }
}

/// Opens the deployment's identity store.
pub async fn open(config: &crate::Config) -> anyhow::Result<std::sync::Arc<dyn IdentityStore>> {
    let (_, _, identity) = usher_adapters::connect_all(&config.store_url()).await.map_err(|e| anyhow::anyhow!("opening the store: {e}"))?;
    Ok(identity)
}

/// Creates a user (or, for an existing email, sets a new password is not
/// offered: the email is refused).
pub async fn create_user(store: &dyn IdentityStore, email: &str, password: &str, name: &str, admin: bool) -> anyhow::Result<UserId> {
    let email = crate::convert::check_email(email).map_err(|e| anyhow::anyhow!("{}", e.message))?.to_lowercase();
    let n = password.chars().count();
    if !(crate::limits::PASSWORD_CHARS_MIN..=crate::limits::PASSWORD_CHARS_MAX).contains(&n) {
        anyhow::bail!("a password has {} to {} characters", crate::limits::PASSWORD_CHARS_MIN, crate::limits::PASSWORD_CHARS_MAX);
    }
    let hash = secrets::hash_password(password).map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
    let user = UserRecord {
        id: UserId(uuid::Uuid::new_v4()),
        email: email.clone(),
        name: name.to_owned(),
        password_hash: hash,
        admin,
        created_at: now(),
    };
    if !store.create_user(&user).await? {
        anyhow::bail!("a user with email {email} exists already");
    }
    Ok(user.id)
}

pub async fn create_org(store: &dyn IdentityStore, name: &str, owner: Option<&str>) -> anyhow::Result<OrgId> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        anyhow::bail!("an organization's name has 1 to 200 bytes");
    }
    let owner = match owner {
        Some(email) => Some(store.user_by_email(&email.to_lowercase()).await?.ok_or_else(|| anyhow::anyhow!("no user has email {email}"))?),
        None => None,
    };
    let org = OrgRecord { id: OrgId(uuid::Uuid::new_v4()), name: name.to_owned(), created_at: now() };
    store.create_org(&org, &audit(org.id, "org.create", org.id, name)).await?;
    if let Some(u) = owner {
        store.set_member(org.id, u.id, Role::Owner, &audit(org.id, "member.set", u.id, "owner")).await?;
    }
    Ok(org.id)
}

pub async fn add_member(store: &dyn IdentityStore, org: &str, email: &str, role: &str) -> anyhow::Result<()> {
    let org = OrgId::parse(org)?;
    let role = Role::parse(role)?;
    store.get_org(org).await?.ok_or_else(|| anyhow::anyhow!("no organization {org}"))?;
    let u = store.user_by_email(&email.to_lowercase()).await?.ok_or_else(|| anyhow::anyhow!("no user has email {email}"))?;
    store.set_member(org, u.id, role, &audit(org, "member.set", u.id, role.as_str())).await?;
    Ok(())
}

/// A partner API key: (key id, the secret, shown once).
pub async fn create_api_key(
    store: &dyn IdentityStore,
    org: &str,
    partner: &str,
    scopes: &[String],
    events: &[String],
) -> anyhow::Result<(ApiKeyId, String)> {
    let org = OrgId::parse(org)?;
    store.get_org(org).await?.ok_or_else(|| anyhow::anyhow!("no organization {org}"))?;
    let scopes = if scopes.is_empty() { Scope::ALL.to_vec() } else { scopes.iter().map(|s| Scope::parse(s)).collect::<Result<_, _>>()? };
    let events = events.iter().map(|e| EventId::parse(e)).collect::<Result<Vec<_>, _>>()?;
    let (secret, prefix) = secrets::new_keyed_secret(secrets::API_KEY_PREFIX);
    let rec = ApiKeyRecord {
        id: ApiKeyId(uuid::Uuid::new_v4()),
        partner_id: PartnerId(uuid::Uuid::new_v4()),
        partner_name: partner.to_owned(),
        org,
        prefix: prefix.clone(),
        hash: secrets::digest(&secret),
        scopes,
        events,
        expires_at: None,
        created_at: now(),
        last_used_at: None,
        revoked_at: None,
    };
    store.create_api_key(&rec, &audit(org, "api_key.create", rec.id, format!("{prefix} for partner {partner}"))).await?;
    Ok((rec.id, secret))
}

/// A gate device token: (device id, the secret, shown once).
pub async fn create_device(store: &dyn IdentityStore, org: &str, gate: &str, events: &[String]) -> anyhow::Result<(DeviceId, String)> {
    let org = OrgId::parse(org)?;
    store.get_org(org).await?.ok_or_else(|| anyhow::anyhow!("no organization {org}"))?;
    let events = events.iter().map(|e| EventId::parse(e)).collect::<Result<Vec<_>, _>>()?;
    let (secret, prefix) = secrets::new_keyed_secret(secrets::DEVICE_TOKEN_PREFIX);
    let rec = DeviceRecord {
        id: DeviceId(uuid::Uuid::new_v4()),
        org,
        gate: gate.to_owned(),
        prefix: prefix.clone(),
        hash: secrets::digest(&secret),
        events,
        created_at: now(),
        last_used_at: None,
        revoked_at: None,
    };
    store.create_device(&rec, &audit(org, "device.create", rec.id, format!("{prefix} at gate {gate}"))).await?;
    Ok((rec.id, secret))
}
