//! The identity store and catalog tenancy, on both backends: every spec runs
//! on a fresh SQLite file and on a fresh PostgreSQL database (which must be
//! there: a missing server fails the tests, never skips them).

use std::sync::Arc;

use sqlx::Connection as _;
use uuid::Uuid;

use usher_actors::{
    ApiKeyRecord, AuditEntry, Batch, Created, DeviceRecord, EpochClaim, EventFilter, IdentityStore, OrgRecord, RefreshRecord, RefreshUse,
    SigningKeyRecord, Store, StoreError, UserRecord, Visibility,
};
use usher_adapters::connect_all;
use usher_engine::{
    ApiKeyId, Currency, DeviceId, EventConfig, EventId, EventStatus, IdempotencyKey, Layout, Membership, Millis, Money, OrgId, PartnerId,
    Role, Scope, UserId, VenueId, grid_venue,
};

// ---------------------------------------------------------------- backends

/// The organization migrations give every venue and event written before Identity.
const DEFAULT_ORG: OrgId = OrgId(Uuid::from_u128(1));

/// A fresh, empty database; `url` is what `connect_all` takes.
struct TestDb {
    url: String,
    /// The SQLite file's directory (removed on drop).
    dir: tempfile::TempDir,
    /// The PostgreSQL database to drop afterwards.
    pg_name: Option<String>,
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        TestDb { url: format!("sqlite://{}", dir.path().join("usher.db").display()), dir, pg_name: None }
    }

    async fn postgres() -> TestDb {
        let (name, url) = usher_test_support::fresh_pg_database("identity").await;
        TestDb { url, dir: tempfile::tempdir().unwrap(), pg_name: Some(name) }
    }

    async fn drop_db(self) {
        if let Some(name) = &self.pg_name {
            usher_test_support::drop_pg_database(name).await;
        }
    }
}

/// Each spec becomes a module with a `sqlite` and a `postgres` test.
macro_rules! both_backends {
    ($($spec:ident),* $(,)?) => {$(
        mod $spec {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let db = super::TestDb::sqlite().await;
                super::$spec(&db.url).await;
                db.drop_db().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let db = super::TestDb::postgres().await;
                super::$spec(&db.url).await;
                db.drop_db().await;
            }
        }
    )*};
}

both_backends!(
    users_are_found_by_email_in_any_case_and_an_email_is_taken_once,
    organizations_are_listed_by_name_and_created_once,
    members_are_added_changed_and_removed_each_with_an_audit_row,
    a_refresh_token_presented_after_it_was_spent_revokes_its_whole_family,
    of_eight_concurrent_uses_of_one_refresh_token_exactly_one_is_fresh,
    logging_out_revokes_the_family_of_the_token,
    api_keys_create_their_partner_once_and_are_found_listed_revoked_and_touched,
    an_api_key_cannot_name_a_partner_of_another_organization,
    gate_devices_are_found_listed_revoked_and_touched,
    a_new_signing_key_retires_every_older_one,
    the_audit_log_pages_newest_first_within_one_organization,
    venues_and_events_keep_their_organization_and_audit_only_their_creation,
    a_draft_is_listed_only_to_its_own_organization_and_to_everyone_views,
    a_committed_batch_writes_its_audits_and_a_fenced_one_writes_none,
);

// ---------------------------------------------------------------- helpers

async fn stores(url: &str) -> (Arc<dyn Store>, Arc<dyn IdentityStore>) {
    let (store, _, ids) = connect_all(url).await.unwrap();
    (store, ids)
}

fn org_id(n: u128) -> OrgId {
    OrgId(Uuid::from_u128(0xA000 + n))
}

fn audit(org: OrgId, at: i64, action: &str, target: &str) -> AuditEntry {
    AuditEntry {
        org,
        at: Millis(at),
        actor: "user:test".into(),
        address: "127.0.0.1".into(),
        action: action.into(),
        target: target.into(),
        detail: String::new(),
    }
}

async fn new_org(ids: &dyn IdentityStore, n: u128, name: &str) -> OrgId {
    let org = OrgRecord { id: org_id(n), name: name.into(), created_at: Millis(1) };
    ids.create_org(&org, &audit(org.id, 1, "org.create", &org.id.to_string())).await.unwrap();
    org.id
}

fn user(n: u128, email: &str) -> UserRecord {
    UserRecord {
        id: UserId(Uuid::from_u128(0xB000 + n)),
        email: email.into(),
        name: format!("User {n}"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        admin: false,
        created_at: Millis(5),
    }
}

async fn new_user(ids: &dyn IdentityStore, n: u128, email: &str) -> UserId {
    let u = user(n, email);
    assert!(ids.create_user(&u).await.unwrap());
    u.id
}

/// Actions of an organization's audit log, newest first.
async fn actions(ids: &dyn IdentityStore, org: OrgId) -> Vec<String> {
    ids.audit_log(org, None, 100).await.unwrap().into_iter().map(|r| r.entry.action).collect()
}

fn refresh(hash: &str, family: Uuid, user: UserId, expires_at: i64) -> RefreshRecord {
    RefreshRecord { hash: hash.into(), family, user, issued_at: Millis(10), expires_at: Millis(expires_at) }
}

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s).unwrap()
}

/// A venue of `org` (with its audit) and its layout.
async fn venue(store: &dyn Store, org: OrgId, k: &str) -> (VenueId, Layout) {
    let spec = grid_venue("Hall", 1, 1, 4);
    let layout = Layout::build(&spec).unwrap();
    let id = VenueId(Uuid::new_v4());
    let a = audit(org, 10, "venue.create", &id.to_string());
    let made = store.create_venue(&key(k), 1, id, org, &spec, &layout, Millis(10), &a).await.unwrap();
    assert!(matches!(made, Created::New(_)));
    (id, layout)
}

fn event(org: OrgId, venue: VenueId, layout: &Layout, status: EventStatus, starts_at: i64) -> EventConfig {
    EventConfig {
        id: EventId(Uuid::new_v4()),
        org_id: org,
        venue_id: venue,
        name: format!("{status:?} of {org}"),
        starts_at: Millis(starts_at),
        sales_end: Millis(starts_at),
        status,
        prices: layout.categories.iter().map(|_| Money { minor: 1000, currency: Currency::parse("EUR").unwrap() }).collect(),
        ..usher_test_support::event_config(layout, Millis(0))
    }
}

async fn new_event(store: &dyn Store, config: &EventConfig) {
    let k = key(&format!("event-{}", config.id));
    let a = audit(config.org_id, 20, "event.create", &config.id.to_string());
    assert!(matches!(store.create_event(&k, 1, config, Millis(20), &a).await.unwrap(), Created::New(_)));
}

// ---------------------------------------------------------------- specs

async fn users_are_found_by_email_in_any_case_and_an_email_is_taken_once(url: &str) {
    let (_, ids) = stores(url).await;
    let ann = UserRecord { admin: true, ..user(1, "Ann.Lee@Example.COM") };
    assert!(ids.create_user(&ann).await.unwrap());

    let stored = ids.user_by_email("ann.lee@example.com").await.unwrap().expect("found lower-cased");
    assert_eq!(stored, UserRecord { email: "ann.lee@example.com".into(), ..ann.clone() });
    assert_eq!(ids.user_by_email("ANN.LEE@EXAMPLE.COM").await.unwrap().as_ref(), Some(&stored));
    assert_eq!(ids.get_user(ann.id).await.unwrap().as_ref(), Some(&stored));

    let taken = user(2, "ann.lee@EXAMPLE.com");
    assert!(!ids.create_user(&taken).await.unwrap(), "the same email in another case is taken");
    assert_eq!(ids.get_user(taken.id).await.unwrap(), None);
    assert_eq!(ids.user_by_email("bob@example.com").await.unwrap(), None);
    assert!(ids.create_user(&user(3, "bob@example.com")).await.unwrap());
}

async fn organizations_are_listed_by_name_and_created_once(url: &str) {
    let (_, ids) = stores(url).await;
    let zed = new_org(&*ids, 1, "Zed Hall").await;
    let acme = new_org(&*ids, 2, "Acme Tickets").await;
    let names: Vec<String> = ids.list_orgs().await.unwrap().into_iter().map(|o| o.name).collect();
    assert_eq!(names, ["Acme Tickets", "Default organization", "Zed Hall"]);
    let got = ids.get_org(zed).await.unwrap().unwrap();
    assert_eq!(got, OrgRecord { id: zed, name: "Zed Hall".into(), created_at: Millis(1) });
    assert_eq!(ids.get_org(org_id(99)).await.unwrap(), None);

    let again = OrgRecord { id: acme, name: "Acme again".into(), created_at: Millis(2) };
    let e = ids.create_org(&again, &audit(acme, 2, "org.create", "again")).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    assert_eq!(actions(&*ids, acme).await, ["org.create"], "a refused create writes no audit row");
}

async fn members_are_added_changed_and_removed_each_with_an_audit_row(url: &str) {
    let (_, ids) = stores(url).await;
    let org = new_org(&*ids, 1, "Org").await;
    let other = new_org(&*ids, 2, "Other").await;
    let ann = new_user(&*ids, 1, "ann@example.com").await;
    let bob = new_user(&*ids, 2, "bob@example.com").await;

    ids.set_member(org, ann, Role::Owner, &audit(org, 10, "member.add", "ann")).await.unwrap();
    ids.set_member(org, bob, Role::Viewer, &audit(org, 11, "member.add", "bob")).await.unwrap();
    ids.set_member(other, bob, Role::BoxOffice, &audit(other, 12, "member.add", "bob")).await.unwrap();
    ids.set_member(org, bob, Role::Manager, &audit(org, 20, "member.role", "bob")).await.unwrap();

    let members: Vec<(UserId, String, Role, Millis)> =
        ids.members(org).await.unwrap().into_iter().map(|m| (m.user, m.email, m.role, m.added_at)).collect();
    assert_eq!(
        members,
        [(ann, "ann@example.com".into(), Role::Owner, Millis(10)), (bob, "bob@example.com".into(), Role::Manager, Millis(11))],
        "a role change keeps the date the member was added"
    );
    let mut of_bob = ids.memberships(bob).await.unwrap();
    of_bob.sort_by_key(|m| m.org);
    assert_eq!(of_bob, [Membership { org, role: Role::Manager }, Membership { org: other, role: Role::BoxOffice }]);

    assert!(ids.remove_member(org, bob, &audit(org, 30, "member.remove", "bob")).await.unwrap());
    assert!(!ids.remove_member(org, bob, &audit(org, 31, "member.remove", "bob")).await.unwrap());
    assert_eq!(ids.members(org).await.unwrap().len(), 1);
    assert_eq!(ids.memberships(bob).await.unwrap(), [Membership { org: other, role: Role::BoxOffice }]);

    let nobody = UserId(Uuid::from_u128(0xDEAD));
    let e = ids.set_member(org, nobody, Role::Viewer, &audit(org, 40, "member.add", "nobody")).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e:?}");

    assert_eq!(
        actions(&*ids, org).await,
        ["member.remove", "member.role", "member.add", "member.add", "org.create"],
        "one row per change, none for a change that did nothing or failed"
    );
    assert_eq!(actions(&*ids, other).await, ["member.add", "org.create"]);
}

async fn a_refresh_token_presented_after_it_was_spent_revokes_its_whole_family(url: &str) {
    let (_, ids) = stores(url).await;
    let ann = new_user(&*ids, 1, "ann@example.com").await;
    let family = Uuid::from_u128(0xF1);
    let first = refresh("h1", family, ann, 1_000);
    ids.insert_refresh(&first).await.unwrap();

    assert_eq!(ids.use_refresh("h1", Millis(100)).await.unwrap(), RefreshUse::Fresh(first.clone()));
    ids.insert_refresh(&refresh("h2", family, ann, 1_100)).await.unwrap();
    // Another sign-in of the same user is another family.
    ids.insert_refresh(&refresh("other", Uuid::from_u128(0xF2), ann, 1_000)).await.unwrap();

    // Someone presents the spent token again: the family goes.
    assert_eq!(ids.use_refresh("h1", Millis(200)).await.unwrap(), RefreshUse::Reused { family, user: ann });
    assert_eq!(ids.use_refresh("h2", Millis(210)).await.unwrap(), RefreshUse::Reused { family, user: ann }, "the live one too");
    // A token issued into the revoked family (a refresh racing the reuse) is dead at birth.
    ids.insert_refresh(&refresh("h3", family, ann, 1_200)).await.unwrap();
    assert!(matches!(ids.use_refresh("h3", Millis(220)).await.unwrap(), RefreshUse::Reused { .. }));

    assert!(matches!(ids.use_refresh("other", Millis(230)).await.unwrap(), RefreshUse::Fresh(_)), "other families live on");
    assert_eq!(ids.use_refresh("unknown", Millis(240)).await.unwrap(), RefreshUse::Invalid);

    // Merely expired: invalid, and nothing is revoked.
    let family3 = Uuid::from_u128(0xF3);
    ids.insert_refresh(&refresh("old", family3, ann, 300)).await.unwrap();
    ids.insert_refresh(&refresh("new", family3, ann, 2_000)).await.unwrap();
    assert_eq!(ids.use_refresh("old", Millis(300)).await.unwrap(), RefreshUse::Invalid);
    assert!(matches!(ids.use_refresh("new", Millis(300)).await.unwrap(), RefreshUse::Fresh(_)));
}

async fn of_eight_concurrent_uses_of_one_refresh_token_exactly_one_is_fresh(url: &str) {
    let (_, ids) = stores(url).await;
    let ann = new_user(&*ids, 1, "ann@example.com").await;
    ids.insert_refresh(&refresh("raced", Uuid::from_u128(0xF1), ann, 10_000)).await.unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (ids, start) = (ids.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                ids.use_refresh("raced", Millis(100 + i)).await.unwrap()
            })
        })
        .collect();
    let mut fresh = 0;
    let mut reused = 0;
    for t in tasks {
        match t.await.unwrap() {
            RefreshUse::Fresh(_) => fresh += 1,
            RefreshUse::Reused { .. } => reused += 1,
            RefreshUse::Invalid => panic!("a known token is never invalid here"),
        }
    }
    assert_eq!((fresh, reused), (1, 7));
}

async fn logging_out_revokes_the_family_of_the_token(url: &str) {
    let (_, ids) = stores(url).await;
    let ann = new_user(&*ids, 1, "ann@example.com").await;
    let family = Uuid::from_u128(0xF1);
    ids.insert_refresh(&refresh("a", family, ann, 1_000)).await.unwrap();
    assert!(matches!(ids.use_refresh("a", Millis(100)).await.unwrap(), RefreshUse::Fresh(_)));
    ids.insert_refresh(&refresh("b", family, ann, 1_000)).await.unwrap();
    ids.insert_refresh(&refresh("elsewhere", Uuid::from_u128(0xF2), ann, 1_000)).await.unwrap();

    assert!(ids.revoke_refresh("a", Millis(200)).await.unwrap(), "a spent token names its family too");
    assert!(!matches!(ids.use_refresh("b", Millis(210)).await.unwrap(), RefreshUse::Fresh(_)));
    assert!(!ids.revoke_refresh("unknown", Millis(220)).await.unwrap());
    assert!(matches!(ids.use_refresh("elsewhere", Millis(230)).await.unwrap(), RefreshUse::Fresh(_)));
}

fn api_key(n: u128, org: OrgId, partner: PartnerId, partner_name: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: ApiKeyId(Uuid::from_u128(0xC000 + n)),
        partner_id: partner,
        partner_name: partner_name.into(),
        org,
        prefix: format!("usk_{n:08x}"),
        hash: format!("{n:064x}"),
        scopes: vec![Scope::EventsRead, Scope::Holds],
        events: vec![],
        expires_at: None,
        created_at: Millis(100 + n as i64),
        last_used_at: None,
        revoked_at: None,
    }
}

async fn api_keys_create_their_partner_once_and_are_found_listed_revoked_and_touched(url: &str) {
    let (_, ids) = stores(url).await;
    let org = new_org(&*ids, 1, "Org").await;
    let other = new_org(&*ids, 2, "Other").await;
    let partner = PartnerId(Uuid::from_u128(0xD1));
    let events = vec![EventId(Uuid::from_u128(1)), EventId(Uuid::from_u128(2))];
    let first = ApiKeyRecord {
        scopes: Scope::ALL.to_vec(),
        events: events.clone(),
        expires_at: Some(Millis(9_000)),
        ..api_key(1, org, partner, "Box Office Ltd")
    };
    ids.create_api_key(&first, &audit(org, 101, "api_key.create", &first.id.to_string())).await.unwrap();
    // The second key of the same partner (a rotation) keeps the partner's name.
    let second = api_key(2, org, partner, "ignored");
    ids.create_api_key(&second, &audit(org, 102, "api_key.create", &second.id.to_string())).await.unwrap();
    let second = ApiKeyRecord { partner_name: "Box Office Ltd".into(), ..second };

    assert_eq!(ids.api_key_by_prefix(&first.prefix).await.unwrap().as_ref(), Some(&first));
    assert_eq!(ids.api_key_by_prefix("usk_nothere").await.unwrap(), None);
    assert_eq!(ids.api_keys(org).await.unwrap(), [first.clone(), second.clone()]);
    assert_eq!(ids.api_keys(other).await.unwrap(), []);
    assert_eq!(ids.partner_name(org, partner).await.unwrap().as_deref(), Some("Box Office Ltd"));
    assert_eq!(ids.partner_name(other, partner).await.unwrap(), None);

    let same_prefix = ApiKeyRecord { id: ApiKeyId(Uuid::from_u128(0xC0FF)), ..first.clone() };
    let e = ids.create_api_key(&same_prefix, &audit(org, 103, "api_key.create", "dup")).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");

    assert!(!ids.revoke_api_key(other, first.id, &audit(other, 200, "api_key.revoke", "x")).await.unwrap(), "not its key");
    assert!(ids.revoke_api_key(org, first.id, &audit(org, 201, "api_key.revoke", &first.id.to_string())).await.unwrap());
    assert!(!ids.revoke_api_key(org, first.id, &audit(org, 202, "api_key.revoke", "again")).await.unwrap(), "revoked already");
    assert_eq!(ids.api_key_by_prefix(&first.prefix).await.unwrap().unwrap().revoked_at, Some(Millis(201)));

    ids.touch_api_key(second.id, Millis(500)).await.unwrap();
    ids.touch_api_key(second.id, Millis(400)).await.unwrap();
    assert_eq!(ids.api_key_by_prefix(&second.prefix).await.unwrap().unwrap().last_used_at, Some(Millis(500)), "never moves back");

    assert_eq!(actions(&*ids, org).await, ["api_key.revoke", "api_key.create", "api_key.create", "org.create"]);
    assert_eq!(actions(&*ids, other).await, ["org.create"]);
}

async fn an_api_key_cannot_name_a_partner_of_another_organization(url: &str) {
    let (_, ids) = stores(url).await;
    let org = new_org(&*ids, 1, "Org").await;
    let other = new_org(&*ids, 2, "Other").await;
    let partner = PartnerId(Uuid::from_u128(0xD1));
    ids.create_api_key(&api_key(1, org, partner, "P"), &audit(org, 101, "api_key.create", "k1")).await.unwrap();

    let stolen = api_key(2, other, partner, "P");
    let e = ids.create_api_key(&stolen, &audit(other, 102, "api_key.create", "k2")).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    assert_eq!(ids.api_key_by_prefix(&stolen.prefix).await.unwrap(), None);
    assert_eq!(actions(&*ids, other).await, ["org.create"]);
}

async fn gate_devices_are_found_listed_revoked_and_touched(url: &str) {
    let (_, ids) = stores(url).await;
    let org = new_org(&*ids, 1, "Org").await;
    let other = new_org(&*ids, 2, "Other").await;
    let device = |n: u128, events: Vec<EventId>| DeviceRecord {
        id: DeviceId(Uuid::from_u128(0xE000 + n)),
        org,
        gate: format!("North gate {n}"),
        prefix: format!("usd_{n:08x}"),
        hash: format!("{n:064x}"),
        events,
        created_at: Millis(100 + n as i64),
        last_used_at: None,
        revoked_at: None,
    };
    let north = device(1, vec![EventId(Uuid::from_u128(7))]);
    let south = device(2, vec![]);
    for d in [&north, &south] {
        ids.create_device(d, &audit(org, d.created_at.0, "device.create", &d.id.to_string())).await.unwrap();
    }
    assert_eq!(ids.device_by_prefix(&north.prefix).await.unwrap().as_ref(), Some(&north));
    assert_eq!(ids.device_by_prefix("usd_nothere").await.unwrap(), None);
    assert_eq!(ids.devices(org).await.unwrap(), [north.clone(), south.clone()]);
    assert_eq!(ids.devices(other).await.unwrap(), []);

    let same_prefix = DeviceRecord { id: DeviceId(Uuid::from_u128(0xE0FF)), ..north.clone() };
    let e = ids.create_device(&same_prefix, &audit(org, 150, "device.create", "dup")).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "a prefix is unique: {e:?}");

    assert!(!ids.revoke_device(other, north.id, &audit(other, 200, "device.revoke", "x")).await.unwrap());
    assert!(ids.revoke_device(org, north.id, &audit(org, 201, "device.revoke", &north.id.to_string())).await.unwrap());
    assert!(!ids.revoke_device(org, north.id, &audit(org, 202, "device.revoke", "again")).await.unwrap());
    assert_eq!(ids.device_by_prefix(&north.prefix).await.unwrap().unwrap().revoked_at, Some(Millis(201)));

    ids.touch_device(south.id, Millis(600)).await.unwrap();
    ids.touch_device(south.id, Millis(550)).await.unwrap();
    assert_eq!(ids.device_by_prefix(&south.prefix).await.unwrap().unwrap().last_used_at, Some(Millis(600)));
    assert_eq!(actions(&*ids, org).await, ["device.revoke", "device.create", "device.create", "org.create"]);
}

async fn a_new_signing_key_retires_every_older_one(url: &str) {
    let (_, ids) = stores(url).await;
    assert_eq!(ids.signing_keys().await.unwrap(), []);
    let k = |kid: &str, at: i64| SigningKeyRecord { kid: kid.into(), seed: vec![at as u8; 32], created_at: Millis(at), retired_at: None };
    ids.add_signing_key(&k("k1", 100)).await.unwrap();
    assert_eq!(ids.signing_keys().await.unwrap(), [k("k1", 100)]);
    ids.add_signing_key(&k("k2", 200)).await.unwrap();
    ids.add_signing_key(&k("k3", 300)).await.unwrap();
    let keys = ids.signing_keys().await.unwrap();
    assert_eq!(
        keys,
        [
            SigningKeyRecord { retired_at: Some(Millis(200)), ..k("k1", 100) },
            SigningKeyRecord { retired_at: Some(Millis(300)), ..k("k2", 200) },
            k("k3", 300),
        ]
    );
    assert_eq!(keys[2].seed, vec![44u8; 32], "the seed comes back byte for byte");
    let e = ids.add_signing_key(&k("k2", 400)).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    assert_eq!(ids.signing_keys().await.unwrap()[2].retired_at, None, "a refused key retires nothing");
}

async fn the_audit_log_pages_newest_first_within_one_organization(url: &str) {
    let (_, ids) = stores(url).await;
    let (a, b) = (org_id(1), org_id(2));
    for i in 1..=5 {
        ids.audit(&audit(a, i, &format!("a{i}"), "t")).await.unwrap();
        if i <= 2 {
            ids.audit(&AuditEntry { detail: "about b".into(), ..audit(b, i, &format!("b{i}"), "t") }).await.unwrap();
        }
    }
    let page = |before: Option<i64>| {
        let ids = ids.clone();
        async move { ids.audit_log(a, before, 2).await.unwrap() }
    };
    let p1 = page(None).await;
    let p2 = page(Some(p1[1].seq)).await;
    let p3 = page(Some(p2[1].seq)).await;
    let p4 = page(Some(p3[0].seq)).await;
    let names = |p: &[usher_actors::AuditRecord]| p.iter().map(|r| r.entry.action.clone()).collect::<Vec<_>>();
    assert_eq!(
        (names(&p1), names(&p2), names(&p3), p4.len()),
        (vec!["a5".to_owned(), "a4".into()], vec!["a3".into(), "a2".into()], vec!["a1".into()], 0)
    );
    assert!(p1[0].seq > p1[1].seq && p1[1].seq > p2[0].seq);
    assert_eq!(p3[0].entry, audit(a, 1, "a1", "t"), "every field comes back");
    let of_b = ids.audit_log(b, None, 10).await.unwrap();
    assert_eq!(names(&of_b), ["b2", "b1"]);
    assert_eq!(of_b[0].entry.detail, "about b");
}

async fn venues_and_events_keep_their_organization_and_audit_only_their_creation(url: &str) {
    let (store, ids) = stores(url).await;
    let org = org_id(1);
    let (venue_id, layout) = venue(&*store, org, "venue-1").await;
    let got = store.get_venue(venue_id).await.unwrap().unwrap();
    assert_eq!((got.id, got.org_id), (venue_id, org));

    // A replay is answered from the key, and audits nothing.
    let spec = grid_venue("Hall", 1, 1, 4);
    let a = audit(org, 11, "venue.create", "replay");
    let replay = store.create_venue(&key("venue-1"), 1, VenueId(Uuid::new_v4()), org, &spec, &layout, Millis(11), &a).await.unwrap();
    assert!(matches!(replay, Created::Replayed(id) if id == venue_id));

    let config = event(org, venue_id, &layout, EventStatus::Draft, 1_000);
    new_event(&*store, &config).await;
    assert_eq!(store.get_event(config.id).await.unwrap().as_ref(), Some(&config));
    let k = key(&format!("event-{}", config.id));
    let replay = store.create_event(&k, 1, &config, Millis(21), &audit(org, 21, "event.create", "replay")).await.unwrap();
    assert!(matches!(replay, Created::Replayed(id) if id == config.id));
    let reused = store.create_event(&k, 2, &config, Millis(22), &audit(org, 22, "event.create", "reused")).await.unwrap();
    assert!(matches!(reused, Created::KeyReused));

    let log = ids.audit_log(org, None, 10).await.unwrap();
    let targets: Vec<(&str, String)> = log.iter().map(|r| (r.entry.action.as_str(), r.entry.target.clone())).collect();
    assert_eq!(targets, [("event.create", config.id.to_string()), ("venue.create", venue_id.to_string())]);
}

async fn a_draft_is_listed_only_to_its_own_organization_and_to_everyone_views(url: &str) {
    let (store, _) = stores(url).await;
    let (a, b) = (org_id(1), org_id(2));
    let (va, layout) = venue(&*store, a, "venue-a").await;
    let (vb, _) = venue(&*store, b, "venue-b").await;
    let a_draft = event(a, va, &layout, EventStatus::Draft, 1_000);
    let a_on_sale = event(a, va, &layout, EventStatus::OnSale, 2_000);
    let b_draft = event(b, vb, &layout, EventStatus::Draft, 3_000);
    let b_cancelled = event(b, vb, &layout, EventStatus::Cancelled, 4_000);
    let b_closed = event(b, vb, &layout, EventStatus::SalesClosed, 5_000);
    for e in [&a_draft, &a_on_sale, &b_draft, &b_cancelled, &b_closed] {
        new_event(&*store, e).await;
    }
    let list = |visible: Visibility, status: Option<EventStatus>| {
        let store = store.clone();
        async move {
            let f = EventFilter { visible, status, limit: 100, ..EventFilter::default() };
            store.list_events(f).await.unwrap().into_iter().map(|e| e.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(list(Visibility::Public, None).await, [a_on_sale.id, b_closed.id]);
    assert_eq!(list(Visibility::PublicAnd(vec![a]), None).await, [a_draft.id, a_on_sale.id, b_closed.id]);
    assert_eq!(list(Visibility::PublicAnd(vec![b]), None).await, [a_on_sale.id, b_draft.id, b_cancelled.id, b_closed.id]);
    assert_eq!(list(Visibility::PublicAnd(vec![]), None).await, [a_on_sale.id, b_closed.id]);
    assert_eq!(list(Visibility::All, None).await, [a_draft.id, a_on_sale.id, b_draft.id, b_cancelled.id, b_closed.id]);
    assert_eq!(list(Visibility::Public, Some(EventStatus::Draft)).await, []);
    assert_eq!(list(Visibility::PublicAnd(vec![a, b]), Some(EventStatus::Draft)).await, [a_draft.id, b_draft.id]);
}

async fn a_committed_batch_writes_its_audits_and_a_fenced_one_writes_none(url: &str) {
    let (store, ids) = stores(url).await;
    let org = org_id(1);
    let (venue_id, layout) = venue(&*store, org, "venue-1").await;
    let config = event(org, venue_id, &layout, EventStatus::Draft, 1_000);
    new_event(&*store, &config).await;
    let epoch = store.fence_event(config.id, EpochClaim::Next).await.unwrap();
    let audits = [audit(org, 30, "event.block", "seats A-1-1"), audit(org, 30, "event.open", &config.id.to_string())];
    let batch = Batch { event_id: config.id, epoch, now: Millis(30), layout: &layout, decisions: &[], audits: &audits, traces: &[] };
    store.commit(batch).await.unwrap();
    assert_eq!(actions(&*ids, org).await, ["event.open", "event.block", "event.create", "venue.create"]);

    let newer = store.fence_event(config.id, EpochClaim::Next).await.unwrap();
    assert!(newer > epoch);
    let stale = [audit(org, 40, "event.cancel", "stale")];
    let batch = Batch { event_id: config.id, epoch, now: Millis(40), layout: &layout, decisions: &[], audits: &stale, traces: &[] };
    assert!(matches!(store.commit(batch).await.unwrap_err(), StoreError::Fenced { .. }));
    assert_eq!(ids.audit_log(org, None, 1).await.unwrap()[0].entry.action, "event.open", "a fenced batch audits nothing");
}

// ---------------------------------------------------------------- migration

/// Applies the migrations before Identity (numbered below `first_identity`)
/// from a copy of their folder, as an older release would have.
fn migrations_before(db: &str, first_identity: i64, into: &std::path::Path) -> std::path::PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations").join(db);
    let dst = into.join(format!("old-{db}"));
    std::fs::create_dir_all(&dst).unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap();
        let name = f.file_name().into_string().unwrap();
        let version: i64 = name.split('_').next().unwrap().parse().unwrap();
        if version < first_identity {
            std::fs::copy(f.path(), dst.join(&name)).unwrap();
        }
    }
    dst
}

const OLD_VENUE: &str = "INSERT INTO venues (id, name, spec, seat_count, created_at) VALUES ($1, 'Old hall', $2, 4, 1)";
const OLD_EVENT: &str = "INSERT INTO events (id, venue_id, name, description, starts_at, sales_start, sales_end, status, hold_duration_ms, \
                         hold_seats_max, currency, prices, owner_epoch, created_at, updated_at) \
                         VALUES ($1, $2, 'Old show', '', 1000, 0, 1000, 'on_sale', 60000, 6, 'EUR', '[1000,2000]', 0, 1, 1)";

/// What an older release wrote is found in the default organization after the upgrade.
async fn check_upgraded(url: &str, venue_id: VenueId, event_id: EventId) {
    let (store, ids) = stores(url).await;
    assert_eq!(store.get_venue(venue_id).await.unwrap().unwrap().org_id, DEFAULT_ORG);
    let e = store.get_event(event_id).await.unwrap().unwrap();
    assert_eq!((e.org_id, e.status), (DEFAULT_ORG, EventStatus::OnSale));
    assert_eq!(ids.get_org(DEFAULT_ORG).await.unwrap().unwrap().name, "Default organization");
    let listed = store.list_events(EventFilter { limit: 10, ..EventFilter::default() }).await.unwrap();
    assert_eq!(listed.iter().map(|e| e.id).collect::<Vec<_>>(), [event_id]);
}

mod rows_written_before_identity_belong_to_the_default_organization {
    use super::*;

    #[tokio::test]
    async fn sqlite() {
        let db = TestDb::sqlite().await;
        let path = db.dir.path().join("usher.db");
        let (venue_id, event_id) = (VenueId(Uuid::new_v4()), EventId(Uuid::new_v4()));
        {
            let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
            let old = migrations_before("sqlite", 3, db.dir.path());
            sqlx::migrate::Migrator::new(old.as_path()).await.unwrap().run(&mut conn).await.unwrap();
            let spec = serde_json::to_string(&grid_venue("Old hall", 1, 1, 4)).unwrap();
            sqlx::query(OLD_VENUE).bind(venue_id.to_string()).bind(spec).execute(&mut conn).await.unwrap();
            sqlx::query(OLD_EVENT).bind(event_id.to_string()).bind(venue_id.to_string()).execute(&mut conn).await.unwrap();
        }
        check_upgraded(&db.url, venue_id, event_id).await;
        db.drop_db().await;
    }

    #[tokio::test]
    async fn postgres() {
        let db = TestDb::postgres().await;
        let (venue_id, event_id) = (VenueId(Uuid::new_v4()), EventId(Uuid::new_v4()));
        {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            let old = migrations_before("postgres", 4, db.dir.path());
            sqlx::migrate::Migrator::new(old.as_path()).await.unwrap().run(&mut conn).await.unwrap();
            sqlx::query("SET search_path TO bc_catalog").execute(&mut conn).await.unwrap();
            let spec = serde_json::to_string(&grid_venue("Old hall", 1, 1, 4)).unwrap();
            sqlx::query(OLD_VENUE).bind(venue_id.to_string()).bind(spec).execute(&mut conn).await.unwrap();
            sqlx::query(OLD_EVENT).bind(event_id.to_string()).bind(venue_id.to_string()).execute(&mut conn).await.unwrap();
        }
        check_upgraded(&db.url, venue_id, event_id).await;
        db.drop_db().await;
    }
}
