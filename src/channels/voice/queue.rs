//! The queue a caller waits in after the menu, until an advisor of their service
//! answers. Outside the queue's opening hours nobody waits: the caller is told so
//! and offered voicemail. While waiting the caller hears music on hold, which
//! resumes where it was after each announcement of their place in the queue (never
//! started while an advisor's phone rings for them); each offer rings one
//! advisor's phone (the longest idle of those available with the service among their
//! skills and a phone registered now) for `queues.ring_seconds`, then the next.
//! An advisor who lets `queues.unanswered_before_away` offers in a row ring out is
//! set away (they are probably not at their desk); one who declines, or whose phone
//! cannot be reached, stays available. Either way they are not offered the same
//! caller again for a while. The answered leg is bridged to the
//! caller inside the daemon, so the call's recording carries on with the advisor on
//! the right.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contactd_sip::{Bridged, Call, DialFailure, Leg};

use crate::advisors::{Advisors, NotTaken};
use crate::call_events::{CallEvent, CallEventKind};
use crate::configuration::{QueueSettings, ServiceCode, ServiceQueue};
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

/// Whose call this is, for the event feed.
pub struct Caller<'a> {
    pub contact_id: &'a str,
    pub reference: String,
    pub customer_id: Option<&'a str>,
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
    services: BTreeMap<String, ServiceQueue>,
    advisors: Advisors,
    store: Store,
    /// Callers waiting now, per service, in the order they joined.
    waiting: Mutex<HashMap<String, BTreeSet<u64>>>,
    joined: AtomicU64,
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
            services: settings.services.clone(),
            advisors,
            store,
            waiting: Mutex::new(HashMap::new()),
            joined: AtomicU64::new(0),
        }
    }

    /// The longest voicemail a caller may leave.
    pub fn voicemail_limit(&self) -> Duration {
        self.voicemail_limit
    }

    pub fn serves(&self, service: &ServiceCode) -> bool {
        self.services.contains_key(service.as_str())
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
        let Some(queue) = self.services.get(service.as_str()) else {
            return Waited::NoAdvisor;
        };
        if let Some(hours) = &queue.hours
            && !hours.is_open(self.advisors.now())
        {
            tracing::info!(call_id = %call.info.call_id, service = %service, "queue closed");
            return Waited::Closed;
        }
        let joined = self.joined.fetch_add(1, Ordering::Relaxed);
        let Some(place) = Place::take(&self.waiting, service.as_str(), joined, queue.max_length)
        else {
            tracing::info!(call_id = %call.info.call_id, service = %service, "queue full");
            return Waited::NoAdvisor;
        };
        let me = self.advisors.presence().start_waiting();
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
                () = on_hold.play(call, self.position_every, || self.prompts.position(place.position())) => return Waited::CallerLeft,
            };
            let Ok(Some((advisor, leg))) = answered else {
                return Waited::NoAdvisor;
            };
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
                        .and_then(|s| self.services.get(s.as_str()).map(|q| (s, q)))
                    {
                        Some((s, q)) => {
                            max_wait = Duration::from_secs(q.max_wait_seconds);
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

/// A caller's place in a queue, given back when they leave it.
struct Place<'a> {
    waiting: &'a Mutex<HashMap<String, BTreeSet<u64>>>,
    service: String,
    joined: u64,
}

impl<'a> Place<'a> {
    fn take(
        waiting: &'a Mutex<HashMap<String, BTreeSet<u64>>>,
        service: &str,
        joined: u64,
        max: usize,
    ) -> Option<Place<'a>> {
        let mut queues = waiting.lock().expect("not poisoned");
        let queue = queues.entry(service.to_string()).or_default();
        if queue.len() >= max {
            return None;
        }
        queue.insert(joined);
        Some(Place {
            waiting,
            service: service.to_string(),
            joined,
        })
    }

    /// 1 for the caller who has waited longest in this queue.
    fn position(&self) -> usize {
        let queues = self.waiting.lock().expect("not poisoned");
        queues
            .get(&self.service)
            .map_or(1, |q| q.range(..self.joined).count() + 1)
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut queues = self.waiting.lock().expect("not poisoned");
        if let Some(q) = queues.get_mut(&self.service) {
            q.remove(&self.joined);
        }
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
