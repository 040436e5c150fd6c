//! `contactd bench webhooks` (below) measures the SMS channel end to end.
//!
//! `contactd bench scheduler` ([`scheduler`]): the Redis scheduler beside BullMQ.
//!
//! `contactd bench intake`: intake throughput against the configured database, in
//! two cases — every contact opening a new request (a new sender each time, so the
//! customer record is created too) and every contact attaching to an existing request
//! by reference. Point it at a scratch database: it writes real rows.

pub mod scheduler;

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
        origin: crate::intake::Origin::Channel,
        channel: Channel::Sms,
        external_id: ShortText::parse(&format!("bench-{run}-{i}")).expect("short"),
        from,
        to: ShortText::parse("+441612345000").expect("short"),
        received_at: Timestamp::now(),
        content: LongText::parse("Bin not collected on Tuesday").expect("long"),
        reference,
        service: None,
        thread: crate::intake::ThreadHints {
            sender_proven: true,
            ..Default::default()
        },
        acknowledge: None,
        message: None,
        original: None,
        attachments: Vec::new(),
        needs_review: false,
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

/// `contactd bench webhooks`: signed inbound texts per second, each committed through
/// intake before its 200, from a load generator on loopback. The daemon runs in this
/// process on the configured database with the SMS channel on; a stand-in for Twilio's
/// REST API on loopback takes the acknowledgements, so they cost what they cost.
pub async fn webhooks(
    mut settings: crate::configuration::Settings,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<String> {
    const ACCOUNT: &str = "AC00000000000000000000000000000000";
    const PUBLIC: &str = "http://contactd.bench.invalid";
    let token = uuid::Uuid::new_v4().simple().to_string();

    let stub = axum::Router::new().route(
        "/2010-04-01/Accounts/{account}/Messages.json",
        axum::routing::post(|| async {
            let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
            (
                axum::http::StatusCode::CREATED,
                axum::Json(serde_json::json!({"sid": sid, "status": "queued"})),
            )
        }),
    );
    let stub_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let stub_url = format!("http://{}", stub_listener.local_addr()?);
    tokio::spawn(async move { axum::serve(stub_listener, stub).await });

    settings.http.listen = "127.0.0.1:0".parse()?;
    settings.http.public_url = url::Url::parse(PUBLIC)?;
    settings.sip.trunks.clear();
    settings.sms.account_sid = ACCOUNT.into();
    settings.sms.auth_token = crate::configuration::Secret::new(token.clone());
    settings.sms.from = "+441612345000".into();
    settings.sms.api_base = url::Url::parse(&stub_url)?;
    let app = crate::startup::Application::build(settings).await?;
    let target = format!("http://{}/webhooks/twilio/sms", app.local_addr());
    let backend = app.store().backend();
    let stop = app.shutdown_token();
    let server = tokio::spawn(app.run_until_stopped());

    let client = reqwest::Client::new();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, next, run, token, target) = (
            client.clone(),
            next.clone(),
            run.clone(),
            token.clone(),
            target.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= requests {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let params: Vec<(String, String)> = [
                    ("MessageSid", format!("SM{}{:08x}", &run[..24], i)),
                    ("AccountSid", ACCOUNT.to_string()),
                    ("From", format!("+4477009{:05}", i % 1000)),
                    ("To", "+441612345000".to_string()),
                    (
                        "Body",
                        "The street light outside 4 Albert Square is out".to_string(),
                    ),
                    ("NumMedia", "0".to_string()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                let signature = contactd_sms::signature::compute(
                    &token,
                    &format!("{PUBLIC}/webhooks/twilio/sms"),
                    &params,
                );
                let t = Instant::now();
                let response = client
                    .post(&target)
                    .header("X-Twilio-Signature", signature)
                    .form(&params)
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status() == 200,
                    "webhook answered {}",
                    response.status()
                );
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    for w in workers {
        latencies.extend(w.await??);
    }
    let elapsed = started.elapsed();
    stop.cancel();
    server.await??;
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    Ok(format!(
        "{backend:?}: {requests} signed webhooks, concurrency {concurrency}: {:.0} stored/s, p50 {:.1} ms, p99 {:.1} ms",
        requests as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    ))
}

/// `contactd bench smtp`: messages per second received over SMTP and durably stored
/// (raw message and contact committed before the 250), with the time from the end of
/// DATA to the 250. Without `target`, the daemon runs in this process on the
/// configured database with the email channel on (no relay: acknowledgements are
/// queued in the outbox, not sent); with `target`, the same load goes to another SMTP
/// server (Postfix delivering to a Maildir, as the anchor).
pub async fn smtp(
    mut settings: crate::configuration::Settings,
    target: Option<std::net::SocketAddr>,
    messages: usize,
    concurrency: usize,
) -> anyhow::Result<String> {
    let (addr, daemon, label) = match target {
        Some(addr) => (addr, None, format!("SMTP server at {addr}")),
        None => {
            settings.http.listen = "127.0.0.1:0".parse()?;
            settings.sip.trunks.clear();
            settings.email.smtp_listen = "127.0.0.1:0".parse()?;
            settings.email.domains = vec!["council.bench.invalid".into()];
            settings.email.from = "Council <contact@council.bench.invalid>".into();
            settings.email.relay_url = crate::configuration::Secret::new("");
            settings.email.max_connections_per_source = concurrency.max(10);
            let app = crate::startup::Application::build(settings).await?;
            let addr = app
                .smtp_addr()
                .ok_or_else(|| anyhow::anyhow!("the email channel did not start"))?;
            let label = format!("contactd on {:?}", app.store().backend());
            let stop = app.shutdown_token();
            let server = tokio::spawn(app.run_until_stopped());
            (addr, Some((stop, server)), label)
        }
    };
    let run = uuid::Uuid::new_v4().simple().to_string();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let (next, run) = (next.clone(), run.clone());
        workers.push(tokio::spawn(async move {
            let mut client = SmtpClient::connect(addr).await?;
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= messages {
                    client.quit().await;
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let from = format!("resident{}@bench.invalid", i % 1000);
                let body = format!(
                    "From: {from}\r\nTo: contact@council.bench.invalid\r\nSubject: Missed bin collection {i}\r\n\
                     Message-ID: <{run}.{worker}.{i}@bench.invalid>\r\nDate: Wed, 25 Nov 2026 09:00:00 +0000\r\n\
                     Content-Type: text/plain; charset=utf-8\r\n\r\n{}",
                    "Our bins on Albert Square were not collected on Tuesday. Please send someone.\r\n"
                        .repeat(20)
                );
                latencies.push(client.send(&from, "contact@council.bench.invalid", &body).await?);
            }
        }));
    }
    let mut latencies = Vec::with_capacity(messages);
    for w in workers {
        latencies.extend(w.await??);
    }
    let elapsed = started.elapsed();
    if let Some((stop, server)) = daemon {
        stop.cancel();
        server.await??;
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    Ok(format!(
        "{label}: {messages} messages, concurrency {concurrency}: {:.0} messages/s, time to 250 p50 {:.1} ms, p99 {:.1} ms",
        messages as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    ))
}

/// The load generator's side of an SMTP session: one message at a time.
struct SmtpClient {
    conn: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl SmtpClient {
    async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let mut client = SmtpClient {
            conn: tokio::io::BufReader::new(tokio::net::TcpStream::connect(addr).await?),
        };
        client.expect("220").await?;
        client.say("EHLO bench.invalid\r\n", "250").await?;
        Ok(client)
    }

    async fn reply(&mut self) -> anyhow::Result<String> {
        use tokio::io::AsyncBufReadExt;
        loop {
            let mut line = String::new();
            anyhow::ensure!(
                self.conn.read_line(&mut line).await? > 0,
                "connection closed"
            );
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(line);
            }
        }
    }

    async fn expect(&mut self, code: &str) -> anyhow::Result<()> {
        let line = self.reply().await?;
        anyhow::ensure!(line.starts_with(code), "expected {code}, got {line:?}");
        Ok(())
    }

    async fn say(&mut self, line: &str, code: &str) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.conn.get_mut().write_all(line.as_bytes()).await?;
        self.expect(code).await
    }

    /// Sends one message; returns the time from the end of DATA to the 250.
    async fn send(&mut self, from: &str, to: &str, body: &str) -> anyhow::Result<Duration> {
        self.say(&format!("MAIL FROM:<{from}>\r\n"), "250").await?;
        self.say(&format!("RCPT TO:<{to}>\r\n"), "250").await?;
        self.say("DATA\r\n", "354").await?;
        let t = Instant::now();
        self.say(&format!("{body}.\r\n"), "250").await?;
        Ok(t.elapsed())
    }

    async fn quit(&mut self) {
        let _ = self.say("QUIT\r\n", "221").await;
    }
}
