//! Call recordings as the record keeps them.

use serde::Serialize;
use utoipa::ToSchema;

use super::{Timestamp, UnknownValue};

super::text_enum! {
    /// A recording's life: written during the call, complete after it, purged at
    /// expiry; lost when a crash left nothing readable (the reason is kept).
    RecordingStatus {
        Recording = "recording",
        Complete = "complete",
        Purged = "purged",
        Lost = "lost",
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Recording {
    pub id: String,
    pub call_id: String,
    pub contact_id: Option<String>,
    pub request_id: Option<String>,
    pub status: RecordingStatus,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub duration_ms: Option<i64>,
    pub size_bytes: Option<i64>,
    /// SHA-256 of the WAV file, hex.
    pub sha256: Option<String>,
    /// When the sweep deletes it (start + retention), unless on legal hold.
    pub expires_at: Timestamp,
    pub legal_hold: bool,
    pub legal_hold_reason: Option<String>,
    /// Rebuilt after the daemon stopped mid-call.
    pub repaired: bool,
    /// Why the recording is incomplete or lost (a full disk, an unreadable file).
    pub failure: Option<String>,
    pub purged_at: Option<Timestamp>,
    /// The call's legs with advisors, in the order they were offered (who was rung,
    /// who answered, when, for how long, transfers): the recording's metadata.
    pub legs: Vec<CallLeg>,
    /// Relative to the recordings directory.
    #[serde(skip)]
    pub path: String,
}

super::text_enum! {
    /// How a call's leg with an advisor went.
    LegOutcome {
        /// Their phone is ringing.
        Ringing = "ringing",
        /// They are talking with the caller.
        OnCall = "on_call",
        Declined = "declined",
        NoAnswer = "no_answer",
        Unreachable = "unreachable",
        /// The caller hung up while the phone rang.
        CallerLeft = "caller_left",
        /// The conversation ended (either side hung up).
        Ended = "ended",
        /// The advisor passed the caller on (`transferred_to`).
        Transferred = "transferred",
        /// The daemon stopped (a crash, a kill) while the leg rang or was up; found
        /// and closed when it started again.
        Interrupted = "interrupted",
    }
}

/// One advisor's part in a call.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CallLeg {
    pub advisor_id: String,
    pub offered_at: Timestamp,
    pub answered_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub outcome: LegOutcome,
    /// An advisor's SIP username or a service's code.
    pub transferred_to: Option<String>,
}
