//! The SMTP receiver (RFC 5321): a small tokio server of our own, since the crates on
//! offer refuse the null sender `<>` that every bounce uses.
//!
//! It speaks EHLO/HELO, PIPELINING, 8BITMIME, SMTPUTF8, SIZE, MAIL (with `<>`), RCPT
//! (only for the recipients the [`MailHandler`] accepts; 550 otherwise), DATA (with
//! dot-unstuffing, 552 past the size limit), RSET, NOOP, VRFY (252), QUIT, and
//! STARTTLS (rustls) when a certificate is configured. Every
//! line is bounded, every wait timed out, and connections are limited in total and
//! per source address. DATA is answered 250 only after the handler says the message
//! is durably stored; 451 when it could not be, so the sender retries.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets; we allow extensions.
const MAX_COMMAND_LINE: usize = 2048;
/// §4.5.3.1.6: a text line is at most 1000 octets; tolerated up to this.
const MAX_DATA_LINE: usize = 64 * 1024;
/// Commands a session may send without delivering a message before it is closed (a
/// client looping on NOOP); a relay delivering many messages on one connection is
/// never cut off.
const MAX_COMMANDS: usize = 1000;
/// Unknown or out-of-order commands tolerated before the session is closed.
const MAX_ERRORS: usize = 10;

#[derive(Debug, Clone)]
pub struct SmtpLimits {
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_per_source: usize,
    pub command_timeout: Duration,
    pub session_timeout: Duration,
}

/// A message as the receiver took it: the envelope and the raw bytes.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The client's address, as the kernel gives it.
    pub peer: SocketAddr,
    pub helo: String,
    /// `None`: the null sender `<>` (bounces, auto-replies).
    pub mail_from: Option<String>,
    pub rcpt_to: Vec<String>,
    pub raw: Vec<u8>,
}

/// Why the handler could not store a message: the sender is told to retry (451).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NotStored(pub String);

/// What the receiver hands mail to.
pub trait MailHandler: Send + Sync + 'static {
    /// Whether mail to `recipient` is ours to take.
    fn accepts(&self, recipient: &str) -> bool;
    /// Stores the message durably; `Ok` means the sender may forget it.
    fn deliver(
        &self,
        mail: ReceivedMail,
    ) -> Pin<Box<dyn Future<Output = Result<(), NotStored>> + Send + '_>>;
}

/// A running receiver.
pub struct SmtpServer {
    addr: SocketAddr,
    accepting: CancellationToken,
    sessions: TaskTracker,
    end_all: CancellationToken,
}

impl SmtpServer {
    /// `tls`: a server configuration (certificate and key) to offer STARTTLS with.
    pub async fn start(
        listen: SocketAddr,
        hostname: String,
        limits: SmtpLimits,
        handler: Arc<dyn MailHandler>,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> std::io::Result<SmtpServer> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let accepting = CancellationToken::new();
        let end_all = CancellationToken::new();
        let sessions = TaskTracker::new();
        let per_source: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
        let config = Arc::new(Session {
            hostname,
            limits,
            handler,
            tls: tls.map(TlsAcceptor::from),
        });
        let (stop, end, tracker) = (accepting.clone(), end_all.clone(), sessions.clone());
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of descriptors and the like: pause rather than spin.
                            tracing::warn!(error = %e, "smtp accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = stop.cancelled() => return,
                };
                let admitted = {
                    let mut counts = per_source.lock().expect("not poisoned");
                    let total: usize = counts.values().sum();
                    let mine = counts.entry(peer.ip()).or_default();
                    if total >= config.limits.max_connections
                        || *mine >= config.limits.max_per_source
                    {
                        false
                    } else {
                        *mine += 1;
                        true
                    }
                };
                let config = config.clone();
                let counts = per_source.clone();
                let end = end.clone();
                tracker.spawn(async move {
                    let mut stream = stream;
                    if !admitted {
                        let _ = stream
                            .write_all(b"421 4.7.0 Too many connections, try again later\r\n")
                            .await;
                        return;
                    }
                    let session = config.serve_connection(stream, peer);
                    tokio::select! {
                        _ = tokio::time::timeout(config.limits.session_timeout, session) => {}
                        _ = end.cancelled() => {}
                    }
                    let mut counts = counts.lock().expect("not poisoned");
                    if let Some(n) = counts.get_mut(&peer.ip()) {
                        *n -= 1;
                        if *n == 0 {
                            counts.remove(&peer.ip());
                        }
                    }
                });
            }
        });
        Ok(SmtpServer {
            addr,
            accepting,
            sessions,
            end_all,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// New connections are refused from now on.
    pub fn stop_accepting(&self) {
        self.accepting.cancel();
    }

    /// Lets sessions finish within `grace`, then cuts the rest (a message not yet
    /// answered 250 is the sender's to retry: nothing accepted is lost).
    pub async fn shutdown(&self, grace: Duration) {
        self.stop_accepting();
        self.sessions.close();
        if tokio::time::timeout(grace, self.sessions.wait())
            .await
            .is_err()
        {
            self.end_all.cancel();
            self.sessions.wait().await;
        }
    }
}

struct Session {
    hostname: String,
    limits: SmtpLimits,
    handler: Arc<dyn MailHandler>,
    /// Offered as STARTTLS when a certificate is configured.
    tls: Option<TlsAcceptor>,
}

/// One SMTP session over any byte stream, as the listener runs it for each
/// connection (and as the fuzz target drives it with arbitrary bytes).
pub async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    hostname: &str,
    limits: &SmtpLimits,
    handler: Arc<dyn MailHandler>,
) {
    let session = Session {
        hostname: hostname.to_string(),
        limits: limits.clone(),
        handler,
        tls: None,
    };
    session.serve(stream, peer, false, true).await;
}

/// The STARTTLS configuration from a PEM certificate chain and its private key.
pub fn tls_config(
    certificate: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, String> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("{}: {e}", certificate.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", certificate.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(config))
}

/// One parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    /// `None` for `<>`; the parameters after the path (SIZE=…, BODY=…).
    Mail(Option<String>, Vec<String>),
    Rcpt(String),
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    StartTls,
    Unknown,
    /// A known verb with arguments that do not parse.
    Malformed(&'static str),
}

/// Parses one command line (without its CRLF). Never panics, whatever the bytes.
pub fn parse_command(line: &[u8]) -> Command {
    let Ok(line) = std::str::from_utf8(line) else {
        return Command::Unknown;
    };
    let line = line.trim_end();
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim()),
        None => (line, ""),
    };
    match verb.to_ascii_uppercase().as_str() {
        "HELO" if !rest.is_empty() => Command::Helo(rest.to_string()),
        "EHLO" if !rest.is_empty() => Command::Ehlo(rest.to_string()),
        "HELO" | "EHLO" => Command::Malformed("501 5.5.4 A domain or address is required"),
        "MAIL" => match strip_prefix_ci(rest, "FROM:") {
            Some(arg) => match path(arg) {
                Some((addr, params)) => Command::Mail(
                    (!addr.is_empty()).then(|| addr.to_string()),
                    params.split_whitespace().map(str::to_string).collect(),
                ),
                None => Command::Malformed("501 5.1.7 Bad sender address syntax"),
            },
            None => Command::Malformed("501 5.5.4 Syntax: MAIL FROM:<address>"),
        },
        "RCPT" => match strip_prefix_ci(rest, "TO:").and_then(path) {
            Some((addr, _)) if !addr.is_empty() => Command::Rcpt(addr.to_string()),
            _ => Command::Malformed("501 5.1.3 Bad recipient address syntax"),
        },
        "DATA" => Command::Data,
        "RSET" => Command::Rset,
        "NOOP" => Command::Noop,
        "QUIT" => Command::Quit,
        "VRFY" => Command::Vrfy,
        "STARTTLS" => Command::StartTls,
        _ => Command::Unknown,
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    // `get`: the bytes after the verb may split a character where the prefix ends.
    s.get(..prefix.len())
        .filter(|head| head.eq_ignore_ascii_case(prefix))
        .map(|_| s[prefix.len()..].trim_start())
}

/// `<addr> params`: the address inside the brackets (source routes dropped) and the
/// rest. A bare address without brackets is accepted too (many clients send one).
fn path(arg: &str) -> Option<(&str, &str)> {
    let (inside, rest) = match arg.strip_prefix('<') {
        Some(r) => {
            let end = r.find('>')?;
            (&r[..end], &r[end + 1..])
        }
        None => match arg.find(' ') {
            Some(i) => (&arg[..i], &arg[i..]),
            None => (arg, ""),
        },
    };
    // RFC 5321 §4.1.2: "@a,@b:user@c" — the route is ignored.
    let addr = inside.rsplit(':').next().unwrap_or_default();
    let ok = addr.is_empty()
        || (addr.len() <= 254
            && addr.contains('@')
            && !addr
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '<'));
    ok.then_some((addr, rest.trim()))
}

/// The envelope of the transaction under way.
#[derive(Default)]
struct Envelope {
    from: Option<Option<String>>,
    to: Vec<String>,
}

/// How a session over one stream ended.
enum Ended<S> {
    Closed,
    /// The client asked for STARTTLS: the same connection, to be wrapped in TLS.
    StartTls(S),
}

impl Session {
    /// A connection: in the clear, then (after STARTTLS, when a certificate is
    /// configured) a new session over TLS on the same connection.
    async fn serve_connection(&self, stream: TcpStream, peer: SocketAddr) {
        let Ended::StartTls(stream) = self.serve(stream, peer, self.tls.is_some(), true).await
        else {
            return;
        };
        let Some(acceptor) = &self.tls else { return };
        match tokio::time::timeout(self.limits.command_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                // RFC 3207: everything starts again, and STARTTLS is not offered twice.
                self.serve(tls, peer, false, false).await;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake timed out"),
        }
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        peer: SocketAddr,
        offer_tls: bool,
        greet: bool,
    ) -> Ended<S> {
        let mut reader = BufReader::new(stream);
        macro_rules! send {
            ($bytes:expr) => {
                reader.get_mut().write_all($bytes).await
            };
        }
        if greet {
            let greeting = format!("220 {} ESMTP contactd\r\n", self.hostname);
            if send!(greeting.as_bytes()).is_err() {
                return Ended::Closed;
            }
        }
        let mut helo: Option<String> = None;
        let mut envelope = Envelope::default();
        let mut errors = 0;
        let mut line = Vec::with_capacity(256);
        let mut commands = 0;
        while commands < MAX_COMMANDS {
            commands += 1;
            line.clear();
            let read = tokio::time::timeout(
                self.limits.command_timeout,
                read_line(&mut reader, &mut line, MAX_COMMAND_LINE),
            )
            .await;
            let reply: String = match read {
                Err(_) => {
                    let _ = send!(b"421 4.4.2 Idle too long, closing\r\n");
                    return Ended::Closed;
                }
                Ok(Err(_)) | Ok(Ok(Line::Eof)) => return Ended::Closed,
                Ok(Ok(Line::TooLong)) => "500 5.5.2 Line too long".into(),
                Ok(Ok(Line::Complete)) => match parse_command(&line) {
                    Command::Ehlo(name) => {
                        helo = Some(name);
                        envelope = Envelope::default();
                        format!(
                            "250-{} greets you\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n{}250 SIZE {}",
                            self.hostname,
                            if offer_tls { "250-STARTTLS\r\n" } else { "" },
                            self.limits.max_message_bytes
                        )
                    }
                    Command::Helo(name) => {
                        helo = Some(name);
                        envelope = Envelope::default();
                        format!("250 {}", self.hostname)
                    }
                    Command::Mail(..) if helo.is_none() => "503 5.5.1 Say EHLO first".into(),
                    Command::Mail(..) if envelope.from.is_some() => {
                        "503 5.5.1 Sender already given".into()
                    }
                    Command::Mail(from, params) => match declared_size(&params) {
                        Some(size) if size > self.limits.max_message_bytes => {
                            "552 5.3.4 Message size exceeds the limit".into()
                        }
                        _ => {
                            envelope.from = Some(from);
                            "250 2.1.0 OK".into()
                        }
                    },
                    Command::Rcpt(_) if envelope.from.is_none() => {
                        "503 5.5.1 Need MAIL first".into()
                    }
                    Command::Rcpt(_) if envelope.to.len() >= self.limits.max_recipients => {
                        "452 4.5.3 Too many recipients".into()
                    }
                    Command::Rcpt(to) => {
                        if self.handler.accepts(&to) {
                            envelope.to.push(to);
                            "250 2.1.5 OK".into()
                        } else {
                            "550 5.1.1 No such mailbox here".into()
                        }
                    }
                    Command::Data if envelope.to.is_empty() => "503 5.5.1 Need RCPT first".into(),
                    Command::Data => {
                        if send!(b"354 End data with <CR><LF>.<CR><LF>\r\n").is_err() {
                            return Ended::Closed;
                        }
                        let body = tokio::time::timeout(
                            self.limits.session_timeout,
                            read_data(
                                &mut reader,
                                self.limits.max_message_bytes,
                                self.limits.command_timeout,
                            ),
                        )
                        .await;
                        let env = std::mem::take(&mut envelope);
                        match body {
                            Ok(Ok(Some(raw))) => {
                                let mail = ReceivedMail {
                                    peer,
                                    helo: helo.clone().unwrap_or_default(),
                                    mail_from: env.from.flatten(),
                                    rcpt_to: env.to,
                                    raw,
                                };
                                match self.handler.deliver(mail).await {
                                    Ok(()) => {
                                        commands = 0;
                                        "250 2.0.0 OK: queued".into()
                                    }
                                    Err(e) => {
                                        tracing::error!(error = %e, "mail not stored; the sender will retry");
                                        "451 4.3.0 Not stored, try again later".into()
                                    }
                                }
                            }
                            Ok(Ok(None)) => "552 5.3.4 Message size exceeds the limit".into(),
                            Ok(Err(_)) | Err(_) => return Ended::Closed,
                        }
                    }
                    Command::Rset => {
                        envelope = Envelope::default();
                        "250 2.0.0 OK".into()
                    }
                    Command::Noop => "250 2.0.0 OK".into(),
                    Command::Vrfy => "252 2.1.5 Cannot verify, but will try".into(),
                    Command::Quit => {
                        let _ = send!(b"221 2.0.0 Bye\r\n");
                        return Ended::Closed;
                    }
                    Command::StartTls if !offer_tls => "454 4.7.0 TLS not available".into(),
                    Command::StartTls => {
                        if send!(b"220 2.0.0 Ready to start TLS\r\n").is_err() {
                            return Ended::Closed;
                        }
                        // Anything the client sent after STARTTLS, before the
                        // handshake, is discarded (RFC 3207 §4.2: command injection).
                        return Ended::StartTls(reader.into_inner());
                    }
                    Command::Malformed(reply) => {
                        errors += 1;
                        reply.into()
                    }
                    Command::Unknown => {
                        errors += 1;
                        "500 5.5.2 Command not recognised".into()
                    }
                },
            };
            if errors > MAX_ERRORS {
                let _ = send!(b"421 4.7.0 Too many errors\r\n");
                return Ended::Closed;
            }
            let mut reply = reply;
            reply.push_str("\r\n");
            if send!(reply.as_bytes()).is_err() {
                return Ended::Closed;
            }
        }
        let _ = send!(b"421 4.7.0 Too many commands\r\n");
        Ended::Closed
    }
}

fn declared_size(params: &[String]) -> Option<usize> {
    params.iter().find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.eq_ignore_ascii_case("SIZE").then(|| v.parse().ok())?
    })
}

enum Line {
    Complete,
    TooLong,
    Eof,
}

/// Reads one line (to LF) into `buf`, without its line ending. A line longer than
/// `max` is read to its end and discarded: memory stays bounded.
async fn read_line<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() && !too_long {
                Line::Eof
            } else {
                Line::Complete
            });
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let used = chunk.len();
        if !too_long {
            if buf.len() + used > max + 2 {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        reader.consume(used);
        if done {
            if too_long {
                return Ok(Line::TooLong);
            }
            while matches!(buf.last(), Some(b'\n' | b'\r')) {
                buf.pop();
            }
            return Ok(Line::Complete);
        }
    }
}

/// Reads DATA to the lone dot, dot-unstuffing. `Ok(None)`: larger than `max`
/// (read to its end and discarded, so the session can go on with 552).
async fn read_data<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    max: usize,
    line_timeout: Duration,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut message = Vec::new();
    let mut over = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = tokio::time::timeout(line_timeout, read_line(reader, &mut line, MAX_DATA_LINE))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "DATA stalled"))??;
        match read {
            Line::Eof => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed in DATA",
                ));
            }
            Line::TooLong => over = true,
            Line::Complete => {
                if line == b"." {
                    return Ok((!over).then_some(message));
                }
                let content = line.strip_prefix(b".").unwrap_or(&line);
                if message.len() + content.len() + 2 > max {
                    over = true;
                    message = Vec::new();
                }
                if !over {
                    message.extend_from_slice(content);
                    message.extend_from_slice(b"\r\n");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse_command(b"MAIL FROM:<>"),
            Command::Mail(None, Vec::new())
        );
        assert_eq!(
            parse_command(b"mail from: <a@b.example> SIZE=100 BODY=8BITMIME"),
            Command::Mail(
                Some("a@b.example".into()),
                vec!["SIZE=100".into(), "BODY=8BITMIME".into()]
            )
        );
        assert_eq!(
            parse_command(b"RCPT TO:<@relay.example:c@d.example>"),
            Command::Rcpt("c@d.example".into())
        );
        assert!(matches!(
            parse_command(b"RCPT TO:<>"),
            Command::Malformed(_)
        ));
        assert!(matches!(
            parse_command(b"MAIL FROM:<a b@c>"),
            Command::Malformed(_)
        ));
        assert_eq!(parse_command(b"\xff\xfe"), Command::Unknown);
        // Found by the fuzzer: a character split where "TO:" would end.
        assert!(matches!(
            parse_command("RCPT T)\u{188}#onta".as_bytes()),
            Command::Malformed(_)
        ));
        assert_eq!(
            parse_command(b"EHLO"),
            Command::Malformed("501 5.5.4 A domain or address is required")
        );
        assert_eq!(declared_size(&["SIZE=12".into()]), Some(12));
    }

    #[tokio::test]
    async fn data_is_unstuffed_and_bounded() {
        let input: &[u8] = b"Subject: x\r\n\r\n..leading dot\r\nline\r\n.\r\nNOOP\r\n";
        let mut reader = BufReader::new(input);
        let got = read_data(&mut reader, 1000, Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"Subject: x\r\n\r\n.leading dot\r\nline\r\n");
        let mut reader = BufReader::new(input);
        assert_eq!(
            read_data(&mut reader, 10, Duration::from_secs(1))
                .await
                .unwrap(),
            None
        );
        let mut rest = Vec::new();
        read_line(&mut reader, &mut rest, 100).await.unwrap();
        assert_eq!(
            rest, b"NOOP",
            "the session goes on after an oversized message"
        );
    }
}
