//! Secrets: random tokens, their digests, and password hashing. Passwords
//! are hashed with argon2id (the `argon2` crate, RustCrypto; parameters are
//! the crate's defaults, which follow OWASP's recommendation: 19 MiB, 2
//! passes, 1 lane). API keys, device tokens and refresh tokens are 256-bit
//! random strings, so a plain SHA-256 digest is enough to store them (no
//! dictionary to attack), and looking one up costs microseconds.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Prefix of a partner API key: `usk_<8 hex>_<43 base64url>`.
pub const API_KEY_PREFIX: &str = "usk_";
/// Prefix of a gate device token: `usg_<8 hex>_<43 base64url>`.
pub const DEVICE_TOKEN_PREFIX: &str = "usg_";
/// Prefix of a refresh token: `usr_<43 base64url>`.
pub const REFRESH_TOKEN_PREFIX: &str = "usr_";

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS's randomness; without it no secret can be made safely.
    getrandom::fill(&mut b).expect("the operating system's random number generator failed");
    b
}

/// SHA-256, hex: how tokens and keys are stored and looked up.
pub fn digest(secret: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for b in d {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

/// Constant-time comparison of two digests.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new `kind` secret (`usk_`/`usg_`): (whole secret, visible prefix).
pub fn new_keyed_secret(kind: &str) -> (String, String) {
    let id: [u8; 4] = random_bytes();
    let prefix = format!("{kind}{}", id.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    (format!("{prefix}_{secret}"), prefix)
}

/// The visible prefix of a `usk_`/`usg_` secret, if it has the right shape.
pub fn prefix_of(secret: &str) -> Option<&str> {
    let (prefix, rest) = secret.split_at_checked(12)?;
    (rest.starts_with('_') && rest.len() == 44 && prefix[4..].bytes().all(|b| b.is_ascii_hexdigit())).then_some(prefix)
}

pub fn new_refresh_token() -> String {
    format!("{REFRESH_TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// argon2id PHC string of `password`. CPU-heavy (tens of ms): call it on
/// the blocking pool.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).map_err(|e| e.to_string())?;
    argon2::Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Does `password` match the stored PHC string? A malformed hash never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Writes `text` to `path` (making its folder), readable by the owner only
/// (mode 0600, also when the file was there before with another mode).
pub fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    std::io::Write::write_all(&mut opts.open(path)?, text.as_bytes())?;
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(())
}

/// A hash to verify against when the account does not exist, so that a
/// log-in for an unknown email costs as long as one for a known email.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password, never valid").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hashed_with_argon2id_and_verified() {
        let h = hash_password("correct horse battery staple").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(verify_password("correct horse battery staple", &h));
        assert!(!verify_password("correct horse battery stapler", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn keyed_secrets_have_a_recognisable_prefix() {
        let (secret, prefix) = new_keyed_secret(API_KEY_PREFIX);
        assert!(secret.starts_with(&prefix) && prefix.starts_with("usk_") && prefix.len() == 12);
        assert_eq!(prefix_of(&secret), Some(prefix.as_str()));
        assert_eq!(prefix_of("usk_12345678_short"), None);
        assert!(same(&digest(&secret), &digest(&secret)));
        assert!(!same(&digest(&secret), &digest("other")));
    }
}
