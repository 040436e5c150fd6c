//! The daemon killed (SIGKILL) while clients are in the middle of sending mail:
//! every message that was answered 250 is there after the restart, and a message
//! cut off in DATA left nothing half-written.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use common::TestDatabase;
use common::daemon::start_with;
use common::dns::LocalDns;
use contactd::configuration::Backend;
use sqlx::{Connection, Row};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    killed_during_data_loses_nothing_that_got_250(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    killed_during_data_loses_nothing_that_got_250(Backend::Postgres).await
}

/// Messages answered 250 before the daemon is killed.
const KILL_AFTER: usize = 30;

/// One SMTP line in, one reply read; the reply's code.
async fn say(conn: &mut BufReader<TcpStream>, line: &str) -> std::io::Result<String> {
    conn.get_mut().write_all(line.as_bytes()).await?;
    reply(conn).await
}

async fn reply(conn: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    loop {
        let mut l = String::new();
        if conn.read_line(&mut l).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        // Multi-line replies continue with "250-".
        if l.len() < 4 || l.as_bytes()[3] != b'-' {
            return Ok(l.chars().take(3).collect());
        }
    }
}

/// Sends messages one after another until the connection dies; records the
/// Message-IDs answered 250.
async fn sender(
    smtp: String,
    client: usize,
    accepted: Arc<Mutex<BTreeSet<String>>>,
    enough: Arc<Notify>,
) {
    let Ok(stream) = TcpStream::connect(&smtp).await else {
        return;
    };
    let mut conn = BufReader::new(stream);
    if reply(&mut conn).await.is_err() || say(&mut conn, "EHLO crash.test\r\n").await.is_err() {
        return;
    }
    for n in 0.. {
        let id = format!("c{client}-{n}@crash.test");
        let body = format!(
            "From: resident{client}@crash.test\r\nTo: contact@council.example\r\nSubject: Message {n}\r\n\
             Message-ID: <{id}>\r\n\r\n{}\r\n.\r\n",
            "Our street light has been out for a week.\r\n".repeat(40)
        );
        let steps = async {
            if say(
                &mut conn,
                &format!("MAIL FROM:<resident{client}@crash.test>\r\n"),
            )
            .await?
                != "250"
                || say(&mut conn, "RCPT TO:<contact@council.example>\r\n").await? != "250"
                || say(&mut conn, "DATA\r\n").await? != "354"
            {
                return Ok::<_, std::io::Error>(false);
            }
            Ok(say(&mut conn, &body).await? == "250")
        };
        match steps.await {
            Ok(true) => {
                let mut accepted = accepted.lock().unwrap();
                accepted.insert(id);
                if accepted.len() == KILL_AFTER {
                    enough.notify_one();
                }
            }
            Ok(false) | Err(_) => return,
        }
    }
}

async fn killed_during_data_loses_nothing_that_got_250(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let dns = LocalDns::start(&[]).await;
    let notify = db.dir().join("notify.sock");
    let _socket = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    let env = [
        ("CONTACTD__EMAIL__SMTP_LISTEN", "127.0.0.1:0".to_string()),
        (
            "CONTACTD__EMAIL__DOMAINS",
            r#"["council.example"]"#.to_string(),
        ),
        (
            "CONTACTD__EMAIL__FROM",
            "Council <contact@council.example>".to_string(),
        ),
        ("CONTACTD__EMAIL__DNS_RESOLVER", dns.addr.to_string()),
    ];
    let mut daemon = start_with(&db, &notify, &env);
    let smtp = daemon
        .smtp
        .clone()
        .expect("the daemon logs its SMTP address");

    // One client stops half-way through DATA and stays there.
    let mut stuck = BufReader::new(TcpStream::connect(&smtp).await.unwrap());
    reply(&mut stuck).await.unwrap();
    say(&mut stuck, "EHLO stuck.test\r\n").await.unwrap();
    say(&mut stuck, "MAIL FROM:<stuck@crash.test>\r\n")
        .await
        .unwrap();
    say(&mut stuck, "RCPT TO:<contact@council.example>\r\n")
        .await
        .unwrap();
    assert_eq!(say(&mut stuck, "DATA\r\n").await.unwrap(), "354");
    stuck
        .get_mut()
        .write_all(b"Message-ID: <half@crash.test>\r\nSubject: cut off\r\n\r\nHalf a mes")
        .await
        .unwrap();

    // Others keep sending; the daemon dies while they do.
    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let enough = Arc::new(Notify::new());
    let senders: Vec<_> = (0..6)
        .map(|c| tokio::spawn(sender(smtp.clone(), c, accepted.clone(), enough.clone())))
        .collect();
    enough.notified().await;
    daemon.child.kill().unwrap(); // SIGKILL, mid-conversation
    daemon.child.wait().unwrap();
    for s in senders {
        let _ = s.await;
    }
    let accepted: BTreeSet<String> = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= KILL_AFTER);

    // Restarted, every message that got 250 is a contact, once; the cut-off one is
    // nowhere.
    let mut again = start_with(&db, &notify, &env);
    // This process may not have opened a database yet (the daemon ran in another).
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let rows = sqlx::query("SELECT external_id FROM contacts WHERE channel = 'email'")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let stored: BTreeSet<String> = rows
        .iter()
        .map(|r| {
            let key: String = r.get("external_id");
            key.trim_start_matches("mid:<")
                .trim_end_matches('>')
                .to_string()
        })
        .collect();
    let lost: Vec<&String> = accepted.difference(&stored).collect();
    assert!(lost.is_empty(), "answered 250 but lost: {lost:?}");
    assert_eq!(stored.len(), rows.len(), "none twice");
    assert!(!stored.contains("half@crash.test"));
    let half = sqlx::query(
        "SELECT COUNT(*) AS n FROM contact_originals WHERE message_key = 'mid:<half@crash.test>'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(half.get::<i64, _>("n"), 0, "nothing half-written");
    conn.close().await.unwrap();
    again.child.kill().unwrap();
    again.child.wait().unwrap();
}
