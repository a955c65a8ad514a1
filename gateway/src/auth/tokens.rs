//! Access tokens: JWTs (RFC 7519) signed with Ed25519 (`alg: EdDSA`, RFC
//! 8037) through the `jsonwebtoken` crate, each naming its key (`kid`). The
//! public keys are served as a JWK set (RFC 7517) at
//! `/.well-known/jwks.json`. Verification accepts only EdDSA (so `alg:
//! none` and HMAC confusion are refused), only known keys, and checks
//! `iss`, `aud`, `exp` and the token type.
//!
//! Signing keys live in the identity store, so every node signs and verifies
//! with the same ones. A rotation adds a key that signs from then on; older
//! keys keep verifying until every token they signed has expired, so nobody
//! is logged out.

use crate::limits::{KEY_RELOAD_MS_MIN, TOKEN_LEEWAY_S};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use usher_actors::{IdentityStore, SigningKeyRecord, StoreError};
use usher_engine::Millis;

use super::secrets::random_bytes;

/// What a token stands for (`typ` claim).
pub const TYP_ACCESS: &str = "access";
pub const TYP_GUEST: &str = "guest";

/// The claims of an access or guest token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id, or the guest id.
    pub sub: String,
    /// Expiry and issue time, seconds since the Unix epoch.
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// `access` or `guest`.
    pub typ: String,
    /// Platform administrator.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adm: bool,
    /// Memberships at issue time: (organization id, role).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orgs: Vec<(String, String)>,
}

struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// base64url of the public key: the JWK's `x`.
    x: String,
    retired_at: Option<Millis>,
}

/// Why a token was refused; the message is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Expired,
    Invalid(&'static str),
}

/// PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410 §7): what
/// `EncodingKey::from_ed_der` reads.
fn pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    const PREFIX: [u8; 16] = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(seed);
    der
}

fn key_of(r: &SigningKeyRecord) -> Result<Key, StoreError> {
    let seed: [u8; 32] = r.seed.as_slice().try_into().map_err(|_| StoreError::Corrupt(format!("signing key {} is not 32 bytes", r.kid)))?;
    let public = usher_engine::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    Ok(Key {
        kid: r.kid.clone(),
        encoding: EncodingKey::from_ed_der(&pkcs8(&seed)),
        decoding: DecodingKey::from_ed_der(&public),
        x: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public),
        retired_at: r.retired_at,
    })
}

/// The deployment's token-signing keys.
pub struct KeyRing {
    store: Arc<dyn IdentityStore>,
    keys: RwLock<Vec<Key>>,
    last_reload: std::sync::Mutex<Millis>,
    issuer: String,
    audience: String,
    /// How long a retired key keeps verifying: the longest token lifetime.
    keep_retired_ms: u64,
}

impl KeyRing {
    /// Loads the keys; makes the first one if there is none.
    pub async fn load(
        store: Arc<dyn IdentityStore>,
        issuer: String,
        audience: String,
        keep_retired_ms: u64,
        now: Millis,
    ) -> Result<KeyRing, StoreError> {
        let ring =
            KeyRing { store, keys: RwLock::new(Vec::new()), last_reload: std::sync::Mutex::new(now), issuer, audience, keep_retired_ms };
        ring.reload().await?;
        if ring.keys.read().map(|k| k.iter().all(|k| k.retired_at.is_some())).unwrap_or(true) {
            ring.rotate(now).await?;
        }
        Ok(ring)
    }

    async fn reload(&self) -> Result<(), StoreError> {
        let records = self.store.signing_keys().await?;
        let mut keys = records.iter().map(key_of).collect::<Result<Vec<_>, _>>()?;
        // Signing uses the last unretired key: keep creation order.
        let order: Vec<&SigningKeyRecord> = records.iter().collect();
        keys.sort_by_key(|k| order.iter().find(|r| r.kid == k.kid).map(|r| r.created_at));
        if let Ok(mut k) = self.keys.write() {
            *k = keys;
        }
        Ok(())
    }

    /// A new signing key; the previous ones retire now and verify until
    /// their tokens have expired. Returns the new `kid`.
    pub async fn rotate(&self, now: Millis) -> Result<String, StoreError> {
        let kid = format!("k{}", random_bytes::<6>().iter().map(|b| format!("{b:02x}")).collect::<String>());
        let record = SigningKeyRecord { kid: kid.clone(), seed: random_bytes::<32>().to_vec(), created_at: now, retired_at: None };
        self.store.add_signing_key(&record).await?;
        self.reload().await?;
        Ok(kid)
    }

    /// A signed token for `claims`, with the current key.
    pub fn sign(&self, claims: &Claims) -> Result<String, String> {
        let keys = self.keys.read().map_err(|_| "signing keys poisoned".to_owned())?;
        let key = keys.iter().rev().find(|k| k.retired_at.is_none()).ok_or("no signing key")?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|e| e.to_string())
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Checks a token's signature, key, algorithm, issuer, audience, expiry
    /// and type.
    pub async fn verify(&self, token: &str, typ: &str, now: Millis) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid("the token is not a JWT this server accepts"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid("the token's algorithm is not EdDSA"));
        }
        let kid = header.kid.ok_or(TokenError::Invalid("the token names no key"))?;
        if !self.knows(&kid) {
            let due = self.last_reload.lock().map(|mut t| {
                let due = now.0 - t.0 >= KEY_RELOAD_MS_MIN;
                if due {
                    *t = now;
                }
                due
            });
            if due.unwrap_or(false) {
                let _ = self.reload().await;
            }
        }
        let keys = self.keys.read().map_err(|_| TokenError::Invalid("signing keys unavailable"))?;
        let key =
            keys.iter().find(|k| k.kid == kid).ok_or(TokenError::Invalid("the token was signed by a key this server does not know"))?;
        // A retired key verifies only while tokens it signed can still be
        // live: after that a leaked old key is worthless.
        if key.retired_at.is_some_and(|r| r.plus_ms(self.keep_retired_ms) <= now) {
            return Err(TokenError::Invalid("the token was signed by a retired key"));
        }
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = TOKEN_LEEWAY_S;
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &v).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            jsonwebtoken::errors::ErrorKind::InvalidAudience => TokenError::Invalid("the token is for another audience"),
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => TokenError::Invalid("the token is from another issuer"),
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Invalid("the token's signature does not verify"),
            _ => TokenError::Invalid("the token is malformed"),
        })?;
        if data.claims.typ != typ {
            return Err(TokenError::Invalid("the token is of another type"));
        }
        Ok(data.claims)
    }

    fn knows(&self, kid: &str) -> bool {
        self.keys.read().is_ok_and(|k| k.iter().any(|k| k.kid == kid))
    }

    /// The JWK set: every key that may still have live tokens.
    pub fn jwks(&self, now: Millis) -> serde_json::Value {
        let keys = self.keys.read().map(|keys| {
            keys.iter()
                .filter(|k| k.retired_at.is_none_or(|r| r.plus_ms(self.keep_retired_ms) > now))
                .map(|k| serde_json::json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": k.kid, "x": k.x}))
                .collect::<Vec<_>>()
        });
        serde_json::json!({ "keys": keys.unwrap_or_default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs8_wrapping_is_what_jsonwebtoken_reads() {
        let seed = [7u8; 32];
        let r = SigningKeyRecord { kid: "k1".into(), seed: seed.to_vec(), created_at: Millis(0), retired_at: None };
        let k = key_of(&r).unwrap();
        let claims = Claims {
            iss: "i".into(),
            aud: "a".into(),
            sub: "s".into(),
            exp: 4_000_000_000,
            iat: 0,
            jti: "j".into(),
            typ: TYP_ACCESS.into(),
            adm: false,
            orgs: vec![],
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("k1".into());
        let t = jsonwebtoken::encode(&header, &claims, &k.encoding).unwrap();
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_issuer(&["i"]);
        v.set_audience(&["a"]);
        assert_eq!(jsonwebtoken::decode::<Claims>(&t, &k.decoding, &v).unwrap().claims, claims);
    }
}
