//! The embedded scheduler: due times and claims on the database itself (the
//! `messages` table's `next_attempt_at`, `claimed_until`, `claim_fence`), for a
//! daemon with no Redis. Several instances on one PostgreSQL share it safely: every
//! claim is a guarded UPDATE.

use std::sync::Arc;
use std::time::Duration;

use super::{BoxFuture, Claim, Clock, ScheduleResult, Scheduler};
use crate::domain::Timestamp;
use crate::store::Store;
use crate::store::schedule::DueEntry;

pub struct EmbeddedScheduler {
    store: Store,
    clock: Arc<dyn Clock>,
}

impl EmbeddedScheduler {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        EmbeddedScheduler { store, clock }
    }

    fn after(&self, lease: Duration) -> Timestamp {
        Timestamp::from_millis(self.clock.now().millis() + lease.as_millis() as i64)
    }
}

impl Scheduler for EmbeddedScheduler {
    fn schedule(&self, id: &str, due: Timestamp) -> BoxFuture<'_, ScheduleResult<()>> {
        let id = id.to_string();
        Box::pin(async move { Ok(self.store.reschedule(&id, due).await?) })
    }

    fn claim(&self, max: usize, lease: Duration) -> BoxFuture<'_, ScheduleResult<Vec<Claim>>> {
        Box::pin(async move {
            let claimed = self
                .store
                .claim_due(self.clock.now(), self.after(lease), max)
                .await?;
            Ok(claimed
                .into_iter()
                .map(|(id, fence)| Claim { id, fence })
                .collect())
        })
    }

    fn renew(&self, claim: &Claim, lease: Duration) -> BoxFuture<'_, ScheduleResult<bool>> {
        let claim = claim.clone();
        Box::pin(async move {
            Ok(self
                .store
                .renew_claim(&claim.id, claim.fence, self.clock.now(), self.after(lease))
                .await?)
        })
    }

    fn ack(&self, claim: &Claim, again: Option<Timestamp>) -> BoxFuture<'_, ScheduleResult<bool>> {
        let claim = claim.clone();
        Box::pin(async move {
            Ok(self
                .store
                .release_claim(&claim.id, claim.fence, again)
                .await?)
        })
    }

    fn reap(&self) -> BoxFuture<'_, ScheduleResult<u64>> {
        Box::pin(async move { Ok(self.store.reap_claims(self.clock.now()).await?) })
    }

    fn cancel(&self, _id: &str) -> BoxFuture<'_, ScheduleResult<()>> {
        // The message's status (no longer pending) is the cancellation.
        Box::pin(async { Ok(()) })
    }

    fn next_due(&self) -> BoxFuture<'_, ScheduleResult<Option<Timestamp>>> {
        Box::pin(async move { Ok(self.store.next_unclaimed_due().await?) })
    }

    fn sync(&self, _entries: Vec<DueEntry>, _complete: bool) -> BoxFuture<'_, ScheduleResult<()>> {
        // The database is the scheduler: nothing can be missing.
        Box::pin(async { Ok(()) })
    }

    fn lost_state(&self) -> BoxFuture<'_, ScheduleResult<bool>> {
        Box::pin(async { Ok(false) })
    }
}
