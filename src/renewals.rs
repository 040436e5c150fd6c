//! Subscriptions residents renew (garden waste each year, a blue badge every three
//! years) and the renewal run that reminds them.
//!
//! Staff record a subscription and its expiry on the customer's record. The renewal
//! run, on a cron expression in Europe/London ([`LondonCron`]: a time in the spring
//! gap fires at the first valid instant, an ambiguous one once), queues into the
//! outbox every reminder of the configured offsets that falls due before the next
//! run, at its own time; a reminder whose time has already passed (the subscription
//! was recorded late, or the daemon was down) is sent at once, but only the latest
//! such one per expiry. Each reminder is keyed by subscription, expiry and offset,
//! and queued under the subscription's row lock, so runs on several instances, or a
//! run repeated after a restart, queue it once. A renewal moves the expiry: the old
//! expiry's reminders not yet sent are cancelled. Recording or renewing a
//! subscription queues what is already due at once, without waiting for the run.
//!
//! Reminders go on the resident's preferred channel and need their consent to
//! service messages; both are checked again when the reminder is sent.

use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyConnection;
use tokio_util::sync::CancellationToken;

use crate::configuration::{RenewalKind, RenewalSettings, Settings};
use crate::domain::message::{MessagePurpose, Occurrence, ReminderOf};
use crate::domain::{Actor, Timestamp};
use crate::outbound::{Outbound, OutboundError, OutboundMessage, Recipient, html_from_text};
use crate::scheduler::Clock;
use crate::scheduler::calendar::LondonCron;
use crate::store::audit::{self, Action, Entity};
use crate::store::subscriptions::{self, Subscription};
use crate::store::{Store, StoreError, customers};

const DAY_MS: i64 = 86_400_000;
/// Subscriptions looked at per page of a run.
const PAGE: i64 = 200;
/// How long the run loop sleeps at most before it looks at the clock again.
const MAX_NAP: Duration = Duration::from_secs(60);

/// What staff record or renew.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub kind: String,
    pub description: Option<String>,
    pub expires_at: Timestamp,
}

/// A subscription and the reminders queued for it just now (message ids, due times).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub subscription: Subscription,
    pub reminders: Vec<(String, Timestamp)>,
}

#[derive(Debug, thiserror::Error)]
pub enum RenewalError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone)]
pub struct Renewals {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    outbound: Outbound,
    settings: RenewalSettings,
    run: LondonCron,
    clock: Arc<dyn Clock>,
}

impl Renewals {
    pub fn new(
        store: Store,
        outbound: Outbound,
        settings: &Settings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Renewals {
            inner: Arc::new(Inner {
                store,
                outbound,
                settings: settings.renewals.clone(),
                // Validated with the configuration.
                run: settings
                    .renewals
                    .schedule()
                    .expect("renewals.run_cron was validated"),
                clock,
            }),
        }
    }

    pub async fn record(
        &self,
        actor: &Actor,
        customer_id: &str,
        new: &NewSubscription,
    ) -> Result<Recorded, RenewalError> {
        self.check(new)?;
        let store = &self.inner.store;
        let mut tx = store.begin().await?;
        customers::lock(&mut tx, customer_id).await?;
        let subscription = subscriptions::insert(
            &mut tx,
            customer_id,
            &new.kind,
            new.description.as_deref(),
            new.expires_at,
            &actor.label(),
        )
        .await?;
        let what = format!(
            "subscription {} recorded, expiring {}",
            subscription.kind, subscription.expires_at
        );
        audit::record(
            &mut tx,
            actor,
            Action::Create,
            Entity::Customer,
            customer_id,
            Some(&what),
        )
        .await?;
        let reminders = self.queue_due(&mut tx, actor, &subscription).await?;
        tx.commit().await?;
        self.scheduled(&reminders, &[]).await;
        Ok(Recorded {
            subscription,
            reminders,
        })
    }

    /// A new expiry: the old one's reminders not yet sent are cancelled.
    pub async fn renew(
        &self,
        actor: &Actor,
        id: &str,
        expires_at: Timestamp,
    ) -> Result<Recorded, RenewalError> {
        if expires_at <= self.inner.clock.now() {
            return Err(RenewalError::Invalid(
                "expires_at: must be in the future".into(),
            ));
        }
        let mut tx = self.inner.store.begin().await?;
        if !subscriptions::lock_active(&mut tx, id).await? {
            subscriptions::read(&mut tx, id).await?;
            return Err(StoreError::Conflict("the subscription was cancelled".into()).into());
        }
        let cancelled = subscriptions::cancel_reminders(&mut tx, id).await?;
        let subscription = subscriptions::renew(&mut tx, id, expires_at).await?;
        let what = format!(
            "subscription {} renewed, expiring {}",
            subscription.kind, subscription.expires_at
        );
        audit::record(
            &mut tx,
            actor,
            Action::Update,
            Entity::Customer,
            &subscription.customer_id,
            Some(&what),
        )
        .await?;
        let reminders = self.queue_due(&mut tx, actor, &subscription).await?;
        tx.commit().await?;
        self.scheduled(&reminders, &cancelled).await;
        Ok(Recorded {
            subscription,
            reminders,
        })
    }

    pub async fn cancel(&self, actor: &Actor, id: &str) -> Result<Subscription, RenewalError> {
        let mut tx = self.inner.store.begin().await?;
        let cancelled = subscriptions::cancel_reminders(&mut tx, id).await?;
        let subscription = subscriptions::cancel(&mut tx, id).await?;
        let what = format!("subscription {} cancelled", subscription.kind);
        audit::record(
            &mut tx,
            actor,
            Action::Update,
            Entity::Customer,
            &subscription.customer_id,
            Some(&what),
        )
        .await?;
        tx.commit().await?;
        self.scheduled(&[], &cancelled).await;
        Ok(subscription)
    }

    /// A customer's subscriptions, read (and audited) as part of their record.
    pub async fn of_customer(
        &self,
        actor: &Actor,
        customer_id: &str,
    ) -> Result<Vec<Subscription>, RenewalError> {
        let store = &self.inner.store;
        let mut conn = store.pool().acquire().await.map_err(StoreError::from)?;
        customers::read(&mut conn, customer_id).await?;
        let list = subscriptions::of_customer(&mut conn, customer_id).await?;
        drop(conn);
        store
            .audit(
                actor,
                Action::Read,
                Entity::Customer,
                customer_id,
                Some("subscriptions"),
            )
            .await?;
        Ok(list)
    }

    /// One renewal run: every active subscription whose reminders fall due before
    /// the next run gets them queued (once). How many were queued.
    pub async fn run(&self) -> Result<usize, RenewalError> {
        let now = self.inner.clock.now();
        let longest = self.inner.settings.longest_offset_days();
        let until = Timestamp::from_millis(self.horizon(now).millis() + longest * DAY_MS);
        let store = &self.inner.store;
        let mut queued = 0;
        let mut from = String::new();
        loop {
            let page = {
                let mut conn = store.pool().acquire().await.map_err(StoreError::from)?;
                subscriptions::expiring(&mut conn, now, until, &from, PAGE).await?
            };
            let Some(last) = page.last() else { break };
            from = last.id.clone();
            for subscription in page {
                let mut tx = store.begin().await?;
                if !subscriptions::lock_active(&mut tx, &subscription.id).await? {
                    continue;
                }
                let reminders = self
                    .queue_due(&mut tx, &Actor::System, &subscription)
                    .await?;
                tx.commit().await?;
                queued += reminders.len();
                self.scheduled(&reminders, &[]).await;
            }
        }
        metrics::counter!("contactd_renewal_reminders_queued_total").increment(queued as u64);
        Ok(queued)
    }

    /// Runs at start, then at each time of `renewals.run_cron`, until `stop`.
    pub async fn run_on_schedule(self, stop: CancellationToken) {
        let clock = &self.inner.clock;
        loop {
            match self.run().await {
                Ok(n) => tracing::info!(reminders = n, "renewal run"),
                Err(e) => {
                    tracing::error!(error = %e, "the renewal run failed; the next one will retry")
                }
            }
            let Some(next) = self.inner.run.next_after(clock.now()) else {
                tracing::error!("renewals.run_cron never fires again: no more renewal runs");
                return;
            };
            while clock.now() < next {
                let wait =
                    Duration::from_millis((next.millis() - clock.now().millis()).max(0) as u64);
                let jumped = async {
                    match clock.jumps() {
                        Some(jumps) => jumps.notified().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait.min(MAX_NAP)) => {}
                    _ = jumped => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }

    /// Until when a run must look ahead: the next run, with an hour to spare.
    fn horizon(&self, now: Timestamp) -> Timestamp {
        let next = self
            .inner
            .run
            .next_after(now)
            .unwrap_or(Timestamp::from_millis(now.millis() + DAY_MS));
        Timestamp::from_millis(next.millis() + 3_600_000)
    }

    fn check(&self, new: &NewSubscription) -> Result<(), RenewalError> {
        if !self.inner.settings.kinds.contains_key(&new.kind) {
            let known: Vec<&str> = self
                .inner
                .settings
                .kinds
                .keys()
                .map(String::as_str)
                .collect();
            return Err(RenewalError::Invalid(format!(
                "kind: one of {}",
                known.join(", ")
            )));
        }
        if new.expires_at <= self.inner.clock.now() {
            return Err(RenewalError::Invalid(
                "expires_at: must be in the future".into(),
            ));
        }
        if let Some(d) = &new.description
            && (d.chars().count() > 200 || d.chars().any(char::is_control))
        {
            return Err(RenewalError::Invalid(
                "description: at most 200 characters of text".into(),
            ));
        }
        Ok(())
    }

    /// Queues, in the caller's transaction (which holds the subscription's lock),
    /// the reminders of `s` due before the next run that are not queued yet.
    async fn queue_due(
        &self,
        tx: &mut AnyConnection,
        actor: &Actor,
        s: &Subscription,
    ) -> Result<Vec<(String, Timestamp)>, RenewalError> {
        let Some(kind) = self.inner.settings.kinds.get(&s.kind) else {
            tracing::warn!(kind = %s.kind, "a subscription of a kind no longer configured gets no reminders");
            return Ok(Vec::new());
        };
        let now = self.inner.clock.now();
        let due = reminder_times(kind, s.expires_at, now, self.horizon(now));
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let customer = customers::read(tx, &s.customer_id).await?;
        let Some(to) = self.inner.outbound.recipient_for(&customer.details) else {
            return Ok(Vec::new());
        };
        let (date, _) = s.expires_at.in_london();
        let fill = |template: &str| {
            template
                .replace("{name}", &kind.name)
                .replace("{date}", &date)
                .replace(
                    "{description}",
                    s.description.as_deref().unwrap_or(&kind.name),
                )
        };
        let body = fill(&kind.text);
        let (subject, html) = match to {
            Recipient::Email(_) => (Some(fill(&kind.subject)), Some(html_from_text(&body))),
            Recipient::Sms(_) => (None, None),
        };
        let mut queued = Vec::new();
        for (days, at) in due {
            let key = format!("renewal:{}:{}:{days}d", s.id, s.expires_at.millis());
            if subscriptions::reminder_queued(tx, &key).await? {
                continue;
            }
            let message = OutboundMessage {
                to: to.clone(),
                subject: subject.clone(),
                body: body.clone(),
                html: html.clone(),
                purpose: MessagePurpose::Reminder,
                request: None,
                customer_id: Some(s.customer_id.clone()),
                occurrence: Some(Occurrence {
                    of: ReminderOf::Subscription(s.id.clone()),
                    key,
                }),
            };
            let id = self
                .inner
                .outbound
                .queue(tx, actor, &message, at)
                .await
                .map_err(|e| match e {
                    OutboundError::Store(e) => RenewalError::Store(e),
                    other => RenewalError::Invalid(other.to_string()),
                })?;
            queued.push((id, at));
        }
        Ok(queued)
    }

    async fn scheduled(&self, new: &[(String, Timestamp)], cancelled: &[String]) {
        for (id, at) in new {
            self.inner.outbound.scheduled(id, *at).await;
        }
        for id in cancelled {
            self.inner.outbound.cancelled(id).await;
        }
    }
}

/// The reminders of one expiry to queue now: (offset in days, due time). Those due
/// before `until` at their own time; of those whose time has passed, only the one
/// nearest the expiry, at once. Nothing once the subscription has expired.
fn reminder_times(
    kind: &RenewalKind,
    expires_at: Timestamp,
    now: Timestamp,
    until: Timestamp,
) -> Vec<(u32, Timestamp)> {
    if expires_at <= now {
        return Vec::new();
    }
    let mut due: Vec<(u32, Timestamp)> = Vec::new();
    let mut latest_missed: Option<(u32, Timestamp)> = None;
    for &days in &kind.offsets_days {
        let at = Timestamp::from_millis(expires_at.millis() - i64::from(days) * DAY_MS);
        if at <= now {
            if latest_missed.is_none_or(|(_, t)| at > t) {
                latest_missed = Some((days, at));
            }
        } else if at <= until {
            due.push((days, at));
        }
    }
    if let Some((days, _)) = latest_missed {
        due.push((days, now));
    }
    due.sort_by_key(|(_, at)| *at);
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind() -> RenewalKind {
        RenewalKind {
            name: "garden waste collection".into(),
            offsets_days: vec![30, 7],
            text: "{date}".into(),
            subject: "{date}".into(),
        }
    }

    fn day(n: i64) -> Timestamp {
        Timestamp::from_millis(1_800_000_000_000 + n * DAY_MS)
    }

    #[test]
    fn only_what_falls_due_before_the_next_run() {
        // Expiry on day 40; now day 0, next run day 1: nothing yet.
        assert!(reminder_times(&kind(), day(40), day(0), day(1)).is_empty());
        // Now day 9.5, next run day 10.5: the 30-day reminder at its time.
        let now = Timestamp::from_millis(day(9).millis() + DAY_MS / 2);
        let until = Timestamp::from_millis(day(10).millis() + DAY_MS / 2);
        assert_eq!(
            reminder_times(&kind(), day(40), now, until),
            [(30, day(10))]
        );
    }

    #[test]
    fn of_the_missed_ones_only_the_nearest_the_expiry_goes_and_at_once() {
        // Recorded on day 35 with expiry on day 40: both times passed; the 7-day one
        // goes now.
        assert_eq!(
            reminder_times(&kind(), day(40), day(35), day(36)),
            [(7, day(35))]
        );
        // Expired: nothing.
        assert!(reminder_times(&kind(), day(40), day(41), day(42)).is_empty());
    }
}
