//! contactd-sms: the SMS channel's protocol, Twilio's. It checks and parses what
//! Twilio posts to the daemon and sends messages through Twilio's REST API; it knows
//! nothing of customers or requests.
//!
//! - [`signature`]: the X-Twilio-Signature header (HMAC-SHA1 over URL and sorted parameters)
//! - [`webhook`]: an inbound text or a delivery status, parsed and bounded
//! - [`keywords`]: STOP / START / HELP, as carriers and Twilio understand them
//! - [`status`]: message statuses and the order they move in
//! - [`client`]: the REST client (sending, with bounded retries)
//! - [`twiml`]: the XML answer to an inbound-message webhook

pub mod client;
pub mod keywords;
pub mod signature;
pub mod status;
pub mod twiml;
pub mod webhook;

pub use client::{Credentials, OutboundSms, SendError, SentSms, TwilioClient};
pub use keywords::Keyword;
pub use signature::{SignatureError, verify};
pub use status::MessageStatus;
pub use webhook::{InboundSms, StatusReport, WebhookError};
