//! Demo data: an organization with an organizer, a customer and a platform
//! administrator, a venue of 2,000 seats, two events on sale, a partner API
//! key and a gate device token. Keyed creates, so loading it again changes
//! nothing. The secrets are made at the first load and kept in
//! `DATA_DIR/demo-credentials.json` (mode 0600), so every start can print
//! them.

use std::path::Path;

use usher_actors::{ApiKeyRecord, AuditEntry, Created, DeviceRecord, OrgRecord, Store, UserRecord};
use usher_engine::{
    ApiKeyId, CategorySpec, Currency, DeviceId, EventConfig, EventId, EventStatus, IdempotencyKey, Layout, Millis, Money, OrgId, PartnerId,
    Role, RowSpec, Scope, SectionSpec, UserId, VenueId, VenueSpec, fingerprint_bytes, limits,
};

use crate::auth::{Auth, secrets};

/// The demo organization's fixed id, so a second load finds it.
pub const DEMO_ORG: OrgId = OrgId(uuid::Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_de30));

/// What `usher serve` prints so people can sign in to the demo.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DemoCredentials {
    pub org_id: String,
    pub admin_email: String,
    pub admin_password: String,
    pub organizer_email: String,
    pub organizer_password: String,
    pub customer_email: String,
    pub customer_password: String,
    /// A partner API key with every scope.
    pub partner_key: String,
    /// A gate device token for every demo event.
    pub gate_token: String,
    pub event_ids: Vec<String>,
}

fn password() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secrets::random_bytes::<12>())
}

fn audit(action: &str, target: impl ToString) -> AuditEntry {
    AuditEntry {
        org: DEMO_ORG,
        at: Millis(0),
        actor: "demo-data".into(),
        address: "local".into(),
        action: action.into(),
        target: target.to_string(),
        detail: "demo data".into(),
    }
}

/// Loads the demo data if it is not there yet; returns its credentials.
pub async fn load(store: &dyn Store, auth: &Auth, data_dir: &Path, now: Millis) -> anyhow::Result<DemoCredentials> {
    let file = data_dir.join("demo-credentials.json");
    if auth.store.get_org(DEMO_ORG).await?.is_some()
        && let Ok(text) = std::fs::read_to_string(&file)
    {
        return Ok(serde_json::from_str(&text)?);
    }
    let ids = load_catalog(store, now).await?;
    let id = auth.store.get_org(DEMO_ORG).await?;
    if id.is_none() {
        auth.store
            .create_org(&OrgRecord { id: DEMO_ORG, name: "Usher Demo Productions".into(), created_at: now }, &audit("org.create", DEMO_ORG))
            .await?;
    }
    let mut creds = DemoCredentials {
        org_id: DEMO_ORG.to_string(),
        admin_email: "admin@usher.local".into(),
        admin_password: password(),
        organizer_email: "organizer@usher.local".into(),
        organizer_password: password(),
        customer_email: "customer@usher.local".into(),
        customer_password: password(),
        partner_key: String::new(),
        gate_token: String::new(),
        event_ids: ids.iter().map(ToString::to_string).collect(),
    };
    for (email, pass, admin, role) in [
        (&creds.admin_email, &creds.admin_password, true, None),
        (&creds.organizer_email, &creds.organizer_password, false, Some(Role::Owner)),
        (&creds.customer_email, &creds.customer_password, false, None),
    ] {
        let user = match auth.store.user_by_email(email).await? {
            Some(u) => u,
            None => {
                let hash = secrets::hash_password(pass).map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
                let u = UserRecord {
                    id: UserId(uuid::Uuid::new_v4()),
                    email: email.clone(),
                    name: String::new(),
                    password_hash: hash,
                    admin,
                    created_at: now,
                };
                auth.store.create_user(&u).await?;
                u
            }
        };
        if let Some(role) = role {
            auth.store.set_member(DEMO_ORG, user.id, role, &audit("member.set", user.id)).await?;
        }
    }
    let (key, prefix) = secrets::new_keyed_secret(secrets::API_KEY_PREFIX);
    let api = ApiKeyRecord {
        id: ApiKeyId(uuid::Uuid::new_v4()),
        partner_id: PartnerId(uuid::Uuid::new_v4()),
        partner_name: "Demo Box Office".into(),
        org: DEMO_ORG,
        prefix,
        hash: secrets::digest(&key),
        scopes: Scope::ALL.to_vec(),
        events: Vec::new(),
        expires_at: None,
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    };
    auth.store.create_api_key(&api, &audit("api_key.create", api.id)).await?;
    let (gate, prefix) = secrets::new_keyed_secret(secrets::DEVICE_TOKEN_PREFIX);
    let dev = DeviceRecord {
        id: DeviceId(uuid::Uuid::new_v4()),
        org: DEMO_ORG,
        gate: "north".into(),
        prefix,
        hash: secrets::digest(&gate),
        events: Vec::new(),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    };
    auth.store.create_device(&dev, &audit("device.create", dev.id)).await?;
    creds.partner_key = key;
    creds.gate_token = gate;
    // Users made by an earlier, interrupted load keep their passwords: a
    // person resets them with `usher admin create-user`.
    secrets::write_private(&file, &serde_json::to_string_pretty(&creds)?)?;
    Ok(creds)
}

pub fn venue() -> VenueSpec {
    let cats = [("PREM", "Premium"), ("STD", "Standard"), ("BAL", "Balcony")];
    // 8 sections × 10 rows × 25 seats: stalls in front, then the circle, then the balcony.
    let sections = [
        ("SL", "Stalls left", "PREM"),
        ("SC", "Stalls centre", "PREM"),
        ("SR", "Stalls right", "PREM"),
        ("CL", "Circle left", "STD"),
        ("CC", "Circle centre", "STD"),
        ("CR", "Circle right", "STD"),
        ("BL", "Balcony left", "BAL"),
        ("BR", "Balcony right", "BAL"),
    ];
    VenueSpec {
        name: "Usher Arena".into(),
        time_zone: "Europe/Berlin".into(),
        categories: cats.iter().map(|(c, n)| CategorySpec { code: (*c).into(), name: (*n).into() }).collect(),
        sections: sections
            .iter()
            .enumerate()
            .map(|(i, (code, name, cat))| SectionSpec {
                code: (*code).into(),
                name: (*name).into(),
                category: (*cat).into(),
                x: (i % 3) as f32 * 28.0,
                y: (i / 3) as f32 * 13.0,
                rows: (0..10).map(|r| RowSpec { label: ((b'A' + r as u8) as char).to_string(), seats: 25, first_number: 1 }).collect(),
            })
            .collect(),
    }
}

/// The demo venue and events, owned by the demo organization.
async fn load_catalog(store: &dyn Store, now: Millis) -> anyhow::Result<Vec<EventId>> {
    let spec = venue();
    let layout = Layout::build(&spec)?;
    let key = IdempotencyKey::parse("demo-venue-v2")?;
    let venue_id = match store
        .create_venue(
            &key,
            fingerprint_bytes(usher_engine::FingerprintTag::Demo, b"demo-venue-v2"),
            VenueId(uuid::Uuid::new_v4()),
            DEMO_ORG,
            &spec,
            &layout,
            now,
            &audit("venue.create", "demo"),
        )
        .await?
    {
        Created::New(id) | Created::Replayed(id) => id,
        Created::KeyReused => anyhow::bail!("demo venue key is taken by another request"),
    };
    let eur = Currency::parse("EUR")?;
    let day = 86_400_000u64;
    let mut ids = Vec::new();
    for (n, (name, desc, days, prices)) in [
        ("Opening Night", "The first night of the season, with the full company.", 30u64, [12_000i64, 8_000, 4_500]),
        ("Symphony No. 9", "Beethoven's ninth, with choir.", 45, [9_500, 6_500, 3_500]),
    ]
    .into_iter()
    .enumerate()
    {
        let starts_at = now.plus_ms(days * day);
        let config = EventConfig {
            id: EventId(uuid::Uuid::new_v4()),
            org_id: DEMO_ORG,
            venue_id,
            name: name.into(),
            description: desc.into(),
            starts_at,
            sales_start: now,
            sales_end: starts_at,
            status: EventStatus::OnSale,
            hold_duration_ms: limits::HOLD_DURATION_MS_DEFAULT,
            hold_seats_max: limits::HOLD_SEATS_DEFAULT,
            prices: prices.iter().map(|&minor| Money { minor, currency: eur }).collect(),
            time_zone: spec.time_zone.clone(),
        };
        config.validate(&layout)?;
        let k = format!("demo-event-v2-{n}");
        let key = IdempotencyKey::parse(&k)?;
        match store
            .create_event(
                &key,
                fingerprint_bytes(usher_engine::FingerprintTag::Demo, k.as_bytes()),
                &config,
                now,
                &audit("event.create", config.id),
            )
            .await?
        {
            Created::New(id) | Created::Replayed(id) => ids.push(id),
            Created::KeyReused => anyhow::bail!("demo event key is taken by another request"),
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_venue_has_2000_seats() {
        let l = usher_engine::Layout::build(&super::venue()).unwrap();
        assert_eq!(l.seat_count(), 2000);
    }
}
