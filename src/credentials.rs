//! Device secrets: generated from the OS's random source, shown once, kept only as a
//! PBKDF2-SHA512 hash in mosquitto's own `$7$` format (`$7$<iterations>$<salt>$<hash>`,
//! base64) — so the same registry line checks a device at the embedded broker and is a
//! valid line of a mosquitto password file (`aq-ingest broker-config --mosquitto`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::Sha512;

/// mosquitto_passwd's iteration count for `$7$` hashes: a device connects rarely, and
/// the secret is random (not a human password), so brute force is not the threat.
pub const ITERATIONS: u32 = 101;

/// Salt bytes, as mosquitto_passwd makes them.
const SALT_BYTES: usize = 12;

/// Random bytes in a new secret (32 base64url characters).
const SECRET_BYTES: usize = 24;

/// A new random secret for a device.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut b = [0u8; SECRET_BYTES];
    getrandom::getrandom(&mut b)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// The `$7$` hash of `secret` with a fresh salt.
pub fn hash(secret: &str) -> Result<String, getrandom::Error> {
    let mut salt = [0u8; SALT_BYTES];
    getrandom::getrandom(&mut salt)?;
    Ok(hash_with(secret, &salt, ITERATIONS))
}

fn hash_with(secret: &str, salt: &[u8], iterations: u32) -> String {
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(secret.as_bytes(), salt, iterations, &mut out);
    format!(
        "$7${iterations}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(out)
    )
}

/// Whether `encoded` is a well-formed `$7$` hash.
pub fn is_hash(encoded: &str) -> bool {
    parse(encoded).is_some()
}

fn parse(encoded: &str) -> Option<(u32, Vec<u8>, Vec<u8>)> {
    let mut parts = encoded.strip_prefix("$7$")?.split('$');
    let iterations: u32 = parts.next()?.parse().ok().filter(|i| *i > 0)?;
    let salt = STANDARD.decode(parts.next()?).ok()?;
    let hash = STANDARD.decode(parts.next()?).ok()?;
    (parts.next().is_none() && hash.len() == 64).then_some((iterations, salt, hash))
}

/// Whether `secret` matches `encoded`, in time that does not depend on where they differ.
pub fn verify(secret: &str, encoded: &str) -> bool {
    let Some((iterations, salt, want)) = parse(encoded) else {
        return false;
    };
    let mut got = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(secret.as_bytes(), &salt, iterations, &mut got);
    same(&got, &want)
}

/// Whether two secrets are equal, in time that does not depend on where they differ
/// (only on their length, which is not the secret).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_verifies_against_its_hash_only() {
        let s = new_secret().unwrap();
        assert_eq!(s.len(), 32);
        let h = hash(&s).unwrap();
        assert!(h.starts_with("$7$101$") && is_hash(&h), "{h}");
        assert!(verify(&s, &h));
        assert!(!verify("wrong", &h));
        assert!(!verify(&s, "plain-text"));
        assert_ne!(hash(&s).unwrap(), h, "a fresh salt each time");
    }

    #[test]
    fn the_hash_is_pbkdf2_sha512_as_mosquitto_writes_it() {
        // RFC-style vector: PBKDF2-HMAC-SHA512("password", "salt", 1), 64 bytes.
        let h = hash_with("password", b"salt", 1);
        let (_, _, dk) = parse(&h).unwrap();
        assert_eq!(
            dk[..8],
            [0x86, 0x7f, 0x70, 0xcf, 0x1a, 0xde, 0x02, 0xcf],
            "{h}"
        );
    }
}
