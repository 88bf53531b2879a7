//! Google OAuth for BigQuery: a service account's key signs a JWT that is exchanged for an
//! access token (the JWT bearer grant); application default credentials are the key file of
//! `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's user credentials (a refresh token), or the
//! metadata server of the machine the process runs on. Tokens are kept until shortly before they
//! expire.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::SourceError;

/// The scope asked for: BigQuery, reading and writing (IAM roles decide what is allowed).
const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";
const TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// A credentials file: a service account's key or gcloud's user credentials.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    client_email: String,
    #[serde(default)]
    private_key: String,
    #[serde(default)]
    token_uri: Option<String>,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    refresh_token: String,
}

enum Source {
    /// Requests go unauthenticated (an emulator).
    None,
    ServiceAccount {
        email: String,
        key: Box<ring::signature::RsaKeyPair>,
        token_uri: String,
    },
    User {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        token_uri: String,
    },
    Metadata,
}

pub(crate) struct Auth {
    source: Source,
    cached: Mutex<Option<(String, std::time::Instant)>>,
}

fn failed(m: impl Into<String>) -> SourceError {
    SourceError::Connect(m.into())
}

fn read_key(path: &str) -> Result<Source, SourceError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| failed(format!("credentials_path {path}: cannot be read: {e}")))?;
    let k: KeyFile = serde_json::from_str(&text).map_err(|e| {
        failed(format!(
            "credentials_path {path}: not a Google credentials file: {e}"
        ))
    })?;
    match k.kind.as_str() {
        "service_account" => {
            use rustls::pki_types::pem::PemObject;
            let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(k.private_key.as_bytes())
                .map_err(|e| {
                    failed(format!("credentials_path {path}: the private key is not a PEM PKCS#8 key: {e}"))
                })?;
            let key = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
                .map_err(|e| failed(format!("credentials_path {path}: the private key is not an RSA key: {e}")))?;
            Ok(Source::ServiceAccount {
                email: k.client_email,
                key: Box::new(key),
                token_uri: k.token_uri.unwrap_or_else(|| TOKEN_URI.into()),
            })
        }
        "authorized_user" => Ok(Source::User {
            client_id: k.client_id,
            client_secret: k.client_secret,
            refresh_token: k.refresh_token,
            token_uri: k.token_uri.unwrap_or_else(|| TOKEN_URI.into()),
        }),
        other => Err(failed(format!(
            "credentials_path {path}: credentials of type `{other}` are not supported (a service account key or gcloud's user credentials are)"
        ))),
    }
}

impl Auth {
    /// The credentials of a key file, application default credentials, or none (an endpoint
    /// without a key).
    pub(crate) fn new(credentials_path: Option<&str>, endpoint: bool) -> Result<Auth, SourceError> {
        let source = match credentials_path {
            Some(p) => read_key(p)?,
            None if endpoint => Source::None,
            None => {
                let env = std::env::var("GOOGLE_APPLICATION_CREDENTIALS")
                    .ok()
                    .filter(|p| !p.is_empty());
                let gcloud = std::env::var_os("HOME").map(|h| {
                    std::path::Path::new(&h)
                        .join(".config/gcloud/application_default_credentials.json")
                });
                match (env, gcloud) {
                    (Some(p), _) => read_key(&p)?,
                    (None, Some(g)) if g.is_file() => read_key(&g.display().to_string())?,
                    _ => Source::Metadata,
                }
            }
        };
        Ok(Auth {
            source,
            cached: Mutex::new(None),
        })
    }

    /// An access token (none for an unauthenticated endpoint).
    pub(crate) async fn token(
        &self,
        http: &reqwest::Client,
    ) -> Result<Option<String>, SourceError> {
        if matches!(self.source, Source::None) {
            return Ok(None);
        }
        let mut cached = self.cached.lock().await;
        if let Some((t, until)) = cached.as_ref() {
            if std::time::Instant::now() < *until {
                return Ok(Some(t.clone()));
            }
        }
        let (token, lifetime) = self.fetch(http).await?;
        // Renewed a minute before it expires.
        let until = std::time::Instant::now() + lifetime.saturating_sub(Duration::from_secs(60));
        *cached = Some((token.clone(), until));
        Ok(Some(token))
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<(String, Duration), SourceError> {
        let request = match &self.source {
            Source::None => unreachable!("no token is asked for without credentials"),
            Source::ServiceAccount {
                email,
                key,
                token_uri,
            } => http.post(token_uri).form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &jwt(email, key, token_uri)?),
            ]),
            Source::User {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => http.post(token_uri).form(&[
                ("grant_type", "refresh_token"),
                ("client_id", client_id),
                ("client_secret", client_secret),
                ("refresh_token", refresh_token),
            ]),
            Source::Metadata => http
                .get("http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token")
                .header("Metadata-Flavor", "Google"),
        };
        let resp = request.send().await.map_err(|e| {
            failed(match self.source {
                Source::Metadata => format!("no credentials_path, no GOOGLE_APPLICATION_CREDENTIALS, no gcloud credentials, and no metadata server answered: give a service account key in credentials_path ({e})"),
                _ => format!("Google's token service did not answer: {e}"),
            })
        })?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let Some(token) = body.get("access_token").and_then(|t| t.as_str()) else {
            let why = body
                .get("error_description")
                .or(body.get("error"))
                .and_then(|e| e.as_str())
                .unwrap_or("no reason given");
            return Err(failed(format!(
                "Google refused the credentials ({status}): {why}"
            )));
        };
        let lifetime = body
            .get("expires_in")
            .and_then(|e| e.as_u64())
            .unwrap_or(3600);
        Ok((token.to_string(), Duration::from_secs(lifetime)))
    }
}

/// The signed assertion of the JWT bearer grant (RS256).
fn jwt(email: &str, key: &ring::signature::RsaKeyPair, aud: &str) -> Result<String, SourceError> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = b64(serde_json::json!({
        "iss": email, "scope": SCOPE, "aud": aud, "iat": now, "exp": now + 3600,
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
    .map_err(|_| failed("the service account key could not sign"))?;
    Ok(format!("{message}.{}", b64(&signature)))
}
