//! A real IMAP server for the email tests: a private Dovecot on loopback with one
//! mailbox, and Python's imaplib as the client that puts mail into it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub const USER: &str = "council";
pub const PASSWORD: &str = "mailbox-secret";

pub struct Dovecot {
    pub port: u16,
    dir: PathBuf,
    _child: Child,
    _scratch: tempfile::TempDir,
}

impl Dovecot {
    /// Starts Dovecot with its state, mail and logs in a scratch directory its
    /// unprivileged processes can reach.
    pub async fn start() -> Dovecot {
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
        // Dovecot cannot be given port 0: a port taken between the choice and its bind
        // is chosen again.
        for _ in 0..20 {
            let port = super::sipp::free_udp_port();
            let d = dir.display();
            let conf = format!(
                "base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\n\
                 protocols = imap\nlisten = 127.0.0.1\nssl = no\ndisable_plaintext_auth = no\n\
                 auth_mechanisms = plain login\nmail_location = maildir:{d}/mail/%u\n\
                 default_internal_user = dovecot\ndefault_login_user = dovenull\nfirst_valid_uid = 100\n\
                 passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {d}/users\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=dovecot gid=dovecot home={d}/mail/%u\n}}\n\
                 service imap-login {{\n  inet_listener imap {{\n    port = {port}\n  }}\n}}\n\
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

    /// Appends `message` to INBOX with imaplib (an IMAP client nobody here wrote).
    pub async fn append(&self, message: &str) {
        self.imaplib(
            "m.append('INBOX', None, None, sys.stdin.buffer.read())",
            message,
        )
        .await;
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
