//! Signed ticket codes: what a QR code carries and a gate scanner verifies
//! offline with the deployment's published Ed25519 public key.
//!
//! Layout (101 bytes before encoding, 135 characters after):
//! `version (1) | event id (16) | ticket id (16) | seat index (4, big endian) | signature (64)`,
//! base64url without padding, prefixed with `USH1.` so a scanner can tell
//! one of ours from any other QR code. The signature covers the prefix's
//! version byte and every field, so no field can be changed or swapped.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use std::fmt;
use uuid::Uuid;

use crate::ids::{EventId, SeatIdx, TicketId};

/// The one version this build writes and reads.
pub const TICKET_CODE_VERSION: u8 = 1;
pub const TICKET_CODE_PREFIX: &str = "USH1.";
const PAYLOAD_BYTES: usize = 1 + 16 + 16 + 4;
const SIGNED_BYTES: usize = PAYLOAD_BYTES + 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TicketClaims {
    pub version: u8,
    pub event_id: EventId,
    pub ticket_id: TicketId,
    pub seat: SeatIdx,
}

/// Why a code is refused before any database is asked, in the order checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeError {
    /// Not one of ours, cut short, or not base64url.
    Malformed(String),
    UnknownVersion(u8),
    /// Well formed, but not signed by this deployment's key (forged or altered).
    BadSignature,
}

impl fmt::Display for CodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodeError::Malformed(m) => write!(f, "malformed ticket code: {m}"),
            CodeError::UnknownVersion(v) => write!(f, "unknown ticket code version {v}"),
            CodeError::BadSignature => f.write_str("ticket code signature does not verify"),
        }
    }
}

fn payload(c: &TicketClaims) -> [u8; PAYLOAD_BYTES] {
    let mut p = [0u8; PAYLOAD_BYTES];
    p[0] = c.version;
    p[1..17].copy_from_slice(c.event_id.0.as_bytes());
    p[17..33].copy_from_slice(c.ticket_id.0.as_bytes());
    p[33..37].copy_from_slice(&c.seat.0.to_be_bytes());
    p
}

/// Signs a ticket's claims into the text a QR code carries.
pub fn sign_ticket(key: &SigningKey, event_id: EventId, ticket_id: TicketId, seat: SeatIdx) -> String {
    let claims = TicketClaims { version: TICKET_CODE_VERSION, event_id, ticket_id, seat };
    let p = payload(&claims);
    let sig = key.sign(&p);
    let mut all = Vec::with_capacity(SIGNED_BYTES);
    all.extend_from_slice(&p);
    all.extend_from_slice(&sig.to_bytes());
    format!("{TICKET_CODE_PREFIX}{}", URL_SAFE_NO_PAD.encode(all))
}

/// Checks a scanned code against the public key. Needs nothing else, so a
/// scanner can do it offline.
pub fn verify_ticket(key: &VerifyingKey, code: &str) -> Result<TicketClaims, CodeError> {
    let body = code
        .trim()
        .strip_prefix(TICKET_CODE_PREFIX)
        .ok_or_else(|| CodeError::Malformed(format!("does not start with {TICKET_CODE_PREFIX}")))?;
    let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|e| CodeError::Malformed(format!("not base64url: {e}")))?;
    if bytes.len() != SIGNED_BYTES {
        return Err(CodeError::Malformed(format!("{} bytes, expected {SIGNED_BYTES}", bytes.len())));
    }
    if bytes[0] != TICKET_CODE_VERSION {
        return Err(CodeError::UnknownVersion(bytes[0]));
    }
    let (p, s) = bytes.split_at(PAYLOAD_BYTES);
    let sig = Signature::from_slice(s).map_err(|_| CodeError::BadSignature)?;
    key.verify_strict(p, &sig).map_err(|_| CodeError::BadSignature)?;
    let uuid = |r: std::ops::Range<usize>| Uuid::from_slice(&p[r]).expect("16 bytes");
    Ok(TicketClaims {
        version: p[0],
        event_id: EventId(uuid(1..17)),
        ticket_id: TicketId(uuid(17..33)),
        seat: SeatIdx(u32::from_be_bytes([p[33], p[34], p[35], p[36]])),
    })
}

/// The ticket id of one seat of one order: derived, not random, so issuing a
/// ticket twice (a retried saga step) names the same ticket.
pub fn ticket_id_for(order: crate::ids::OrderId, seat: SeatIdx) -> TicketId {
    // FNV-1a over the order id and seat, spread into 128 bits (two lanes),
    // then stamped as a version-8 UUID (custom layout).
    let mut lanes = [0xcbf2_9ce4_8422_2325u64, 0x8422_2325_cbf2_9ce4u64];
    for (i, lane) in lanes.iter_mut().enumerate() {
        for b in order.0.as_bytes().iter().chain(seat.0.to_be_bytes().iter()).chain([i as u8].iter()) {
            *lane ^= u64::from(*b);
            *lane = lane.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&lanes[0].to_be_bytes());
    b[8..].copy_from_slice(&lanes[1].to_be_bytes());
    TicketId(uuid::Builder::from_custom_bytes(b).into_uuid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }
    fn ids() -> (EventId, TicketId) {
        (EventId(Uuid::from_u128(1)), TicketId(Uuid::from_u128(2)))
    }

    #[test]
    fn a_signed_code_verifies_and_round_trips() {
        let (e, t) = ids();
        let code = sign_ticket(&key(), e, t, SeatIdx(4242));
        assert!(code.starts_with("USH1."));
        assert_eq!(code.len(), 5 + 135);
        let c = verify_ticket(&key().verifying_key(), &code).unwrap();
        assert_eq!((c.event_id, c.ticket_id, c.seat, c.version), (e, t, SeatIdx(4242), 1));
    }

    #[test]
    fn forged_altered_and_truncated_codes_are_refused() {
        let (e, t) = ids();
        let code = sign_ticket(&key(), e, t, SeatIdx(1));
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let forged = sign_ticket(&other, e, t, SeatIdx(1));
        assert_eq!(verify_ticket(&key().verifying_key(), &forged), Err(CodeError::BadSignature));
        // Flip one character inside the payload: the seat or an id changes.
        let mut altered = code.clone().into_bytes();
        altered[40] = if altered[40] == b'A' { b'B' } else { b'A' };
        assert_eq!(verify_ticket(&key().verifying_key(), std::str::from_utf8(&altered).unwrap()), Err(CodeError::BadSignature));
        assert!(matches!(verify_ticket(&key().verifying_key(), &code[..code.len() - 3]), Err(CodeError::Malformed(_))));
        assert!(matches!(verify_ticket(&key().verifying_key(), "hello"), Err(CodeError::Malformed(_))));
        assert!(matches!(verify_ticket(&key().verifying_key(), "USH1.!!!"), Err(CodeError::Malformed(_))));
    }

    #[test]
    fn ticket_ids_are_stable_per_order_and_seat() {
        let o = crate::ids::OrderId(Uuid::from_u128(9));
        assert_eq!(ticket_id_for(o, SeatIdx(1)), ticket_id_for(o, SeatIdx(1)));
        assert_ne!(ticket_id_for(o, SeatIdx(1)), ticket_id_for(o, SeatIdx(2)));
        assert_ne!(ticket_id_for(o, SeatIdx(1)), ticket_id_for(crate::ids::OrderId(Uuid::from_u128(10)), SeatIdx(1)));
    }
}
