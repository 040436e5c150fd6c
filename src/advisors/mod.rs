//! Advisors: the staff who answer calls, and their phones. An advisor has a SIP
//! username and a credential of their own (not an API token), kept as HA1 for one
//! digest algorithm — SHA-256, or MD5 for phones that know nothing newer. A password
//! is made here, shown once to whoever created or rotated it, and never stored.
//!
//! Where each advisor is now ([`Presence`]: available, ringing, on a call, wrap-up,
//! away) is live state held by this instance, changed by calls and by staff. Only
//! "away" is also written down, so that it outlives the daemon; the rest belongs to
//! dialogs that die with it. At start ([`Advisors::recover`]) a daemon restores who
//! is away and ends, as interrupted, the legs it left open (it knows its own by the
//! id kept in its data directory; other daemons on the same database keep theirs).
//!
//! Modules: [`presence`] (advisors' states and the callers waiting for them, in
//! order), [`board`] (each queue now, as a supervisor's board shows it).
//!
//! [`Advisors`] is also the voice channel's [`Registrar`]: it looks up credentials and
//! keeps each phone's binding in the database on the daemon's clock (so a restart, or
//! another instance, knows every phone, and a test lets a registration lapse without
//! waiting).

mod board;
mod presence;

pub use board::{QueueNow, StateCounts};
pub use presence::{NotTaken, Presence, QueueLength, Waiting};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use contactd_sip::{
    Algorithm, Binding, BindingChange, DialTarget, Dialer, Ha1, Registrar, RegistrarError,
    RegistrarFuture, Registration,
};
use rand::Rng;

use crate::configuration::{ServiceCode, ServiceQueue, Settings};
use crate::domain::{Actor, Timestamp};
use crate::scheduler::Clock;
use crate::store::advisors::{
    Advisor, BindingWrite, NewAdvisor, RegisterRefusal, RegisterWrite, SipCredential,
};
use crate::store::{Store, StoreError};

#[derive(Clone)]
pub struct Advisors {
    store: Store,
    /// This daemon's id (kept in its data directory): the legs it places are its own.
    daemon: Arc<str>,
    presence: Arc<Presence>,
    events: crate::call_events::CallEvents,
    clock: Arc<dyn Clock>,
    realm: String,
    devices_per_advisor: usize,
    /// Phones (advisor id, contact) that did not answer the last check: registered
    /// but gone (unplugged, asleep, off the network), so never rung.
    silent: Arc<Mutex<std::collections::HashSet<(String, String)>>>,
    roster: Arc<Roster>,
    /// The queue of each service, by service code.
    queues: Arc<BTreeMap<String, ServiceQueue>>,
}

/// The advisors and their registrations as last read. Every caller waiting looks at
/// them at least once a second, so they are read from the database at most once per
/// `ROSTER_FRESH` (by one reader; the others wait for it), and again at once after
/// a change made through this instance (a registration, a new advisor, a password).
#[derive(Default)]
struct Roster {
    read: tokio::sync::Mutex<Option<RosterRead>>,
    /// Bumped by every change made here.
    changes: std::sync::atomic::AtomicU64,
}

/// When the roster was read, after how many changes, and what it held.
struct RosterRead {
    at: Instant,
    changes: u64,
    advisors: Arc<Vec<Advisor>>,
}

/// Changes made through another instance sharing the database are seen this late.
const ROSTER_FRESH: Duration = Duration::from_secs(1);

/// A new advisor as staff describe them, parsed.
pub struct AdvisorInput {
    pub name: String,
    pub sip_username: SipUsername,
    pub skills: Vec<ServiceCode>,
    pub algorithm: Algorithm,
}

/// A SIP username: 1–64 of letters, digits, `.`, `_` and `-` (the user part of a
/// SIP URI without escaping, and safe in a log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUsername(String);

impl SipUsername {
    pub fn parse(s: &str) -> Result<SipUsername, String> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(SipUsername(s.to_string()))
        } else {
            Err("1 to 64 letters, digits, '.', '_' or '-'".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The digest algorithm named as staff write it (`SHA-256`, `MD5`).
pub fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    Algorithm::parse(s).ok_or_else(|| "SHA-256, or MD5 for older phones".into())
}

/// An advisor and the password just made for their phones (shown this once).
pub struct WithPassword {
    pub advisor: Advisor,
    pub password: String,
}

/// Characters of a generated password: no look-alikes (0/O, 1/l/I), since it is
/// typed into a phone's keypad or settings page.
const PASSWORD_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// 20 of them: about 116 bits.
const PASSWORD_LENGTH: usize = 20;

fn new_password() -> String {
    let mut rng = rand::rng();
    (0..PASSWORD_LENGTH)
        .map(|_| char::from(PASSWORD_ALPHABET[rng.random_range(0..PASSWORD_ALPHABET.len())]))
        .collect()
}

impl Advisors {
    pub fn new(
        store: Store,
        settings: &Settings,
        clock: Arc<dyn Clock>,
        daemon: DaemonId,
    ) -> Advisors {
        Advisors {
            store,
            daemon: daemon.0.into(),
            presence: Arc::new(Presence::new(settings.queues.unanswered_before_away)),
            events: crate::call_events::CallEvents::default(),
            clock,
            realm: settings.sip.realm.clone(),
            devices_per_advisor: settings.sip.devices_per_advisor,
            silent: Arc::default(),
            roster: Arc::default(),
            queues: Arc::new(settings.queues.services.clone()),
        }
    }

    /// Reconciles with what a previous run of this daemon left (a kill -9 mid-call):
    /// advisors recorded away are away again; legs it left ringing or up are ended
    /// as interrupted (none of its dialogs outlived it). How many legs were ended.
    pub async fn recover(&self) -> Result<u64, StoreError> {
        for id in self.store.advisors_away().await? {
            self.presence.choose(&id, ChosenState::Away);
        }
        self.store
            .interrupt_open_legs(&self.daemon, self.clock.now())
            .await
    }

    /// This daemon's id, written with each leg it places.
    pub fn daemon(&self) -> &str {
        &self.daemon
    }

    /// The offer to `id` was not taken (see [`Presence::not_taken`]); an advisor
    /// set away by it is recorded so, to stay away across a restart.
    pub async fn not_taken(&self, id: &str, why: NotTaken) {
        if self.presence.not_taken(id, why) == AdvisorState::Away
            && let Err(e) = self
                .store
                .set_advisor_away(id, Some(self.clock.now()))
                .await
        {
            tracing::error!(advisor = %id, error = %e, "an advisor set away could not be recorded");
        }
    }

    /// The daemon's clock (a test's, in tests): registrations expire and queues open
    /// and close on it.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn credential(&self, username: &SipUsername, algorithm: Algorithm) -> (SipCredential, String) {
        let password = new_password();
        let ha1 = Ha1::of(algorithm, username.as_str(), &self.realm, &password);
        (
            SipCredential {
                algorithm: algorithm.name().to_string(),
                realm: self.realm.clone(),
                ha1: ha1.hex,
            },
            password,
        )
    }

    pub async fn add(
        &self,
        actor: &Actor,
        input: &AdvisorInput,
    ) -> Result<WithPassword, StoreError> {
        let (credential, password) = self.credential(&input.sip_username, input.algorithm);
        let skills: Vec<String> = input
            .skills
            .iter()
            .map(|s| s.as_str().to_string())
            .collect();
        let advisor = self
            .store
            .add_advisor(
                actor,
                &NewAdvisor {
                    name: &input.name,
                    sip_username: input.sip_username.as_str(),
                    skills: &skills,
                    credential: &credential,
                },
            )
            .await?;
        self.roster_changed();
        Ok(WithPassword { advisor, password })
    }

    /// A new password for an advisor's phones (and, if given, a new algorithm); the old
    /// one stops working at once. Phones already registered stay bound until their
    /// registration runs out.
    pub async fn rotate(
        &self,
        actor: &Actor,
        id: &str,
        algorithm: Option<Algorithm>,
    ) -> Result<WithPassword, StoreError> {
        let current = self.store.advisor(id, self.clock.now()).await?;
        let username = SipUsername::parse(&current.sip_username)
            .map_err(|e| StoreError::Corrupt(format!("sip_username: {e}")))?;
        let algorithm = match algorithm {
            Some(a) => a,
            None => parse_algorithm(&current.digest_algorithm).map_err(StoreError::Corrupt)?,
        };
        let (credential, password) = self.credential(&username, algorithm);
        let advisor = self
            .store
            .set_advisor_credential(actor, id, &credential)
            .await?;
        self.roster_changed();
        Ok(WithPassword { advisor, password })
    }

    /// The advisor with this SIP username's id (for the command line).
    pub async fn id_of(&self, username: &SipUsername) -> Result<String, StoreError> {
        self.store.advisor_id_by_username(username.as_str()).await
    }

    /// Every advisor with the devices registered now and their state.
    pub async fn list(&self) -> Result<Vec<AdvisorNow>, StoreError> {
        let advisors = self.registered().await?;
        Ok(advisors
            .into_iter()
            .map(|advisor| AdvisorNow {
                state: self.presence.state(&advisor.id),
                advisor,
            })
            .collect())
    }

    /// Every advisor with the devices registered now, each marked answering or not.
    async fn registered(&self) -> Result<Vec<Advisor>, StoreError> {
        self.registered_where(|_| true).await
    }

    /// Those of [`Self::registered`] that are `wanted` (picked before anything is copied).
    async fn registered_where(
        &self,
        wanted: impl Fn(&Advisor) -> bool,
    ) -> Result<Vec<Advisor>, StoreError> {
        let roster = self.roster().await?;
        let now = self.clock.now();
        let silent = self.silent.lock().expect("not poisoned");
        Ok(roster
            .iter()
            .filter(|a| wanted(a))
            .map(|a| {
                let mut a = a.clone();
                a.devices.retain(|d| d.expires_at > now);
                for d in &mut a.devices {
                    d.answering = !silent.contains(&(a.id.clone(), d.contact.clone()));
                }
                a
            })
            .collect())
    }

    /// The advisors as last read (see [`Roster`]).
    async fn roster(&self) -> Result<Arc<Vec<Advisor>>, StoreError> {
        use std::sync::atomic::Ordering;
        let mut read = self.roster.read.lock().await;
        let changes = self.roster.changes.load(Ordering::SeqCst);
        if let Some(last) = &*read
            && last.at.elapsed() < ROSTER_FRESH
            && last.changes == changes
        {
            return Ok(last.advisors.clone());
        }
        let advisors = Arc::new(self.store.advisors(self.clock.now()).await?);
        *read = Some(RosterRead {
            at: Instant::now(),
            changes,
            advisors: advisors.clone(),
        });
        Ok(advisors)
    }

    fn roster_changed(&self) {
        self.roster
            .changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Asks every registered phone whether it is there (see [`Dialer::probe`]), at
    /// most `at_once` at a time; those that do not answer within `patience` are not
    /// rung until they answer a later check or register again.
    pub async fn check_phones(&self, dialer: &Dialer, patience: Duration, at_once: usize) {
        let Ok(advisors) = self.registered().await else {
            return;
        };
        let phones: Vec<((String, String), DialTarget)> = advisors
            .iter()
            .flat_map(|a| {
                a.devices.iter().filter_map(|d| {
                    Some((
                        (a.id.clone(), d.contact.clone()),
                        dial_target(d, "contactd")?,
                    ))
                })
            })
            .collect();
        let mut silent = std::collections::HashSet::new();
        for some in phones.chunks(at_once.max(1)) {
            let answers = futures_util::future::join_all(
                some.iter()
                    .map(|(_, target)| dialer.probe(target, patience)),
            )
            .await;
            for ((phone, _), answered) in some.iter().zip(answers) {
                if !answered {
                    silent.insert(phone.clone());
                }
            }
        }
        let mut known = self.silent.lock().expect("not poisoned");
        for (advisor, _) in silent.difference(&known) {
            tracing::info!(%advisor, "an advisor's phone stopped answering: not rung until it does");
        }
        *known = silent;
    }

    /// Staff set an advisor available or away (which also ends a wrap-up early).
    pub async fn set_state(&self, id: &str, state: ChosenState) -> Result<AdvisorNow, StoreError> {
        let advisor = self.store.advisor(id, self.clock.now()).await?;
        let away = (state == ChosenState::Away).then(|| self.clock.now());
        self.store.set_advisor_away(id, away).await?;
        self.presence.choose(id, state);
        Ok(AdvisorNow {
            state: self.presence.state(id),
            advisor,
        })
    }

    /// The queue of `service`, if it has one.
    pub fn queue(&self, service: &str) -> Option<&ServiceQueue> {
        self.queues.get(service)
    }

    pub fn presence(&self) -> &Presence {
        &self.presence
    }

    /// The feed of calls offered to and taken by advisors.
    pub fn events(&self) -> &crate::call_events::CallEvents {
        &self.events
    }

    /// Advisors `wanted` with a phone registered now that answers, each with those
    /// phones.
    pub async fn reachable(
        &self,
        wanted: impl Fn(&Advisor) -> bool,
    ) -> Result<Vec<Advisor>, StoreError> {
        let advisors = self.registered_where(wanted).await?;
        Ok(advisors
            .into_iter()
            .map(|mut a| {
                a.devices.retain(|d| d.answering);
                a
            })
            .filter(|a| !a.devices.is_empty())
            .collect())
    }
}

/// Where to reach a registered phone, calling as `caller`; `None` for a source
/// address that does not parse (never written by the registrar).
pub fn dial_target(device: &crate::store::advisors::Device, caller: &str) -> Option<DialTarget> {
    Some(DialTarget {
        contact: device.contact.clone(),
        reach: device.source.parse().ok()?,
        transport: contactd_sip::config::SipTransport::from_name(&device.transport)?,
        caller: caller.to_string(),
    })
}

/// An advisor as the API shows them: their record, phones and state now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdvisorNow {
    #[serde(flatten)]
    pub advisor: Advisor,
    pub state: AdvisorState,
}

/// What an advisor is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdvisorState {
    /// May be offered a call.
    Available,
    /// A call is being offered to their phone.
    Ringing,
    OnCall,
    /// Just finished a call: not offered another until the wrap-up time is over.
    WrapUp,
    /// Not taking calls (set by staff, or after an offer was not answered).
    Away,
}

/// The states staff choose; the others come from calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChosenState {
    Available,
    Away,
}

/// Which daemon this is, across its restarts: a random id made on first start and
/// kept in its data directory (two daemons sharing a database have two).
#[derive(Debug, Clone)]
pub struct DaemonId(String);

impl DaemonId {
    /// For a `contactd` command that is not the daemon (it places no legs).
    pub fn command_line() -> DaemonId {
        DaemonId("command-line".into())
    }

    pub fn of_data_dir(data_dir: &std::path::Path) -> std::io::Result<DaemonId> {
        let path = data_dir.join("daemon-id");
        match std::fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => return Ok(DaemonId(id.trim().to_string())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let id = uuid::Uuid::new_v4().to_string();
        // Written whole under another name, then renamed: never half an id.
        let partial = data_dir.join("daemon-id.part");
        std::fs::write(&partial, &id)?;
        std::fs::rename(&partial, &path)?;
        Ok(DaemonId(id))
    }
}

impl Registrar for Advisors {
    fn credential<'a>(&'a self, username: &'a str) -> RegistrarFuture<'a, Option<Ha1>> {
        Box::pin(self.credential_of(username))
    }

    fn register(&self, r: Registration) -> RegistrarFuture<'_, Vec<Binding>> {
        Box::pin(self.bind(r))
    }
}

impl Advisors {
    async fn credential_of(&self, username: &str) -> Result<Option<Ha1>, RegistrarError> {
        let stored = self
            .store
            .sip_credential(username)
            .await
            .map_err(|e| RegistrarError::Unavailable(e.to_string()))?;
        // A credential hashed for another realm (the realm was changed) cannot be
        // proven: the advisor needs a new one.
        Ok(stored.filter(|c| c.realm == self.realm).and_then(|c| {
            Some(Ha1 {
                algorithm: Algorithm::parse(&c.algorithm)?,
                hex: c.ha1,
            })
        }))
    }

    async fn bind(&self, r: Registration) -> Result<Vec<Binding>, RegistrarError> {
        let now = self.clock.now();
        let writes: Option<Vec<BindingWrite>> = match &r.change {
            BindingChange::RemoveAll => None,
            BindingChange::Query => Some(Vec::new()),
            BindingChange::Update(bindings) => Some(
                bindings
                    .iter()
                    .map(|b| BindingWrite {
                        contact: &b.contact,
                        expires_seconds: b.expires,
                    })
                    .collect(),
            ),
        };
        let transport = r.transport.as_str();
        let source = r.source.to_string();
        let bound = self
            .store
            .register_sip(&RegisterWrite {
                username: &r.username,
                call_id: &r.call_id,
                cseq: r.cseq,
                source: &source,
                transport,
                user_agent: r.user_agent.as_deref(),
                bindings: writes.as_deref(),
                max_devices: self.devices_per_advisor,
                now,
            })
            .await
            .map_err(|e| match e {
                RegisterRefusal::OutOfOrder => RegistrarError::OutOfOrder,
                RegisterRefusal::TooManyDevices => RegistrarError::TooManyDevices,
                // Deleted between the credential check and now.
                RegisterRefusal::UnknownUsername => {
                    RegistrarError::Unavailable("no such advisor".into())
                }
                RegisterRefusal::Store(e) => RegistrarError::Unavailable(e.to_string()),
            })?;
        self.roster_changed();
        // A phone that registers is there: rung again at once.
        if !bound.is_empty()
            && let Ok(id) = self.store.advisor_id_by_username(&r.username).await
        {
            let mut silent = self.silent.lock().expect("not poisoned");
            for (contact, _) in &bound {
                silent.remove(&(id.clone(), contact.clone()));
            }
        }
        Ok(bound
            .into_iter()
            .map(|(contact, expires_at)| Binding {
                contact,
                expires_in: u32::try_from((expires_at.millis() - now.millis()).max(0) / 1000)
                    .unwrap_or(u32::MAX),
            })
            .collect())
    }
}
