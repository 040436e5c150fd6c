//! The scheduler: when each outbox message is due, and who may send it now.
//!
//! SQL is the source of truth (the `messages` table: what to send, its status, its
//! due time). A scheduler backend holds the due times and hands out claims, each a
//! lease and a fencing token; the outbox's dispatcher begins a send only with a claim
//! whose fence no newer claim has passed (`Store::begin_send`), so a dispatcher that
//! stalled past its lease is refused, and a message is sent once however many
//! instances share the work.
//!
//! - [`Scheduler`]: the one narrow trait
//! - [`embedded`]: on the database (the default: no Redis configured)
//! - [`redis`]: Redis in production (due times in a sorted set, moved by Lua
//!   scripts; Redis's own clock; rebuilt from SQL at start and after a restart)
//! - [`Clock`]: the time everything here reads, which tests control
//! - [`calendar`]: cron expressions in Europe/London, daylight saving handled

pub mod calendar;
pub mod embedded;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

pub use self::redis::{RedisScheduler, SchedulerError, SchedulerLink};
pub use embedded::EmbeddedScheduler;

use crate::domain::Timestamp;
use crate::store::StoreError;
use crate::store::schedule::DueEntry;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A claim on one message: send it before the lease runs out, and only while the
/// fence is still the newest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub id: String,
    pub fence: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("scheduler: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("scheduler: an answer from Redis could not be read: {0}")]
    Answer(#[from] ::redis::ParsingError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type ScheduleResult<T> = Result<T, ScheduleError>;

/// Where due times are held. Every call is idempotent or fenced, so a retry after
/// a lost answer does no harm.
pub trait Scheduler: Send + Sync + 'static {
    /// Holds `id` due at `due`; the same id again moves it (one entry per message,
    /// and a message is one occurrence). A message being sent is left to its claim.
    fn schedule(&self, id: &str, due: Timestamp) -> BoxFuture<'_, ScheduleResult<()>>;
    /// Claims up to `max` messages due now, each leased for `lease` with a new fence.
    fn claim(&self, max: usize, lease: Duration) -> BoxFuture<'_, ScheduleResult<Vec<Claim>>>;
    /// Extends a claim; false if its lease ran out or a newer claim exists.
    fn renew(&self, claim: &Claim, lease: Duration) -> BoxFuture<'_, ScheduleResult<bool>>;
    /// Done with a claim: the message is settled (`again` None), or due again at
    /// `again`. False, and nothing changed, if the fence is not the newest.
    fn ack(&self, claim: &Claim, again: Option<Timestamp>) -> BoxFuture<'_, ScheduleResult<bool>>;
    /// Claims whose lease ran out go back to due. Whether their send had begun is
    /// the database's to say: such a message is no longer pending, so its next
    /// claimant cannot begin it, and the outbox marks it for reconciliation.
    fn reap(&self) -> BoxFuture<'_, ScheduleResult<u64>>;
    /// Forgets `id` (cancelled).
    fn cancel(&self, id: &str) -> BoxFuture<'_, ScheduleResult<()>>;
    /// When the next message falls due, if any.
    fn next_due(&self) -> BoxFuture<'_, ScheduleResult<Option<Timestamp>>>;
    /// Makes sure every entry is held: the database's pending messages, all of them
    /// (`complete`: at start, and when the backend lost its state), or those already
    /// due (which a crash between a commit and [`schedule`](Self::schedule) could
    /// have left out). Fences only move forward.
    fn sync(&self, entries: Vec<DueEntry>, complete: bool) -> BoxFuture<'_, ScheduleResult<()>>;
    /// Whether the backend lost its state since the last full [`sync`](Self::sync)
    /// (a Redis restarted without persistence).
    fn lost_state(&self) -> BoxFuture<'_, ScheduleResult<bool>>;
}

/// The time the scheduler and the outbox read.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
    /// How far this clock runs ahead of the system's (Redis adds it to its own
    /// TIME); zero in production.
    fn offset_millis(&self) -> i64 {
        0
    }
    /// Rung when the clock jumps (a test's), so whoever sleeps until a due time
    /// looks again; the system clock never jumps.
    fn jumps(&self) -> Option<&tokio::sync::Notify> {
        None
    }
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock a test moves forward, so due times and leases pass without waiting.
#[derive(Default)]
pub struct TestClock {
    offset: AtomicI64,
    jumped: tokio::sync::Notify,
}

impl TestClock {
    pub fn new() -> Arc<TestClock> {
        Arc::new(TestClock::default())
    }

    pub fn advance(&self, by: Duration) {
        self.offset
            .fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        self.jumped.notify_waiters();
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(Timestamp::now().millis() + self.offset_millis())
    }

    fn offset_millis(&self) -> i64 {
        self.offset.load(Ordering::SeqCst)
    }

    fn jumps(&self) -> Option<&tokio::sync::Notify> {
        Some(&self.jumped)
    }
}
