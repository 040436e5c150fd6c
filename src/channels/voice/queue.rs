//! The queue a caller waits in after the menu, until an advisor of their service
//! answers. Outside the queue's opening hours nobody waits: the caller is told so
//! and offered voicemail. While waiting the caller hears music on hold, which
//! resumes where it was after each announcement of their place in the queue (never
//! started while an advisor's phone rings for them); each offer rings one
//! advisor's phone (the longest idle of those available with the service among their
//! skills and a phone registered now) for `queues.ring_seconds`, then the next.
//! Callers are served in order of when they joined, across queues that share
//! advisors, with a queue's bounded head start (`priority_seconds`, see
//! [`crate::advisors::Presence`]); one who leaves without reaching an advisor and
//! rings back within `queues.rejoin_window_seconds`, or whose callback is still
//! open, keeps the time they first joined.
//! An advisor who lets `queues.unanswered_before_away` offers in a row ring out is
//! set away (they are probably not at their desk); one who declines, or whose phone
//! cannot be reached, stays available. Either way they are not offered the same
//! caller again for a while. The answered leg is bridged to the
//! caller inside the daemon, so the call's recording carries on with the advisor on
//! the right.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contactd_sip::{Bridged, Call, DialFailure, Leg};

use crate::advisors::{Advisors, NotTaken};
use crate::call_events::{CallEvent, CallEventKind};
use crate::configuration::{QueueSettings, ServiceCode};
use crate::domain::Timestamp;
use crate::domain::recording::LegOutcome;
use crate::store::Store;

use super::prompts::Prompts;

/// Whom a caller waits for: any advisor with a skill, or one advisor (a transfer).
enum Wanted {
    Skill(ServiceCode),
    /// An advisor's SIP username.
    Named(String),
}

impl Wanted {
    fn is(&self, a: &crate::store::advisors::Advisor) -> bool {
        match self {
            Wanted::Skill(s) => a.skills.iter().any(|k| k == s.as_str()),
            Wanted::Named(n) => a.sip_username == *n,
        }
    }
}

/// Whose call this is, for the event feed and their place in the queue.
pub struct Caller<'a> {
    pub contact_id: &'a str,
    pub reference: String,
    pub customer_id: Option<&'a str>,
    /// Their number (E.164), when known: how a caller who rings back is recognised.
    pub number: Option<&'a str>,
    /// When they joined the queue (see [`Queues::entered`]).
    pub entered: Timestamp,
}

/// How a caller's wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// They spoke to an advisor, who hung up first: the caller is still there.
    AdvisorHungUp,
    /// No advisor answered within the queue's maximum wait, or the queue was full.
    NoAdvisor,
    /// Outside the queue's opening hours.
    Closed,
    /// The caller hung up (waiting, or talking to an advisor).
    CallerLeft,
}

pub struct Queues {
    ring: Duration,
    voicemail_limit: Duration,
    wrap_up: Duration,
    music: Arc<[i16]>,
    prompts: Prompts,
    position_every: Option<Duration>,
    advisors: Advisors,
    store: Store,
    left_unserved: LeftUnserved,
}

/// An advisor who declined or could not be reached is offered the same caller again
/// only after this.
const RETRY_SAME_ADVISOR: Duration = Duration::from_secs(10);

/// With no advisor available, the queue looks again at least this often (an
/// advisor's wrap-up ending, or a phone registering, wakes nobody).
const LOOK_AGAIN: Duration = Duration::from_secs(1);

impl Queues {
    pub fn new(
        settings: &QueueSettings,
        advisors: Advisors,
        store: Store,
        music: Arc<[i16]>,
        prompts: Prompts,
    ) -> Queues {
        Queues {
            ring: Duration::from_secs(settings.ring_seconds),
            voicemail_limit: Duration::from_secs(settings.voicemail_seconds),
            wrap_up: Duration::from_secs(settings.wrap_up_seconds),
            music,
            prompts,
            position_every: (settings.position_every_seconds > 0)
                .then(|| Duration::from_secs(settings.position_every_seconds)),
            advisors,
            store,
            left_unserved: LeftUnserved {
                window: Duration::from_secs(settings.rejoin_window_seconds),
                by_number: Mutex::default(),
            },
        }
    }

    /// The longest voicemail a caller may leave.
    pub fn voicemail_limit(&self) -> Duration {
        self.voicemail_limit
    }

    pub fn serves(&self, service: &ServiceCode) -> bool {
        self.advisors.queue(service.as_str()).is_some()
    }

    /// When a caller on `number` joins a queue now: the time they first joined if
    /// they left one unserved within the rejoin window, or asked for a callback
    /// that is still open; otherwise now.
    pub async fn entered(&self, number: Option<&str>) -> Timestamp {
        let now = self.advisors.now();
        let Some(number) = number else {
            return now;
        };
        let rejoined = self.left_unserved.rejoined(number, now);
        let callback = match self.store.open_callback_queued_at(number).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "open callbacks cannot be read");
                None
            }
        };
        [Some(now), rejoined, callback]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now)
    }

    /// Puts the caller in `service`'s queue until an advisor answers and the
    /// conversation ends, the maximum wait passes, or the caller hangs up.
    pub async fn wait(&self, call: &Call, service: &ServiceCode, who: &Caller<'_>) -> Waited {
        let event = |kind, advisor: &str, reason: Option<NotTaken>| {
            self.advisors.events().publish(CallEvent {
                kind,
                at: Timestamp::now(),
                contact_id: who.contact_id.to_string(),
                advisor_id: advisor.to_string(),
                service: service.as_str().to_string(),
                reference: who.reference.clone(),
                customer_id: who.customer_id.map(str::to_string),
                reason,
            })
        };
        let Some(queue) = self.advisors.queue(service.as_str()) else {
            return Waited::NoAdvisor;
        };
        if let Some(hours) = &queue.hours
            && !hours.is_open(self.advisors.now())
        {
            tracing::info!(call_id = %call.info.call_id, service = %service, "queue closed");
            return Waited::Closed;
        }
        // Until an advisor answers, a caller who leaves is remembered, to keep their
        // place if they ring back.
        let unserved = |waited| {
            if let Some(number) = who.number {
                self.left_unserved
                    .left(number, who.entered, self.advisors.now());
            }
            waited
        };
        let Some(me) = self.advisors.presence().start_waiting(
            service.as_str(),
            who.entered,
            Duration::from_secs(queue.priority_seconds),
            queue.max_length,
        ) else {
            tracing::info!(call_id = %call.info.call_id, service = %service, "queue full");
            return unserved(Waited::NoAdvisor);
        };
        let mut served = false;
        let mut wanted = Wanted::Skill(service.clone());
        let mut max_wait = Duration::from_secs(queue.max_wait_seconds);
        let on_hold = OnHold {
            music: &self.music,
            at: AtomicUsize::new(0),
            connecting: AtomicBool::new(false),
        };
        let legs = LegRecord {
            store: &self.store,
            daemon: self.advisors.daemon(),
            contact_id: who.contact_id,
            current: Mutex::new(None),
        };
        loop {
            let answered = tokio::select! {
                found = tokio::time::timeout(max_wait, self.find_advisor(call, &me, &wanted, &on_hold.connecting, &event, &legs)) => found,
                () = on_hold.play(call, self.position_every, || self.prompts.position(me.position())) => {
                    return if served { Waited::CallerLeft } else { unserved(Waited::CallerLeft) };
                }
            };
            let Ok(Some((advisor, leg))) = answered else {
                return if served {
                    Waited::NoAdvisor
                } else {
                    unserved(Waited::NoAdvisor)
                };
            };
            served = true;
            let presence = self.advisors.presence();
            presence.on_call(&advisor);
            legs.answered().await;
            event(CallEventKind::Answered, &advisor, None);
            tracing::info!(call_id = %call.info.call_id, %advisor, "caller and advisor bridged");
            let bridged = call.bridge(&leg, self.music.clone()).await;
            leg.hang_up().await;
            presence.wrap_up(&advisor, self.wrap_up);
            match bridged {
                Bridged::Transferred(to) => {
                    legs.ended(LegOutcome::Transferred, Some(&to)).await;
                    event(CallEventKind::Transferred, &advisor, None);
                    tracing::info!(call_id = %call.info.call_id, %advisor, "transferred by the advisor");
                    // A service with a queue, or else an advisor's username.
                    match ServiceCode::parse(&to)
                        .ok()
                        .and_then(|s| self.advisors.queue(s.as_str()).map(|q| (s, q)))
                    {
                        Some((s, q)) => {
                            max_wait = Duration::from_secs(q.max_wait_seconds);
                            me.moved_to(s.as_str());
                            wanted = Wanted::Skill(s);
                        }
                        None => wanted = Wanted::Named(to),
                    }
                }
                Bridged::LegEnded => {
                    legs.ended(LegOutcome::Ended, None).await;
                    event(CallEventKind::Ended, &advisor, None);
                    return Waited::AdvisorHungUp;
                }
                Bridged::CallerLeft(_) => {
                    legs.ended(LegOutcome::Ended, None).await;
                    event(CallEventKind::Ended, &advisor, None);
                    return Waited::CallerLeft;
                }
            }
        }
    }

    /// Offers the call to advisors, one at a time, until one answers; `None` when
    /// the caller hung up meanwhile.
    async fn find_advisor(
        &self,
        call: &Call,
        me: &crate::advisors::Waiting<'_>,
        wanted: &Wanted,
        connecting: &AtomicBool,
        event: &impl Fn(CallEventKind, &str, Option<NotTaken>),
        legs: &LegRecord<'_>,
    ) -> Option<(String, Leg)> {
        let presence = self.advisors.presence();
        let mut passed_over: HashMap<String, Instant> = HashMap::new();
        let caller = match &call.info.caller {
            contactd_sip::CallerId::Number(n) => n.clone(),
            contactd_sip::CallerId::Withheld => "anonymous".into(),
        };
        loop {
            passed_over.retain(|_, at| at.elapsed() < RETRY_SAME_ADVISOR);
            let reachable = match self.advisors.reachable(|a| wanted.is(a)).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(error = %e, "advisors cannot be read");
                    Vec::new()
                }
            };
            let candidates: Vec<&str> = reachable
                .iter()
                .map(|a| a.id.as_str())
                .filter(|id| !passed_over.contains_key(*id))
                .collect();
            let Some(chosen) = presence.reserve(me, &candidates) else {
                let wait = async {
                    tokio::select! {
                        _ = presence.changed() => {}
                        _ = tokio::time::sleep(LOOK_AGAIN) => {}
                    }
                };
                tokio::select! {
                    _ = wait => continue,
                    _ = call.ended() => return None,
                }
            };
            let advisor = reachable
                .iter()
                .find(|a| a.id == chosen)
                .expect("chosen among them");
            // Every phone of theirs rings: a desk phone and a softphone, whichever the
            // advisor picks up.
            let phones: Vec<_> = advisor
                .devices
                .iter()
                .filter_map(|d| crate::advisors::dial_target(d, &caller))
                .collect();
            if phones.is_empty() {
                self.advisors
                    .not_taken(&chosen, NotTaken::Unreachable)
                    .await;
                passed_over.insert(chosen, Instant::now());
                continue;
            };
            legs.offered(&chosen).await;
            event(CallEventKind::Offered, &chosen, None);
            connecting.store(true, Ordering::Relaxed);
            let offered = tokio::select! {
                r = call.dial(&phones, self.ring) => r,
                _ = call.ended() => {
                    self.advisors.not_taken(&chosen, NotTaken::CallerLeft).await;
                    legs.ended(LegOutcome::CallerLeft, None).await;
                    event(CallEventKind::NotTaken, &chosen, Some(NotTaken::CallerLeft));
                    return None;
                }
            };
            connecting.store(false, Ordering::Relaxed);
            let why = match offered {
                Ok(leg) => return Some((chosen, leg)),
                Err(DialFailure::NoAnswer) => NotTaken::NoAnswer,
                Err(DialFailure::Declined(_)) => NotTaken::Declined,
                Err(DialFailure::Unreachable(ref e)) => {
                    tracing::info!(advisor = %chosen, error = %e, "advisor's phone unreachable");
                    NotTaken::Unreachable
                }
            };
            tracing::info!(advisor = %chosen, ?why, "offer not taken");
            legs.ended(why.into(), None).await;
            event(CallEventKind::NotTaken, &chosen, Some(why));
            self.advisors.not_taken(&chosen, why).await;
            // Not offered this caller again for a while: the next advisor's turn.
            passed_over.insert(chosen, Instant::now());
        }
    }
}

/// The call record's leg with the advisor being rung or talking to this caller.
/// Writing it never stands in the call's way: a failure is logged and the call goes on.
struct LegRecord<'a> {
    store: &'a Store,
    daemon: &'a str,
    contact_id: &'a str,
    current: Mutex<Option<String>>,
}

impl LegRecord<'_> {
    async fn offered(&self, advisor_id: &str) {
        let id = self
            .store
            .leg_offered(self.contact_id, advisor_id, self.daemon, Timestamp::now())
            .await;
        *self.current.lock().expect("not poisoned") = self.written(id);
    }

    async fn answered(&self) {
        let id = self.current.lock().expect("not poisoned").clone();
        if let Some(id) = id {
            let done = self.store.leg_answered(&id, Timestamp::now()).await;
            self.written(done);
        }
    }

    async fn ended(&self, outcome: LegOutcome, transferred_to: Option<&str>) {
        let id = self.current.lock().expect("not poisoned").take();
        if let Some(id) = id {
            let done = self
                .store
                .leg_ended(&id, Timestamp::now(), outcome, transferred_to)
                .await;
            self.written(done);
        }
    }

    fn written<T>(&self, result: crate::store::StoreResult<T>) -> Option<T> {
        result
            .map_err(|e| tracing::error!(error = %e, "a call leg could not be recorded"))
            .ok()
    }
}

/// What a waiting caller hears: music on hold that carries on where it was after
/// anything else is played (an announcement, a ring that was not answered), and now
/// and then their place in the queue.
struct OnHold<'a> {
    music: &'a Arc<[i16]>,
    /// Where in the music the caller is, in samples.
    at: AtomicUsize,
    /// An advisor's phone is ringing for this caller: no announcement starts (it
    /// would be cut off when they answer).
    connecting: AtomicBool,
}

/// While an announcement waits for a ringing phone, the music is played in pieces
/// this long, so that the announcement comes soon after the ringing stops.
const MUSIC_PIECE: Duration = Duration::from_millis(500);

impl OnHold<'_> {
    /// Plays until the caller hangs up (the future is dropped when an advisor
    /// answers or the wait ends; the place in the music is kept either way).
    async fn play(
        &self,
        call: &Call,
        announce_every: Option<Duration>,
        announcement: impl Fn() -> Arc<[i16]>,
    ) {
        let mut next_announcement = announce_every.map(|every| Instant::now() + every);
        loop {
            let connecting = self.connecting.load(Ordering::Relaxed);
            if let (Some(due), Some(every)) = (next_announcement, announce_every)
                && !connecting
                && Instant::now() >= due
            {
                if call.play(announcement()).await.is_err() {
                    return;
                }
                next_announcement = Some(Instant::now() + every);
                continue;
            }
            let piece = match next_announcement {
                Some(_) if connecting => Some(MUSIC_PIECE),
                Some(due) => Some(due.saturating_duration_since(Instant::now())),
                None => None,
            };
            if self.play_music(call, piece).await.is_err() {
                return;
            }
        }
    }

    /// The music from where the caller left it, for `piece` (or to its end).
    async fn play_music(&self, call: &Call, piece: Option<Duration>) -> Result<(), ()> {
        let len = self.music.len();
        let from = self.at.load(Ordering::Relaxed) % len;
        let started = Instant::now();
        // However this ends (even dropped), the caller's place in the music moves
        // on by the time it played.
        let _progress = MusicProgress {
            at: &self.at,
            from,
            started,
            len,
        };
        let rest: Arc<[i16]> = Arc::from(&self.music[from..]);
        match piece {
            Some(piece) => match tokio::time::timeout(piece, call.play(rest)).await {
                Ok(Err(_)) => Err(()),
                Ok(Ok(_)) | Err(_) => Ok(()),
            },
            None => call.play(rest).await.map(|_| ()).map_err(|_| ()),
        }
    }
}

struct MusicProgress<'a> {
    at: &'a AtomicUsize,
    from: usize,
    started: Instant,
    len: usize,
}

impl Drop for MusicProgress<'_> {
    fn drop(&mut self) {
        // 8 samples a millisecond; past the end, the music starts again.
        let played = (self.started.elapsed().as_millis() as usize).saturating_mul(8);
        let at = if self.from + played >= self.len {
            0
        } else {
            self.from + played
        };
        self.at.store(at, Ordering::Relaxed);
    }
}

/// Callers who left a queue without reaching an advisor, by number, for the
/// rejoin window. Bounded: past [`REMEMBERED_AT_MOST`] numbers, no more are kept
/// until the oldest lapse (a flood of calls cannot grow it).
struct LeftUnserved {
    window: Duration,
    /// Number → (when they first joined, when they last left).
    by_number: Mutex<HashMap<String, (Timestamp, Timestamp)>>,
}

const REMEMBERED_AT_MOST: usize = 10_000;

impl LeftUnserved {
    fn lapsed(&self, left: Timestamp, now: Timestamp) -> bool {
        now.millis().saturating_sub(left.millis()) as u128 > self.window.as_millis()
    }

    fn left(&self, number: &str, entered: Timestamp, now: Timestamp) {
        if self.window.is_zero() {
            return;
        }
        let mut by_number = self.by_number.lock().expect("not poisoned");
        if by_number.len() >= REMEMBERED_AT_MOST {
            by_number.retain(|_, (_, left)| !self.lapsed(*left, now));
        }
        if by_number.len() < REMEMBERED_AT_MOST || by_number.contains_key(number) {
            let first = by_number
                .get(number)
                .map_or(entered, |(earlier, _)| (*earlier).min(entered));
            by_number.insert(number.to_string(), (first, now));
        }
    }

    /// When `number` first joined, if they left unserved within the window.
    fn rejoined(&self, number: &str, now: Timestamp) -> Option<Timestamp> {
        let mut by_number = self.by_number.lock().expect("not poisoned");
        let (entered, left) = by_number.remove(number)?;
        (!self.lapsed(left, now)).then_some(entered)
    }
}

/// The tone before a voicemail: 400 ms at 880 Hz.
pub fn beep() -> Arc<[i16]> {
    (0..3200)
        .map(|i| {
            let t = f64::from(i) / 8000.0;
            ((2.0 * std::f64::consts::PI * 880.0 * t).sin() * 6000.0) as i16
        })
        .collect::<Vec<_>>()
        .into()
}

/// The built-in music on hold: a slow, quiet arpeggio (8 s, looped by the queue),
/// made here rather than shipped as a recording.
pub fn built_in_music() -> Arc<[i16]> {
    const RATE: f64 = 8000.0;
    // C, E, G, C', G, E, F, A (Hz), half a second each.
    const NOTES: [f64; 16] = [
        261.63, 329.63, 392.00, 523.25, 392.00, 329.63, 349.23, 440.00, 261.63, 329.63, 392.00,
        523.25, 493.88, 392.00, 349.23, 329.63,
    ];
    let per_note = (RATE * 0.5) as usize;
    let mut out = Vec::with_capacity(per_note * NOTES.len());
    for (n, f) in NOTES.iter().enumerate() {
        for i in 0..per_note {
            let t = (n * per_note + i) as f64 / RATE;
            // A soft attack and decay on each note, no clicks between them.
            let envelope = (i as f64 / 400.0).min(1.0) * (1.0 - i as f64 / per_note as f64);
            let s = (2.0 * std::f64::consts::PI * f * t).sin()
                + 0.3 * (2.0 * std::f64::consts::PI * 2.0 * f * t).sin();
            out.push((s * envelope * 3000.0) as i16);
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_millis(1_800_000_000_000 + seconds * 1000)
    }

    #[test]
    fn a_caller_who_rings_back_within_the_window_keeps_when_they_first_joined() {
        let left = LeftUnserved {
            window: Duration::from_secs(600),
            by_number: Mutex::default(),
        };
        left.left("+447700900201", at(0), at(120));
        // Back 5 minutes later, gone again unserved, back again: still from 0.
        assert_eq!(left.rejoined("+447700900201", at(420)), Some(at(0)));
        left.left("+447700900201", at(0), at(500));
        assert_eq!(left.rejoined("+447700900201", at(1000)), Some(at(0)));
        assert_eq!(left.rejoined("+447700900201", at(1001)), None, "used once");
        // Past the window, a new start.
        left.left("+447700900202", at(0), at(60));
        assert_eq!(left.rejoined("+447700900202", at(661)), None);
        assert_eq!(left.rejoined("+447700900203", at(0)), None, "never here");
    }

    #[test]
    fn the_numbers_remembered_are_bounded() {
        let left = LeftUnserved {
            window: Duration::from_secs(600),
            by_number: Mutex::default(),
        };
        for n in 0..REMEMBERED_AT_MOST + 50 {
            left.left(&format!("+44770090{n:04}"), at(0), at(1));
        }
        assert_eq!(left.by_number.lock().unwrap().len(), REMEMBERED_AT_MOST);
        // Once those have lapsed, room again.
        left.left("+447700999999", at(0), at(700));
        assert_eq!(left.by_number.lock().unwrap().len(), 1);
        let off = LeftUnserved {
            window: Duration::ZERO,
            by_number: Mutex::default(),
        };
        off.left("+447700900201", at(0), at(1));
        assert_eq!(off.rejoined("+447700900201", at(1)), None, "0: never");
    }
}
