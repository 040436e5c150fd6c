//! contactd-email: the email channel's protocols. It takes mail in over SMTP, parses
//! MIME into plain values, finds the threading keys a message carries, and sends
//! mail through the council's relay; it knows nothing of customers or requests.
//!
//! - [`smtp`]: the SMTP receiver (bounded, timed out, limited per source); a
//!   [`MailHandler`] stores each message before it is answered 250
//! - [`auth`]: SPF, DKIM and DMARC for mail we receive: is the From address proven?
//! - [`imap`]: the IMAP poller for mailboxes elsewhere (UIDs, UIDVALIDITY, IDLE)
//! - [`oauth`]: XOAUTH2 access tokens refreshed from the provider, rotated refresh
//!   tokens saved, a revoked grant told apart
//! - [`parse`]: a received message as plain values: sender, Message-ID, thread,
//!   text, whether it was automatic (RFC 3834) or a delivery report (RFC 3464)
//! - [`subject`]: the `[SR-…]` tag in a subject, past the prefixes of every language
//! - [`thread_index`]: Outlook's Thread-Index, extended on our replies
//! - [`send`]: outgoing mail through the relay (lettre), with thread headers and VERP

pub mod auth;
pub mod imap;
pub mod oauth;
pub mod parse;
pub mod send;
pub mod smtp;
pub mod subject;
pub mod thread_index;

pub use auth::{SenderCheck, Verdict};
pub use lettre::Address;
pub use lettre::message::Mailbox;
pub use parse::{InboundEmail, parse};
pub use send::{MailSender, OutgoingMail, SendFailure};
pub use smtp::{MailHandler, NotStored, ReceivedMail, SmtpLimits, SmtpServer};
