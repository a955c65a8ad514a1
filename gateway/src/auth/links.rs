//! Order links: the emailed URL that opens one order (its status, tickets
//! and PDF) without signing in, so a guest's purchase stays reachable. The
//! secret is HMAC-SHA256 (RFC 2104) of the order id under a key derived
//! from the deployment's ticket-signing seed, cut to 128 bits: nothing is
//! stored, every node that shares the seed checks the same links, and one
//! order's link opens no other.

use crate::limits::ORDER_LINK_SECRET_BYTES;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use usher_engine::OrderId;

pub struct OrderLinks {
    /// The storefront's public URL, without a trailing slash.
    base: String,
    key: [u8; 32],
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

impl OrderLinks {
    pub fn new(base_url: &str, ticket_seed: &[u8; 32]) -> OrderLinks {
        OrderLinks { base: base_url.trim_end_matches('/').to_owned(), key: hmac(ticket_seed, b"usher order links v1") }
    }

    pub fn secret(&self, order: OrderId) -> String {
        let mac = hmac(&self.key, order.0.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&mac[..ORDER_LINK_SECRET_BYTES])
    }

    /// `BASE/?order=ID&secret=S`: the storefront opens the order from it.
    pub fn link(&self, order: OrderId) -> String {
        format!("{}/?order={order}&secret={}", self.base, self.secret(order))
    }

    /// Constant-time check of a link's secret.
    pub fn verify(&self, order: OrderId, secret: &str) -> bool {
        super::secrets::same(&self.secret(order), secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_opens_its_order_only() {
        let l = OrderLinks::new("http://x/", &[1; 32]);
        let (a, b) = (OrderId(uuid::Uuid::from_u128(1)), OrderId(uuid::Uuid::from_u128(2)));
        assert!(l.verify(a, &l.secret(a)));
        assert!(!l.verify(b, &l.secret(a)));
        assert!(!l.verify(a, ""));
        assert!(l.link(a).starts_with("http://x/?order=00000000-0000-0000-0000-000000000001&secret="));
        assert!(!OrderLinks::new("http://x", &[2; 32]).verify(a, &l.secret(a)), "another deployment's link");
    }
}
