//! contactd-notify: GOV.UK Notify, the service most UK councils already send through,
//! as a provider for the SMS and email channels. It knows nothing of customers or
//! requests: it turns a notification into Notify's API calls and Notify's callbacks
//! into plain values.
//!
//! - [`key`]: the API key (`name-serviceid-secret`, read from the right; never printed)
//! - [`token`]: the HS256 JWT each request carries (`iss` = service id, fresh `iat`)
//! - [`client`]: the REST client: send, look up by reference or id, read a template,
//!   and the throttle that keeps us inside Notify's rate limit
//! - [`status`]: Notify's notification statuses and the order they move in
//! - [`callback`]: delivery receipts and received texts Notify posts to us, and the
//!   bearer token that proves they are Notify's
//!
//! Notify has no idempotency key and ignores `scheduled_for` for our purposes:
//! scheduling, quiet hours and de-duplication stay in contactd, which gives every
//! notification a fixed `reference` before it is posted and looks it up by that
//! reference before any resend.

pub mod callback;
pub mod client;
pub mod key;
pub mod status;
pub mod token;

pub use callback::{CallbackError, InboundText, Receipt, bearer_matches};
pub use client::{Accepted, Notification, NotifyClient, Recipient, SendError, Template};
pub use key::{ApiKey, KeyError};
pub use status::NotifyStatus;
