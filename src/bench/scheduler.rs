//! `contactd bench scheduler`: the Redis scheduler against BullMQ's delayed jobs.
//!
//! The same shape as the BullMQ anchor's run (`bench.js`): `n` reminders due over
//! `spread_ms`, starting `lead_ms` from now, scheduled in batches of 1,000, then
//! claimed by `workers` dispatchers (each as the outbox's: claim up to a batch with a
//! lease, "send" with a no-op, ack with the fence; sleep until the next due time
//! when nothing is due) and timed: lateness is the claim's arrival in the worker
//! minus the due time. The scheduler runs alone here — the database and the
//! providers are out of the loop on both sides — so this measures the part the
//! anchor does: holding due times and handing each out once. The last line printed
//! is one JSON object with the anchor's field names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use url::Url;

use crate::domain::Timestamp;
use crate::scheduler::{Clock, RedisScheduler, Scheduler, SchedulerLink, SystemClock};
use crate::store::schedule::DueEntry;

pub struct Params {
    pub redis_url: Url,
    pub n: usize,
    pub spread_ms: u64,
    pub lead_ms: u64,
    pub workers: usize,
    pub batch: usize,
}

/// One run; the JSON summary.
pub async fn run(p: Params) -> anyhow::Result<serde_json::Value> {
    let link = SchedulerLink::connect(&p.redis_url).await?;
    let prefix = format!("contactd-bench-{}", uuid::Uuid::now_v7().simple());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let scheduler = Arc::new(RedisScheduler::new(&link, &prefix, clock.clone()));
    let lease = Duration::from_secs(120);

    // Warm-up, not measured: loads the scripts.
    let warm: Vec<DueEntry> = (0..1000)
        .map(|i| DueEntry {
            id: format!("warm-{i}"),
            due: clock.now(),
            fence: 0,
        })
        .collect();
    scheduler.sync(warm, false).await?;
    while !scheduler.claim(1000, lease).await?.is_empty() {}

    let t0 = clock.now().millis() + p.lead_ms as i64;
    let due_of = |i: usize| t0 + (i as u64 * p.spread_ms / p.n as u64) as i64;
    let lateness = Arc::new(Mutex::new(Vec::with_capacity(p.n)));
    let seen = Arc::new(Mutex::new(HashMap::<usize, u32>::with_capacity(p.n)));
    let dispatched_at = Arc::new(Mutex::new(Vec::with_capacity(p.n)));

    // The dispatchers idle before anything is scheduled, as a daemon's would.
    let mut workers = Vec::new();
    for _ in 0..p.workers {
        let (scheduler, lateness, seen, dispatched_at) = (
            scheduler.clone(),
            lateness.clone(),
            seen.clone(),
            dispatched_at.clone(),
        );
        let (n, batch, spread) = (p.n, p.batch, p.spread_ms);
        workers.push(tokio::spawn(async move {
            let clock = SystemClock;
            loop {
                let claims = scheduler.claim(batch, lease).await?;
                let arrived = clock.now().millis();
                if claims.is_empty() {
                    if seen.lock().expect("not poisoned").len() >= n {
                        return anyhow::Ok(());
                    }
                    let wait = match scheduler.next_due().await? {
                        Some(at) => (at.millis() - clock.now().millis()).clamp(0, 50) as u64,
                        None => 5,
                    };
                    tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
                    continue;
                }
                // The batch's no-op sends run side by side, as sends to a provider
                // would; each is acked with its claim's fence when it is done.
                let mut sends = tokio::task::JoinSet::new();
                for claim in claims {
                    let scheduler = scheduler.clone();
                    sends.spawn(async move {
                        scheduler.ack(&claim, None).await?;
                        anyhow::Ok(claim.id.parse::<usize>()?)
                    });
                }
                while let Some(sent) = sends.join_next().await {
                    let i = sent??;
                    let due = t0 + (i as u64 * spread / n as u64) as i64;
                    lateness.lock().expect("not poisoned").push(arrived - due);
                    *seen.lock().expect("not poisoned").entry(i).or_default() += 1;
                    dispatched_at
                        .lock()
                        .expect("not poisoned")
                        .push(Instant::now());
                }
            }
        }));
    }

    // Schedule phase.
    let started = Instant::now();
    for chunk in (0..p.n).collect::<Vec<_>>().chunks(1000) {
        let entries = chunk
            .iter()
            .map(|&i| DueEntry {
                id: i.to_string(),
                due: Timestamp::from_millis(due_of(i)),
                fence: 0,
            })
            .collect();
        scheduler.sync(entries, false).await?;
    }
    let schedule_s = started.elapsed().as_secs_f64();

    let deadline = Duration::from_millis(p.lead_ms + p.spread_ms) + Duration::from_secs(60);
    for w in workers {
        tokio::time::timeout(deadline, w).await???;
    }
    scheduler.clear().await?;

    let mut late = lateness.lock().expect("not poisoned").clone();
    late.sort_unstable();
    let pct = |q: f64| {
        late.get(((late.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    let seen = seen.lock().expect("not poisoned");
    let duplicates: u32 = seen.values().map(|c| c - 1).sum();
    let mut times = dispatched_at.lock().expect("not poisoned").clone();
    times.sort_unstable();
    let dispatch_per_s = match (times.first(), times.last()) {
        (Some(a), Some(b)) if b > a => (times.len() - 1) as f64 / (*b - *a).as_secs_f64(),
        _ => 0.0,
    };
    Ok(serde_json::json!({
        "impl": "contactd",
        "n": p.n,
        "workers": p.workers,
        "batch": p.batch,
        "spread_ms": p.spread_ms,
        "schedule_per_s": (p.n as f64 / schedule_s).round(),
        "dispatch_per_s": dispatch_per_s.round(),
        "lateness_ms": {"p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99), "max": pct(1.0)},
        "within_10s": late.iter().filter(|l| **l <= 10_000).count() as f64 / p.n as f64,
        "processed": late.len(),
        "unique": seen.len(),
        "missing": p.n - seen.len(),
        "duplicates": duplicates,
    }))
}
