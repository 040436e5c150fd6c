//! The registrar for advisors' desk phones and softphones (RFC 3261 §10.3). Phones may
//! sit anywhere (home, another office, behind NAT), so they are authenticated by
//! digest ([`crate::digest`]), never trusted by address; the only thing decided on
//! the source address is how many wrong answers it may give (a slow token bucket per
//! source, then 403 whatever it sends).
//!
//! This module speaks SIP; where bindings are kept and whose credentials these are is
//! the daemon's, behind [`Registrar`]. Each binding remembers the real source address
//! and transport a REGISTER came from (rport: a phone behind NAT is reached where its
//! packets come from, not at the private address in its Contact).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsipstack::sip::{Header, HeadersExt, StatusCode};
use rsipstack::transaction::transaction::Transaction;
use tracing::{debug, info};

use crate::admission::RateLimiter;
use crate::config::SipTransport;
use crate::digest::{self, Algorithm, DigestResponse, Ha1, NonceCheck, Nonces};
use crate::identity::{self, RegisterContacts};

/// What the registrar's questions to the daemon return.
pub type RegistrarFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, RegistrarError>> + Send + 'a>>;

/// What the daemon keeps for the registrar: credentials, and the bindings.
pub trait Registrar: Send + Sync + 'static {
    /// The credential of a phone's username, if there is such a phone.
    fn credential<'a>(&'a self, username: &'a str) -> RegistrarFuture<'a, Option<Ha1>>;
    /// Applies an authenticated REGISTER; returns the bindings now current.
    fn register(&self, registration: Registration) -> RegistrarFuture<'_, Vec<Binding>>;
}

/// An authenticated REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub username: String,
    pub call_id: String,
    pub cseq: u32,
    /// Where the REGISTER really came from (the kernel's word, not the Via's).
    pub source: SocketAddr,
    pub transport: SipTransport,
    pub user_agent: Option<String>,
    pub change: BindingChange,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingChange {
    /// No Contact: only asking what is bound.
    Query,
    /// `Contact: *` with `Expires: 0`: every device of this username signs off.
    RemoveAll,
    /// Add, refresh (expires > 0) or remove (expires 0) these contacts.
    Update(Vec<ContactBinding>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactBinding {
    pub contact: String,
    /// Seconds, within the policy's bounds; 0 removes the binding.
    pub expires: u32,
}

/// A binding as the 200 lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub contact: String,
    pub expires_in: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrarError {
    /// The same Call-ID with a CSeq not above the binding's (a delayed or replayed
    /// REGISTER): RFC 3261 §10.3 step 7 aborts it.
    #[error("out of order")]
    OutOfOrder,
    #[error("too many devices for one username")]
    TooManyDevices,
    #[error("bindings cannot be stored: {0}")]
    Unavailable(String),
}

/// How registrations are bounded.
#[derive(Debug, Clone)]
pub struct RegistrarPolicy {
    /// The digest realm; credentials are hashed with it, so changing it means new
    /// passwords for every phone.
    pub realm: String,
    /// Shorter asks get 423 with this as Min-Expires.
    pub min_expires: u32,
    /// Longer asks are cut to this.
    pub max_expires: u32,
    /// Wrong answers one source may give at once before it is refused…
    pub failures_burst: u32,
    /// …and one more after each of these.
    pub failure_refill: Duration,
    /// How long a nonce may be answered.
    pub nonce_lifetime: Duration,
    /// REGISTERs one source may send per second (bursts of twice that); more get
    /// 503 with Retry-After.
    pub registers_per_second: u32,
}

/// REGISTERs being looked up (a database read each) at once, from all sources
/// together: a flood from many addresses gets 503 beyond this, and the database
/// sees no more than this many of its reads at a time.
const LOOKUPS_AT_ONCE: usize = 32;

/// Asked when a REGISTER has neither a Contact's nor the request's expiry.
const DEFAULT_EXPIRES: u32 = 3600;

pub(crate) struct RegistrarSide {
    registrar: Arc<dyn Registrar>,
    policy: RegistrarPolicy,
    nonces: Nonces,
    failures: RateLimiter,
    requests: RateLimiter,
    lookups: tokio::sync::Semaphore,
}

/// How a REGISTER is answered, with a line for the log.
enum Answer {
    Challenge {
        algorithm: Algorithm,
        stale: bool,
    },
    Refuse(StatusCode, &'static str),
    /// Too many REGISTERs now (from this source, or from everyone): 503, later.
    Busy,
    TooBrief,
    Bound(Vec<Binding>),
}

impl RegistrarSide {
    pub(crate) fn new(registrar: Arc<dyn Registrar>, policy: RegistrarPolicy) -> RegistrarSide {
        RegistrarSide {
            registrar,
            failures: RateLimiter::with_burst(policy.failures_burst, policy.failure_refill),
            requests: RateLimiter::new(policy.registers_per_second),
            lookups: tokio::sync::Semaphore::new(LOOKUPS_AT_ONCE),
            nonces: Nonces::new(policy.nonce_lifetime),
            policy,
        }
    }

    /// Answers one REGISTER; for one accepted, how long the registration now lasts
    /// (a connection it came on is kept open that long: it is the way to the phone).
    pub(crate) async fn answer(&self, tx: &mut Transaction, peer: SocketAddr) -> Option<Duration> {
        let answer = self.decide(tx, peer).await;
        let lasts = match &answer {
            Answer::Bound(bindings) => Some(Duration::from_secs(
                bindings
                    .iter()
                    .map(|b| u64::from(b.expires_in))
                    .max()
                    .unwrap_or(0),
            )),
            _ => None,
        };
        let outcome = match &answer {
            Answer::Challenge { .. } => "challenged",
            Answer::Refuse(StatusCode::Forbidden, _) => "forbidden",
            Answer::Refuse(..) | Answer::TooBrief => "refused",
            Answer::Busy => "busy",
            Answer::Bound(_) => "registered",
        };
        metrics::counter!("contactd_sip_registers_total", "outcome" => outcome).increment(1);
        let _ = match answer {
            Answer::Challenge { algorithm, stale } => {
                let nonce = self.nonces.issue(peer.ip());
                let challenge = digest::challenge(&self.policy.realm, &nonce, algorithm, stale);
                tx.reply_with(
                    StatusCode::Unauthorized,
                    vec![Header::Other("WWW-Authenticate".into(), challenge)],
                    None,
                )
                .await
            }
            Answer::Refuse(code, why) => {
                let warning = Header::Other("Warning".into(), format!("399 contactd \"{why}\""));
                tx.reply_with(code, vec![warning], None).await
            }
            Answer::Busy => {
                let later = Header::Other("Retry-After".into(), "5".into());
                tx.reply_with(StatusCode::ServiceUnavailable, vec![later], None)
                    .await
            }
            Answer::TooBrief => {
                let min = Header::Other("Min-Expires".into(), self.policy.min_expires.to_string());
                tx.reply_with(StatusCode::IntervalTooBrief, vec![min], None)
                    .await
            }
            Answer::Bound(bindings) => {
                let headers = bindings
                    .iter()
                    .map(|b| {
                        Header::Other(
                            "Contact".into(),
                            format!("<{}>;expires={}", b.contact, b.expires_in),
                        )
                    })
                    .collect();
                tx.reply_with(StatusCode::OK, headers, None).await
            }
        };
        lasts
    }

    async fn decide(&self, tx: &Transaction, peer: SocketAddr) -> Answer {
        let request = &tx.original;
        if !self.requests.allow(peer.ip(), Instant::now()) {
            debug!(source = %peer.ip(), "REGISTER rate limit: 503");
            return Answer::Busy;
        }
        if !self.failures.has_token(peer.ip(), Instant::now()) {
            debug!(source = %peer.ip(), "REGISTER from a source with too many failed attempts");
            return Answer::Refuse(StatusCode::Forbidden, "too many failed attempts");
        }
        let Ok(_looking_up) = self.lookups.try_acquire() else {
            debug!("REGISTERs being looked up at their limit: 503");
            return Answer::Busy;
        };
        let Ok(username) = identity::registered_user(request) else {
            return Answer::Refuse(StatusCode::BadRequest, "To: not a sip URI with a user");
        };
        let credential = match self.registrar.credential(&username).await {
            Ok(c) => c,
            Err(e) => {
                info!(error = %e, "registrar unavailable");
                return Answer::Refuse(StatusCode::ServiceUnavailable, "try again later");
            }
        };
        // A username that does not exist is challenged like one that does (SHA-256,
        // the default), so a challenge says nothing of who exists.
        let algorithm = credential
            .as_ref()
            .map_or(Algorithm::Sha256, |c| c.algorithm);
        let ours = request
            .headers
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case("Authorization"))
            .filter_map(|h| DigestResponse::parse(h.value()).ok())
            .find(|r| r.realm == self.policy.realm);
        let Some(response) = ours else {
            return Answer::Challenge {
                algorithm,
                stale: false,
            };
        };
        match self.nonces.check(&response.nonce, response.nc, peer.ip()) {
            NonceCheck::Fresh => {}
            NonceCheck::Stale => {
                return Answer::Challenge {
                    algorithm,
                    stale: true,
                };
            }
            NonceCheck::Unknown => {
                return Answer::Challenge {
                    algorithm,
                    stale: false,
                };
            }
        }
        let proven = response.username == username
            && credential
                .as_ref()
                .is_some_and(|c| response.proves(c, request.method.to_string().as_str()));
        if !proven {
            self.failures.allow(peer.ip(), Instant::now());
            metrics::counter!("contactd_sip_auth_failures_total").increment(1);
            info!(source = %peer.ip(), "REGISTER with a wrong credential: 403");
            return Answer::Refuse(StatusCode::Forbidden, "wrong credentials");
        }
        let change = match self.change(request) {
            Ok(c) => c,
            Err(answer) => return answer,
        };
        let registration = Registration {
            username,
            call_id: request.header_value("Call-ID").unwrap_or_default(),
            cseq: request
                .cseq_header()
                .ok()
                .and_then(|c| c.seq().ok())
                .unwrap_or(0),
            source: peer,
            transport: tx
                .connection
                .as_ref()
                .and_then(|c| SipTransport::from_stack(c.transport()))
                .unwrap_or(SipTransport::Udp),
            user_agent: request
                .header_value("User-Agent")
                .map(|ua| ua.chars().take(128).collect()),
            change,
        };
        match self.registrar.register(registration).await {
            Ok(bindings) => Answer::Bound(bindings),
            Err(RegistrarError::OutOfOrder) => {
                Answer::Refuse(StatusCode::ServerInternalError, "out of order")
            }
            Err(RegistrarError::TooManyDevices) => {
                Answer::Refuse(StatusCode::Forbidden, "too many devices")
            }
            Err(RegistrarError::Unavailable(e)) => {
                info!(error = %e, "registrar unavailable");
                Answer::Refuse(StatusCode::ServiceUnavailable, "try again later")
            }
        }
    }

    /// What the REGISTER asks to change, with each expiry put within bounds.
    fn change(&self, request: &rsipstack::sip::Request) -> Result<BindingChange, Answer> {
        let expires_header =
            match request.header_value("Expires") {
                None => None,
                Some(e) => Some(e.trim().parse::<u32>().map_err(|_| {
                    Answer::Refuse(StatusCode::BadRequest, "Expires: not a number")
                })?),
            };
        let contacts = identity::register_contacts(request)
            .map_err(|_| Answer::Refuse(StatusCode::BadRequest, "Contact: unreadable"))?;
        match contacts {
            RegisterContacts::All if expires_header == Some(0) => Ok(BindingChange::RemoveAll),
            RegisterContacts::All => Err(Answer::Refuse(
                StatusCode::BadRequest,
                "Contact: * needs Expires: 0",
            )),
            RegisterContacts::These(c) if c.is_empty() => Ok(BindingChange::Query),
            RegisterContacts::These(contacts) => {
                let mut bindings = Vec::with_capacity(contacts.len());
                for c in contacts {
                    let asked = c.expires.or(expires_header).unwrap_or(DEFAULT_EXPIRES);
                    if asked != 0 && asked < self.policy.min_expires {
                        return Err(Answer::TooBrief);
                    }
                    bindings.push(ContactBinding {
                        contact: c.uri,
                        expires: asked.min(self.policy.max_expires),
                    });
                }
                Ok(BindingChange::Update(bindings))
            }
        }
    }
}
