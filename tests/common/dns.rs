//! A real DNS server for the email tests: dnsmasq on loopback, serving the SPF and
//! DMARC records the tests need and NXDOMAIN for everything else, so sender checks
//! never reach the internet.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct LocalDns {
    pub addr: SocketAddr,
    _child: Child,
}

impl LocalDns {
    /// Serves `records`: (name, TXT value).
    pub async fn start(records: &[(&str, &str)]) -> LocalDns {
        // dnsmasq cannot be given port 0; a port taken between the choice and its
        // bind is chosen again.
        for _ in 0..20 {
            let port = super::sipp::free_udp_port();
            let mut cmd = Command::new("dnsmasq");
            cmd.args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--log-facility=-",
                "--user=root",
                "--pid-file=",
                "--local=/#/",
            ])
            .arg(format!("--port={port}"));
            for (name, value) in records {
                // On the command line the value is taken as it is (quotes would be kept);
                // a comma would split it into two strings, and no record here has one.
                cmd.arg(format!("--txt-record={name},{value}"));
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("dnsmasq is required (scripts/test installs dnsmasq-base)");
            let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
            let started = tokio::time::timeout(Duration::from_secs(20), async {
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains("started, version") {
                        return true;
                    }
                    if line.contains("failed to create listening socket") {
                        return false;
                    }
                }
                false
            })
            .await
            .unwrap_or(false);
            if started {
                // Keep reading its log so it never blocks on a full pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                return LocalDns {
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    _child: child,
                };
            }
        }
        panic!("dnsmasq did not start");
    }
}
