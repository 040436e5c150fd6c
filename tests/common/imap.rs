//! A real IMAP server for the email tests: a private Dovecot on loopback with one
//! mailbox, and Python's imaplib as the client that puts mail into it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub const USER: &str = "council";
pub const PASSWORD: &str = "mailbox-secret";

/// What a test's Dovecot offers besides password sign-in on plain IMAP.
#[derive(Default)]
pub struct DovecotOptions {
    /// XOAUTH2, with tokens checked at this RFC 7662 introspection endpoint.
    pub oauth_introspection_url: Option<String>,
    /// IMAP over TLS (`imaps`) on a second port, with this certificate and key.
    pub tls: Option<(PathBuf, PathBuf)>,
}

pub struct Dovecot {
    pub port: u16,
    /// The `imaps` port, when TLS was asked for.
    pub tls_port: Option<u16>,
    dir: PathBuf,
    _child: Child,
    _scratch: tempfile::TempDir,
}

impl Dovecot {
    /// Starts Dovecot with its state, mail and logs in a scratch directory its
    /// unprivileged processes can reach.
    pub async fn start() -> Dovecot {
        Dovecot::start_with(DovecotOptions::default()).await
    }

    pub async fn start_with(options: DovecotOptions) -> Dovecot {
        use std::os::unix::fs::PermissionsExt;
        let scratch = tempfile::tempdir().unwrap();
        std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = scratch.path().join("dovecot");
        for sub in ["run", "state", "mail"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        // Mail is owned by Dovecot's own unprivileged user.
        let status = std::process::Command::new("chown")
            .args(["-R", "dovecot:dovecot"])
            .arg(dir.join("mail"))
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::write(dir.join("users"), format!("{USER}:{{PLAIN}}{PASSWORD}\n")).unwrap();
        let d = dir.display();
        // A token fails the password file and goes on to the oauth2 passdb.
        let (mechanisms, oauth) = match &options.oauth_introspection_url {
            None => ("plain login", String::new()),
            Some(url) => {
                std::fs::write(
                    dir.join("oauth2.conf"),
                    format!(
                        "introspection_mode = post\nintrospection_url = {url}\n\
                         username_attribute = username\nactive_attribute = active\nactive_value = true\n"
                    ),
                )
                .unwrap();
                (
                    "plain login xoauth2 oauthbearer",
                    format!(
                        "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {d}/oauth2.conf\n}}\n"
                    ),
                )
            }
        };
        // Dovecot cannot be given port 0: a port taken between the choice and its bind
        // is chosen again.
        for _ in 0..20 {
            // free_udp_port leaves four ports free: the second is for imaps.
            let port = super::sipp::free_udp_port();
            let tls_port = options.tls.as_ref().map(|_| port + 1);
            let (ssl, imaps) = match (&options.tls, tls_port) {
                (Some((certificate, key)), Some(tls_port)) => (
                    format!(
                        "ssl = yes\nssl_cert = <{}\nssl_key = <{}\n",
                        certificate.display(),
                        key.display()
                    ),
                    format!(
                        "  inet_listener imaps {{\n    port = {tls_port}\n    ssl = yes\n  }}\n"
                    ),
                ),
                _ => ("ssl = no\n".to_string(), String::new()),
            };
            let conf = format!(
                "base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\n\
                 protocols = imap\nlisten = 127.0.0.1\n{ssl}disable_plaintext_auth = no\n\
                 auth_mechanisms = {mechanisms}\nmail_location = maildir:{d}/mail/%u\n\
                 default_internal_user = dovecot\ndefault_login_user = dovenull\nfirst_valid_uid = 100\n\
                 passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {d}/users\n}}\n\
                 {oauth}\
                 userdb {{\n  driver = static\n  args = uid=dovecot gid=dovecot home={d}/mail/%u\n}}\n\
                 service imap-login {{\n  inet_listener imap {{\n    port = {port}\n  }}\n{imaps}}}\n\
                 service stats {{\n  unix_listener stats-writer {{\n    mode = 0666\n  }}\n}}\n"
            );
            let conf_path = dir.join("dovecot.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let mut child = Command::new("dovecot")
                .arg("-F")
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("Dovecot is required (scripts/test installs dovecot-imapd)");
            // Started when it greets; a process that exits lost the port.
            let greeted = tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    if let Ok(Some(_)) = child.try_wait() {
                        return false;
                    }
                    if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                        use tokio::io::AsyncReadExt;
                        let mut s = s;
                        let mut buf = [0u8; 64];
                        if let Ok(n) = s.read(&mut buf).await
                            && buf[..n].starts_with(b"* OK")
                        {
                            return true;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await
            .unwrap_or(false);
            if greeted {
                return Dovecot {
                    port,
                    tls_port,
                    dir,
                    _child: child,
                    _scratch: scratch,
                };
            }
        }
        let log = std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default();
        panic!("Dovecot did not start:\n{log}");
    }

    pub fn url(&self) -> String {
        format!("imap://{USER}@127.0.0.1:{}/INBOX", self.port)
    }

    /// The same mailbox over TLS.
    pub fn tls_url(&self, folder: &str) -> String {
        format!(
            "imaps://{USER}@127.0.0.1:{}/{folder}",
            self.tls_port.expect("started with TLS")
        )
    }

    /// Appends `message` to INBOX with imaplib (an IMAP client nobody here wrote).
    pub async fn append(&self, message: &str) {
        self.append_to("INBOX", message).await;
    }

    pub async fn append_to(&self, folder: &str, message: &str) {
        self.imaplib(
            &format!("m.append('{folder}', None, None, sys.stdin.buffer.read())"),
            message,
        )
        .await;
    }

    /// Deletes a folder and everything in it.
    pub async fn delete(&self, folder: &str) {
        self.imaplib(&format!("m.delete('{folder}')"), "").await;
    }

    /// A folder's UIDVALIDITY.
    pub async fn uid_validity(&self, folder: &str) -> u32 {
        let out = self
            .imaplib(
                &format!(
                    "import re\nprint(re.search(rb'UIDVALIDITY (\\d+)', m.status('{folder}', '(UIDVALIDITY)')[1][0]).group(1).decode())"
                ),
                "",
            )
            .await;
        out.trim().parse().unwrap()
    }

    /// Ends every session of the mailbox's user, as a provider does when a token
    /// expires mid-session.
    pub async fn kick(&self) {
        let out = Command::new("doveadm")
            .arg("-c")
            .arg(self.dir.join("dovecot.conf"))
            .args(["kick", USER])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "doveadm kick: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates a folder.
    pub async fn create(&self, folder: &str) {
        self.imaplib(&format!("m.create('{folder}')"), "").await;
    }

    /// How many messages `folder` holds.
    pub async fn count(&self, folder: &str) -> usize {
        let out = self
            .imaplib(&format!("print(m.select('{folder}')[1][0].decode())"), "")
            .await;
        out.trim().parse().unwrap()
    }

    /// The flags of every message in INBOX, by UID.
    pub async fn flags(&self) -> String {
        self.imaplib(
            "m.select('INBOX'); print(m.uid('FETCH', '1:*', '(FLAGS)'))",
            "",
        )
        .await
    }

    async fn imaplib(&self, action: &str, input: &str) -> String {
        let script = format!(
            "import imaplib, sys\nm = imaplib.IMAP4('127.0.0.1', {})\nm.login('{USER}', '{PASSWORD}')\n{action}\nm.logout()\n",
            self.port
        );
        let mut child = Command::new("python3")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(input.as_bytes()).await.unwrap();
        }
        let out = child.wait_with_output().await.unwrap();
        assert!(
            out.status.success(),
            "imaplib failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The OAuth provider of the XOAUTH2 tests (`tests/peers/oauth_provider.py`): a
/// token endpoint that rotates refresh tokens and can revoke the grant, and the
/// introspection endpoint Dovecot checks access tokens with.
pub struct OAuthProvider {
    pub port: u16,
    _child: Child,
}

pub const OAUTH_CLIENT_ID: &str = "contactd";
pub const OAUTH_CLIENT_SECRET: &str = "app-secret";

impl OAuthProvider {
    pub async fn start(first_refresh_token: &str) -> OAuthProvider {
        use tokio::io::AsyncBufReadExt;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/oauth_provider.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([
                OAUTH_CLIENT_ID,
                OAUTH_CLIENT_SECRET,
                USER,
                first_refresh_token,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the OAuth provider starts")
            .unwrap()
            .expect("the OAuth provider prints its port");
        OAuthProvider {
            port: port.trim().parse().expect("a port"),
            _child: child,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn admin(&self, what: &str) {
        let status = reqwest::Client::new()
            .post(self.url(&format!("/admin/{what}")))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success());
    }

    /// Every access token issued so far stops working.
    pub async fn expire_access_tokens(&self) {
        self.admin("expire").await;
    }

    /// The grant is revoked: refreshing answers `invalid_grant`.
    pub async fn revoke(&self) {
        self.admin("revoke").await;
    }

    /// How many refreshes the provider has granted.
    pub async fn refreshes(&self) -> u64 {
        let stats: serde_json::Value = reqwest::get(self.url("/admin/stats"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["refreshes"].as_u64().unwrap()
    }
}
