//! Identity and access as pure data and rules: the roles of an
//! organization's members and what each may do, a partner key's scopes, the
//! principal a request acts as, and the checks that decide whether it may act
//! on a tenant's resource. No IO: the gateway proves who is calling (tokens,
//! keys) and then asks these rules.
//!
//! The tenancy rule: every venue and event belongs to one organization; a
//! principal with no relation to that organization is told the resource does
//! not exist (`Denied::NotFound`), one with a relation but without the
//! capability is told it may not (`Denied::Forbidden`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{ApiKeyId, CustomerId, DeviceId, EventId, GuestId, InvalidInput, OrgId, PartnerId, UserId};
use crate::limits;

/// A member's role in one organization, named by what people do there
/// (pretix's team permissions are the model). Ordered from most to least.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// Everything, including members, keys, devices and the audit log.
    Owner,
    /// Venues, events, seats, sales status, orders and refunds.
    Manager,
    /// Sells at the counter for customers, sees its events' orders, scans.
    BoxOffice,
    /// Reads orders and reports.
    Viewer,
}

/// The sales channel a customer bought through, read from the namespace of
/// its customer id (`Principal::customer`): a partner's customers
/// (`p:PARTNER:REF`), a box office's counter customers (`o:ORG:REF`), and
/// people buying for themselves, signed in or as guests (`u:…`, `g:…`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SalesChannel {
    Online,
    Partner,
    BoxOffice,
}

impl SalesChannel {
    pub const ALL: [SalesChannel; 3] = [SalesChannel::Online, SalesChannel::Partner, SalesChannel::BoxOffice];

    /// The channel of a customer id (any string: an unknown namespace is
    /// `Online`).
    pub fn of(customer: &str) -> SalesChannel {
        match customer.split_once(':').map(|(ns, _)| ns) {
            Some("p") => SalesChannel::Partner,
            Some("o") => SalesChannel::BoxOffice,
            _ => SalesChannel::Online,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SalesChannel::Online => "online",
            SalesChannel::Partner => "partner",
            SalesChannel::BoxOffice => "box_office",
        }
    }
}

/// What a role allows on its organization's resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cap {
    /// Create venues.
    ManageVenues,
    /// Create events, open, close and cancel sales (which refunds), block and unblock seats.
    ManageEvents,
    /// Read any order of the organization's events; see drafts.
    ViewOrders,
    /// Cancel any order of the organization's events.
    ChangeOrders,
    /// Hold, order and take payment on behalf of a customer (box office).
    Sell,
    /// Scan tickets at a gate.
    Scan,
    /// Add and remove members.
    ManageMembers,
    /// Create and revoke partner API keys and gate device tokens.
    ManageKeys,
    /// Read the audit log.
    ViewAudit,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Manager, Role::BoxOffice, Role::Viewer];

    /// The roles table (ARCHITECTURE.md repeats it).
    pub fn allows(self, cap: Cap) -> bool {
        use Cap::*;
        match self {
            Role::Owner => true,
            Role::Manager => matches!(cap, ManageVenues | ManageEvents | ViewOrders | ChangeOrders | Sell | Scan),
            Role::BoxOffice => matches!(cap, ViewOrders | Sell | Scan),
            Role::Viewer => matches!(cap, ViewOrders),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Manager => "manager",
            Role::BoxOffice => "box_office",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Result<Role, InvalidInput> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            InvalidInput::new("role", format!("role must be one of owner, manager, box_office, viewer; got {}", crate::ids::quoted(s)))
        })
    }
}

/// What a partner's API key may call. A key has one or more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// Read events and seat maps, including the partner's organization's drafts.
    EventsRead,
    /// Hold and release seats for customers.
    Holds,
    /// Create, read and cancel orders for customers.
    Orders,
    /// Pay orders.
    Payments,
    /// Read tickets and download their PDFs.
    Tickets,
}

impl Scope {
    pub const ALL: [Scope; 5] = [Scope::EventsRead, Scope::Holds, Scope::Orders, Scope::Payments, Scope::Tickets];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::EventsRead => "events:read",
            Scope::Holds => "holds",
            Scope::Orders => "orders",
            Scope::Payments => "payments",
            Scope::Tickets => "tickets",
        }
    }

    pub fn parse(s: &str) -> Result<Scope, InvalidInput> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| {
            InvalidInput::new(
                "scopes",
                format!("scope must be one of events:read, holds, orders, payments, tickets; got {}", crate::ids::quoted(s)),
            )
        })
    }
}

/// One organization a user belongs to, with the role there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub org: OrgId,
    pub role: Role,
}

/// A signed-in person: a customer of their own orders, and a member of
/// organizations with a role in each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPrincipal {
    pub id: UserId,
    /// Platform administrator: every organization, every capability.
    pub admin: bool,
    pub memberships: Vec<Membership>,
}

/// A partner box office calling with one of its API keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerPrincipal {
    pub key_id: ApiKeyId,
    pub partner_id: PartnerId,
    pub org: OrgId,
    pub scopes: Vec<Scope>,
    /// The events it may sell; empty means every event of its organization.
    pub events: Vec<EventId>,
}

/// A gate device: it may only scan, at the events it is scoped to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatePrincipal {
    pub device_id: DeviceId,
    pub org: OrgId,
    /// The gate's name, recorded with each admission.
    pub gate: String,
    /// The events it scans for; empty means every event of its organization.
    pub events: Vec<EventId>,
}

/// Who a request acts as, once its credentials are checked. Serializable:
/// a node that forwards a request to its event's owner sends the principal it
/// authenticated along (over the authenticated node-to-node service).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Principal {
    Anonymous,
    User(UserPrincipal),
    Guest(GuestId),
    Partner(PartnerPrincipal),
    Gate(GatePrincipal),
}

/// Why a principal may not do something. The gateway maps these in one
/// place: UNAUTHENTICATED / 401, NOT_FOUND / 404 (no existence leak across
/// tenants), PERMISSION_DENIED / 403.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, and the door needs some.
    Unauthenticated,
    /// The resource belongs to a tenant the principal has no relation with.
    NotFound,
    /// Known, but not allowed; the message says what is missing.
    Forbidden(&'static str),
    /// The request names something malformed (INVALID_ARGUMENT / 400).
    Invalid { field: &'static str, message: &'static str },
}

/// One kind of caller a door admits; a door lists one or more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// Anyone, signed in or not.
    Anyone,
    /// Any caller with valid credentials, of any kind.
    Signed,
    /// Any signed-in user or guest, acting for itself.
    Customer,
    /// Any signed-in user.
    User,
    /// A partner key with this scope.
    Partner(Scope),
    /// A member whose role allows this, in some organization (the handler
    /// then checks the resource's own organization).
    Org(Cap),
    /// A gate device.
    Gate,
    /// A platform administrator.
    Admin,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::User(u) if u.admin)
    }

    /// A short, stable name for logs and the audit log: `user:<uuid>`, …
    pub fn actor(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::User(u) => format!("user:{}", u.id),
            Principal::Guest(g) => format!("guest:{g}"),
            Principal::Partner(p) => format!("partner:{}/key:{}", p.partner_id, p.key_id),
            Principal::Gate(g) => format!("device:{}", g.device_id),
        }
    }

    /// The scope of this principal's idempotency keys (no `/` inside), or
    /// `None` for an anonymous caller, which sends no commands.
    pub fn key_scope(&self) -> Option<String> {
        Some(match self {
            Principal::Anonymous => return None,
            Principal::User(u) => format!("u:{}", u.id.0.simple()),
            Principal::Guest(g) => format!("g:{}", g.0.simple()),
            Principal::Partner(p) => format!("p:{}", p.partner_id.0.simple()),
            Principal::Gate(g) => format!("d:{}", g.device_id.0.simple()),
        })
    }

    /// Does this principal pass one of a door's entries? Only the kind of
    /// caller is checked here; the resource's tenant is checked by the
    /// handler with [`Principal::may`].
    pub fn admitted(&self, who: &[Who]) -> Result<(), Denied> {
        let pass = who.iter().any(|w| match (w, self) {
            (Who::Anyone, _) => true,
            (Who::Signed, p) => *p != Principal::Anonymous,
            (Who::Customer, Principal::User(_) | Principal::Guest(_)) => true,
            (Who::User, Principal::User(_)) => true,
            (Who::Partner(s), Principal::Partner(p)) => p.scopes.contains(s),
            (Who::Org(cap), Principal::User(u)) => u.admin || u.memberships.iter().any(|m| m.role.allows(*cap)),
            (Who::Gate, Principal::Gate(_)) => true,
            (Who::Admin, p) => p.is_admin(),
            _ => false,
        });
        match (pass, self) {
            (true, _) => Ok(()),
            (false, Principal::Anonymous) => Err(Denied::Unauthenticated),
            (false, _) => Err(Denied::Forbidden("your credentials do not allow this call")),
        }
    }

    /// The principal's role in `org`, if it is a member (admins are owners everywhere).
    pub fn role_in(&self, org: OrgId) -> Option<Role> {
        match self {
            Principal::User(u) if u.admin => Some(Role::Owner),
            Principal::User(u) => u.memberships.iter().find(|m| m.org == org).map(|m| m.role),
            _ => None,
        }
    }

    /// Has any relation with `org` (member, its partner, its gate)?
    pub fn relates_to(&self, org: OrgId) -> bool {
        match self {
            Principal::User(_) => self.role_in(org).is_some(),
            Principal::Partner(p) => p.org == org,
            Principal::Gate(g) => g.org == org,
            Principal::Anonymous | Principal::Guest(_) => false,
        }
    }

    /// May this principal use `cap` on a resource of `org`? Only members
    /// have roles: to a partner or a gate of the organization, a resource
    /// that needs one does not exist, as to anyone outside it.
    pub fn may(&self, org: OrgId, cap: Cap) -> Result<(), Denied> {
        match self {
            Principal::Anonymous => Err(Denied::Unauthenticated),
            Principal::User(_) => match self.role_in(org) {
                None => Err(Denied::NotFound),
                Some(r) if r.allows(cap) => Ok(()),
                Some(_) => Err(Denied::Forbidden("your role in this organization does not allow this")),
            },
            Principal::Guest(_) | Principal::Partner(_) | Principal::Gate(_) => Err(Denied::NotFound),
        }
    }

    /// May this principal see `event` of `org` while it is not public (a
    /// draft or a cancelled event)? Members, the organization's partners
    /// that may sell it, and its gates may.
    pub fn sees_unlisted(&self, org: OrgId, event: EventId) -> bool {
        match self {
            Principal::User(_) => self.role_in(org).is_some(),
            Principal::Partner(p) => p.org == org && (p.events.is_empty() || p.events.contains(&event)),
            Principal::Gate(g) => g.org == org && (g.events.is_empty() || g.events.contains(&event)),
            Principal::Anonymous | Principal::Guest(_) => false,
        }
    }

    /// The customer a customer-side command acts for. Users and guests act
    /// for themselves (a non-empty `requested` must then be their own id);
    /// a partner names its customer by its own reference, kept inside its
    /// namespace; a member who may sell at `org` does the same at the
    /// counter. Returns the reason to refuse otherwise.
    pub fn customer(&self, org: OrgId, event: EventId, requested: &str) -> Result<CustomerId, Denied> {
        let own = self.own_customer();
        match self {
            Principal::Anonymous => Err(Denied::Unauthenticated),
            Principal::Gate(_) => Err(Denied::Forbidden("a gate device only scans")),
            Principal::Partner(p) => {
                if p.org != org || !(p.events.is_empty() || p.events.contains(&event)) {
                    return Err(Denied::NotFound);
                }
                customer_ref(&format!("p:{}", p.partner_id.0.simple()), requested)
            }
            Principal::User(_) | Principal::Guest(_) => {
                let own = own.ok_or(Denied::Unauthenticated)?;
                if requested.is_empty() || requested == own.as_str() {
                    return Ok(own);
                }
                // Someone else's customer: only at the counter of the event's organization.
                match self.role_in(org) {
                    Some(r) if r.allows(Cap::Sell) => customer_ref(&format!("o:{}", org.0.simple()), requested),
                    Some(_) => Err(Denied::Forbidden("your role does not allow selling for other customers")),
                    None => Err(Denied::Forbidden("you can hold and buy only for yourself")),
                }
            }
        }
    }

    /// The customer whose orders a listing by customer shows: a user's or
    /// guest's own (a non-empty `requested` must be it), or a partner's
    /// customer by its reference.
    pub fn listed_customer(&self, requested: &str) -> Result<CustomerId, Denied> {
        match self {
            Principal::Partner(p) => customer_ref(&format!("p:{}", p.partner_id.0.simple()), requested),
            Principal::User(_) | Principal::Guest(_) => {
                let own = self.own_customer().ok_or(Denied::Unauthenticated)?;
                if requested.is_empty() || requested == own.as_str() {
                    return Ok(own);
                }
                // A box office names its counter customer by reference, in
                // its one organization where it sells.
                let counters: Vec<OrgId> = match self {
                    Principal::User(u) if !u.admin => u.memberships.iter().filter(|m| m.role.allows(Cap::Sell)).map(|m| m.org).collect(),
                    _ => Vec::new(),
                };
                match counters.as_slice() {
                    [org] => customer_ref(&format!("o:{}", org.0.simple()), requested),
                    [] => Err(Denied::Forbidden("you can list only your own orders")),
                    _ => Err(Denied::Forbidden("you sell in several organizations: list by event instead")),
                }
            }
            Principal::Anonymous => Err(Denied::Unauthenticated),
            Principal::Gate(_) => Err(Denied::Forbidden("a gate device only scans")),
        }
    }

    /// The customer id of a user or guest acting for itself.
    pub fn own_customer(&self) -> Option<CustomerId> {
        let s = match self {
            Principal::User(u) => format!("u:{}", u.id.0.simple()),
            Principal::Guest(g) => format!("g:{}", g.0.simple()),
            _ => return None,
        };
        CustomerId::parse(&s).ok()
    }

    /// Does this principal act for `customer` at `event` (its own id, or a
    /// customer in its partner namespace at an event its key may sell)?
    /// Box-office sales are reached through the organization's
    /// `ViewOrders`/`ChangeOrders` instead.
    pub fn acts_for(&self, customer: &CustomerId, event: EventId) -> bool {
        match self {
            Principal::User(_) | Principal::Guest(_) => self.own_customer().as_ref() == Some(customer),
            Principal::Partner(p) => customer.as_str().starts_with(&format!("p:{}:", p.partner_id.0.simple())) && self.may_sell_at(event),
            Principal::Anonymous | Principal::Gate(_) => false,
        }
    }

    /// A partner key limited to some events reaches only those.
    pub fn may_sell_at(&self, event: EventId) -> bool {
        match self {
            Principal::Partner(p) => p.events.is_empty() || p.events.contains(&event),
            _ => true,
        }
    }

    /// Strips this principal's namespace from a customer id, so a partner
    /// (or a box office, for its organization's counter customers) reads
    /// back the reference it sent.
    pub fn customer_ref_of<'a>(&self, customer: &'a CustomerId) -> &'a str {
        let c = customer.as_str();
        let stripped = match self {
            Principal::Partner(p) => c.strip_prefix(&format!("p:{}:", p.partner_id.0.simple())),
            Principal::User(_) => c
                .strip_prefix("o:")
                .and_then(|rest| rest.split_at_checked(32))
                .filter(|(org, rest)| rest.starts_with(':') && OrgId::parse(org).is_ok_and(|o| self.role_in(o).is_some()))
                .map(|(_, rest)| &rest[1..]),
            _ => None,
        };
        stripped.unwrap_or(c)
    }
}

/// `ns:ref`, with `ref` checked as a customer reference.
fn customer_ref(ns: &str, reference: &str) -> Result<CustomerId, Denied> {
    let invalid = |message| Denied::Invalid { field: "customer_id", message };
    if reference.is_empty() {
        return Err(invalid("name the customer you act for (your own reference for them)"));
    }
    if reference.len() > limits::CUSTOMER_REF_BYTES_MAX {
        return Err(invalid("a customer reference is at most 64 bytes"));
    }
    if !reference.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:@+/".contains(c)) {
        return Err(invalid("use only letters, digits and -_.:@+/ in a customer reference"));
    }
    CustomerId::parse(&format!("{ns}:{reference}")).map_err(|_| invalid("the customer reference is too long"))
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn org(n: u128) -> OrgId {
        OrgId(Uuid::from_u128(n))
    }

    fn user(role: Option<(OrgId, Role)>) -> Principal {
        Principal::User(UserPrincipal {
            id: UserId(Uuid::from_u128(7)),
            admin: false,
            memberships: role.map(|(org, role)| vec![Membership { org, role }]).unwrap_or_default(),
        })
    }

    #[test]
    fn another_tenant_is_not_found_and_a_weaker_role_is_forbidden() {
        let a = org(1);
        let b = org(2);
        let viewer = user(Some((a, Role::Viewer)));
        assert_eq!(viewer.may(b, Cap::ManageEvents), Err(Denied::NotFound));
        assert!(matches!(viewer.may(a, Cap::ManageEvents), Err(Denied::Forbidden(_))));
        assert_eq!(viewer.may(a, Cap::ViewOrders), Ok(()));
        assert_eq!(Principal::Anonymous.may(a, Cap::ViewOrders), Err(Denied::Unauthenticated));
        let admin = Principal::User(UserPrincipal { id: UserId(Uuid::nil()), admin: true, memberships: vec![] });
        assert_eq!(admin.may(b, Cap::ManageKeys), Ok(()));
    }

    #[test]
    fn roles_table() {
        assert!(Role::Owner.allows(Cap::ViewAudit));
        assert!(!Role::Manager.allows(Cap::ManageKeys));
        assert!(Role::Manager.allows(Cap::ManageEvents));
        assert!(Role::BoxOffice.allows(Cap::Sell) && !Role::BoxOffice.allows(Cap::ManageEvents));
        assert!(!Role::Viewer.allows(Cap::Sell));
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Ok(r));
        }
        assert!(Role::parse("root").is_err());
    }

    #[test]
    fn customers_come_from_the_principal() {
        let a = org(1);
        let e = EventId(Uuid::from_u128(9));
        let u = user(None);
        let own = u.customer(a, e, "").unwrap();
        assert_eq!(own.as_str(), format!("u:{}", Uuid::from_u128(7).simple()));
        assert_eq!(u.customer(a, e, own.as_str()).unwrap(), own);
        assert!(matches!(u.customer(a, e, "someone-else"), Err(Denied::Forbidden(_))));
        let counter = user(Some((a, Role::BoxOffice)));
        let walk_in = counter.customer(a, e, "walk-in-1").unwrap();
        assert_eq!(walk_in.as_str(), format!("o:{}:walk-in-1", a.0.simple()));
        assert_eq!(counter.customer_ref_of(&walk_in), "walk-in-1");
        assert_eq!(user(None).customer_ref_of(&walk_in), walk_in.as_str());
        assert!(matches!(counter.customer(a, e, "bad customer!"), Err(Denied::Invalid { field: "customer_id", .. })));
        let p = Principal::Partner(PartnerPrincipal {
            key_id: ApiKeyId(Uuid::from_u128(3)),
            partner_id: PartnerId(Uuid::from_u128(4)),
            org: a,
            scopes: vec![Scope::Holds],
            events: vec![],
        });
        let c = p.customer(a, e, "ann").unwrap();
        assert!(p.acts_for(&c, e));
        assert_eq!(p.customer_ref_of(&c), "ann");
        assert!(!u.acts_for(&c, e));
        let narrow = Principal::Partner(PartnerPrincipal {
            key_id: ApiKeyId(Uuid::from_u128(5)),
            partner_id: PartnerId(Uuid::from_u128(4)),
            org: a,
            scopes: vec![Scope::Orders],
            events: vec![EventId(Uuid::from_u128(10))],
        });
        assert!(!narrow.acts_for(&c, e), "a key limited to other events does not reach this one");
        assert!(narrow.acts_for(&c, EventId(Uuid::from_u128(10))));
        assert_eq!(narrow.may(a, Cap::ViewOrders), Err(Denied::NotFound), "a partner has no role");
        assert_eq!(p.customer(org(2), e, "ann"), Err(Denied::NotFound));
        assert!(p.customer(a, e, "").is_err());
        assert_eq!(Principal::Anonymous.customer(a, e, "ann"), Err(Denied::Unauthenticated));
    }

    #[test]
    fn doors_admit_by_kind() {
        let a = org(1);
        assert_eq!(Principal::Anonymous.admitted(&[Who::Customer]), Err(Denied::Unauthenticated));
        assert_eq!(Principal::Anonymous.admitted(&[Who::Anyone]), Ok(()));
        assert!(matches!(user(None).admitted(&[Who::Org(Cap::ManageEvents)]), Err(Denied::Forbidden(_))));
        assert_eq!(user(Some((a, Role::Manager))).admitted(&[Who::Org(Cap::ManageEvents)]), Ok(()));
        let g = Principal::Gate(GatePrincipal { device_id: DeviceId(Uuid::nil()), org: a, gate: "n".into(), events: vec![] });
        assert!(g.admitted(&[Who::Customer, Who::Partner(Scope::Holds)]).is_err());
        assert_eq!(g.admitted(&[Who::Gate]), Ok(()));
    }

    #[test]
    fn key_scopes_never_contain_a_slash() {
        let u = user(None);
        assert!(!u.key_scope().unwrap().contains('/'));
        assert_eq!(Principal::Anonymous.key_scope(), None);
    }
}

#[cfg(test)]
mod channel_tests {
    use super::SalesChannel;

    #[test]
    fn a_customers_channel_is_its_ids_namespace() {
        assert_eq!(SalesChannel::of("p:0123:ref-9"), SalesChannel::Partner);
        assert_eq!(SalesChannel::of("o:abcd:hal"), SalesChannel::BoxOffice);
        assert_eq!(SalesChannel::of("u:abcd"), SalesChannel::Online);
        assert_eq!(SalesChannel::of("g:abcd"), SalesChannel::Online);
        assert_eq!(SalesChannel::of("plain"), SalesChannel::Online);
    }
}
