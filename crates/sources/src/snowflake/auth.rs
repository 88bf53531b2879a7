//! Signing in to Snowflake: a key pair's JWT (authenticator `SNOWFLAKE_JWT`), or a password.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};

use super::Settings;
use crate::SourceError;

pub(crate) enum Credentials {
    Password(String),
    KeyPair {
        key: Box<ring::signature::RsaKeyPair>,
        /// `SHA256:` and the base64 SHA-256 of the public key (SubjectPublicKeyInfo, DER), as
        /// `DESC USER` shows it in `RSA_PUBLIC_KEY_FP`.
        fingerprint: String,
    },
}

fn failed(m: impl Into<String>) -> SourceError {
    SourceError::Connect(m.into())
}

/// A DER length.
fn der_len(n: usize) -> Vec<u8> {
    if n < 0x80 {
        vec![n as u8]
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        let mut out = vec![0x80 | bytes.len() as u8];
        out.extend(bytes);
        out
    }
}

/// The SubjectPublicKeyInfo of an RSA public key given as PKCS#1 `RSAPublicKey`.
pub(crate) fn spki(pkcs1: &[u8]) -> Vec<u8> {
    // SEQUENCE { OID rsaEncryption, NULL }
    let algorithm: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0x03];
    bits.extend(der_len(pkcs1.len() + 1));
    bits.push(0);
    bits.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    out.extend(der_len(algorithm.len() + bits.len()));
    out.extend_from_slice(algorithm);
    out.extend(bits);
    out
}

impl Credentials {
    pub(crate) fn new(s: &Settings) -> Result<Credentials, SourceError> {
        match (&s.private_key_path, &s.password) {
            (Some(path), _) => {
                let pem = std::fs::read_to_string(path)
                    .map_err(|e| failed(format!("private_key_path {path}: cannot be read: {e}")))?;
                let der: Vec<u8> = if pem.contains("ENCRYPTED PRIVATE KEY") {
                    // An encrypted PKCS#8 key (as Snowflake's guide makes it, `-v2 des3`, or
                    // with AES): opened with the passphrase.
                    let pass = s.private_key_passphrase.as_ref().ok_or_else(|| {
                        failed(format!(
                            "private_key_path {path}: the key is encrypted: give private_key_passphrase"
                        ))
                    })?;
                    let (_, doc) = pkcs8::SecretDocument::from_pem(&pem).map_err(|e| {
                        failed(format!("private_key_path {path}: not a PEM key: {e}"))
                    })?;
                    let info =
                        pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes()).map_err(|e| {
                            failed(format!(
                                "private_key_path {path}: not an encrypted PKCS#8 key: {e}"
                            ))
                        })?;
                    info.decrypt(pass.expose().as_bytes())
                        .map_err(|_| {
                            failed(format!(
                                "private_key_path {path}: the passphrase does not open the key"
                            ))
                        })?
                        .as_bytes()
                        .to_vec()
                } else {
                    use rustls::pki_types::pem::PemObject;
                    rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
                        .map_err(|e| {
                            failed(format!(
                                "private_key_path {path}: not a PKCS#8 PEM key: {e}"
                            ))
                        })?
                        .secret_pkcs8_der()
                        .to_vec()
                };
                let key = ring::signature::RsaKeyPair::from_pkcs8(&der)
                    .map_err(|e| failed(format!("private_key_path {path}: not an RSA key: {e}")))?;
                let digest =
                    ring::digest::digest(&ring::digest::SHA256, &spki(key.public().as_ref()));
                let fingerprint = format!(
                    "SHA256:{}",
                    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
                );
                Ok(Credentials::KeyPair {
                    key: Box::new(key),
                    fingerprint,
                })
            }
            (None, Some(p)) => Ok(Credentials::Password(p.expose().to_string())),
            (None, None) => Err(failed(
                "a Snowflake warehouse needs private_key_path (key-pair auth) or password",
            )),
        }
    }

    /// Adds the sign-in's credentials to a login request's `data`.
    pub(crate) fn fill(&self, data: &mut Value, s: &Settings) -> Result<(), SourceError> {
        match self {
            Credentials::Password(p) => data["PASSWORD"] = json!(p),
            Credentials::KeyPair { key, fingerprint } => {
                data["AUTHENTICATOR"] = json!("SNOWFLAKE_JWT");
                data["TOKEN"] = json!(jwt(key, fingerprint, s)?);
            }
        }
        Ok(())
    }
}

/// The account part of a JWT's names: the identifier up to any region, in capitals.
fn account_name(account: &str) -> String {
    account
        .split('.')
        .next()
        .unwrap_or(account)
        .to_ascii_uppercase()
}

fn jwt(
    key: &ring::signature::RsaKeyPair,
    fingerprint: &str,
    s: &Settings,
) -> Result<String, SourceError> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let subject = format!(
        "{}.{}",
        account_name(&s.account),
        s.user.to_ascii_uppercase()
    );
    let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = b64(json!({
        "iss": format!("{subject}.{fingerprint}"), "sub": subject, "iat": now, "exp": now + 3600,
    })
    .to_string()
    .as_bytes());
    let message = format!("{header}.{claims}");
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        message.as_bytes(),
        &mut signature,
    )
    .map_err(|_| failed("the private key could not sign"))?;
    Ok(format!("{message}.{}", b64(&signature)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_and_der_lengths() {
        assert_eq!(account_name("xy12345.eu-west-1"), "XY12345");
        assert_eq!(account_name("acme-xy12345"), "ACME-XY12345");
        assert_eq!(der_len(5), vec![5]);
        assert_eq!(der_len(270), vec![0x82, 0x01, 0x0e]);
    }
}
