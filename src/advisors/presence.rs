//! Where each advisor is now (available, ringing, on a call, wrap-up, away), and the
//! callers waiting for them, on this instance. Callers are served in the order of
//! their [`Rank`]: when they joined (kept when they ring back, see the voice
//! channel's queue) less their queue's head start. The head start is bounded, so a
//! caller in a queue without one is served first once they have waited that much
//! longer: a priority orders queues, it never starves one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

use super::{AdvisorState, ChosenState};
use crate::domain::Timestamp;

/// Every advisor's state on this instance, and the callers waiting for them. An
/// advisor not seen yet is available (their phone's registration says whether they
/// can be reached). Callers who want the same advisors are served in rank order,
/// across queues.
pub struct Presence {
    states: Mutex<HashMap<String, Entry>>,
    /// Offers each advisor let ring out in a row (an answer starts again at 0).
    unanswered: Mutex<HashMap<String, u32>>,
    /// That many in a row and the advisor is set away (paused).
    away_after: u32,
    /// Callers waiting, first served first.
    waiting: Mutex<BTreeMap<Rank, Waiter>>,
    next_ticket: std::sync::atomic::AtomicU64,
    /// Rung whenever an advisor may have become available.
    changed: tokio::sync::Notify,
}

/// A waiting caller's place in the order callers are served: when they joined
/// their queue less its head start (ms since the epoch), then the order of arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rank {
    served_as_if_since: i64,
    ticket: u64,
}

struct Waiter {
    /// The queue they wait in (a transfer moves them).
    service: String,
    /// When they joined it (or first joined, if they rang back).
    entered: Timestamp,
    /// The advisors they would take now.
    wants: Vec<String>,
}

/// Callers waiting in one queue now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLength {
    pub callers: usize,
    /// When the one who has waited longest joined.
    pub longest_since: Option<Timestamp>,
}

/// Why an offer was not taken, as the event feed and the advisor's state tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotTaken {
    /// The advisor declined (486, 600, 603): they are there, and chose.
    Declined,
    /// It rang out: counted towards `queues.unanswered_before_away`.
    NoAnswer,
    /// The phone could not be reached or refused the call otherwise.
    Unreachable,
    /// The caller hung up while it rang.
    CallerLeft,
}

impl From<NotTaken> for crate::domain::recording::LegOutcome {
    fn from(why: NotTaken) -> Self {
        use crate::domain::recording::LegOutcome;
        match why {
            NotTaken::Declined => LegOutcome::Declined,
            NotTaken::NoAnswer => LegOutcome::NoAnswer,
            NotTaken::Unreachable => LegOutcome::Unreachable,
            NotTaken::CallerLeft => LegOutcome::CallerLeft,
        }
    }
}

/// A caller's place among those waiting for advisors; dropped when they stop waiting.
pub struct Waiting<'a> {
    presence: &'a Presence,
    rank: Rank,
}

impl Waiting<'_> {
    /// 1 for the caller first in line in their queue.
    pub fn position(&self) -> usize {
        let waiting = self.presence.waiting.lock().expect("not poisoned");
        let Some(me) = waiting.get(&self.rank) else {
            return 1;
        };
        waiting
            .range(..self.rank)
            .filter(|(_, w)| w.service == me.service)
            .count()
            + 1
    }

    /// A transfer puts the caller in another queue, keeping their rank.
    pub fn moved_to(&self, service: &str) {
        let mut waiting = self.presence.waiting.lock().expect("not poisoned");
        if let Some(me) = waiting.get_mut(&self.rank) {
            me.service = service.to_string();
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.presence
            .waiting
            .lock()
            .expect("not poisoned")
            .remove(&self.rank);
        // Someone behind may now take an advisor this caller was first for.
        self.presence.changed.notify_waiters();
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: AdvisorState,
    /// When the state began: the longest idle is the longest available.
    since: Instant,
    wrap_up_until: Option<Instant>,
}

impl Entry {
    fn now(&self, at: Instant) -> AdvisorState {
        match (self.state, self.wrap_up_until) {
            (AdvisorState::WrapUp, Some(until)) if at >= until => AdvisorState::Available,
            (state, _) => state,
        }
    }

    /// Since when the advisor has been idle (for longest-idle first).
    fn idle_since(&self) -> Instant {
        self.wrap_up_until.unwrap_or(self.since)
    }
}

impl Presence {
    /// Advisors set away after `away_after` offers in a row not answered.
    pub fn new(away_after: u32) -> Presence {
        Presence {
            states: Mutex::default(),
            unanswered: Mutex::default(),
            away_after: away_after.max(1),
            waiting: Mutex::default(),
            next_ticket: std::sync::atomic::AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    pub fn state(&self, id: &str) -> AdvisorState {
        let states = self.states.lock().expect("not poisoned");
        states
            .get(id)
            .map_or(AdvisorState::Available, |e| e.now(Instant::now()))
    }

    fn set(&self, id: &str, state: AdvisorState, wrap_up_until: Option<Instant>) {
        let mut states = self.states.lock().expect("not poisoned");
        states.insert(
            id.to_string(),
            Entry {
                state,
                since: Instant::now(),
                wrap_up_until,
            },
        );
        drop(states);
        self.changed.notify_waiters();
    }

    pub(super) fn choose(&self, id: &str, state: ChosenState) {
        let state = match state {
            ChosenState::Available => AdvisorState::Available,
            ChosenState::Away => AdvisorState::Away,
        };
        self.set(id, state, None);
    }

    /// A caller joins `service`'s queue, served as if they had joined `head_start`
    /// before `entered`; `None` when `max_length` callers wait in it already.
    pub fn start_waiting(
        &self,
        service: &str,
        entered: Timestamp,
        head_start: Duration,
        max_length: usize,
    ) -> Option<Waiting<'_>> {
        let mut waiting = self.waiting.lock().expect("not poisoned");
        if waiting.values().filter(|w| w.service == service).count() >= max_length {
            return None;
        }
        let rank = Rank {
            served_as_if_since: entered
                .millis()
                .saturating_sub(i64::try_from(head_start.as_millis()).unwrap_or(i64::MAX)),
            ticket: self
                .next_ticket
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        waiting.insert(
            rank,
            Waiter {
                service: service.to_string(),
                entered,
                wants: Vec::new(),
            },
        );
        Some(Waiting {
            presence: self,
            rank,
        })
    }

    /// How many callers wait in `service`'s queue, and since when the first.
    pub fn queue_length(&self, service: &str) -> QueueLength {
        let waiting = self.waiting.lock().expect("not poisoned");
        waiting
            .values()
            .filter(|w| w.service == service)
            .fold(QueueLength::default(), |q, w| QueueLength {
                callers: q.callers + 1,
                longest_since: Some(q.longest_since.map_or(w.entered, |t| t.min(w.entered))),
            })
    }

    /// Takes, for the caller `me`, the longest-idle available advisor among
    /// `candidates` that no one waiting longer would take (they are ringing from now
    /// on, so no other caller is offered them).
    pub fn reserve(&self, me: &Waiting<'_>, candidates: &[&str]) -> Option<String> {
        let now = Instant::now();
        let mut waiting = self.waiting.lock().expect("not poisoned");
        if let Some(w) = waiting.get_mut(&me.rank) {
            w.wants = candidates.iter().map(|c| c.to_string()).collect();
        }
        let mut states = self.states.lock().expect("not poisoned");
        let available = |id: &str| {
            states
                .get(id)
                .is_none_or(|e| e.now(now) == AdvisorState::Available)
        };
        // An earlier caller who would take an available advisor has them first.
        let promised: std::collections::HashSet<&str> = waiting
            .range(..me.rank)
            .flat_map(|(_, w)| w.wants.iter().map(String::as_str))
            .filter(|id| available(id))
            .collect();
        // Never seen: idle since before anyone who has taken a call.
        let chosen = candidates
            .iter()
            .filter(|id| available(id) && !promised.contains(**id))
            .min_by_key(|id| states.get(**id).map(Entry::idle_since))?
            .to_string();
        states.insert(
            chosen.clone(),
            Entry {
                state: AdvisorState::Ringing,
                since: now,
                wrap_up_until: None,
            },
        );
        // While this offer rings, this caller holds no claim on anyone else.
        if let Some(w) = waiting.get_mut(&me.rank) {
            w.wants.clear();
        }
        Some(chosen)
    }

    /// The offer was answered.
    pub fn on_call(&self, id: &str) {
        self.unanswered.lock().expect("not poisoned").remove(id);
        self.set(id, AdvisorState::OnCall, None);
    }

    /// The offer was not taken: back to available, unless it is the advisor's
    /// `away_after`th offer in a row left to ring out (they are not at their desk:
    /// set away until they or staff say otherwise). A decline is a choice made at
    /// the desk, and an unreachable phone is the phone's fault: neither counts.
    /// The advisor's state now.
    pub fn not_taken(&self, id: &str, why: NotTaken) -> AdvisorState {
        let away = why == NotTaken::NoAnswer && {
            let mut unanswered = self.unanswered.lock().expect("not poisoned");
            let n = unanswered.entry(id.to_string()).or_insert(0);
            *n += 1;
            if *n >= self.away_after {
                unanswered.remove(id);
                true
            } else {
                false
            }
        };
        let state = if away {
            AdvisorState::Away
        } else {
            AdvisorState::Available
        };
        self.set(id, state, None);
        state
    }

    /// The call ended: wrap-up for `time`, then available.
    pub fn wrap_up(&self, id: &str, time: Duration) {
        // (Callers waiting look again at least once a second, so the end of a
        // wrap-up needs no wake-up of its own.)
        self.set(id, AdvisorState::WrapUp, Some(Instant::now() + time));
    }

    /// Waits until an advisor may have become available.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller joining `service` `at` seconds into the test, with `head_start` seconds.
    fn join<'a>(presence: &'a Presence, service: &str, at: i64, head_start: u64) -> Waiting<'a> {
        presence
            .start_waiting(
                service,
                Timestamp::from_millis(1_800_000_000_000 + at * 1000),
                Duration::from_secs(head_start),
                10,
            )
            .expect("room in the queue")
    }

    #[test]
    fn an_advisor_is_set_away_after_three_offers_in_a_row_left_to_ring() {
        let presence = Presence::new(3);
        let ring_out = |n: usize| {
            for _ in 0..n {
                presence.not_taken("a", NotTaken::NoAnswer);
            }
        };
        ring_out(2);
        assert_eq!(presence.state("a"), AdvisorState::Available);
        // Declines and unreachable phones neither count nor start the count again.
        presence.not_taken("a", NotTaken::Declined);
        presence.not_taken("a", NotTaken::Unreachable);
        assert_eq!(presence.state("a"), AdvisorState::Available);
        ring_out(1);
        assert_eq!(
            presence.state("a"),
            AdvisorState::Away,
            "the third in a row"
        );
        // Back, and an answered offer starts the count again.
        presence.choose("a", ChosenState::Available);
        ring_out(2);
        presence.on_call("a");
        ring_out(2);
        assert_eq!(presence.state("a"), AdvisorState::Available);
    }

    #[test]
    fn the_longest_waiting_caller_is_served_first_and_the_longest_idle_advisor_first() {
        let presence = Presence::new(3);
        let first = join(&presence, "waste", 0, 0);
        let second = join(&presence, "waste", 0, 0);
        // The first caller wants "a" (away for now); the second comes to reserve first.
        presence.choose("a", ChosenState::Away);
        assert_eq!(presence.reserve(&first, &["a"]), None);
        presence.choose("a", ChosenState::Available);
        assert_eq!(
            presence.reserve(&second, &["a"]),
            None,
            "a is the first caller's"
        );
        assert_eq!(presence.reserve(&first, &["a"]).as_deref(), Some("a"));
        assert_eq!(presence.state("a"), AdvisorState::Ringing);
        // Once the first caller has gone, nobody blocks the second.
        presence.not_taken("a", NotTaken::Declined);
        drop(first);
        assert_eq!(presence.reserve(&second, &["a"]).as_deref(), Some("a"));

        // Longest idle first: b finished a call after c did.
        let third = join(&presence, "waste", 0, 0);
        let long_ago = Instant::now() - Duration::from_secs(60);
        for (id, ended) in [("c", long_ago), ("b", long_ago + Duration::from_secs(30))] {
            presence.states.lock().unwrap().insert(
                id.into(),
                Entry {
                    state: AdvisorState::WrapUp,
                    since: ended,
                    wrap_up_until: Some(ended),
                },
            );
        }
        assert_eq!(presence.reserve(&third, &["b", "c"]).as_deref(), Some("c"));
        assert_eq!(presence.reserve(&third, &["b", "c"]).as_deref(), Some("b"));
        assert_eq!(presence.reserve(&third, &["b", "c"]), None, "both ringing");
    }

    #[test]
    fn a_queue_with_a_head_start_goes_first_but_never_starves_another() {
        let presence = Presence::new(3);
        // Housing has a 60 s head start over waste.
        let waste = join(&presence, "waste", 0, 0);
        let housing = join(&presence, "housing", 30, 60);
        // Both want "a", away for now.
        presence.choose("a", ChosenState::Away);
        assert_eq!(presence.reserve(&housing, &["a"]), None);
        presence.choose("a", ChosenState::Available);
        assert_eq!(
            presence.reserve(&waste, &["a"]),
            None,
            "the housing caller, 30 s later, counts as having waited 30 s longer"
        );
        assert_eq!(presence.reserve(&housing, &["a"]).as_deref(), Some("a"));
        presence.not_taken("a", NotTaken::Declined);
        drop(housing);
        // Past the head start, the longer wait wins whatever the queue.
        let housing = join(&presence, "housing", 61, 60);
        presence.choose("a", ChosenState::Away);
        assert_eq!(presence.reserve(&waste, &["a"]), None);
        presence.choose("a", ChosenState::Available);
        assert_eq!(presence.reserve(&housing, &["a"]), None);
        assert_eq!(presence.reserve(&waste, &["a"]).as_deref(), Some("a"));
        drop(housing);
    }

    #[test]
    fn positions_are_counted_per_queue_and_a_full_queue_takes_nobody() {
        let presence = Presence::new(3);
        let a = join(&presence, "waste", 0, 0);
        let b = join(&presence, "housing", 1, 0);
        let c = join(&presence, "waste", 2, 0);
        // One who rang back keeps the time they first joined: ahead of both.
        let d = join(&presence, "waste", -100, 0);
        assert_eq!(
            [a.position(), b.position(), c.position(), d.position()],
            [2, 1, 3, 1]
        );
        let waste = presence.queue_length("waste");
        assert_eq!(waste.callers, 3);
        assert_eq!(
            waste.longest_since,
            Some(Timestamp::from_millis(1_800_000_000_000 - 100_000))
        );
        // Transferred to housing, d is first there, and waste is one shorter.
        d.moved_to("housing");
        assert_eq!([b.position(), d.position(), a.position()], [2, 1, 1]);
        drop(d);
        assert_eq!(presence.queue_length("housing").callers, 1);
        let full = presence.start_waiting("waste", Timestamp::now(), Duration::ZERO, 2);
        assert!(full.is_none(), "two wait in waste already");
        drop((a, c));
        assert_eq!(presence.queue_length("waste"), QueueLength::default());
    }
}
