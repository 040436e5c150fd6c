//! Real mail peers for the email tests: aiosmtpd receives what the daemon sends
//! (`tests/peers/smtp_sink.py`), swaks sends real SMTP into the daemon.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The relay the daemon sends through: a real SMTP server.
pub struct SmtpSink {
    pub port: u16,
    lines: Lines<BufReader<ChildStdout>>,
    _child: Child,
}

/// A message the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub data: String,
}

impl Received {
    /// The value of the first header `name` (unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let head = head.split("\n\n").next().unwrap_or_default();
        let unfolded = head
            .replace("\r\n ", " ")
            .replace("\n ", " ")
            .replace("\r\n\t", " ");
        unfolded.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

impl SmtpSink {
    /// The next thing that happened at the sink: a message, or a refusal.
    pub async fn next_event(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("the SMTP sink hears from the daemon in time")
            .unwrap()
            .expect("the sink is running");
        serde_json::from_str(&line).unwrap()
    }

    pub async fn start() -> SmtpSink {
        Self::refusing(0).await
    }

    /// From now on every message is read as it arrives (so a busy sink never
    /// blocks on its output) and kept, for an exact count at the end.
    pub fn collect(mut self) -> SinkCollector {
        let stdin = self._child.stdin.take();
        let mut lines = self.lines;
        let task = tokio::spawn(async move {
            let mut all = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&line).unwrap();
                if v.get("refused").is_none() {
                    all.push(v);
                }
            }
            all
        });
        SinkCollector {
            stdin,
            task,
            _child: self._child,
        }
    }
}

/// A sink whose messages are being collected (see [`SmtpSink::collect`]).
pub struct SinkCollector {
    stdin: Option<tokio::process::ChildStdin>,
    task: tokio::task::JoinHandle<Vec<Value>>,
    _child: Child,
}

impl SinkCollector {
    /// Stops the sink; every message it received.
    pub async fn finish(mut self) -> Vec<Value> {
        drop(self.stdin.take());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the SMTP sink stops")
            .unwrap()
    }
}

impl SmtpSink {
    /// A relay that refuses its first `n` messages with 451.
    pub async fn refusing(n: usize) -> SmtpSink {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the SMTP sink starts (aiosmtpd is required: scripts/test installs it)")
            .unwrap()
            .expect("the SMTP sink prints its port");
        SmtpSink {
            port: first.trim().parse().expect("a port"),
            lines,
            _child: child,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The next message the sink receives (refusals skipped).
    pub async fn next(&mut self) -> Received {
        let v: Value = loop {
            let v = self.next_event().await;
            if v.get("refused").is_none() {
                break v;
            }
        };
        Received {
            mail_from: v["mail_from"].as_str().unwrap().to_string(),
            rcpt_tos: v["rcpt_tos"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect(),
            data: v["data"].as_str().unwrap().to_string(),
        }
    }
}

/// Runs swaks against `server`; returns whether it succeeded and its transcript.
pub async fn swaks(server: SocketAddr, args: &[&str]) -> (bool, String) {
    let out = Command::new("swaks")
        .args([
            "--server",
            &server.to_string(),
            "--timeout",
            "30",
            "--hide-informational",
        ])
        .args(args)
        .output()
        .await
        .expect("swaks is required (scripts/test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
