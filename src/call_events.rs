//! The feed of what happens to calls with advisors — offered to an advisor, not
//! taken, answered, ended — so that an advisor's screen can show the caller's record
//! while the phone rings, and supervisors can watch. Events carry ids (the customer,
//! the request's reference), never names or numbers: whoever shows them reads the
//! record through the API, which audits it.
//!
//! One broadcast per instance; a subscriber that falls behind loses the oldest
//! events (it is told how many), and the calls never wait for anyone.

use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::domain::Timestamp;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallEventKind {
    /// An advisor's phone is ringing with this call.
    Offered,
    /// The advisor declined, let it ring out, or could not be reached.
    NotTaken,
    /// The advisor answered: caller and advisor are talking.
    Answered,
    /// The advisor transferred the caller (to another advisor or queue).
    Transferred,
    /// The conversation ended.
    Ended,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CallEvent {
    pub kind: CallEventKind,
    pub at: Timestamp,
    /// The call's contact record (on the request's timeline, with its recording).
    pub contact_id: String,
    pub advisor_id: String,
    pub service: String,
    /// The request the call is on, and its resident (when known).
    pub reference: String,
    pub customer_id: Option<String>,
    /// Why a `not_taken` offer was not taken; absent for the other kinds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<crate::advisors::NotTaken>,
}

/// Events buffered per subscriber before the oldest are dropped.
const BUFFERED: usize = 1024;

#[derive(Clone)]
pub struct CallEvents(broadcast::Sender<CallEvent>);

impl Default for CallEvents {
    fn default() -> Self {
        CallEvents(broadcast::channel(BUFFERED).0)
    }
}

impl CallEvents {
    /// Tells every subscriber; nobody listening is fine.
    pub fn publish(&self, event: CallEvent) {
        let _ = self.0.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<CallEvent> {
        self.0.subscribe()
    }
}
