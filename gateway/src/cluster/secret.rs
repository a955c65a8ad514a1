//! The cluster's shared secret: what node-to-node calls carry, compared in
//! constant time and never printed.

/// The shared secret of a cluster; never printed.
#[derive(Clone)]
pub struct ClusterSecret(String);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(***)")
    }
}

impl ClusterSecret {
    pub fn new(s: String) -> ClusterSecret {
        ClusterSecret(s)
    }

    /// Whether `bearer` is the secret, compared in constant time (its
    /// length is not a secret: every node is told it).
    pub fn admits(&self, bearer: Option<&str>) -> bool {
        use subtle_eq::ct_eq;
        bearer.is_some_and(|b| ct_eq(b.as_bytes(), self.0.as_bytes()))
    }

    /// The secret itself, for the `authorization` header of a call to
    /// another node.
    pub(super) fn expose(&self) -> &str {
        &self.0
    }
}

mod subtle_eq {
    /// Equal bytes, in time independent of where they differ.
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        use hmac::Mac;
        // HMAC's verify compares in constant time; the key is irrelevant.
        let tag = |x: &[u8]| {
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"usher cluster secret").expect("any key length");
            m.update(x);
            m
        };
        let want = tag(b).finalize().into_bytes();
        tag(a).verify_slice(&want).is_ok()
    }
}
