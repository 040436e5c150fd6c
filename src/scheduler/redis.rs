//! The Redis scheduler: due times in a sorted set, claims in another (scored by
//! lease deadline), fences in a hash, all moved by Lua scripts so each step is
//! atomic, and all timed by Redis's own clock (`TIME`), so instances whose clocks
//! disagree still agree on what is due. Nothing waits on a blocking command's
//! timeout (Redis fires those on its `hz` tick): the dispatcher sleeps until the
//! next due time it read, or until woken.
//!
//! Every key carries one hash tag (`{prefix}:…`), so the scripts work on Redis
//! Cluster. Redis holds only due times: the database is the truth, and a Redis that
//! lost its state (restarted without persistence) is rebuilt from it. The link is
//! proven at start-up and on every readiness check.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use url::Url;

use super::{BoxFuture, Claim, Clock, ScheduleResult, Scheduler};
use crate::configuration::redact;
use crate::domain::Timestamp;
use crate::store::schedule::DueEntry;

/// A live, self-reconnecting connection to the scheduler's Redis.
#[derive(Clone)]
pub struct SchedulerLink {
    conn: ConnectionManager,
}

#[derive(Debug, thiserror::Error)]
#[error("scheduler.redis_url: cannot reach {url}: {source}")]
pub struct SchedulerError {
    url: String,
    source: redis::RedisError,
}

impl SchedulerLink {
    pub async fn connect(url: &Url) -> Result<Self, SchedulerError> {
        let fail = |source| SchedulerError {
            url: redact(url.as_str()),
            source,
        };
        let client = redis::Client::open(url.as_str()).map_err(fail)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(1);
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(fail)?;
        let link = SchedulerLink { conn };
        link.ping().await.map_err(fail)?;
        Ok(link)
    }

    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
        let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
        debug_assert_eq!(pong, "PONG");
        Ok(())
    }
}

/// Now, by Redis's clock plus the test clock's offset (zero in production), in ms.
const NOW: &str = "local t = redis.call('TIME') \
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1]) ";

/// KEYS due, lease. ARGV offset, id, due. A message in flight is left to its claim.
const SCHEDULE: &str = "if redis.call('ZSCORE', KEYS[2], ARGV[2]) then return 0 end \
    redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2]) return 1";

/// KEYS due, lease, fence. ARGV offset, lease ms, max. Returns id, fence, id, fence…
const CLAIM: &str = "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3])) \
    local out = {} \
    for _, id in ipairs(ids) do \
      redis.call('ZREM', KEYS[1], id) \
      redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), id) \
      out[#out + 1] = id \
      out[#out + 1] = redis.call('HINCRBY', KEYS[3], id, 1) \
    end return out";

/// KEYS lease, fence. ARGV offset, id, fence, lease ms.
const RENEW: &str = "if redis.call('HGET', KEYS[2], ARGV[2]) ~= ARGV[3] then return 0 end \
    local deadline = redis.call('ZSCORE', KEYS[1], ARGV[2]) \
    if not deadline or tonumber(deadline) < now then return 0 end \
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2]) return 1";

/// KEYS due, lease, fence. ARGV offset, id, fence, again ('' for settled).
const ACK: &str = "if redis.call('HGET', KEYS[3], ARGV[2]) ~= ARGV[3] then return 0 end \
    redis.call('ZREM', KEYS[2], ARGV[2]) \
    if ARGV[4] ~= '' then redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2]) \
    else redis.call('HDEL', KEYS[3], ARGV[2]) end return 1";

/// KEYS due, lease. ARGV offset. Expired claims back to due, now.
const REAP: &str = "local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now) \
    for _, id in ipairs(ids) do \
      redis.call('ZREM', KEYS[2], id) \
      redis.call('ZADD', KEYS[1], now, id) \
    end return #ids";

/// KEYS due, lease, fence, epoch. ARGV offset, full ('1' or '0'), then id, due,
/// fence triples. A fence never goes backwards: one Redis lost starts far above
/// the database's (which knows only claims that began a send), so a claim handed
/// out before the loss stays stale.
const SYNC: &str = "for i = 3, #ARGV, 3 do \
      local id = ARGV[i] \
      if not redis.call('ZSCORE', KEYS[2], id) and not redis.call('ZSCORE', KEYS[1], id) then \
        redis.call('ZADD', KEYS[1], ARGV[i + 1], id) \
      end \
      local held = redis.call('HGET', KEYS[3], id) \
      local known = tonumber(ARGV[i + 2]) \
      if not held then redis.call('HSET', KEYS[3], id, known + 1048576) \
      elseif known > tonumber(held) then redis.call('HSET', KEYS[3], id, known) end \
    end \
    if ARGV[2] == '1' then redis.call('SET', KEYS[4], now) end return 1";

/// The scheduler on Redis.
pub struct RedisScheduler {
    conn: ConnectionManager,
    clock: Arc<dyn Clock>,
    due: String,
    lease: String,
    fence: String,
    epoch: String,
    scripts: Scripts,
}

struct Scripts {
    schedule: Script,
    claim: Script,
    renew: Script,
    ack: Script,
    reap: Script,
    sync: Script,
}

impl RedisScheduler {
    /// `prefix` names this deployment's keys (`{prefix}:due`, …): instances that
    /// share the work share it.
    pub fn new(link: &SchedulerLink, prefix: &str, clock: Arc<dyn Clock>) -> Self {
        let key = |name: &str| format!("{{{prefix}}}:{name}");
        let timed = |body: &str| Script::new(&format!("{NOW}{body}"));
        RedisScheduler {
            conn: link.conn.clone(),
            clock,
            due: key("due"),
            lease: key("lease"),
            fence: key("fence"),
            epoch: key("epoch"),
            scripts: Scripts {
                schedule: Script::new(SCHEDULE),
                claim: timed(CLAIM),
                renew: timed(RENEW),
                ack: Script::new(ACK),
                reap: timed(REAP),
                sync: timed(SYNC),
            },
        }
    }

    fn offset(&self) -> i64 {
        self.clock.offset_millis()
    }

    /// Deletes this prefix's keys (a benchmark's, when it is done).
    pub async fn clear(&self) -> ScheduleResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(&self.due)
            .arg(&self.lease)
            .arg(&self.fence)
            .arg(&self.epoch)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }
}

impl Scheduler for RedisScheduler {
    fn schedule(&self, id: &str, due: Timestamp) -> BoxFuture<'_, ScheduleResult<()>> {
        let id = id.to_string();
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let _: i64 = self
                .scripts
                .schedule
                .key(&self.due)
                .key(&self.lease)
                .arg(self.offset())
                .arg(id)
                .arg(due.millis())
                .invoke_async(&mut conn)
                .await?;
            Ok(())
        })
    }

    fn claim(&self, max: usize, lease: Duration) -> BoxFuture<'_, ScheduleResult<Vec<Claim>>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let flat: Vec<redis::Value> = self
                .scripts
                .claim
                .key(&self.due)
                .key(&self.lease)
                .key(&self.fence)
                .arg(self.offset())
                .arg(lease.as_millis() as i64)
                .arg(max)
                .invoke_async(&mut conn)
                .await?;
            let mut claims = Vec::with_capacity(flat.len() / 2);
            for pair in flat.chunks(2) {
                let id: String = redis::from_redis_value_ref(&pair[0])?;
                let fence: i64 = redis::from_redis_value_ref(&pair[1])?;
                claims.push(Claim { id, fence });
            }
            Ok(claims)
        })
    }

    fn renew(&self, claim: &Claim, lease: Duration) -> BoxFuture<'_, ScheduleResult<bool>> {
        let claim = claim.clone();
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let done: i64 = self
                .scripts
                .renew
                .key(&self.lease)
                .key(&self.fence)
                .arg(self.offset())
                .arg(&claim.id)
                .arg(claim.fence)
                .arg(lease.as_millis() as i64)
                .invoke_async(&mut conn)
                .await?;
            Ok(done == 1)
        })
    }

    fn ack(&self, claim: &Claim, again: Option<Timestamp>) -> BoxFuture<'_, ScheduleResult<bool>> {
        let claim = claim.clone();
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let done: i64 = self
                .scripts
                .ack
                .key(&self.due)
                .key(&self.lease)
                .key(&self.fence)
                .arg(self.offset())
                .arg(&claim.id)
                .arg(claim.fence)
                .arg(again.map(|t| t.millis().to_string()).unwrap_or_default())
                .invoke_async(&mut conn)
                .await?;
            Ok(done == 1)
        })
    }

    fn reap(&self) -> BoxFuture<'_, ScheduleResult<u64>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let reaped: u64 = self
                .scripts
                .reap
                .key(&self.due)
                .key(&self.lease)
                .arg(self.offset())
                .invoke_async(&mut conn)
                .await?;
            Ok(reaped)
        })
    }

    fn cancel(&self, id: &str) -> BoxFuture<'_, ScheduleResult<()>> {
        let id = id.to_string();
        Box::pin(async move {
            let mut conn = self.conn.clone();
            // Only the due entry: a claim in flight is settled by its holder, whose
            // send the database refuses (the message is no longer pending).
            let _: i64 = redis::cmd("ZREM")
                .arg(&self.due)
                .arg(&id)
                .query_async(&mut conn)
                .await?;
            Ok(())
        })
    }

    fn next_due(&self) -> BoxFuture<'_, ScheduleResult<Option<Timestamp>>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let first: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(&self.due)
                .arg(0)
                .arg(0)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await?;
            // Due by Redis's clock, read as this one's: close enough to sleep by.
            Ok(first
                .first()
                .map(|(_, score)| Timestamp::from_millis(*score as i64)))
        })
    }

    fn sync(&self, entries: Vec<DueEntry>, complete: bool) -> BoxFuture<'_, ScheduleResult<()>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            // In slices, so no one script holds Redis for long; the last one marks
            // a complete rebuild done.
            let mut slices: Vec<&[DueEntry]> = entries.chunks(500).collect();
            if slices.is_empty() {
                slices.push(&[]);
            }
            let last = slices.len() - 1;
            for (n, slice) in slices.into_iter().enumerate() {
                let full = if complete && n == last { "1" } else { "0" };
                let mut invocation = self.scripts.sync.prepare_invoke();
                invocation
                    .key(&self.due)
                    .key(&self.lease)
                    .key(&self.fence)
                    .key(&self.epoch)
                    .arg(self.offset())
                    .arg(full);
                for e in slice {
                    invocation.arg(&e.id).arg(e.due.millis()).arg(e.fence);
                }
                let _: i64 = invocation.invoke_async(&mut conn).await?;
            }
            Ok(())
        })
    }

    fn lost_state(&self) -> BoxFuture<'_, ScheduleResult<bool>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let present: i64 = redis::cmd("EXISTS")
                .arg(&self.epoch)
                .query_async(&mut conn)
                .await?;
            Ok(present == 0)
        })
    }
}
