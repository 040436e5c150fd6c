//! One typed configuration, read from the embedded defaults (`config/contactd.toml`),
//! then an optional file, then `CONTACTD__SECTION__KEY` environment variables.
//!
//! Unknown keys are errors, not warnings: a misspelt key in production must stop the
//! daemon, naming the key, rather than silently leaving a default in force.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Deserialize;
use url::Url;

use crate::domain::{OpeningHours, QuietHours, UnknownValue};

/// `"21:00-08:00"`, or empty for no quiet hours.
fn quiet_hours<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<QuietHours>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    QuietHours::parse(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `"Mon-Fri 08:30-17:00, Sat 09:00-12:30"`, or empty (or absent) for always open.
fn opening_hours<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<OpeningHours>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    OpeningHours::parse(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// The embedded defaults, compiled into the binary so `contactd serve` needs no file.
pub const EMBEDDED_DEFAULTS: &str = include_str!("../config/contactd.toml");

/// The prefix of environment overrides; `__` separates section and key.
pub const ENV_PREFIX: &str = "CONTACTD__";

/// `CONTACTD__DATABASE__URL_FILE=/run/credentials/contactd.service/database_url` sets
/// `database.url` from that file's contents, so secrets need not sit in the
/// environment or the configuration file (systemd credentials, mounted secrets).
const FILE_SUFFIX: &str = "_file";

fn secrets_from_files() -> Result<Vec<(String, String)>, ConfigError> {
    let mut found = Vec::new();
    for (var, path) in std::env::vars() {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let Some(key) = lower.strip_suffix(FILE_SUFFIX) else {
            continue;
        };
        let key = key.replace("__", ".");
        let value = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError::Invalid(format!("{key}: cannot read {path} (from {var}): {e}"))
        })?;
        found.push((key, value.trim_end_matches(['\n', '\r']).to_string()));
    }
    Ok(found)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    #[serde(default)]
    pub scheduler: SchedulerSettings,
    pub intake: IntakeSettings,
    pub sip: SipSettings,
    pub sms: SmsSettings,
    pub email: EmailSettings,
    pub notify: NotifySettings,
    pub reminders: ReminderSettings,
    pub renewals: RenewalSettings,
    pub notices: NoticeSettings,
    pub recordings: RecordingSettings,
    pub ivr: IvrSettings,
    pub queues: QueueSettings,
    pub shutdown: ShutdownSettings,
    pub log: LogSettings,
    pub services: Vec<ServiceDefinition>,
}

/// Appointment reminders: when, and what they say.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReminderSettings {
    /// Minutes before an appointment that its reminders are sent, unless a booking
    /// names its own (e.g. two days and two hours: [2880, 120]).
    pub appointment_offsets_minutes: Vec<u32>,
    /// The reminder's text; `{reference}`, `{date}`, `{time}` (Europe/London) and
    /// `{place}` are filled in.
    pub appointment_text: String,
    /// An email reminder's subject, filled in the same way.
    pub appointment_subject: String,
    /// Sent when staff cancel an appointment (a service message: it needs consent),
    /// filled in the same way; empty: nothing is sent.
    pub appointment_cancelled_text: String,
}

impl ReminderSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.appointment_offsets_minutes.contains(&0) {
            return Err(ConfigError::Invalid(
                "reminders.appointment_offsets_minutes: each at least 1".into(),
            ));
        }
        if !self.appointment_text.contains("{date}") {
            return Err(ConfigError::Invalid(
                "reminders.appointment_text: must contain {date}".into(),
            ));
        }
        Ok(())
    }
}

/// What a resident is told when staff open their request or it is resolved,
/// cancelled or reopened (requests opened by the resident's own text, email or call
/// are acknowledged by intake instead). `{reference}` and `{service}` are filled in;
/// an empty text sends nothing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoticeSettings {
    pub opened: String,
    pub resolved: String,
    pub cancelled: String,
    pub reopened: String,
    /// An email notice's subject.
    pub subject: String,
}

impl NoticeSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, text) in [
            ("opened", &self.opened),
            ("resolved", &self.resolved),
            ("cancelled", &self.cancelled),
            ("reopened", &self.reopened),
        ] {
            if !text.is_empty() && !text.contains("{reference}") {
                return Err(ConfigError::Invalid(format!(
                    "notices.{key}: must contain {{reference}} (or be empty)"
                )));
            }
        }
        Ok(())
    }
}

/// Renewal reminders: when the run looks for them, and each kind of subscription's
/// offsets and words.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewalSettings {
    /// When the renewal run runs: a cron expression with seconds first
    /// (`sec min hour day-of-month month day-of-week`), in Europe/London time.
    pub run_cron: String,
    /// The kinds of subscription staff can record, by code (`garden_waste`).
    pub kinds: std::collections::BTreeMap<String, RenewalKind>,
}

/// One kind of subscription.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewalKind {
    /// As a resident reads it: "garden waste collection".
    pub name: String,
    /// Days before the expiry that a reminder goes (e.g. [30, 7]).
    pub offsets_days: Vec<u32>,
    /// The reminder's text: `{name}`, `{description}` and `{date}` (the expiry,
    /// Europe/London) are filled in.
    pub text: String,
    /// An email reminder's subject, filled in the same way.
    pub subject: String,
}

impl RenewalSettings {
    /// The run's schedule.
    pub fn schedule(&self) -> Result<crate::scheduler::calendar::LondonCron, ConfigError> {
        self.run_cron
            .parse()
            .map_err(|e| ConfigError::Invalid(format!("renewals.run_cron: {e}")))
    }

    /// The furthest before an expiry that any reminder goes.
    pub fn longest_offset_days(&self) -> i64 {
        self.kinds
            .values()
            .flat_map(|k| k.offsets_days.iter())
            .copied()
            .max()
            .map_or(0, i64::from)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.schedule()?;
        for (code, kind) in &self.kinds {
            let bad = |why: &str| {
                Err(ConfigError::Invalid(format!(
                    "renewals.kinds.{code}: {why}"
                )))
            };
            if code.is_empty()
                || code.len() > 40
                || !code
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return bad("a code of lower-case letters, digits and _");
            }
            if kind.offsets_days.is_empty()
                || kind.offsets_days.iter().any(|d| !(1..=3650).contains(d))
            {
                return bad("offsets_days: one or more, each from 1 to 3650");
            }
            if !kind.text.contains("{date}") {
                return bad("text: must contain {date}");
            }
            if kind.name.trim().is_empty() {
                return bad("name: must not be empty");
            }
        }
        Ok(())
    }
}

/// The SMS channel (Twilio). No account: the channel is off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsSettings {
    pub provider: SmsProvider,
    pub account_sid: String,
    /// Signs Twilio's webhooks, and authenticates our REST calls unless an API key is given.
    pub auth_token: Secret,
    pub api_key_sid: String,
    pub api_key_secret: Secret,
    /// The council's number, E.164; or a messaging service below.
    pub from: String,
    pub messaging_service_sid: String,
    pub api_base: Url,
    /// A text within this many hours of one we sent about a request joins that request.
    pub reply_window_hours: u32,
    /// How long Twilio may keep trying to deliver a message.
    pub validity_period_seconds: u32,
    /// No unprompted texts (reminders, notices) in this Europe/London window,
    /// `"21:00-08:00"`; empty for none.
    #[serde(deserialize_with = "quiet_hours")]
    pub quiet_hours: Option<QuietHours>,
    /// Sent when a text opens a new request; `{reference}` is replaced.
    pub acknowledgement: String,
    /// The answer to HELP or INFO.
    pub help: String,
}

impl SmsSettings {
    /// Texts are sent and received: through Twilio once its account is given, or
    /// through GOV.UK Notify (`[notify]`).
    pub fn enabled(&self) -> bool {
        match self.provider {
            SmsProvider::Twilio => !self.account_sid.is_empty(),
            SmsProvider::Notify => true,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        if self.provider == SmsProvider::Twilio && self.enabled() {
            let sid_ok = |s: &str, prefix: &str| {
                s.len() == 34
                    && s.starts_with(prefix)
                    && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
            };
            if !sid_ok(&self.account_sid, "AC") {
                return bad(
                    "sms.account_sid",
                    "a Twilio account SID is AC followed by 32 hex digits",
                );
            }
            if self.auth_token.is_empty() {
                return bad(
                    "sms.auth_token",
                    "needed to check Twilio's webhook signatures",
                );
            }
            if self.from.is_empty() && self.messaging_service_sid.is_empty() {
                return bad(
                    "sms.from",
                    "give the council's number or sms.messaging_service_sid",
                );
            }
            if !self.acknowledgement.contains("{reference}") {
                return bad("sms.acknowledgement", "must contain {reference}");
            }
        }
        Ok(())
    }
}

/// A mailbox to poll, from `email.imap_url`.
#[derive(Debug, Clone)]
pub struct ImapMailbox {
    /// `imaps://`: TLS from the start.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub folder: String,
    pub sign_in: ImapSignIn,
}

/// How the poller signs in: exactly one of these is configured.
#[derive(Debug, Clone)]
pub enum ImapSignIn {
    Password(Secret),
    /// XOAUTH2 with an access token kept current in this file by something else.
    AccessTokenFile(String),
    /// XOAUTH2 with access tokens refreshed here from the provider's token endpoint.
    RefreshToken {
        token_url: String,
        client_id: String,
        client_secret: Secret,
        scope: String,
        refresh_token_file: String,
    },
}

/// The email channel. Receiving is on when `domains` names what to accept; sending
/// when `relay_url` is set. Neither: the channel is off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// What sends the council's mail: `relay` (`relay_url`) or `notify`.
    pub provider: EmailProvider,
    /// Where the SMTP receiver listens.
    pub smtp_listen: SocketAddr,
    /// No unprompted mail (reminders, notices) in this Europe/London window; empty
    /// for none.
    #[serde(deserialize_with = "quiet_hours")]
    pub quiet_hours: Option<QuietHours>,
    /// Domains (`council.example`) or whole addresses (`contact@council.example`)
    /// accepted in RCPT TO; anything else gets 550.
    pub domains: Vec<String>,
    /// `smtp://[user:pass@]host[:port]` or `smtps://…`: the relay for outgoing mail.
    pub relay_url: Secret,
    /// The council's address as residents see it: `Council <contact@council.example>`.
    pub from: String,
    /// Replies come back to `local+<token>@domain`. Turn off for mailboxes without
    /// plus-addressing (Exchange often); the token still travels in Message-IDs.
    pub plus_addressing: bool,
    /// A PEM certificate chain and key for STARTTLS; both empty: no STARTTLS.
    pub tls_certificate: String,
    pub tls_key: String,
    /// The largest message accepted (SIZE; bigger gets 552).
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    /// A client silent this long between commands (or lines of DATA) is disconnected.
    pub command_timeout_seconds: u64,
    /// A whole session may last at most this long.
    pub session_timeout_seconds: u64,
    /// Automatic replies: at most this many to one address a day (auto-responder
    /// ping-pong stops here), and one per sender per request per day.
    pub max_acknowledgements_per_day: u32,
    /// Sent when an email opens a new request; `{reference}` is replaced.
    pub acknowledgement_subject: String,
    pub acknowledgement: String,
    /// Relay timeouts and retries for outgoing mail.
    pub relay_timeout_seconds: u64,
    /// The DNS resolver for SPF, DKIM and DMARC (`127.0.0.1:53`, a validating
    /// resolver of the council's); empty: the system's.
    pub dns_resolver: String,
    /// A mailbox elsewhere to fetch from: `imaps://user@host[:993]/Folder` (or
    /// `imap://` on a trusted network). Empty: no polling.
    pub imap_url: String,
    pub imap_password: Secret,
    /// XOAUTH2 instead of a password: a file holding a current access token, read
    /// afresh at every sign-in (kept current by the council's token refresher).
    pub imap_oauth_token_file: String,
    /// XOAUTH2 with tokens refreshed by the daemon: the provider's token endpoint,
    /// the app's client id (and secret, for a confidential client), the scope, and
    /// the file holding the refresh token (rewritten when the provider rotates it).
    pub imap_oauth_token_url: String,
    pub imap_oauth_client_id: String,
    pub imap_oauth_client_secret: Secret,
    pub imap_oauth_scope: String,
    pub imap_oauth_refresh_token_file: String,
    /// For an `imaps://` server whose certificate the council's own CA signed: that
    /// CA (PEM). Empty: the public web PKI.
    pub imap_ca_file: String,
    /// Move fetched messages to this folder; empty: mark them seen.
    pub imap_move_to: String,
    pub imap_poll_seconds: u64,
    /// The provider's `authserv-id` (e.g. `mx.microsoft.com`): its topmost
    /// Authentication-Results decides whether a fetched message's sender is proven.
    pub imap_trusted_authserv_id: String,
}

impl EmailSettings {
    /// Mail is received: by the SMTP listener, or by polling a mailbox.
    pub fn receiving(&self) -> bool {
        !self.domains.is_empty() || !self.imap_url.is_empty()
    }

    /// The mailbox to poll, parsed from `imap_url`.
    pub fn imap(&self) -> Result<Option<ImapMailbox>, ConfigError> {
        if self.imap_url.is_empty() {
            return Ok(None);
        }
        let bad = |why: &str| ConfigError::Invalid(format!("email.imap_url: {why}"));
        let url = Url::parse(&self.imap_url).map_err(|e| bad(&e.to_string()))?;
        let tls = match url.scheme() {
            "imaps" => true,
            "imap" => false,
            _ => return Err(bad("must start imaps:// (or imap://)")),
        };
        let host = url.host_str().ok_or_else(|| bad("no host"))?.to_string();
        let user = url::form_urlencoded::parse(format!("u={}", url.username()).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| bad("no user (imaps://user@host/Folder)"))?;
        let folder = url.path().trim_start_matches('/');
        let folder = if folder.is_empty() { "INBOX" } else { folder };
        let folder = url::form_urlencoded::parse(format!("f={folder}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        Ok(Some(ImapMailbox {
            tls,
            port: url.port().unwrap_or(if tls { 993 } else { 143 }),
            host,
            user,
            folder,
            sign_in: self.imap_sign_in()?,
        }))
    }

    fn imap_sign_in(&self) -> Result<ImapSignIn, ConfigError> {
        let refresh = !self.imap_oauth_token_url.is_empty();
        let given = [
            !self.imap_password.is_empty(),
            !self.imap_oauth_token_file.is_empty(),
            refresh,
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(ConfigError::Invalid(
                "email.imap_password: give one of it, email.imap_oauth_token_file or \
                 email.imap_oauth_token_url"
                    .into(),
            ));
        }
        if !self.imap_password.is_empty() {
            return Ok(ImapSignIn::Password(self.imap_password.clone()));
        }
        if !refresh {
            return Ok(ImapSignIn::AccessTokenFile(
                self.imap_oauth_token_file.clone(),
            ));
        }
        let url = Url::parse(&self.imap_oauth_token_url)
            .map_err(|e| ConfigError::Invalid(format!("email.imap_oauth_token_url: {e}")))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(ConfigError::Invalid(
                "email.imap_oauth_token_url: must start https://".into(),
            ));
        }
        for (key, value) in [
            ("imap_oauth_client_id", &self.imap_oauth_client_id),
            (
                "imap_oauth_refresh_token_file",
                &self.imap_oauth_refresh_token_file,
            ),
        ] {
            if value.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "email.{key}: needed with email.imap_oauth_token_url"
                )));
            }
        }
        Ok(ImapSignIn::RefreshToken {
            token_url: self.imap_oauth_token_url.clone(),
            client_id: self.imap_oauth_client_id.clone(),
            client_secret: self.imap_oauth_client_secret.clone(),
            scope: self.imap_oauth_scope.clone(),
            refresh_token_file: self.imap_oauth_refresh_token_file.clone(),
        })
    }

    /// Mail is sent: through the relay once it is given, or through GOV.UK Notify.
    pub fn sending(&self) -> bool {
        match self.provider {
            EmailProvider::Relay => !self.relay_url.is_empty(),
            EmailProvider::Notify => true,
        }
    }

    /// The resolver for sender checks, if one is configured.
    pub fn dns_resolver(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.dns_resolver.trim().is_empty() {
            return Ok(None);
        }
        self.dns_resolver.trim().parse().map(Some).map_err(|_| {
            ConfigError::Invalid(format!(
                "email.dns_resolver: {:?} is not an address and port, e.g. 127.0.0.1:53",
                self.dns_resolver
            ))
        })
    }

    /// The council's address from `from`, split: (display name, local part, domain).
    pub fn from_parts(&self) -> Option<(Option<String>, String, String)> {
        let s = self.from.trim();
        let (name, addr) = match (s.rfind('<'), s.ends_with('>')) {
            (Some(i), true) => (
                Some(s[..i].trim().trim_matches('"').to_string()),
                &s[i + 1..s.len() - 1],
            ),
            _ => (None, s),
        };
        let (local, domain) = addr.trim().rsplit_once('@')?;
        (!local.is_empty() && domain.contains('.')).then(|| {
            (
                name.filter(|n| !n.is_empty()),
                local.to_string(),
                domain.to_ascii_lowercase(),
            )
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("email.{key}: {why}")));
        if !self.receiving() && !self.sending() {
            return Ok(());
        }
        if self.from_parts().is_none() {
            return bad(
                "from",
                "the council's address, e.g. Council <contact@council.example>",
            );
        }
        for d in &self.domains {
            let domain = d.rsplit('@').next().unwrap_or_default();
            if d.trim() != d || !domain.contains('.') || d.contains(char::is_whitespace) {
                return bad(
                    "domains",
                    &format!("{d:?} is neither a domain nor an address"),
                );
            }
        }
        if self.provider == EmailProvider::Relay && self.sending() {
            let url = self.relay_url.expose();
            if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                return bad("relay_url", "must start smtp:// or smtps://");
            }
        }
        if !self.acknowledgement.contains("{reference}")
            && !self.acknowledgement_subject.contains("{reference}")
        {
            return bad(
                "acknowledgement",
                "the subject or the text must contain {reference}",
            );
        }
        for (key, value) in [
            ("max_message_bytes", self.max_message_bytes as u64),
            ("max_recipients", self.max_recipients as u64),
            ("max_connections", self.max_connections as u64),
            (
                "max_connections_per_source",
                self.max_connections_per_source as u64,
            ),
            ("command_timeout_seconds", self.command_timeout_seconds),
            ("session_timeout_seconds", self.session_timeout_seconds),
            ("relay_timeout_seconds", self.relay_timeout_seconds),
        ] {
            if value == 0 {
                return bad(key, "must be at least 1");
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsProvider {
    Twilio,
    Notify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailProvider {
    Relay,
    Notify,
}

/// GOV.UK Notify, when `sms.provider` or `email.provider` is `notify`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// The service's API key, `name-serviceid-secret`. Never logged.
    pub api_key: Secret,
    pub api_base: Url,
    pub timeout_seconds: u64,
    /// The bearer token the council gives Notify for its callbacks (delivery
    /// receipts, received texts).
    pub callback_token: Secret,
    /// Template ids for texts: `default`, and any message purpose (`reminder`,
    /// `service_update`, `acknowledgement`, `reply`, …) with a template of its own.
    /// Each template is filled with `((body))`.
    pub sms_templates: std::collections::BTreeMap<String, String>,
    /// The same for email; filled with `((subject))` and `((body))`.
    pub email_templates: std::collections::BTreeMap<String, String>,
}

impl NotifySettings {
    fn validate(&self, sms: bool, email: bool) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("notify.{key}: {why}")));
        if !sms && !email {
            return Ok(());
        }
        if contactd_notify::ApiKey::parse(self.api_key.expose()).is_err() {
            return bad(
                "api_key",
                "the service's API key, name-serviceid-secret (from Notify's API integration page)",
            );
        }
        if self.callback_token.expose().len() < 16 {
            return bad(
                "callback_token",
                "at least 16 characters: the bearer token Notify sends with its callbacks",
            );
        }
        if self.timeout_seconds == 0 {
            return bad("timeout_seconds", "must be at least 1");
        }
        for (key, on, templates) in [
            ("sms_templates", sms, &self.sms_templates),
            ("email_templates", email, &self.email_templates),
        ] {
            if !on {
                continue;
            }
            if !templates.contains_key("default") {
                return bad(key, "needs a default template id");
            }
            for (kind, id) in templates {
                if kind != "default"
                    && kind
                        .parse::<crate::domain::message::MessagePurpose>()
                        .is_err()
                {
                    return bad(
                        key,
                        &format!("{kind:?} is neither default nor a message purpose"),
                    );
                }
                if !contactd_notify::key::is_notify_id(id) {
                    return bad(
                        key,
                        &format!("{kind}: {id:?} is not a template id (a UUID)"),
                    );
                }
            }
        }
        Ok(())
    }
}

/// A secret: never printed.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(empty)"
        } else {
            "Secret(***)"
        })
    }
}

/// The voice channel. No trunks: the channel is off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipSettings {
    pub listen: Vec<SipListenSetting>,
    pub trunks: Vec<TrunkSetting>,
    pub rtp_ports: PortRange,
    /// The address RTP binds to and SDP advertises.
    pub media_address: std::net::IpAddr,
    pub max_calls: usize,
    pub max_call_seconds: u64,
    pub ring_ms: u64,
    /// A caller who should be sending audio and is silent this long is hung up.
    pub media_timeout_seconds: u64,
    /// Timer H: an answered call not ACKed within this never existed.
    pub ack_timeout_seconds: u64,
    /// Session timers (RFC 4028) for callers that ask: shorter intervals get 422
    /// with this as Min-SE (at least 90); longer ones than the maximum are cut to it.
    pub session_min_seconds: u32,
    pub session_max_seconds: u32,
    /// INVITEs per second accepted from one source address (bursts of twice that).
    pub invites_per_second: u32,
    /// Calls being set up (ringing or awaiting ACK) from one source address.
    pub max_pending_per_source: usize,
    /// SIP over TCP connections, in all and from one source address.
    pub max_tcp_connections: usize,
    pub max_tcp_connections_per_source: usize,
    /// A TCP connection carrying no call and silent this long is closed.
    pub tcp_idle_seconds: u64,
    /// Answer OPTIONS from outside the trunks (for monitoring); otherwise 403.
    pub options_from_anywhere: bool,
    /// Advisors' phones register here (digest-authenticated, from any address).
    pub registrar: bool,
    /// The digest realm phones' credentials are hashed with; changing it means new
    /// credentials for every advisor.
    pub realm: String,
    /// Registrations asked for less get 423; more is cut to the maximum.
    pub register_min_seconds: u32,
    pub register_max_seconds: u32,
    /// Devices registered at once under one advisor's username.
    pub devices_per_advisor: usize,
    /// Wrong credentials one source address may send before it is refused; one more
    /// is allowed each minute after that.
    pub auth_failures_per_source: u32,
    /// REGISTERs one source address may send per second (bursts of twice that);
    /// beyond, 503 with Retry-After.
    pub registers_per_second: u32,
    /// Every registered phone is asked this often whether it is there (OPTIONS); one
    /// that does not answer is not rung until it does. 0: never asked.
    pub phone_check_seconds: u64,
    /// PEM files of the certificate chain and private key `tls:` listeners present.
    pub tls_certificate: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl SipSettings {
    pub fn enabled(&self) -> bool {
        !self.trunks.is_empty() && !self.listen.is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        for (key, value) in [
            ("sip.media_timeout_seconds", self.media_timeout_seconds),
            ("sip.ack_timeout_seconds", self.ack_timeout_seconds),
            ("sip.invites_per_second", u64::from(self.invites_per_second)),
            (
                "sip.max_pending_per_source",
                self.max_pending_per_source as u64,
            ),
            ("sip.max_tcp_connections", self.max_tcp_connections as u64),
            (
                "sip.max_tcp_connections_per_source",
                self.max_tcp_connections_per_source as u64,
            ),
            ("sip.tcp_idle_seconds", self.tcp_idle_seconds),
        ] {
            if value == 0 {
                return bad(key, "must be at least 1");
            }
        }
        if self.max_calls == 0 {
            return bad("sip.max_calls", "must be at least 1");
        }
        if self.session_min_seconds < contactd_sip::RFC_MIN_SE
            || self.session_max_seconds < self.session_min_seconds
        {
            return bad(
                "sip.session_min_seconds",
                "at least 90 (RFC 4028), and sip.session_max_seconds at least that",
            );
        }
        let tls_listener = self
            .listen
            .iter()
            .any(|l| l.0.transport == contactd_sip::config::SipTransport::Tls);
        if tls_listener && (self.tls_certificate.is_none() || self.tls_key.is_none()) {
            return bad(
                "sip.tls_certificate",
                "a tls: listener needs it and sip.tls_key (PEM files)",
            );
        }
        if self.registrar {
            if self.realm.is_empty()
                || !self
                    .realm
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"')
            {
                return bad("sip.realm", "printable, no quotes, not empty");
            }
            if self.register_min_seconds == 0
                || self.register_max_seconds < self.register_min_seconds
            {
                return bad(
                    "sip.register_max_seconds",
                    "at least sip.register_min_seconds, which is at least 1",
                );
            }
            if self.devices_per_advisor == 0
                || self.auth_failures_per_source == 0
                || self.registers_per_second == 0
            {
                return bad(
                    "sip.devices_per_advisor",
                    "it, sip.auth_failures_per_source and sip.registers_per_second must be at least 1",
                );
            }
        }
        Ok(())
    }
}

/// `udp:HOST:PORT`, `tcp:HOST:PORT` or `tls:HOST:PORT`.
#[derive(Debug, Clone, Copy)]
pub struct SipListenSetting(pub contactd_sip::SipListen);

impl<'de> Deserialize<'de> for SipListenSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        contactd_sip::SipListen::parse(&s)
            .map(SipListenSetting)
            .map_err(serde::de::Error::custom)
    }
}

/// A trunk network, `192.0.2.0/24` or one address.
#[derive(Debug, Clone, Copy)]
pub struct TrunkSetting(pub contactd_sip::TrunkNetwork);

impl<'de> Deserialize<'de> for TrunkSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        contactd_sip::TrunkNetwork::parse(&s)
            .map(TrunkSetting)
            .map_err(serde::de::Error::custom)
    }
}

/// `20000-30000`: at least one even/odd pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange(pub u16, pub u16);

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let parsed = s
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
        match parsed {
            Some((a, b)) if a > 0 && b > a => Ok(PortRange(a, b)),
            _ => Err(serde::de::Error::custom(format!(
                "{s:?} is not a port range like 20000-30000"
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSettings {
    /// Where recordings are written (`YYYY/MM/DD/<id>.wav` below it).
    pub dir: PathBuf,
    /// How long a recording is kept after the call (12 months by default).
    pub retention_days: u32,
    /// How often expired recordings are deleted.
    pub sweep_interval_minutes: u64,
    /// Below this much free space (MiB) in `dir`, recordings count as unavailable.
    pub min_free_mb: u64,
    /// When recordings cannot be written (a full disk): take calls unrecorded (and
    /// without the recording notice), or refuse them with 503.
    pub when_unavailable: WhenUnrecordable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenUnrecordable {
    /// Answer, say nothing about recording, mark the call unrecorded.
    Unrecorded,
    /// Refuse new calls (503) until recordings can be written again.
    Refuse,
}

/// Callers waiting for advisors: after the menu, a call whose service has a queue
/// here is offered to that service's advisors instead of ending.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// How long an advisor's phone rings before the next advisor is tried (and the
    /// one who did not answer is set away).
    pub ring_seconds: u64,
    /// After each call, an advisor is left this long to finish their notes.
    pub wrap_up_seconds: u64,
    /// A WAV (8 kHz mono 16-bit) callers hear while they wait; empty: the built-in.
    pub music_on_hold: PathBuf,
    /// The longest voicemail a caller may leave when no advisor answers.
    pub voicemail_seconds: u64,
    /// A waiting caller is told their place in the queue this often; 0: never.
    pub position_every_seconds: u64,
    /// An advisor who lets this many offers in a row ring out is set away (paused).
    pub unanswered_before_away: u32,
    /// A caller who leaves a queue without reaching an advisor (hangs up, or is
    /// offered voicemail) and rings back within this keeps the time they first
    /// joined; 0: never. (One who asked for a callback keeps it until it is closed.)
    pub rejoin_window_seconds: u64,
    /// The queue of each service, by service code.
    pub services: std::collections::BTreeMap<String, ServiceQueue>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceQueue {
    /// A caller waiting longer than this is offered voicemail.
    pub max_wait_seconds: u64,
    /// Callers waiting at most; one more is offered voicemail at once.
    pub max_length: usize,
    /// This queue's callers are served as if they had waited this much longer
    /// (at most an hour): ahead of other queues' callers, but never starving them.
    #[serde(default)]
    pub priority_seconds: u64,
    /// When advisors take this service's calls (Europe/London); outside them a
    /// caller is told so and offered voicemail. Absent: always open.
    #[serde(default, deserialize_with = "opening_hours")]
    pub hours: Option<OpeningHours>,
}

impl QueueSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: String, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        if self.ring_seconds == 0 || self.ring_seconds > 300 {
            return bad("queues.ring_seconds".into(), "1 to 300");
        }
        if self.voicemail_seconds == 0 || self.voicemail_seconds > 600 {
            return bad("queues.voicemail_seconds".into(), "1 to 600");
        }
        if self.unanswered_before_away == 0 {
            return bad("queues.unanswered_before_away".into(), "at least 1");
        }
        if self.rejoin_window_seconds > 86_400 {
            return bad("queues.rejoin_window_seconds".into(), "at most 86400");
        }
        for (code, q) in &self.services {
            if let Err(e) = ServiceCode::parse(code) {
                return bad(format!("queues.services.{code}"), &e.to_string());
            }
            if q.max_wait_seconds == 0 || q.max_length == 0 {
                return bad(
                    format!("queues.services.{code}"),
                    "max_wait_seconds and max_length at least 1",
                );
            }
            if q.priority_seconds > 3600 {
                return bad(
                    format!("queues.services.{code}.priority_seconds"),
                    "at most 3600 (a head start, not a right of way)",
                );
            }
        }
        Ok(())
    }
}

/// The call flow: prompts, timeouts and the service menu.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IvrSettings {
    /// A directory of WAV prompts (8 kHz mono 16-bit) overriding the built-in ones,
    /// by file name; empty for the built-in prompts.
    pub prompts_dir: PathBuf,
    /// How long to wait for each key.
    pub digit_timeout_seconds: u64,
    /// How many tries a caller gets at each question.
    pub attempts: u32,
    /// The service menu: key and service code.
    pub menu: Vec<MenuEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MenuEntry {
    pub key: char,
    pub service: ServiceCode,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    pub public_url: Url,
    pub max_body_bytes: usize,
    pub request_timeout_seconds: u64,
    /// Connections open at once, in all and from one address; more are closed.
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    /// A client must send its request headers within this (idle keep-alive too).
    pub header_read_timeout_seconds: u64,
    /// When set, `/metrics` answers only to `Authorization: Bearer <this>`.
    pub metrics_token: Secret,
}

impl HttpSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        if self.max_body_bytes < 1024 {
            return bad("http.max_body_bytes", "must be at least 1024");
        }
        for (key, value) in [
            ("http.max_connections", self.max_connections as u64),
            (
                "http.max_connections_per_source",
                self.max_connections_per_source as u64,
            ),
            (
                "http.header_read_timeout_seconds",
                self.header_read_timeout_seconds,
            ),
        ] {
            if value == 0 {
                return bad(key, "must be at least 1");
            }
        }
        if self.request_timeout_seconds == 0 {
            return bad("http.request_timeout_seconds", "must be at least 1");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
    pub max_connections: u32,
    pub connect_timeout_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSettings {
    /// Empty: reminders are scheduled on the database (embedded scheduler).
    #[serde(default)]
    pub redis_url: RedisUrl,
    /// Names this deployment's keys in Redis (`{prefix}:due`, …, one hash tag, so
    /// Redis Cluster works); instances that share the work share the prefix.
    pub redis_prefix: String,
    /// How long a claim on a due message lasts: longer than any send takes. An
    /// instance that dies or stalls holds its claims this long; then another sends
    /// them (or, if the send had begun, asks the provider first).
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
}

fn default_lease_seconds() -> u64 {
    120
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            redis_url: RedisUrl::default(),
            redis_prefix: "contactd".into(),
            lease_seconds: default_lease_seconds(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeSettings {
    pub default_service: ServiceCode,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    pub grace_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
    /// Let SIP messages (with callers' numbers and keyed digits) into the log, for
    /// debugging only; off, the SIP stack logs warnings alone.
    pub personal_data: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDefinition {
    pub code: ServiceCode,
    pub name: String,
    pub retention_years: u32,
    #[serde(default)]
    pub special_category: bool,
    /// Minutes before an appointment of this service that its reminders go,
    /// replacing `reminders.appointment_offsets_minutes`.
    #[serde(default)]
    pub appointment_offsets_minutes: Option<Vec<u32>>,
    /// This service's own words for its notices, replacing `[notices]`; an empty
    /// text sends none of that kind for this service.
    #[serde(default)]
    pub notices: ServiceNotices,
}

/// A service's notices, where they differ from `[notices]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNotices {
    pub opened: Option<String>,
    pub resolved: Option<String>,
    pub cancelled: Option<String>,
    pub reopened: Option<String>,
}

/// A service catalogue code: lower-case letters, digits and `_`, at most 40 long.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceCode(String);

impl ServiceCode {
    pub fn parse(s: &str) -> Result<Self, UnknownValue> {
        let ok = !s.is_empty()
            && s.len() <= 40
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(ServiceCode(s.to_string()))
        } else {
            Err(UnknownValue(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ServiceCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

crate::domain::string_domain_type!(ServiceCode, "A service catalogue code", "waste");

/// Which database the daemon stores into, chosen by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database URL whose scheme names a supported backend.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: String,
    backend: Backend,
}

impl DatabaseUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let backend = if s.starts_with("sqlite:") {
            Backend::Sqlite
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(format!(
                "{:?} is not a database URL: use sqlite://PATH or postgres://USER@HOST/DB",
                redact(s)
            ));
        };
        Ok(DatabaseUrl {
            url: s.to_string(),
            backend,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn expose(&self) -> &str {
        &self.url
    }

    /// For an SQLite URL, the file it names (relative paths are relative to the
    /// working directory, as sqlx reads them).
    pub fn sqlite_path(&self) -> Option<&Path> {
        if self.backend != Backend::Sqlite {
            return None;
        }
        let rest = self
            .url
            .trim_start_matches("sqlite:")
            .trim_start_matches("//");
        let path = rest.split('?').next().unwrap_or(rest);
        (!path.is_empty() && path != ":memory:").then(|| Path::new(path))
    }
}

/// The URL with any password replaced, safe for logs and error messages.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.url))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DatabaseUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A Redis URL, or empty for "no Redis".
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisUrl(Option<Url>);

impl RedisUrl {
    pub fn get(&self) -> Option<&Url> {
        self.0.as_ref()
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(u) => write!(f, "RedisUrl({})", redact(u.as_str())),
            None => f.write_str("RedisUrl(none)"),
        }
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(RedisUrl(None));
        }
        let url = Url::parse(&s).map_err(serde::de::Error::custom)?;
        if !matches!(url.scheme(), "redis" | "rediss") {
            return Err(serde::de::Error::custom(format!(
                "{:?} is not a Redis URL: use redis://HOST:PORT/DB",
                redact(&s)
            )));
        }
        Ok(RedisUrl(Some(url)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Reads the embedded defaults, then `file` (if given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Toml::string(EMBEDDED_DEFAULTS));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(EnvAsText(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| !key.as_str().to_ascii_lowercase().ends_with(FILE_SUFFIX))
                .split("__"),
        ));
        for (key, value) in secrets_from_files()? {
            figment = figment.merge(Serialized::default(&key, value));
        }
        // Lossy: numbers and booleans may be given as text (as the environment gives
        // everything), and are read as the key's type.
        let settings: Settings = figment.extract_lossy().map_err(|e| {
            // figment reports one error per problem; the first is the one to fix.
            let first = e.into_iter().next().map(describe).unwrap_or_default();
            ConfigError::Invalid(first)
        })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        if self.services.is_empty() {
            return bad(
                "services",
                "the service catalogue needs at least one service",
            );
        }
        let mut codes: Vec<&ServiceCode> = self.services.iter().map(|s| &s.code).collect();
        codes.sort();
        if let Some(w) = codes.windows(2).find(|w| w[0] == w[1]) {
            return bad("services", &format!("service code {} appears twice", w[0]));
        }
        if let Some(s) = self.services.iter().find(|s| {
            s.appointment_offsets_minutes
                .as_ref()
                .is_some_and(|o| o.is_empty() || o.contains(&0))
        }) {
            return bad(
                &format!("services.{}.appointment_offsets_minutes", s.code.as_str()),
                "one or more, each at least 1",
            );
        }
        if let Some(s) = self.services.iter().find(|s| s.retention_years == 0) {
            return bad(
                "services",
                &format!("{}: retention_years must be at least 1", s.code),
            );
        }
        if !self
            .services
            .iter()
            .any(|s| s.code == self.intake.default_service)
        {
            return bad(
                "intake.default_service",
                &format!(
                    "{} is not in the service catalogue",
                    self.intake.default_service
                ),
            );
        }
        for entry in &self.ivr.menu {
            if !entry.key.is_ascii_digit() {
                return bad(
                    "ivr.menu",
                    &format!("key {:?} is not a keypad digit", entry.key),
                );
            }
            if !self.services.iter().any(|s| s.code == entry.service) {
                return bad(
                    "ivr.menu",
                    &format!("{} is not in the service catalogue", entry.service),
                );
            }
        }
        if self.ivr.attempts == 0 {
            return bad("ivr.attempts", "must be at least 1");
        }
        if !(2..=3600).contains(&self.scheduler.lease_seconds) {
            return bad("scheduler.lease_seconds", "2 to 3600");
        }
        if self.recordings.retention_days == 0 {
            return bad("recordings.retention_days", "must be at least 1");
        }
        self.sms.validate()?;
        self.email.validate()?;
        self.notify.validate(
            self.sms.provider == SmsProvider::Notify,
            self.email.provider == EmailProvider::Notify && self.email.sending(),
        )?;
        self.reminders.validate()?;
        self.renewals.validate()?;
        self.notices.validate()?;
        self.sip.validate()?;
        self.queues.validate()?;
        if self.database.max_connections == 0 {
            return bad("database.max_connections", "must be at least 1");
        }
        self.http.validate()?;
        Ok(())
    }

    pub fn grace_period(&self) -> Duration {
        Duration::from_secs(self.shutdown.grace_seconds)
    }
}

/// The environment, taken as text: `CONTACTD__SMS__FROM=+441610000000` is a phone
/// number, not the integer figment would make of it, and `true` or `0123` stay as
/// written for a string key. Arrays and tables (`["udp:…", "tcp:…"]`) are still
/// parsed; numeric and boolean keys read their text through the lossy extraction.
struct EnvAsText(Env);

impl figment::Provider for EnvAsText {
    fn metadata(&self) -> figment::Metadata {
        self.0.metadata()
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        use figment::value::Value;
        let mut dict = figment::value::Dict::new();
        for (key, text) in self.0.iter() {
            let parsed: Value = text.parse().expect("parsing a value is infallible");
            let value = match parsed {
                Value::Array(..) | Value::Dict(..) => parsed,
                _ => Value::from(text),
            };
            let nested = figment::util::nest(key.as_str(), value)
                .into_dict()
                .expect("a non-empty key makes a dict");
            merge_into(&mut dict, nested);
        }
        Ok(figment::Profile::Default.collect(dict))
    }
}

/// Merges `from` into `into`, tables recursively (`A__B=1` and `A__C=2` make one `a`).
fn merge_into(into: &mut figment::value::Dict, from: figment::value::Dict) {
    use figment::value::Value;
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Dict(_, a)), Value::Dict(_, b)) => merge_into(a, b),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// One line naming the key, the problem and where the value came from.
fn describe(e: figment::Error) -> String {
    let key = e.path.join(".");
    let origin = e
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(figment::Source::File(p)) => format!(" (in {})", p.display()),
            _ if m.name.contains("environment") => {
                let profile = e.profile.clone().unwrap_or_default();
                format!(" (from {})", m.interpolate(&profile, &e.path))
            }
            _ => String::new(),
        })
        .unwrap_or_default();
    let kind = e.kind.to_string();
    if key.is_empty() {
        format!("{kind}{origin}")
    } else {
        format!("{key}: {kind}{origin}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_parse() {
        let s: Settings = Figment::from(Toml::string(EMBEDDED_DEFAULTS))
            .extract()
            .unwrap();
        s.validate().unwrap();
        assert_eq!(s.database.url.backend(), Backend::Sqlite);
        assert_eq!(
            s.database.url.sqlite_path(),
            Some(Path::new("data/contactd.db"))
        );
        assert_eq!(s.services.len(), 9);
        assert!(s.scheduler.redis_url.get().is_none());
    }

    #[test]
    fn production_example_parses() {
        let s: Settings = Figment::from(Toml::string(EMBEDDED_DEFAULTS))
            .merge(Toml::string(include_str!(
                "../config/production.example.toml"
            )))
            .extract()
            .unwrap();
        assert_eq!(s.database.url.backend(), Backend::Postgres);
        assert!(s.scheduler.redis_url.get().is_some());
    }

    #[test]
    fn passwords_are_redacted() {
        let u = DatabaseUrl::parse("postgres://me:hunter2@db/x").unwrap();
        assert!(!u.to_string().contains("hunter2"));
        assert!(!format!("{u:?}").contains("hunter2"));
    }
}
