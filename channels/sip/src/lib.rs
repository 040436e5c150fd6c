//! contactd-sip: the voice channel. It answers calls from the council's SIP trunk and
//! hands each one to the daemon as a [`Call`]: who is calling, keypad digits, a way to
//! play audio to the caller, and every 20 ms of audio in both directions for the
//! recording. It knows nothing of customers or requests.
//!
//! - [`config`]: listeners, trusted trunk networks, the RTP port range, limits
//! - [`server`]: SIP signalling (rsipstack): INVITE/ACK/BYE/CANCEL/OPTIONS, re-INVITE,
//!   UPDATE, INFO, call limits, shutdown; a call exists once ACKed
//! - [`session_timer`]: RFC 4028 session timers for callers that ask (422 Min-SE,
//!   one refresher, a dialog whose refresh does not come is ended)
//! - [`admission`]: trust by real source address, INVITE rate and set-up limits
//! - [`registrar`]: REGISTER from advisors' phones, authenticated by [`digest`]
//!   (SHA-256, MD5 for older phones), bindings kept by the daemon
//! - [`identity`]: From, To, P-Asserted-Identity and a REGISTER's Contacts, read
//!   strictly
//! - [`tcp`]: SIP over TCP and TLS accepted by us: limits per source and in all, a
//!   bounded TLS handshake, idle close
//! - [`sdp`]: the offer we accept and the answer we give (PCMU/PCMA, telephone-event)
//! - [`rtp`]: RTP packets; [`g711`]: µ-law and A-law; [`dtmf`]: RFC 4733 events
//! - [`jitter`]: puts the caller's packets back in order on the call's clock, silence
//!   for what never came, so a recording keeps real time
//! - [`media`]: one call's RTP sockets and its 20 ms clock; symmetric RTP latching
//! - [`leg`]: legs we place to advisors' phones, and the bridge that joins one to a
//!   call inside the daemon (media anchored here: recorded whole, transcoded per leg)
//! - [`call`]: what the daemon gets: [`Call`], its events, and the [`FrameSink`] for
//!   recording

pub mod admission;
pub mod call;
pub mod config;
pub mod digest;
pub mod dtmf;
pub mod g711;
pub mod identity;
pub mod jitter;
pub mod leg;
pub mod media;
pub mod registrar;
pub mod rtp;
pub mod sdp;
pub mod server;
pub mod session_timer;
pub mod tcp;

pub use call::{Bridged, Call, CallEnded, CallHandler, CallInfo, CallerId, FrameSink};
pub use config::{SipConfig, SipListen, SipTransport, TlsIdentity, TrunkNetwork};
pub use digest::{Algorithm, Ha1};
pub use leg::{DialFailure, DialTarget, Dialer, Leg};
pub use registrar::{
    Binding, BindingChange, ContactBinding, Registrar, RegistrarError, RegistrarFuture,
    RegistrarPolicy, Registration,
};
pub use server::{SipError, SipLimit, SipServer, SipStatus};
pub use session_timer::RFC_MIN_SE;
pub use tcp::TcpLimits;

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

/// One 20 ms frame of 16-bit linear audio.
pub type Frame = [i16; FRAME_SAMPLES];
