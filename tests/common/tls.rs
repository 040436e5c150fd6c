//! Certificates for the TLS tests, made with openssl: a CA of the test's own and a
//! server certificate it signed for `127.0.0.1` and `localhost` (a self-signed leaf
//! would be refused by rustls, as it should be).

use std::path::{Path, PathBuf};

pub struct TestCertificates {
    /// The CA's certificate: what a client is told to trust.
    pub ca: PathBuf,
    /// The server's certificate chain and private key (PEM).
    pub certificate: PathBuf,
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCertificates {
    pub fn new() -> TestCertificates {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        let (ca_key, ca, key, request, certificate, extensions) = (
            p("ca.key"),
            p("ca.pem"),
            p("key.pem"),
            p("server.csr"),
            p("cert.pem"),
            p("server.ext"),
        );
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"],
                &ec[..],
                &["-days", "2", "-subj", "/CN=Test CA"],
            ]
            .concat(),
            &[("-keyout", &ca_key), ("-out", &ca)],
        );
        openssl(
            &[&["req"], &ec[..], &["-subj", "/CN=127.0.0.1"]].concat(),
            &[("-keyout", &key), ("-out", &request)],
        );
        std::fs::write(
            &extensions,
            "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(
            &["x509", "-req", "-days", "2", "-set_serial", "2"],
            &[
                ("-in", &request),
                ("-CA", &ca),
                ("-CAkey", &ca_key),
                ("-extfile", &extensions),
                ("-out", &certificate),
            ],
        );
        // Dovecot's unprivileged processes never read these; its master does, as root.
        TestCertificates {
            ca,
            certificate,
            key,
            _dir: dir,
        }
    }
}

fn openssl(args: &[&str], paths: &[(&str, &Path)]) {
    let mut command = std::process::Command::new("openssl");
    command.args(args);
    for (flag, path) in paths {
        command.arg(flag).arg(path);
    }
    let out = command.output().expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
