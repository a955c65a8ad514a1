//! Typed identifiers and validated inputs. Parse, don't validate: once a value
//! has one of these types it is known to be well formed.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

use crate::limits;

macro_rules! uuid_id {
    ($(#[$m:meta])* $name:ident, $what:literal) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, InvalidInput> {
                Uuid::parse_str(s.trim())
                    .map($name)
                    .map_err(|_| InvalidInput::new($what, format!("{} is not a UUID: {}", $what, $crate::ids::quoted(s))))
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }
    };
}

uuid_id!(
    /// An event (a performance on a venue); owns one seat map.
    EventId,
    "event_id"
);
uuid_id!(
    /// A venue: sections, rows, seats.
    VenueId,
    "venue_id"
);
uuid_id!(
    /// A hold of seats, later confirmed into a sale, released or expired.
    HoldId,
    "hold_id"
);

uuid_id!(
    /// An order: the seats of one or more holds of one customer, paid together.
    OrderId,
    "order_id"
);
uuid_id!(
    /// One payment attempt of an order (a new card is a new attempt).
    PaymentId,
    "payment_id"
);
uuid_id!(
    /// One ticket: one sold seat of a paid order.
    TicketId,
    "ticket_id"
);
uuid_id!(
    /// An organization (tenant): owns venues and events; nothing of one is
    /// visible to another.
    OrgId,
    "org_id"
);
uuid_id!(
    /// A person who signs in with an email and a password.
    UserId,
    "user_id"
);
uuid_id!(
    /// A partner box office (an integration of one organization); its API
    /// keys, several at once for rotation, act in its name.
    PartnerId,
    "partner_id"
);
uuid_id!(
    /// One API key of a partner.
    ApiKeyId,
    "api_key_id"
);
uuid_id!(
    /// A gate device (a scanner) with its own token.
    DeviceId,
    "device_id"
);
uuid_id!(
    /// A guest shopper of the storefront, carried in a signed cookie.
    GuestId,
    "guest_id"
);

/// Index of a seat inside one venue's layout. Seats of a row are contiguous
/// and ordered by seat number, which is what makes "side by side" cheap.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SeatIdx(pub u32);

/// Unix time in milliseconds. The engine never reads a clock: time is passed in.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Millis(pub i64);

impl Millis {
    pub fn plus_ms(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)))
    }
}

/// A rejected input at the edge, naming the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidInput {
    pub field: &'static str,
    pub message: String,
}

impl InvalidInput {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        InvalidInput { field, message: message.into() }
    }
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}
impl std::error::Error for InvalidInput {}

/// Input quoted back to people in a message: in double quotes, at most
/// `QUOTED_CHARS_MAX` characters (then `…`), and every character that does
/// not print (controls, and the invisible formatting characters: zero-width,
/// bidi overrides that would reorder the sentence around it) written as
/// `U+XXXX`. Never Debug escapes (`\u{7}`), so a message reads as a sentence.
pub fn quoted(s: &str) -> String {
    const QUOTED_CHARS_MAX: usize = 40;
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        if i == QUOTED_CHARS_MAX {
            out.push('…');
            break;
        }
        if prints(c) { out.push(c) } else { out.push_str(&format!("U+{:04X}", c as u32)) }
    }
    out.push('"');
    out
}

/// One character as people can read it: `'x'`, or `U+0007` for one that
/// does not print (see `quoted`).
pub fn char_shown(c: char) -> String {
    if prints(c) { format!("'{c}'") } else { format!("U+{:04X}", c as u32) }
}

fn prints(c: char) -> bool {
    !(c.is_control() || matches!(c, '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'))
}

/// A short token people or machines choose (ids, keys, gate names): 1 to
/// `max` bytes of `[A-Za-z0-9-_.:@+/]`, checked in this one place.
pub fn token(field: &'static str, s: &str, max: usize) -> Result<String, InvalidInput> {
    if s.is_empty() {
        return Err(InvalidInput::new(field, format!("{field} must not be empty")));
    }
    if s.len() > max {
        return Err(InvalidInput::new(field, format!("{field} is longer than {max} bytes")));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "-_.:@+/".contains(*c))) {
        return Err(InvalidInput::new(field, format!("{field} has a character {} outside [A-Za-z0-9-_.:@+/]", char_shown(c))));
    }
    Ok(s.to_owned())
}

/// Who holds seats and owns orders. Derived from the caller's principal
/// (`crate::identity::Principal::customer`), never taken from a request as is:
/// `u:<user>` a registered customer, `g:<guest>` a storefront guest,
/// `p:<partner>:<ref>` and `o:<org>:<ref>` a customer that a partner or a box
/// office sells to, in its own namespace.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerId(String);

impl CustomerId {
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        token("customer_id", s, limits::CUSTOMER_ID_BYTES_MAX).map(CustomerId)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Client-chosen key that makes a command safe to retry.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        token("idempotency_key", s, limits::IDEMPOTENCY_KEY_BYTES_MAX).map(IdempotencyKey)
    }
    /// The key as one principal's: `scope/key`. Scopes (`u:<uuid>`,
    /// `p:<uuid>`, …) contain no `/`, so two principals' keys never collide
    /// and one caller cannot replay another's key to read its answer.
    pub fn scoped(scope: &str, key: &IdempotencyKey) -> IdempotencyKey {
        debug_assert!(!scope.contains('/'));
        IdempotencyKey(format!("{scope}/{}", key.0))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_id_boundaries() {
        assert!(CustomerId::parse("").is_err());
        assert!(CustomerId::parse("alice@example.com").is_ok());
        assert!(CustomerId::parse(&"a".repeat(limits::CUSTOMER_ID_BYTES_MAX)).is_ok());
        assert!(CustomerId::parse(&"a".repeat(limits::CUSTOMER_ID_BYTES_MAX + 1)).is_err());
        assert_eq!(CustomerId::parse("a b").unwrap_err().field, "customer_id");
    }

    #[test]
    fn input_is_quoted_back_readably() {
        assert_eq!(quoted("a\u{7}b"), "\"aU+0007b\"");
        assert_eq!(quoted("\u{202e}evil"), "\"U+202Eevil\"");
        assert_eq!(quoted(&"x".repeat(50)), format!("\"{}…\"", "x".repeat(40)));
        assert_eq!(quoted("夜"), "\"夜\"");
        assert_eq!(char_shown('\0'), "U+0000");
        assert_eq!(char_shown('é'), "'é'");
        assert_eq!(EventId::parse("{x}\n").unwrap_err().message, "event_id is not a UUID: \"{x}U+000A\"");
    }

    #[test]
    fn ids_parse_uuids_and_name_the_field() {
        let e = EventId::parse("nope").unwrap_err();
        assert_eq!(e.field, "event_id");
        let id = EventId::parse("6f1c6bd4-4a3e-4a7e-9d1b-0c9a4f7e2a10").unwrap();
        assert_eq!(id.to_string(), "6f1c6bd4-4a3e-4a7e-9d1b-0c9a4f7e2a10");
    }
}
