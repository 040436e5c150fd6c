//! OAuth 2.0 access tokens for XOAUTH2 sign-in (Microsoft 365, Google), obtained
//! with the refresh-token grant (RFC 6749 §6) from the provider's token endpoint.
//!
//! Why this is here and not left to an outside script: helpdesks that relied on one
//! silently stopped fetching mail when a refresh token rotated or was revoked. So:
//! - an access token is kept until shortly before it expires, then refreshed;
//! - a refresh token the provider rotates is saved at once (written to a temporary
//!   file and renamed over the old one, so a crash leaves one whole token);
//! - `invalid_grant` (revoked, expired, password changed) is told apart from a
//!   provider that is merely unreachable, so the hub can raise an alert.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Where and how to refresh.
#[derive(Debug, Clone)]
pub struct OAuthClientConfig {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// e.g. `https://outlook.office365.com/IMAP.AccessAsUser.All offline_access`.
    pub scope: Option<String>,
    /// Holds the current refresh token; rewritten when the provider rotates it.
    pub refresh_token_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The grant is gone (`invalid_grant`): a person must sign the mailbox in again.
    #[error("the provider refused the refresh token ({0}): the mailbox must be authorised again")]
    GrantRevoked(String),
    /// Unreachable, a server error, an answer we cannot read: try again later.
    #[error("no access token: {0}")]
    Unavailable(String),
}

/// A token is refreshed this long before the provider says it expires, so a
/// sign-in never races its expiry.
const EARLY: Duration = Duration::from_secs(60);
/// The longest the token endpoint may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read from the token endpoint.
const MAX_ANSWER: usize = 64 * 1024;

/// An access token, and whether it came from the provider just now: a held token
/// the server refuses is worth one fresh try; a fresh one refused is not.
pub struct AccessToken {
    pub token: String,
    pub fresh: bool,
}

pub struct OAuthClient {
    config: OAuthClientConfig,
    http: reqwest::Client,
    current: Mutex<Option<(String, Instant)>>,
}

impl OAuthClient {
    pub fn new(config: OAuthClientConfig) -> Result<OAuthClient, OAuthError> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OAuthError::Unavailable(e.to_string()))?;
        Ok(OAuthClient {
            config,
            http,
            current: Mutex::new(None),
        })
    }

    /// A current access token: the one held while it has life left, a fresh one
    /// otherwise.
    pub async fn access_token(&self) -> Result<AccessToken, OAuthError> {
        let mut current = self.current.lock().await;
        if let Some((token, expires)) = current.as_ref()
            && Instant::now() + EARLY < *expires
        {
            return Ok(AccessToken {
                token: token.clone(),
                fresh: false,
            });
        }
        let (token, lifetime) = self.refresh().await?;
        *current = Some((token.clone(), Instant::now() + lifetime));
        Ok(AccessToken { token, fresh: true })
    }

    /// The server refused the token held (revoked, or expired early): the next
    /// [`access_token`](Self::access_token) asks for a new one.
    pub async fn forget(&self) {
        *self.current.lock().await = None;
    }

    async fn refresh(&self) -> Result<(String, Duration), OAuthError> {
        let path = &self.config.refresh_token_file;
        let refresh_token = std::fs::read_to_string(path)
            .map_err(|e| OAuthError::Unavailable(format!("{}: {e}", path.display())))?;
        let refresh_token = refresh_token.trim();
        if refresh_token.is_empty() {
            return Err(OAuthError::GrantRevoked(format!(
                "{} is empty",
                path.display()
            )));
        }
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", self.config.client_id.as_str()),
        ];
        if let Some(secret) = &self.config.client_secret {
            form.push(("client_secret", secret));
        }
        if let Some(scope) = &self.config.scope {
            form.push(("scope", scope));
        }
        let response = self
            .http
            .post(&self.config.token_url)
            .header("accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| OAuthError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        let body = read_bounded(response).await?;
        let answer = TokenAnswer::parse(&body);
        if !status.is_success() {
            return Err(match answer.error.as_deref() {
                // RFC 6749 §5.2: the grant is invalid, expired or revoked.
                Some("invalid_grant") | Some("unauthorized_client") | Some("invalid_client") => {
                    OAuthError::GrantRevoked(answer.error.unwrap_or_default())
                }
                _ => OAuthError::Unavailable(format!("token endpoint answered {status}")),
            });
        }
        // Without expires_in, assume an hour (Microsoft's and Google's lifetime).
        let lifetime = answer.lifetime().unwrap_or(Duration::from_secs(3600));
        let access = answer.access_token.ok_or_else(|| {
            OAuthError::Unavailable("the token endpoint's answer has no access_token".into())
        })?;
        if let Some(rotated) = answer.refresh_token.filter(|t| t != refresh_token) {
            save_atomically(path, &rotated).map_err(|e| {
                // The old token may already be dead: nothing fetched until this is fixed.
                OAuthError::Unavailable(format!(
                    "could not save the rotated refresh token to {}: {e}",
                    path.display()
                ))
            })?;
            tracing::info!("IMAP refresh token rotated and saved");
        }
        Ok((access, lifetime))
    }
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, OAuthError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| OAuthError::Unavailable(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(OAuthError::Unavailable(
                "the token endpoint's answer is too large".into(),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The fields of a token answer (RFC 6749 §5.1, §5.2) that matter here.
#[derive(Debug, Default, serde::Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    refresh_token: Option<String>,
    /// A number by the RFC; some providers send it as a string.
    expires_in: Option<serde_json::Value>,
    error: Option<String>,
}

impl TokenAnswer {
    fn parse(body: &[u8]) -> TokenAnswer {
        serde_json::from_slice(body).unwrap_or_default()
    }

    fn lifetime(&self) -> Option<Duration> {
        let seconds = match self.expires_in.as_ref()? {
            serde_json::Value::Number(n) => n.as_u64()?,
            serde_json::Value::String(s) => s.trim().parse().ok()?,
            _ => return None,
        };
        Some(Duration::from_secs(seconds))
    }
}

/// Writes `token` beside `path` and renames it over: readers see the old token or
/// the new one, never half of one. Only the owner may read it.
fn save_atomically(path: &std::path::Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        // The rename itself survives a crash once the directory is synced.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_answer_is_read_and_an_unreadable_one_is_empty() {
        let a = TokenAnswer::parse(
            br#"{"access_token":"A","refresh_token":"R2","expires_in":3599,"token_type":"Bearer"}"#,
        );
        assert_eq!(a.access_token.as_deref(), Some("A"));
        assert_eq!(a.refresh_token.as_deref(), Some("R2"));
        assert_eq!(a.lifetime(), Some(Duration::from_secs(3599)));
        let quoted = TokenAnswer::parse(br#"{"access_token":"A","expires_in":"3600"}"#);
        assert_eq!(quoted.lifetime(), Some(Duration::from_secs(3600)));
        let e =
            TokenAnswer::parse(br#"{"error":"invalid_grant","error_description":"AADSTS70008"}"#);
        assert_eq!(e.error.as_deref(), Some("invalid_grant"));
        assert!(TokenAnswer::parse(b"<html>").access_token.is_none());
    }

    #[test]
    fn a_rotated_token_replaces_the_old_one_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refresh-token");
        std::fs::write(&path, "old\n").unwrap();
        save_atomically(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        assert!(!dir.path().join("refresh-token.new").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
