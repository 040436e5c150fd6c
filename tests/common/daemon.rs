//! The `contactd` binary run as a process, as an operator would.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::TestDatabase;

pub const BIN: &str = env!("CARGO_BIN_EXE_contactd");

/// A `contactd` command with a clean environment of overrides and its own database.
pub fn contactd(db: &TestDatabase, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("CONTACTD__") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args)
        .env("CONTACTD__DATABASE__URL", &db.url)
        .env("CONTACTD__HTTP__LISTEN", "127.0.0.1:0")
        .env("CONTACTD__DATA_DIR", db.dir().join("data"))
        .env("CONTACTD__RECORDINGS__DIR", db.dir().join("recordings"))
        .env(
            "CONTACTD__SIP__LISTEN",
            r#"["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]"#,
        )
        .env("CONTACTD__SHUTDOWN__GRACE_SECONDS", "10")
        .env("NO_COLOR", "1");
    cmd
}

pub fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("contactd runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `contactd serve`, its address read from its log.
pub struct Daemon {
    pub child: Child,
    pub addr: String,
    /// The voice channel's UDP address, when it is on.
    pub sip_udp: Option<String>,
    /// The SMTP receiver's address, when email is on.
    pub smtp: Option<String>,
    pub log: std::sync::mpsc::Receiver<String>,
}

pub fn start(db: &TestDatabase, notify_socket: &std::path::Path) -> Daemon {
    start_with(db, notify_socket, &[])
}

/// `start`, with more `CONTACTD__…` settings.
pub fn start_with(
    db: &TestDatabase,
    notify_socket: &std::path::Path,
    env: &[(&str, String)],
) -> Daemon {
    let mut child = contactd(db, &["serve"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("NOTIFY_SOCKET", notify_socket)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut sip_udp = None;
    let mut smtp = None;
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the daemon logs its address");
        if let Some(rest) = line.split("smtp listening on ").nth(1) {
            smtp = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(rest) = line.split("sip listening on Udp ").nth(1) {
            sip_udp = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(rest) = line.split("http listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    Daemon {
        child,
        addr,
        sip_udp,
        smtp,
        log: rx,
    }
}

pub fn wait_for_log(d: &Daemon, needle: &str) {
    loop {
        let line = d
            .log
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("log never said {needle:?}"));
        if line.contains(needle) {
            return;
        }
    }
}
