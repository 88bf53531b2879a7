//! Secrets at rest: API keys and database URLs entered in the UI or the API are stored encrypted
//! (XChaCha20-Poly1305) with a key from `SALLYPORT_SECRET_KEY` (64 hex digits) or from a key
//! file created on first start with owner-only permissions.

use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

/// Secrets sealed before they were bound to where they belong: opened only to be sealed again
/// as v2 when a server starts ([`crate::entities::upgrade`]), never to be used.
pub(crate) const PREFIX_V1: &str = "enc:v1:";
/// Secrets bound, by associated data, to their entity, field and address.
const PREFIX: &str = "enc:v2:";

const NOT_OPEN: &str = "does not open";

pub struct Vault {
    cipher: XChaCha20Poly1305,
}

fn random<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(b)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Vault {
    /// The vault of `SALLYPORT_SECRET_KEY`, or of the key in `key_file` (created if missing).
    pub fn load(key_file: &Path) -> Result<Vault, String> {
        let text = match std::env::var("SALLYPORT_SECRET_KEY") {
            Ok(k) if !k.trim().is_empty() => k,
            _ => {
                match crate::owner_only(key_file).and_then(|_| std::fs::read_to_string(key_file)) {
                    Ok(k) => k,
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(format!(
                            "cannot read the key file {}: {e}",
                            key_file.display()
                        ))
                    }
                    Err(_) => {
                        let k = hex(&random::<32>().map_err(|e| e.to_string())?);
                        let mut options = std::fs::OpenOptions::new();
                        options.write(true).create_new(true);
                        #[cfg(unix)]
                        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                        let mut f = options.open(key_file).map_err(|e| {
                            format!("cannot create the key file {}: {e}", key_file.display())
                        })?;
                        f.write_all(k.as_bytes()).map_err(|e| e.to_string())?;
                        k
                    }
                }
            }
        };
        let key = unhex(&text)
            .filter(|k| k.len() == 32)
            .ok_or("the secret key must be 64 hexadecimal digits (32 bytes)")?;
        Ok(Vault {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }

    /// A vault over a fresh random key, and that key as 64 hex digits.
    pub fn generate() -> Result<(Vault, String), String> {
        let key = random::<32>().map_err(|e| e.to_string())?;
        Ok((
            Vault {
                cipher: XChaCha20Poly1305::new(Key::from_slice(&key)),
            },
            hex(&key),
        ))
    }

    /// A vault over a key given as 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Vault, String> {
        let key = unhex(text)
            .filter(|k| k.len() == 32)
            .ok_or("the secret key must be 64 hexadecimal digits (32 bytes)")?;
        Ok(Vault {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }

    /// Seals `plain`, bound to `context` (which entity, which field, which address): a sealed
    /// secret opens only with the same context.
    pub fn encrypt(&self, plain: &str, context: &str) -> String {
        let nonce = random::<24>().expect("the system's random source");
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .expect("encryption of a short secret");
        format!("{PREFIX}{}{}", hex(&nonce), hex(&ct))
    }

    /// Opens a sealed secret with the context it was sealed for.
    pub fn decrypt(&self, stored: &str, context: &str) -> Result<String, String> {
        if stored.starts_with(PREFIX_V1) {
            return Err("a secret sealed by an earlier version, not bound to its address: start `sallyport serve` once to seal it again".into());
        }
        let body = stored
            .strip_prefix(PREFIX)
            .ok_or("not an encrypted secret")?;
        self.open_raw(body, context.as_bytes()).map_err(|e| {
            if e != NOT_OPEN { return e; }
            "a secret that does not open: it was sealed with another key (was SALLYPORT_SECRET_KEY changed?) or for another entity or address (was it copied, or its address edited in the store?)".to_string()
        })
    }

    /// Opens a v1 secret (sealed without a context), for sealing it again.
    pub(crate) fn decrypt_v1(&self, stored: &str) -> Result<String, String> {
        let body = stored.strip_prefix(PREFIX_V1).ok_or("not a v1 secret")?;
        self.open_raw(body, b"").map_err(|e| {
            if e != NOT_OPEN { return e; }
            "a secret that does not open: it was sealed with another key (was SALLYPORT_SECRET_KEY changed?)".to_string()
        })
    }

    fn open_raw(&self, body: &str, aad: &[u8]) -> Result<String, String> {
        let bytes = unhex(body)
            .filter(|b| b.len() > 24)
            .ok_or("a damaged secret")?;
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(&bytes[..24]),
                Payload {
                    msg: &bytes[24..],
                    aad,
                },
            )
            .map_err(|_| NOT_OPEN.to_string())?;
        String::from_utf8(plain).map_err(|_| "a damaged secret".to_string())
    }

    /// Seals `plain` the v1 way (no context): only for testing the upgrade.
    #[doc(hidden)]
    pub fn encrypt_v1_for_tests(&self, plain: &str) -> String {
        let nonce = random::<24>().expect("the system's random source");
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plain.as_bytes())
            .expect("encryption of a short secret");
        format!("{PREFIX_V1}{}{}", hex(&nonce), hex(&ct))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let v = Vault::load(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let e = v.encrypt("sk-123", "app/a/api_key");
        assert!(e.starts_with(PREFIX) && !e.contains("sk-123"));
        assert_ne!(
            e,
            v.encrypt("sk-123", "app/a/api_key"),
            "a fresh nonce each time"
        );
        assert_eq!(v.decrypt(&e, "app/a/api_key").unwrap(), "sk-123");
        let again = Vault::load(&path).unwrap();
        assert_eq!(
            again.decrypt(&e, "app/a/api_key").unwrap(),
            "sk-123",
            "the key file is reused"
        );
        let mut bad = e.clone();
        bad.replace_range(bad.len() - 2.., "00");
        assert!(v.decrypt(&bad, "app/a/api_key").is_err());
        let moved = v.decrypt(&e, "app/b/api_key").unwrap_err();
        assert!(moved.contains("for another entity or address"), "{moved}");
    }
}
