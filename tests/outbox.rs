//! The outbox shared by several daemons: three `contactd serve` processes on one
//! PostgreSQL, with one Redis or with none (the embedded scheduler), send every
//! message exactly once — counted at a stand-in Twilio REST API and at a real SMTP
//! server (aiosmtpd).
//!
//! The messages are committed before any daemon runs: the state a daemon killed
//! between committing (a new request and its acknowledgement, a reminder) and
//! sending leaves behind. With Redis (one of the test's own), Redis is killed and
//! restarted empty mid-run. And with a
//! short lease, one daemon is SIGKILLed mid-run and another SIGSTOPped past its
//! lease, then continued: what they had claimed is sent by the third, what they had
//! begun is looked for at Twilio before any resend, and the stopped one, continued,
//! sends nothing its lease no longer covers.

mod common;

use std::collections::HashSet;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::daemon::{Daemon, start_with};
use common::email::SmtpSink;
use common::twilio::{ACCOUNT_SID, AUTH_TOKEN, COUNCIL_NUMBER, FakeTwilio, PUBLIC_URL};
use common::{TestDatabase, test_settings};
use contactd::configuration::Backend;
use contactd::domain::{Channel, Timestamp};
use contactd::store::Store;

const MESSAGES: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_redis_send_each_message_exactly_once() {
    three_instances(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_the_embedded_scheduler_send_each_message_exactly_once() {
    three_instances(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_and_another_stopped_mid_run_leave_every_text_sent_once() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let db = TestDatabase::new(Backend::Postgres).await;
    let store = contactd::startup::open_store(&test_settings(&db))
        .await
        .unwrap();
    let twilio = FakeTwilio::start().await;
    for i in 0..MESSAGES {
        queue(&store, i * 2).await;
    }
    let prefix = format!("contactd-test-{}", uuid::Uuid::new_v4().simple());
    let env = [
        (
            "CONTACTD__SCHEDULER__REDIS_URL",
            common::redis_url().to_string(),
        ),
        ("CONTACTD__SCHEDULER__REDIS_PREFIX", prefix.clone()),
        ("CONTACTD__SCHEDULER__LEASE_SECONDS", "3".to_string()),
        ("CONTACTD__HTTP__PUBLIC_URL", PUBLIC_URL.to_string()),
        ("CONTACTD__SMS__ACCOUNT_SID", ACCOUNT_SID.to_string()),
        ("CONTACTD__SMS__AUTH_TOKEN", AUTH_TOKEN.to_string()),
        ("CONTACTD__SMS__FROM", COUNCIL_NUMBER.to_string()),
        ("CONTACTD__SMS__API_BASE", twilio.url.clone()),
    ];
    let notify_path = db.dir().join("notify.sock");
    let _notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut daemons: Vec<Daemon> = (0..3)
        .map(|_| start_with(&db, &notify_path, &env))
        .collect();
    let pid = |d: &Daemon| Pid::from_raw(d.child.id() as i32);

    until(&store, |settled| settled >= MESSAGES as i64 / 4).await;
    kill(pid(&daemons[0]), Signal::SIGKILL).unwrap();
    until(&store, |settled| settled >= MESSAGES as i64 / 2).await;
    kill(pid(&daemons[1]), Signal::SIGSTOP).unwrap();
    // The third sends the rest, the others' claims once their leases lapse.
    let done = tokio::spawn({
        let store = store.clone();
        async move {
            until(&store, |settled| settled == MESSAGES as i64).await;
        }
    });
    let r = done.await;
    if r.is_err() {
        for l in daemons[2].log.try_iter() {
            if !l.contains("DEBUG") {
                eprintln!("D2 {l}");
            }
        }
        panic!("stuck");
    }
    // The stopped one continues long after its lease, then stops gracefully: a
    // stop lets sends in progress finish, so whatever it would still do, it has done.
    kill(pid(&daemons[1]), Signal::SIGCONT).unwrap();
    kill(pid(&daemons[1]), Signal::SIGTERM).unwrap();
    let stopped = daemons[1].child.wait().unwrap();
    assert!(
        stopped.success(),
        "the continued daemon stops cleanly: {stopped}"
    );
    for d in &mut daemons {
        let _ = d.child.kill();
        let _ = d.child.wait();
    }

    let texts: Vec<String> = twilio
        .received()
        .into_iter()
        .filter_map(|form| form.into_iter().find(|(k, _)| k == "Body").map(|(_, v)| v))
        .collect();
    let distinct: HashSet<&String> = texts.iter().collect();
    assert_eq!(distinct.len(), MESSAGES, "every text sent");
    assert_eq!(texts.len(), MESSAGES, "no text twice");
    let unsettled = count(
        &store,
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM messages WHERE status IN ('pending', 'dispatching', 'unknown', 'failed', 'dead')",
    )
    .await;
    assert_eq!(unsettled, 0);
    common::forget_redis_keys(&prefix).await;
}

async fn three_instances(redis: bool) {
    let db = TestDatabase::new(Backend::Postgres).await;
    let store = contactd::startup::open_store(&test_settings(&db))
        .await
        .unwrap();
    let twilio = FakeTwilio::start().await;
    let sink = SmtpSink::start().await;
    let relay = sink.url();
    let sink = sink.collect();
    for i in 0..MESSAGES {
        queue(&store, i).await;
    }
    let prefix = format!("contactd-test-{}", uuid::Uuid::new_v4().simple());
    let mut private_redis = redis.then(common::PrivateRedis::start);
    let redis_url = private_redis.as_ref().map(|r| r.url()).unwrap_or_default();
    let env = [
        ("CONTACTD__SCHEDULER__REDIS_URL", redis_url),
        ("CONTACTD__SCHEDULER__REDIS_PREFIX", prefix.clone()),
        ("CONTACTD__HTTP__PUBLIC_URL", PUBLIC_URL.to_string()),
        ("CONTACTD__SMS__ACCOUNT_SID", ACCOUNT_SID.to_string()),
        ("CONTACTD__SMS__AUTH_TOKEN", AUTH_TOKEN.to_string()),
        ("CONTACTD__SMS__FROM", COUNCIL_NUMBER.to_string()),
        ("CONTACTD__SMS__API_BASE", twilio.url.clone()),
        ("CONTACTD__EMAIL__RELAY_URL", relay),
        (
            "CONTACTD__EMAIL__FROM",
            "Council <contact@council.example>".to_string(),
        ),
    ];
    let notify_path = db.dir().join("notify.sock");
    let _notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut daemons: Vec<Daemon> = (0..3)
        .map(|_| start_with(&db, &notify_path, &env))
        .collect();

    if let Some(r) = &mut private_redis {
        // Redis is killed and restarted empty while the work is under way: the
        // daemons reconnect and rebuild it from the database, and nothing is lost or
        // sent twice.
        until(&store, |settled| settled >= MESSAGES as i64 / 4).await;
        for d in &daemons {
            // What they logged so far, the rebuild at start included.
            d.log.try_iter().for_each(drop);
        }
        r.restart();
    }
    until(&store, |settled| settled == MESSAGES as i64).await;
    let mut rebuilds = 0;
    for d in &mut daemons {
        let _ = d.child.kill();
        let _ = d.child.wait();
        // The log ends with the process.
        rebuilds += d
            .log
            .iter()
            .filter(|l| l.contains("the scheduler is rebuilt from the database"))
            .count();
    }
    if redis {
        assert!(rebuilds >= 1, "Redis was rebuilt after its restart");
    }

    let texts: Vec<String> = twilio
        .received()
        .into_iter()
        .map(|form| {
            form.into_iter()
                .find(|(k, _)| k == "Body")
                .map(|(_, v)| v)
                .expect("a Body")
        })
        .collect();
    let distinct: HashSet<&String> = texts.iter().collect();
    assert_eq!(texts.len(), MESSAGES / 2, "texts sent");
    assert_eq!(distinct.len(), MESSAGES / 2, "no text twice");

    let mails = sink.finish().await;
    let subjects: HashSet<String> = mails
        .iter()
        .map(|m| {
            let data = m["data"].as_str().unwrap();
            data.lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .expect("a Subject")
                .to_string()
        })
        .collect();
    assert_eq!(mails.len(), MESSAGES / 2, "emails sent");
    assert_eq!(subjects.len(), MESSAGES / 2, "no email twice");

    let unsettled = count(
        &store,
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM messages WHERE status IN ('pending', 'dispatching', 'unknown', 'failed', 'dead')",
    )
    .await;
    assert_eq!(unsettled, 0);
}

/// Message `i`, committed and due now: texts to even numbers, emails to odd ones.
async fn queue(store: &Store, i: usize) {
    let (channel, address, subject) = if i.is_multiple_of(2) {
        (Channel::Sms, format!("+4477009{:05}", i), None)
    } else {
        (
            Channel::Email,
            format!("resident{i}@example.org"),
            Some(format!("Reminder {i}")),
        )
    };
    let body = format!("Reminder {i}: your collection is tomorrow.");
    common::queue_pending(
        store,
        channel,
        &address,
        subject.as_deref(),
        &body,
        Timestamp::now(),
    )
    .await;
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    use sqlx::Row;
    sqlx::query(sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get::<i64, _>("n")
}

/// Waits (up to 120 s) until the number of messages handed over satisfies `done`.
async fn until(store: &Store, done: impl Fn(i64) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let settled = count(
            store,
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM messages WHERE provider_sid IS NOT NULL",
        )
        .await;
        if done(settled) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            use sqlx::Row;
            let rows = sqlx::query(
                "SELECT channel, status, COALESCE(last_error, '') AS e, CAST(COUNT(*) AS BIGINT) AS n \
                 FROM messages GROUP BY channel, status, COALESCE(last_error, '')",
            )
            .fetch_all(store.pool())
            .await
            .unwrap();
            let by_status: Vec<String> = rows
                .iter()
                .map(|r| {
                    format!(
                        "{} {} {:?}: {}",
                        r.get::<String, _>("channel"),
                        r.get::<String, _>("status"),
                        r.get::<String, _>("e"),
                        r.get::<i64, _>("n")
                    )
                })
                .collect();
            panic!("{settled} messages handed over: {by_status:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
