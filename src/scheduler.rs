//! Where reminder due-times are held: Redis in production, the database when no
//! Redis is configured (the embedded scheduler). This module owns the link to Redis
//! and proves it at start-up and on every readiness check, so a daemon configured for
//! Redis never runs without it. The reminder queue itself builds on this link.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use url::Url;

use crate::configuration::redact;

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
