//! The IMAP poller, for councils whose mailbox lives elsewhere (Microsoft 365,
//! Google, Exchange): it fetches new messages by UID, hands each to the
//! [`MailboxStore`] (which stores it through the same path as SMTP), and only then
//! marks it seen (or moves it). IDLE when the server offers it, polling otherwise.
//!
//! No mail lost, none twice: messages are fetched by UID, never by sequence number;
//! the store remembers UIDVALIDITY and the last UID it committed; a UIDVALIDITY reset
//! fetches the folder again (the store recognises what it already has); a crash
//! between committing and flagging fetches the message again, and it is again
//! recognised. Disconnects and server restarts reconnect with a growing pause.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::Session;
use futures_util::TryStreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

use crate::oauth::{OAuthClient, OAuthError};
use crate::smtp::NotStored;

/// Where to poll and how to sign in.
#[derive(Clone)]
pub struct ImapConfig {
    /// TLS from the start (`imaps://`, port 993), or plain (`imap://`, tests and a
    /// server on the same host).
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub folder: String,
    pub credential: Credential,
    /// Move fetched messages here (UID MOVE); empty: mark them seen.
    pub move_to: Option<String>,
    /// How long to wait between polls when the server has no IDLE (and the longest
    /// an IDLE lasts before it is renewed).
    pub poll: Duration,
    /// For `imaps://`: the CA that signed the server's certificate (an on-premises
    /// Exchange with the council's own CA); `None`: the public web PKI.
    pub ca_file: Option<std::path::PathBuf>,
}

#[derive(Clone)]
pub enum Credential {
    Password(String),
    /// An OAuth 2.0 access token for XOAUTH2, read afresh at every sign-in from a
    /// file kept current by the council's own token refresher.
    OAuthTokenFile(std::path::PathBuf),
    /// XOAUTH2 with access tokens this daemon refreshes from the provider.
    OAuth(Arc<OAuthClient>),
}

/// Where a folder's position is: its UIDVALIDITY and the last UID committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub uid_validity: u32,
    pub last_uid: u32,
}

/// One fetched message.
#[derive(Debug, Clone)]
pub struct FetchedMail {
    pub folder: String,
    pub uid_validity: u32,
    pub uid: u32,
    pub raw: Vec<u8>,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the poller hands mail to, and where it keeps its place.
pub trait MailboxStore: Send + Sync + 'static {
    fn position(&self, folder: &str) -> BoxFuture<'_, Result<Option<Position>, NotStored>>;
    /// Stores the message (a second delivery of the same message is recognised) and
    /// then the folder's new position.
    fn deliver(&self, mail: FetchedMail) -> BoxFuture<'_, Result<(), NotStored>>;
}

/// What the poller reports as it goes, so the hub can count it and alert on it: a
/// mailbox whose sign-in is refused (an expired password or token, a revoked grant)
/// must page someone within minutes, not be found after weeks without mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImapEvent {
    SignedIn,
    SignInRefused,
    /// The OAuth provider refused the refresh token (`invalid_grant`): nothing will
    /// be fetched until someone authorises the mailbox again.
    GrantRevoked,
    Disconnected,
    Fetched,
}

pub type ImapObserver = Arc<dyn Fn(ImapEvent) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("the server refused the sign-in: {0}")]
    SignIn(String),
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    #[error("IMAP: {0}")]
    Protocol(#[from] async_imap::error::Error),
    #[error("not stored: {0}")]
    Store(#[from] NotStored),
    #[error("the server gave the folder no UIDVALIDITY")]
    NoUidValidity,
}

/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Messages fetched per round, so a three-day backlog is worked through in bounded steps.
const BATCH: u32 = 200;

/// Polls until `stop`. Each failure is logged and retried after a pause that grows
/// to five minutes; a sign-in refused is reported loudly (credentials expire).
pub async fn run(
    config: ImapConfig,
    store: Arc<dyn MailboxStore>,
    observe: ImapObserver,
    stop: CancellationToken,
) {
    const FIRST_PAUSE: Duration = Duration::from_secs(1);
    let mut backoff = FIRST_PAUSE;
    loop {
        let mut signed_in = false;
        let outcome = tokio::select! {
            r = session(&config, store.as_ref(), observe.as_ref(), &stop, &mut signed_in) => r,
            _ = stop.cancelled() => return,
        };
        if signed_in {
            // A session that got going ended: the outage, if any, starts now.
            backoff = FIRST_PAUSE;
        }
        match outcome {
            Ok(()) => return,
            Err(ImapError::SignIn(e)) => {
                tracing::error!(error = %e, "IMAP sign-in refused: mail is not being fetched");
                observe(ImapEvent::SignInRefused);
                if let Credential::OAuth(client) = &config.credential {
                    // Revoked or expired early: the next attempt asks for a new one.
                    client.forget().await;
                }
            }
            Err(ImapError::OAuth(e @ OAuthError::GrantRevoked(_))) => {
                tracing::error!(error = %e, "IMAP cannot sign in: mail is not being fetched");
                observe(ImapEvent::GrantRevoked);
            }
            Err(e) => {
                tracing::warn!(error = %e, "IMAP session ended; reconnecting");
                observe(ImapEvent::Disconnected);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn session(
    config: &ImapConfig,
    store: &dyn MailboxStore,
    observe: &(dyn Fn(ImapEvent) + Send + Sync),
    stop: &CancellationToken,
    signed_in: &mut bool,
) -> Result<(), ImapError> {
    let stream = connect(config).await?;
    let mut client = async_imap::Client::new(stream);
    client
        .read_response()
        .await
        .map_err(|e| ImapError::Connect(e.to_string()))?
        .ok_or_else(|| ImapError::Connect("no greeting".into()))?;
    let mut session = match &config.credential {
        Credential::Password(p) => client
            .login(&config.user, p)
            .await
            .map_err(|(e, _)| ImapError::SignIn(e.to_string()))?,
        Credential::OAuthTokenFile(path) => {
            let token = std::fs::read_to_string(path)
                .map_err(|e| ImapError::SignIn(format!("{}: {e}", path.display())))?;
            xoauth2(client, &config.user, token.trim())
                .await
                .map_err(|(e, _)| e)?
        }
        Credential::OAuth(oauth) => {
            let held = oauth.access_token().await?;
            match xoauth2(client, &config.user, &held.token).await {
                Ok(session) => session,
                Err((refused, client)) if !held.fresh => {
                    // Expired early or revoked: one more try, with a new token.
                    tracing::info!(error = %refused, "IMAP refused the access token held; refreshing");
                    oauth.forget().await;
                    let fresh = oauth.access_token().await?;
                    xoauth2(client, &config.user, &fresh.token)
                        .await
                        .map_err(|(e, _)| e)?
                }
                Err((refused, _)) => return Err(refused),
            }
        }
    };
    *signed_in = true;
    let idle = session.capabilities().await?.has_str("IDLE");
    tracing::info!(folder = %config.folder, idle, "IMAP signed in");
    observe(ImapEvent::SignedIn);
    loop {
        fetch_new(&mut session, config, store, observe).await?;
        if stop.is_cancelled() {
            let _ = session.logout().await;
            return Ok(());
        }
        if idle {
            let mut handle = session.idle();
            handle.init().await?;
            let (wait, interrupt) = handle.wait_with_timeout(config.poll);
            tokio::select! {
                r = wait => { r?; }
                _ = stop.cancelled() => {}
            }
            drop(interrupt);
            session = handle.done().await?;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(config.poll) => {}
                _ = stop.cancelled() => {}
            }
            // Keeps the connection alive and lets the server report new mail.
            session.noop().await?;
        }
    }
}

async fn fetch_new<T>(
    session: &mut Session<T>,
    config: &ImapConfig,
    store: &dyn MailboxStore,
    observe: &(dyn Fn(ImapEvent) + Send + Sync),
) -> Result<(), ImapError>
where
    T: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    let mailbox = session.select(&config.folder).await?;
    let validity = mailbox.uid_validity.ok_or(ImapError::NoUidValidity)?;
    let known = store.position(&config.folder).await?;
    let mut last = match known {
        Some(p) if p.uid_validity == validity => p.last_uid,
        Some(p) => {
            tracing::warn!(
                old = p.uid_validity,
                new = validity,
                "UIDVALIDITY changed: the folder is fetched again"
            );
            0
        }
        None => 0,
    };
    loop {
        let range = format!("{}:{}", last + 1, last.saturating_add(BATCH));
        let fetched: Vec<_> = session
            .uid_fetch(&range, "(UID BODY.PEEK[])")
            .await?
            .try_collect()
            .await?;
        let mut batch: Vec<(u32, Vec<u8>)> = fetched
            .iter()
            .filter_map(|f| Some((f.uid?, f.body()?.to_vec())))
            // "n:m" with nothing in it can answer with the last message: only new UIDs.
            .filter(|(uid, _)| *uid > last)
            .collect();
        batch.sort_by_key(|(uid, _)| *uid);
        if batch.is_empty() {
            // Past the end of a gap? Look once more beyond this window.
            let beyond: Vec<_> = session
                .uid_search(format!("UID {}:*", last.saturating_add(BATCH) + 1))
                .await?
                .into_iter()
                .filter(|uid| *uid > last)
                .collect();
            match beyond.into_iter().min() {
                Some(next) => {
                    last = next - 1;
                    continue;
                }
                None => return Ok(()),
            }
        }
        for (uid, raw) in batch {
            store
                .deliver(FetchedMail {
                    folder: config.folder.clone(),
                    uid_validity: validity,
                    uid,
                    raw,
                })
                .await?;
            // Only now: the message is the store's.
            match &config.move_to {
                Some(target) => session.uid_mv(uid.to_string(), target).await?,
                None => {
                    let _: Vec<_> = session
                        .uid_store(uid.to_string(), "+FLAGS (\\Seen)")
                        .await?
                        .try_collect()
                        .await?;
                }
            }
            last = uid;
            observe(ImapEvent::Fetched);
        }
    }
}

/// Signs in with XOAUTH2; refused, the connection comes back for another try.
async fn xoauth2(
    client: async_imap::Client<ImapStream>,
    user: &str,
    token: &str,
) -> Result<Session<ImapStream>, (ImapError, async_imap::Client<ImapStream>)> {
    client
        .authenticate(
            "XOAUTH2",
            XOAuth2 {
                user: user.to_string(),
                token: token.to_string(),
            },
        )
        .await
        .map_err(|(e, client)| (ImapError::SignIn(e.to_string()), client))
}

struct XOAuth2 {
    user: String,
    token: String,
}

impl async_imap::Authenticator for XOAuth2 {
    type Response = String;
    fn process(&mut self, _challenge: &[u8]) -> String {
        format!("user={}\x01auth=Bearer {}\x01\x01", self.user, self.token)
    }
}

async fn connect(config: &ImapConfig) -> Result<ImapStream, ImapError> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(30),
        TcpStream::connect((config.host.as_str(), config.port)),
    )
    .await
    .map_err(|_| ImapError::Connect("timed out".into()))?
    .map_err(|e| ImapError::Connect(e.to_string()))?;
    if !config.tls {
        return Ok(ImapStream::Plain(tcp));
    }
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|c| c.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ImapError::Connect(format!("{}: {e}", path.display())))?;
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|e| ImapError::Connect(format!("{}: {e}", path.display())))?;
            }
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ImapError::Connect(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(config.host.clone())
        .map_err(|e| ImapError::Connect(e.to_string()))?;
    let stream = TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| ImapError::Connect(e.to_string()))?;
    Ok(ImapStream::Tls(Box::new(stream)))
}

/// A connection to the IMAP server, with or without TLS.
#[derive(Debug)]
enum ImapStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for ImapStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ImapStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ImapStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ImapStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ImapStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ImapStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
