//! `contactd bench intake`: intake throughput against the configured database, in
//! two cases — every contact opening a new request (a new sender each time, so the
//! customer record is created too) and every contact attaching to an existing request
//! by reference. Point it at a scratch database: it writes real rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::domain::{Channel, LongText, PhoneNumber, Reference, ShortText, Timestamp};
use crate::intake::{InboundContact, Intake, Sender};

#[derive(Debug, Clone, Copy)]
pub enum Case {
    NewRequest,
    Attach,
}

pub struct BenchReport {
    pub case: Case,
    pub contacts: usize,
    pub concurrency: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}: {} contacts, concurrency {}: {:.0} contacts/s, p50 {:.1} ms, p99 {:.1} ms",
            self.case,
            self.contacts,
            self.concurrency,
            self.contacts as f64 / self.elapsed.as_secs_f64(),
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
        )
    }
}

/// A run-unique phone number in Ofcom's drama range (07700 900000–900999 is reserved
/// for fiction, so benchmark rows can never be mistaken for a resident): the run id
/// and index go into the external id, and the number cycles through that range.
fn sender(i: usize) -> Sender {
    let number = format!("07700 9{:05}", i % 1000);
    Sender::Phone(PhoneNumber::parse(&number).expect("drama-range numbers are valid"))
}

fn contact(run: &str, i: usize, reference: Option<Reference>, from: Sender) -> InboundContact {
    InboundContact {
        channel: Channel::Sms,
        external_id: ShortText::parse(&format!("bench-{run}-{i}")).expect("short"),
        from,
        to: ShortText::parse("+441612345000").expect("short"),
        received_at: Timestamp::now(),
        content: LongText::parse("Bin not collected on Tuesday").expect("long"),
        reference,
        service: None,
    }
}

pub async fn run(
    intake: Intake,
    case: Case,
    contacts: usize,
    concurrency: usize,
) -> anyhow::Result<BenchReport> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let target = match case {
        Case::NewRequest => None,
        Case::Attach => {
            let first = intake
                .receive(&contact(&run, usize::MAX, None, sender(0)))
                .await?;
            Some(first.reference)
        }
    };
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (intake, next, run) = (intake.clone(), next.clone(), run.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= contacts {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let t = Instant::now();
                intake.receive(&contact(&run, i, target, sender(i))).await?;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(contacts);
    for w in workers {
        latencies.extend(w.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    Ok(BenchReport {
        case,
        contacts,
        concurrency,
        elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    })
}
