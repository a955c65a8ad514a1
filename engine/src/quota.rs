//! Per-organization quotas on what creates data: venues, the seats of those
//! venues, and upcoming events. They exist so that no tenant can fill a
//! node's shared capacity (an event on sale holds an actor, and a node
//! loads at most `EVENTS_LOADED_MAX`) or its disk, and lock everyone else
//! out. The values are a deployment's setting (`Quotas`, `[quotas]` in the
//! gateway's configuration); the defaults are in `limits`.

use serde::Deserialize;

use crate::limits;

/// What an organization holds now, as the store counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OrgUsage {
    pub venues: u32,
    /// Seats of all its venues.
    pub seats: u64,
    /// Events not cancelled that start later or are on sale (what may hold
    /// an actor on a node).
    pub upcoming_events: u32,
}

/// The most one organization may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    pub venues_per_org: u32,
    pub seats_per_org: u64,
    pub upcoming_events_per_org: u32,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            venues_per_org: limits::VENUES_PER_ORG_MAX,
            seats_per_org: limits::SEATS_PER_ORG_MAX,
            upcoming_events_per_org: limits::UPCOMING_EVENTS_PER_ORG_MAX,
        }
    }
}

/// Which quota a create would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    Venues,
    Seats,
    UpcomingEvents,
}

/// A create refused because the organization would hold more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaExceeded {
    pub quota: Quota,
    /// What the organization holds now.
    pub used: u64,
    /// What the create would add.
    pub adding: u64,
    pub max: u64,
}

impl QuotaExceeded {
    /// The refusal for people: what is full and what to do.
    pub fn sentence(&self) -> String {
        let (what, remedy) = match self.quota {
            Quota::Venues => ("venues", "remove an unused venue or ask the operator for a larger quota"),
            Quota::Seats => ("seats across its venues", "ask the operator for a larger quota"),
            Quota::UpcomingEvents => ("upcoming events", "cancel one, wait until one has started, or ask the operator for a larger quota"),
        };
        if self.adding > 1 {
            format!("this organization has {} of its {} {what}, and this would add {}; {remedy}", self.used, self.max, self.adding)
        } else {
            format!("this organization already has {} of its {} {what}; {remedy}", self.used, self.max)
        }
    }
}

fn check(quota: Quota, used: u64, adding: u64, max: u64) -> Result<(), QuotaExceeded> {
    if used.saturating_add(adding) > max { Err(QuotaExceeded { quota, used, adding, max }) } else { Ok(()) }
}

impl Quotas {
    /// May an organization holding `usage` add a venue of `seats` seats?
    pub fn check_new_venue(&self, usage: &OrgUsage, seats: u32) -> Result<(), QuotaExceeded> {
        check(Quota::Venues, u64::from(usage.venues), 1, u64::from(self.venues_per_org))?;
        check(Quota::Seats, usage.seats, u64::from(seats), self.seats_per_org)
    }

    /// May an organization holding `usage` add an upcoming event?
    pub fn check_new_event(&self, usage: &OrgUsage) -> Result<(), QuotaExceeded> {
        check(Quota::UpcomingEvents, u64::from(usage.upcoming_events), 1, u64::from(self.upcoming_events_per_org))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_allows_up_to_its_max_and_says_what_is_full() {
        let q = Quotas { venues_per_org: 2, seats_per_org: 100, upcoming_events_per_org: 1 };
        let usage = OrgUsage { venues: 1, seats: 60, upcoming_events: 0 };
        assert_eq!(q.check_new_venue(&usage, 40), Ok(()));
        let e = q.check_new_venue(&usage, 41).unwrap_err();
        assert_eq!((e.quota, e.used, e.adding, e.max), (Quota::Seats, 60, 41, 100));
        assert_eq!(
            e.sentence(),
            "this organization has 60 of its 100 seats across its venues, and this would add 41; ask the operator for a larger quota"
        );
        let full = OrgUsage { venues: 2, ..usage };
        assert_eq!(q.check_new_venue(&full, 1).unwrap_err().quota, Quota::Venues);
        assert_eq!(q.check_new_event(&usage), Ok(()));
        let e = q.check_new_event(&OrgUsage { upcoming_events: 1, ..usage }).unwrap_err();
        assert!(e.sentence().starts_with("this organization already has 1 of its 1 upcoming events;"), "{}", e.sentence());
    }
}
