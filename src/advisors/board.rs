//! Each queue now, as a supervisor's board shows it: open or closed, the callers
//! waiting and the longest wait, and the advisors who answer it by state. Only
//! counts: nothing here names a caller.

use serde::Serialize;
use utoipa::ToSchema;

use super::{AdvisorState, Advisors};
use crate::store::StoreError;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueNow {
    /// The service code whose queue this is.
    pub service: String,
    /// Within its opening hours now (a queue without hours is always open).
    pub open: bool,
    /// Callers waiting in it now, on this instance.
    pub waiting: usize,
    /// How long the caller first in line has waited (from when they first joined,
    /// if they rang back).
    pub longest_wait_seconds: Option<i64>,
    /// Served ahead of a caller of another queue who has waited up to this much
    /// longer.
    pub priority_seconds: u64,
    /// Advisors with this service among their skills and a phone registered now.
    pub advisors: StateCounts,
}

/// How many advisors are in each state.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub struct StateCounts {
    pub available: usize,
    pub ringing: usize,
    pub on_call: usize,
    pub wrap_up: usize,
    pub away: usize,
}

impl StateCounts {
    fn add(&mut self, state: AdvisorState) {
        let count = match state {
            AdvisorState::Available => &mut self.available,
            AdvisorState::Ringing => &mut self.ringing,
            AdvisorState::OnCall => &mut self.on_call,
            AdvisorState::WrapUp => &mut self.wrap_up,
            AdvisorState::Away => &mut self.away,
        };
        *count += 1;
    }
}

impl Advisors {
    /// Every configured queue, in service-code order.
    pub async fn board(&self) -> Result<Vec<QueueNow>, StoreError> {
        let advisors = self.list().await?;
        let now = self.now();
        Ok(self
            .queues
            .iter()
            .map(|(service, queue)| {
                let mut counts = StateCounts::default();
                for a in advisors.iter().filter(|a| {
                    !a.advisor.devices.is_empty() && a.advisor.skills.iter().any(|s| s == service)
                }) {
                    counts.add(a.state);
                }
                let length = self.presence.queue_length(service);
                QueueNow {
                    service: service.clone(),
                    open: queue.hours.as_ref().is_none_or(|h| h.is_open(now)),
                    waiting: length.callers,
                    longest_wait_seconds: length
                        .longest_since
                        .map(|since| (now.millis() - since.millis()).max(0) / 1000),
                    priority_seconds: queue.priority_seconds,
                    advisors: counts,
                }
            })
            .collect())
    }
}
