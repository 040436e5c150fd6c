//! The scheduler suite: every backend (the embedded one on SQLite and on PostgreSQL,
//! Redis over PostgreSQL) passes the same tests, driven by a test clock: nothing
//! waits for a due time or a lease to pass.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestDatabase, test_settings};
use contactd::configuration::Backend;
use contactd::domain::message::status;
use contactd::domain::{Channel, Timestamp};
use contactd::scheduler::{Claim, Clock, Scheduler, SchedulerLink, TestClock};
use contactd::store::Store;

/// The three ways to run the suite.
#[derive(Debug, Clone, Copy)]
enum Setup {
    EmbeddedSqlite,
    EmbeddedPostgres,
    RedisPostgres,
}

macro_rules! on_every_scheduler {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded_sqlite() {
                    super::$name(super::Setup::EmbeddedSqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded_postgres() {
                    super::$name(super::Setup::EmbeddedPostgres).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    super::$name(super::Setup::RedisPostgres).await
                }
            }
        )*
    };
}

on_every_scheduler!(
    due_messages_are_claimed_once_each_with_a_fence,
    a_stalled_claimant_is_refused_by_the_fence,
    scheduling_twice_is_one_entry_and_a_moved_time_is_the_only_time,
    a_send_that_began_and_lapsed_is_never_begun_again,
    a_scheduler_that_lost_its_state_is_rebuilt_from_the_database,
);

const LEASE: Duration = Duration::from_secs(120);

struct Harness {
    store: Store,
    scheduler: Arc<dyn Scheduler>,
    clock: Arc<TestClock>,
    /// The Redis keys' prefix, on the Redis backend.
    redis: Option<String>,
    _db: TestDatabase,
}

impl Harness {
    async fn new(setup: Setup) -> Harness {
        let backend = match setup {
            Setup::EmbeddedSqlite => Backend::Sqlite,
            _ => Backend::Postgres,
        };
        let db = TestDatabase::new(backend).await;
        let mut settings = test_settings(&db);
        let store = contactd::startup::open_store(&settings).await.unwrap();
        let clock = TestClock::new();
        let (link, redis) = match setup {
            Setup::RedisPostgres => {
                let link = SchedulerLink::connect(&common::redis_url())
                    .await
                    .expect("Redis is required (scripts/test starts it)");
                let prefix = format!("contactd-test-{}", uuid::Uuid::new_v4().simple());
                settings.scheduler.redis_prefix = prefix.clone();
                (Some(link), Some(prefix))
            }
            _ => (None, None),
        };
        let scheduler = contactd::startup::open_scheduler_with_clock(
            &settings,
            &store,
            link.as_ref(),
            clock.clone(),
        );
        Harness {
            store,
            scheduler,
            clock,
            redis,
            _db: db,
        }
    }

    fn at(&self, from_now: Duration) -> Timestamp {
        Timestamp::from_millis(self.clock.now().millis() + from_now.as_millis() as i64)
    }

    /// A pending reminder in the outbox, due at `due`, handed to the scheduler.
    async fn reminder(&self, due: Timestamp) -> String {
        let id = common::queue_pending(
            &self.store,
            Channel::Sms,
            "+447700900123",
            None,
            "Your bulky waste collection is tomorrow.",
            due,
        )
        .await;
        self.scheduler.schedule(&id, due).await.unwrap();
        id
    }

    async fn claim(&self) -> Vec<Claim> {
        self.scheduler.claim(100, LEASE).await.unwrap()
    }

    /// What the dispatcher does with a claim before it sends: renew, then begin.
    async fn begin(&self, claim: &Claim) -> bool {
        if !self.scheduler.renew(claim, LEASE).await.unwrap() {
            return false;
        }
        self.store
            .begin_send(&claim.id, Some(claim.fence), self.clock.now(), LEASE)
            .await
            .unwrap()
            .is_some()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(prefix) = self.redis.take() {
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(common::forget_redis_keys(&prefix))
            })
            .join();
        }
    }
}

async fn due_messages_are_claimed_once_each_with_a_fence(setup: Setup) {
    let h = Harness::new(setup).await;
    let soon = h.reminder(h.at(Duration::from_secs(3600))).await;
    let later = h.reminder(h.at(Duration::from_secs(7200))).await;
    assert!(h.claim().await.is_empty(), "nothing is due yet");
    let next = h.scheduler.next_due().await.unwrap().expect("a due time");
    assert!(next.millis() <= h.at(Duration::from_secs(3600)).millis());

    h.clock.advance(Duration::from_secs(3600));
    let claims = h.claim().await;
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].id, soon);
    assert!(claims[0].fence >= 1);
    assert!(
        h.claim().await.is_empty(),
        "a claimed message is not claimed twice"
    );

    assert!(h.begin(&claims[0]).await);
    assert!(h.scheduler.ack(&claims[0], None).await.unwrap());

    h.clock.advance(Duration::from_secs(3600));
    let claims = h.claim().await;
    assert_eq!(claims.iter().map(|c| &c.id).collect::<Vec<_>>(), [&later]);
}

async fn a_stalled_claimant_is_refused_by_the_fence(setup: Setup) {
    let h = Harness::new(setup).await;
    let id = h.reminder(h.at(Duration::ZERO)).await;
    let stalled = h.claim().await.pop().expect("claimed");
    // The instance holding it stops (SIGSTOP, a long GC) past its lease.
    h.clock.advance(LEASE + Duration::from_secs(1));
    h.scheduler.reap().await.unwrap();
    let live = h
        .claim()
        .await
        .pop()
        .expect("claimed again once the lease lapsed");
    assert_eq!(live.id, id);
    assert!(live.fence > stalled.fence);

    // It wakes and tries to carry on: refused, before and after the live one began.
    assert!(
        !h.begin(&stalled).await,
        "a stale claim never begins a send"
    );
    assert!(h.begin(&live).await);
    assert!(!h.begin(&stalled).await);
    assert!(!h.scheduler.ack(&stalled, None).await.unwrap());
    assert!(h.scheduler.ack(&live, None).await.unwrap());
}

async fn scheduling_twice_is_one_entry_and_a_moved_time_is_the_only_time(setup: Setup) {
    let h = Harness::new(setup).await;
    let first = h.at(Duration::from_secs(600));
    let id = h.reminder(first).await;
    // The same schedule request again (a retry after a lost answer): one entry.
    h.scheduler.schedule(&id, first).await.unwrap();
    // The appointment moved a day later: only the new time sends.
    let moved = h.at(Duration::from_secs(600 + 86_400));
    h.store.reschedule(&id, moved).await.unwrap();
    h.scheduler.schedule(&id, moved).await.unwrap();
    h.clock.advance(Duration::from_secs(601));
    assert!(h.claim().await.is_empty(), "not at the old time");
    h.clock.advance(Duration::from_secs(86_400));
    let claims = h.claim().await;
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(claims[0].id, id);
    assert!(h.claim().await.is_empty());
}

async fn a_send_that_began_and_lapsed_is_never_begun_again(setup: Setup) {
    let h = Harness::new(setup).await;
    let id = h.reminder(h.at(Duration::ZERO)).await;
    let claim = h.claim().await.pop().expect("claimed");
    assert!(h.begin(&claim).await);
    // The instance dies mid-send: whether the message left is unknown.
    h.clock.advance(LEASE + Duration::from_secs(1));
    h.scheduler.reap().await.unwrap();
    for again in h.claim().await {
        assert!(!h.begin(&again).await, "never resent blind");
        h.scheduler.ack(&again, None).await.unwrap();
    }
    assert_eq!(
        h.store.expire_message_leases(h.clock.now()).await.unwrap(),
        1
    );
    let message = h.store.message(&id).await.unwrap();
    assert_eq!(message.status, status::UNKNOWN, "left for reconciliation");
    assert!(h.claim().await.is_empty());
}

async fn a_scheduler_that_lost_its_state_is_rebuilt_from_the_database(setup: Setup) {
    let h = Harness::new(setup).await;
    let mut ids = Vec::new();
    for minutes in [0, 0, 30] {
        ids.push(h.reminder(h.at(Duration::from_secs(minutes * 60))).await);
    }
    // A claim handed out before the loss…
    let before = h.claim().await;
    assert_eq!(before.len(), 2);
    if let Some(prefix) = &h.redis {
        // …then Redis restarts without persistence.
        common::forget_redis_keys(prefix).await;
        assert!(h.scheduler.lost_state().await.unwrap());
        h.scheduler
            .sync(h.store.pending_due(None).await.unwrap(), true)
            .await
            .unwrap();
        assert!(!h.scheduler.lost_state().await.unwrap());
    } else {
        assert!(
            !h.scheduler.lost_state().await.unwrap(),
            "the database is its own record"
        );
        h.clock.advance(LEASE + Duration::from_secs(1));
        h.scheduler.reap().await.unwrap();
    }
    h.clock.advance(Duration::from_secs(30 * 60));
    let after = h.claim().await;
    let mut claimed: Vec<&String> = after.iter().map(|c| &c.id).collect();
    claimed.sort();
    let mut expected: Vec<&String> = ids.iter().collect();
    expected.sort();
    assert_eq!(claimed, expected, "nothing lost");
    for old in &before {
        assert!(
            !h.begin(old).await,
            "a claim from before the loss stays stale"
        );
    }
    for new in &after {
        assert!(h.begin(new).await);
    }
}
