//! contactd: a council contact centre daemon.
//!
//! Residents ring, email and text the council; every contact enters through
//! [`intake`], is matched to one central customer record and opens or attaches a
//! service request. Staff work through the JSON [`api`].
//!
//! The map of this crate (the hub; channel crates plug into `intake`):
//!
//! - [`configuration`]: the typed settings (embedded defaults, file, environment)
//! - [`domain`]: parsed values — references, phone numbers, the customer record,
//!   requests, roles — so the inside never re-validates
//! - [`store`]: SQL on SQLite or PostgreSQL behind one repository layer
//! - [`intake`]: the single entry point for every channel's contacts
//! - [`outbound`]: the outbox: everything the council sends, on every channel
//!   (opt-outs and consent enforced, never lost, never resent blind)
//! - [`channels`]: the hub side of each channel (voice, sms, email) and the one
//!   contract startup starts and stops them by
//! - [`notify`]: GOV.UK Notify as a provider for the SMS and email channels (the
//!   sender the outbox uses, and Notify's receipts and received texts)
//! - [`notices`]: requests opened and moved by staff, and what the resident is told
//! - [`appointments`], [`renewals`]: what residents are reminded of (appointments
//!   booked on a request; subscriptions that expire), queued into the outbox
//! - [`advisors`]: the staff who answer calls, their phones' credentials and
//!   registrations (the voice channel's registrar)
//! - [`call_events`]: the feed of calls offered to, answered and ended by advisors
//! - [`recordings`]: call recordings' life: start, finish, crash repair, expiry
//! - [`api`]: the staff API, health, metrics and OpenAPI; [`http`]: its listener
//!   (connection limits, header-read timeout, graceful drain)
//! - [`scheduler`]: when each outbox message is due and who may send it now: claims
//!   with a lease and a fencing token, on Redis or embedded on the database
//! - [`startup`], [`shutdown`], [`telemetry`]: wiring, graceful stop, logs and metrics
//! - [`cli`]: the `contactd` command; [`bench`]: throughput measurement

pub mod advisors;
pub mod api;
pub mod appointments;
pub mod bench;
pub mod call_events;
pub mod channels;
pub mod cli;
pub mod configuration;
pub mod domain;
pub mod http;
pub mod intake;
pub mod notices;
pub mod notify;
pub mod outbound;
pub mod recordings;
pub mod renewals;
pub mod scheduler;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;
