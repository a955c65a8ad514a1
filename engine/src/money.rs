//! Money: integer minor units of an ISO 4217 currency, never floats.
//!
//! Every rule about an amount lives here: which currency codes are accepted
//! (ISO 4217, by the `iso_currency` tables), how many decimals a currency has
//! (its ISO 4217 "minor unit" exponent: JPY 0, EUR 2, BHD 3), how an amount is
//! written for people, and arithmetic that refuses to overflow. Prices and
//! order totals have ceilings (`limits::PRICE_MINOR_MAX`,
//! `limits::ORDER_TOTAL_MINOR_MAX`), so a sum of an order's lines can neither
//! wrap around nor leave the range a JSON client reads exactly.

use crate::ids::InvalidInput;
use crate::limits;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount in integer minor units of its currency (cents for EUR, yen for
/// JPY, fils for BHD: `minor / 10^exponent` major units).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    /// The sum of `amounts`, all in `currency`; `None` when one is in another
    /// currency or the sum does not fit an `i64` (checked, never wraps).
    pub fn checked_sum(currency: Currency, amounts: impl IntoIterator<Item = Money>) -> Option<Money> {
        let mut minor: i64 = 0;
        for m in amounts {
            if m.currency != currency {
                return None;
            }
            minor = minor.checked_add(m.minor)?;
        }
        Some(Money { minor, currency })
    }

    /// An event's price: at least zero and at most `limits::PRICE_MINOR_MAX`.
    /// Errors name the field `prices` and say the amount in its currency.
    pub fn check_price(&self) -> Result<(), InvalidInput> {
        if self.minor < 0 {
            return Err(InvalidInput::new("prices", format!("a price may not be negative, got {self}")));
        }
        if self.minor > limits::PRICE_MINOR_MAX {
            return Err(InvalidInput::new(
                "prices",
                format!(
                    "a price may be at most {} minor units ({}), got {} minor units",
                    limits::PRICE_MINOR_MAX,
                    Money { minor: limits::PRICE_MINOR_MAX, currency: self.currency },
                    self.minor
                ),
            ));
        }
        Ok(())
    }
}

/// Written for people in the currency's own units: the ISO code, then the
/// amount with `,` between thousands and as many decimals as the currency's
/// exponent: `EUR 1,234.50`, `JPY 1,500`, `BHD 1.500`, `EUR -0.05`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exp = u32::from(self.currency.exponent());
        let scale = 10u64.pow(exp);
        let abs = self.minor.unsigned_abs();
        let (major, fraction) = (abs / scale, abs % scale);
        let digits = major.to_string();
        let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        let sign = if self.minor < 0 { "-" } else { "" };
        write!(f, "{} {sign}{grouped}", self.currency)?;
        if exp > 0 {
            write!(f, ".{fraction:0width$}", width = exp as usize)?;
        }
        Ok(())
    }
}

/// An ISO 4217 alphabetic currency code that can price tickets: listed in the
/// standard, with a minor unit, not a fund (CLF, BOV…), not special (XAU,
/// XXX…) and not superseded (VES by VED).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a code given at the edge. Errors name the field `currency` and
    /// say why in a sentence.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        let b = s.as_bytes();
        if b.len() != 3 || !b.iter().all(u8::is_ascii_uppercase) {
            return Err(InvalidInput::new(
                "currency",
                format!("currency must be a 3-letter ISO 4217 code in capitals, got {}", crate::ids::quoted(s)),
            ));
        }
        let Some(iso) = iso_currency::Currency::from_code(s) else {
            return Err(InvalidInput::new("currency", format!("{s} is not a currency code of ISO 4217")));
        };
        if let Some(newer) = iso.is_superseded() {
            return Err(InvalidInput::new("currency", format!("{s} is superseded in ISO 4217 by {}", newer.code())));
        }
        if iso.is_fund() || iso.is_special() || iso.exponent().is_none() {
            return Err(InvalidInput::new("currency", format!("{s} ({}) is not a currency tickets can be sold in", iso.name())));
        }
        Ok(Currency([b[0], b[1], b[2]]))
    }

    /// A code read back from storage. Rows written before codes were checked
    /// against ISO 4217 still load (their amounts are written with two
    /// decimals); only a shape that was never accepted is refused.
    pub fn from_stored(s: &str) -> Result<Self, InvalidInput> {
        let b = s.as_bytes();
        if b.len() != 3 || !b.iter().all(u8::is_ascii_uppercase) {
            return Err(InvalidInput::new("currency", format!("stored currency {s:?} is not 3 capitals")));
        }
        Ok(Currency([b[0], b[1], b[2]]))
    }

    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII capitals.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Decimals of the currency's minor unit (ISO 4217's "minor unit"
    /// column): 0 for JPY and KRW, 2 for EUR, 3 for BHD and KWD. A stored
    /// code unknown to the table counts as 2.
    pub fn exponent(&self) -> u8 {
        iso_currency::Currency::from_code(self.as_str()).and_then(|c| c.exponent()).and_then(|e| u8::try_from(e).ok()).unwrap_or(2)
    }
}
impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(minor: i64, c: &str) -> Money {
        Money { minor, currency: Currency::parse(c).unwrap() }
    }

    #[test]
    fn codes_are_iso_4217_and_can_price_tickets() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("EURO").is_err());
        assert_eq!(Currency::parse("ABC").unwrap_err().message, "ABC is not a currency code of ISO 4217");
        for not_for_tickets in ["XAU", "XXX", "XDR", "CLF", "BOV"] {
            let e = Currency::parse(not_for_tickets).unwrap_err();
            assert!(e.message.contains("not a currency tickets can be sold in"), "{not_for_tickets}: {}", e.message);
        }
        assert!(Currency::parse("VES").unwrap_err().message.contains("superseded"));
        assert_eq!(Currency::from_stored("ABC").unwrap().exponent(), 2);
    }

    #[test]
    fn exponents_follow_iso_4217() {
        for (code, exp) in [("JPY", 0), ("KRW", 0), ("ISK", 0), ("EUR", 2), ("USD", 2), ("BHD", 3), ("KWD", 3), ("TND", 3)] {
            assert_eq!(Currency::parse(code).unwrap().exponent(), exp, "{code}");
        }
    }

    #[test]
    fn amounts_are_written_in_their_own_units() {
        assert_eq!(m(5000, "EUR").to_string(), "EUR 50.00");
        assert_eq!(m(5, "EUR").to_string(), "EUR 0.05");
        assert_eq!(m(-5, "EUR").to_string(), "EUR -0.05");
        assert_eq!(m(123_456_789, "EUR").to_string(), "EUR 1,234,567.89");
        assert_eq!(m(1500, "JPY").to_string(), "JPY 1,500");
        assert_eq!(m(0, "JPY").to_string(), "JPY 0");
        assert_eq!(m(1500, "BHD").to_string(), "BHD 1.500");
        assert_eq!(m(1_234_567, "KWD").to_string(), "KWD 1,234.567");
        assert_eq!(m(i64::MIN, "JPY").to_string(), "JPY -9,223,372,036,854,775,808");
    }

    #[test]
    fn sums_refuse_to_overflow_or_mix_currencies() {
        let eur = Currency::parse("EUR").unwrap();
        let big = m(1 << 62, "EUR");
        assert_eq!(Money::checked_sum(eur, [big, big]), None);
        assert_eq!(Money::checked_sum(eur, [m(1, "EUR"), m(2, "EUR")]), Some(m(3, "EUR")));
        assert_eq!(Money::checked_sum(eur, [m(1, "EUR"), m(2, "JPY")]), None);
        assert_eq!(Money::checked_sum(eur, []), Some(m(0, "EUR")));
    }

    #[test]
    fn prices_have_a_ceiling() {
        assert!(m(0, "EUR").check_price().is_ok());
        assert!(m(limits::PRICE_MINOR_MAX, "EUR").check_price().is_ok());
        let e = m(1 << 62, "EUR").check_price().unwrap_err();
        assert_eq!(e.field, "prices");
        assert!(e.message.starts_with("a price may be at most 100000000000 minor units (EUR 1,000,000,000.00)"), "{}", e.message);
        assert!(m(-1, "JPY").check_price().unwrap_err().message.contains("JPY -1"));
    }
}
