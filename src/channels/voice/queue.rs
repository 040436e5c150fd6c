//! The queue a caller waits in after the menu, until an advisor of their service
//! answers. While waiting the caller hears music on hold; each offer rings one
//! advisor's phone (the longest idle of those available with the service among their
//! skills and a phone registered now) for `queues.ring_seconds`, then the next.
//! An advisor who lets it ring out is set away (they are probably not at their
//! desk); one who declines, or whose phone cannot be reached, stays available but is
//! not offered this caller again for a while. The answered leg is bridged to the
//! caller inside the daemon, so the call's recording carries on with the advisor on
//! the right.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contactd_sip::{Bridged, Call, DialFailure, DialTarget, Leg, config::SipTransport};

use crate::advisors::Advisors;
use crate::call_events::{CallEvent, CallEventKind};
use crate::configuration::{QueueSettings, ServiceCode, ServiceQueue};
use crate::domain::Timestamp;

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
    /// The caller hung up (waiting, or talking to an advisor).
    CallerLeft,
}

pub struct Queues {
    ring: Duration,
    voicemail_limit: Duration,
    wrap_up: Duration,
    music: Arc<[i16]>,
    services: BTreeMap<String, ServiceQueue>,
    advisors: Advisors,
    /// Callers waiting now, per service.
    waiting: Mutex<HashMap<String, usize>>,
}

/// An advisor who declined or could not be reached is offered the same caller again
/// only after this.
const RETRY_SAME_ADVISOR: Duration = Duration::from_secs(10);

/// With no advisor available, the queue looks again at least this often (an
/// advisor's wrap-up ending, or a phone registering, wakes nobody).
const LOOK_AGAIN: Duration = Duration::from_secs(1);

impl Queues {
    pub fn new(settings: &QueueSettings, advisors: Advisors, music: Arc<[i16]>) -> Queues {
        Queues {
            ring: Duration::from_secs(settings.ring_seconds),
            voicemail_limit: Duration::from_secs(settings.voicemail_seconds),
            wrap_up: Duration::from_secs(settings.wrap_up_seconds),
            music,
            services: settings.services.clone(),
            advisors,
            waiting: Mutex::new(HashMap::new()),
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
        let event = |kind, advisor: &str| {
            self.advisors.events().publish(CallEvent {
                kind,
                at: Timestamp::now(),
                contact_id: who.contact_id.to_string(),
                advisor_id: advisor.to_string(),
                service: service.as_str().to_string(),
                reference: who.reference.clone(),
                customer_id: who.customer_id.map(str::to_string),
            })
        };
        let Some(queue) = self.services.get(service.as_str()) else {
            return Waited::NoAdvisor;
        };
        let Some(_place) = Place::take(&self.waiting, service.as_str(), queue.max_length) else {
            tracing::info!(call_id = %call.info.call_id, service = %service, "queue full");
            return Waited::NoAdvisor;
        };
        let me = self.advisors.presence().start_waiting();
        let mut wanted = Wanted::Skill(service.clone());
        let mut max_wait = Duration::from_secs(queue.max_wait_seconds);
        loop {
            let music = async { while call.play(self.music.clone()).await.is_ok() {} };
            let answered = tokio::select! {
                found = tokio::time::timeout(max_wait, self.find_advisor(call, &me, &wanted, &event)) => found,
                _ = music => return Waited::CallerLeft,
            };
            let Ok(Some((advisor, leg))) = answered else {
                return Waited::NoAdvisor;
            };
            let presence = self.advisors.presence();
            presence.on_call(&advisor);
            event(CallEventKind::Answered, &advisor);
            tracing::info!(call_id = %call.info.call_id, %advisor, "caller and advisor bridged");
            let bridged = call.bridge(&leg, self.music.clone()).await;
            leg.hang_up().await;
            presence.wrap_up(&advisor, self.wrap_up);
            match bridged {
                Bridged::Transferred(to) => {
                    event(CallEventKind::Transferred, &advisor);
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
                    event(CallEventKind::Ended, &advisor);
                    return Waited::AdvisorHungUp;
                }
                Bridged::CallerLeft(_) => {
                    event(CallEventKind::Ended, &advisor);
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
        event: &impl Fn(CallEventKind, &str),
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
            // The phone registered last is the one most likely in the advisor's hands.
            let device = advisor.devices.last().expect("reachable means a device");
            let Ok(reach) = device.source.parse() else {
                presence.not_taken(&chosen, false);
                passed_over.insert(chosen, Instant::now());
                continue;
            };
            let target = DialTarget {
                contact: device.contact.clone(),
                reach,
                transport: if device.transport == "tcp" {
                    SipTransport::Tcp
                } else {
                    SipTransport::Udp
                },
                caller: caller.clone(),
            };
            event(CallEventKind::Offered, &chosen);
            let offered = tokio::select! {
                r = call.dial(&target, self.ring) => r,
                _ = call.ended() => {
                    presence.not_taken(&chosen, false);
                    event(CallEventKind::NotTaken, &chosen);
                    return None;
                }
            };
            if offered.is_err() {
                event(CallEventKind::NotTaken, &chosen);
            }
            match offered {
                Ok(leg) => return Some((chosen, leg)),
                Err(DialFailure::NoAnswer) => {
                    tracing::info!(advisor = %chosen, "offer not answered: advisor set away");
                    presence.not_taken(&chosen, true);
                }
                Err(e) => {
                    tracing::info!(advisor = %chosen, error = %e, "offer not taken");
                    presence.not_taken(&chosen, false);
                    passed_over.insert(chosen, Instant::now());
                }
            }
        }
    }
}

/// A caller's place in a queue, given back when they leave it.
struct Place<'a> {
    waiting: &'a Mutex<HashMap<String, usize>>,
    service: String,
}

impl<'a> Place<'a> {
    fn take(
        waiting: &'a Mutex<HashMap<String, usize>>,
        service: &str,
        max: usize,
    ) -> Option<Place<'a>> {
        let mut counts = waiting.lock().expect("not poisoned");
        let n = counts.entry(service.to_string()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Place {
            waiting,
            service: service.to_string(),
        })
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut counts = self.waiting.lock().expect("not poisoned");
        if let Some(n) = counts.get_mut(&self.service) {
            *n = n.saturating_sub(1);
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
