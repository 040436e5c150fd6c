//! Digest authentication of advisors' phones: RFC 3261 §22 with the SHA-256 algorithm
//! of RFC 8760, and MD5 for older phones that know nothing else. Only `qop=auth` is
//! accepted (every phone of the last fifteen years sends it; without it a response is
//! not bound to a client nonce).
//!
//! Nonces carry their own issue time and an HMAC over it and the source address, so
//! the server keeps no state per challenge: a nonce from another address, a forged one
//! or an old one is simply challenged again (`stale=true` when it was ours). What is
//! kept is each nonce's last nonce-count, so a captured response cannot be replayed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

/// A digest algorithm, preferred first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Md5,
}

impl Algorithm {
    /// The IANA name, as written in `algorithm=`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Md5 => "MD5",
        }
    }

    pub fn parse(name: &str) -> Option<Algorithm> {
        if name.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else if name.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else {
            None
        }
    }

    /// H(data) in lower-case hex.
    pub fn hash(self, data: &str) -> String {
        match self {
            Algorithm::Sha256 => hex(&Sha256::digest(data.as_bytes())),
            Algorithm::Md5 => {
                use md5::Digest as _;
                hex(&md5::Md5::digest(data.as_bytes()))
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a registrar keeps instead of a password: H(username:realm:password) for the
/// one algorithm the credential is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ha1 {
    pub algorithm: Algorithm,
    pub hex: String,
}

impl Ha1 {
    pub fn of(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> Ha1 {
        Ha1 {
            algorithm,
            hex: algorithm.hash(&format!("{username}:{realm}:{password}")),
        }
    }
}

/// The `Authorization` a phone sent, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestResponse {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub cnonce: String,
    pub nc: u32,
    pub opaque: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("not a Digest credential")]
    NotDigest,
    #[error("malformed credential: {0}")]
    Malformed(&'static str),
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("algorithm not supported")]
    Algorithm,
    #[error("only qop=auth is supported")]
    Qop,
}

/// The longest credential read; real ones are a few hundred bytes.
const MAX_CREDENTIAL: usize = 2048;

impl DigestResponse {
    /// Parses an `Authorization` value (`Digest k=v, k="v", …`).
    pub fn parse(value: &str) -> Result<DigestResponse, DigestError> {
        if value.len() > MAX_CREDENTIAL {
            return Err(DigestError::Malformed("too long"));
        }
        let value = value.trim();
        let rest = match value.split_once(char::is_whitespace) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("Digest") => rest,
            _ => return Err(DigestError::NotDigest),
        };
        let params = parse_params(rest)?;
        let get = |name: &'static str| -> Result<String, DigestError> {
            params.get(name).cloned().ok_or(DigestError::Missing(name))
        };
        // RFC 3261: no algorithm means MD5.
        let algorithm = match params.get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::parse(a).ok_or(DigestError::Algorithm)?,
        };
        match params.get("qop") {
            Some(q) if q.eq_ignore_ascii_case("auth") => {}
            _ => return Err(DigestError::Qop),
        }
        let nc = get("nc")?;
        if nc.len() != 8 {
            return Err(DigestError::Malformed("nc is eight hex digits"));
        }
        let nc = u32::from_str_radix(&nc, 16).map_err(|_| DigestError::Malformed("nc"))?;
        Ok(DigestResponse {
            username: get("username")?,
            realm: get("realm")?,
            nonce: get("nonce")?,
            uri: get("uri")?,
            response: get("response")?.to_ascii_lowercase(),
            algorithm,
            cnonce: get("cnonce")?,
            nc,
            opaque: params.get("opaque").cloned(),
        })
    }

    /// Whether this response proves knowledge of the password behind `ha1` for a
    /// request with `method`.
    pub fn proves(&self, ha1: &Ha1, method: &str) -> bool {
        if ha1.algorithm != self.algorithm {
            return false;
        }
        let h = |s: &str| self.algorithm.hash(s);
        let ha2 = h(&format!("{method}:{}", self.uri));
        let expected = h(&format!(
            "{}:{}:{:08x}:{}:auth:{ha2}",
            ha1.hex, self.nonce, self.nc, self.cnonce
        ));
        constant_time_eq(expected.as_bytes(), self.response.as_bytes())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `k=v` and `k="v"` pairs separated by commas; names lower-cased, at most 20 of them.
fn parse_params(s: &str) -> Result<HashMap<String, String>, DigestError> {
    let mut params = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(params);
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            name.push(c.to_ascii_lowercase());
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') || name.is_empty() {
            return Err(DigestError::Malformed("expected name=value"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(DigestError::Malformed("unterminated quoted string")),
                    Some('"') => break,
                    Some('\\') => value.push(
                        chars
                            .next()
                            .ok_or(DigestError::Malformed("unterminated quoted string"))?,
                    ),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        if params.len() >= 20 || params.insert(name, value).is_some() {
            return Err(DigestError::Malformed("too many or repeated parameters"));
        }
    }
}

/// What a nonce turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours, for this source, in date, and its count moved forward.
    Fresh,
    /// Ours but expired, or a count already used: challenge again with `stale=true`.
    Stale,
    /// Not one we issued to this source.
    Unknown,
}

/// Issues and checks nonces.
pub struct Nonces {
    key: [u8; 32],
    lifetime: Duration,
    /// The last nonce-count seen per nonce, for nonces still in date.
    counts: Mutex<HashMap<String, (u32, u64)>>,
}

/// Nonce-counts remembered at most; past it, the oldest nonces are forgotten (a phone
/// holding one is challenged again).
const MAX_COUNTS: usize = 100_000;

impl Nonces {
    pub fn new(lifetime: Duration) -> Nonces {
        Nonces {
            key: rand::random(),
            lifetime,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn mac(&self, issued: u64, salt: u64, source: IpAddr) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(&issued.to_be_bytes());
        mac.update(&salt.to_be_bytes());
        mac.update(source.to_string().as_bytes());
        hex(&mac.finalize().into_bytes()[..16])
    }

    /// A nonce for a challenge to `source`. Each is unique (a random salt): phones
    /// behind one NAT challenged in the same second each get their own, so one's
    /// nonce-count never makes another's look replayed.
    pub fn issue(&self, source: IpAddr) -> String {
        let issued = Self::now_secs();
        let salt: u64 = rand::random();
        format!("{issued:x}.{salt:x}.{}", self.mac(issued, salt, source))
    }

    /// Checks a response's nonce and nonce-count, and records the count.
    pub fn check(&self, nonce: &str, nc: u32, source: IpAddr) -> NonceCheck {
        let mut parts = nonce.splitn(3, '.');
        let (Some(issued), Some(salt), Some(mac)) = (parts.next(), parts.next(), parts.next())
        else {
            return NonceCheck::Unknown;
        };
        let (Ok(issued), Ok(salt)) = (
            u64::from_str_radix(issued, 16),
            u64::from_str_radix(salt, 16),
        ) else {
            return NonceCheck::Unknown;
        };
        if !constant_time_eq(mac.as_bytes(), self.mac(issued, salt, source).as_bytes()) {
            return NonceCheck::Unknown;
        }
        let now = Self::now_secs();
        if now.saturating_sub(issued) > self.lifetime.as_secs() {
            return NonceCheck::Stale;
        }
        let mut counts = self.counts.lock().expect("not poisoned");
        if counts.len() >= MAX_COUNTS && !counts.contains_key(nonce) {
            let lifetime = self.lifetime.as_secs();
            counts.retain(|_, (_, at)| now.saturating_sub(*at) <= lifetime);
            if counts.len() >= MAX_COUNTS {
                return NonceCheck::Stale;
            }
        }
        match counts.get_mut(nonce) {
            Some((last, _)) if nc <= *last => NonceCheck::Stale,
            Some((last, _)) => {
                *last = nc;
                NonceCheck::Fresh
            }
            None => {
                counts.insert(nonce.to_string(), (nc, issued));
                NonceCheck::Fresh
            }
        }
    }
}

/// A `WWW-Authenticate` value for one algorithm.
pub fn challenge(realm: &str, nonce: &str, algorithm: Algorithm, stale: bool) -> String {
    format!(
        "Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{}",
        algorithm.name(),
        if stale { ", stale=true" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8760 §3.4's example is for HTTP; this one is computed by hand from the
    /// definitions (RFC 2617 §3.2.2.1) for a SIP REGISTER.
    #[test]
    fn a_response_computed_from_the_definitions_is_proven() {
        for algorithm in [Algorithm::Md5, Algorithm::Sha256] {
            let ha1 = Ha1::of(algorithm, "alice", "contactd", "secret");
            let ha2 = algorithm.hash("REGISTER:sip:127.0.0.1");
            let response = algorithm.hash(&format!(
                "{}:n1:00000001:c1:auth:{ha2}",
                algorithm.hash("alice:contactd:secret")
            ));
            let header = format!(
                "Digest username=\"alice\", realm=\"contactd\", nonce=\"n1\", uri=\"sip:127.0.0.1\", \
                 response=\"{response}\", algorithm={}, cnonce=\"c1\", qop=auth, nc=00000001",
                algorithm.name()
            );
            let r = DigestResponse::parse(&header).unwrap();
            assert!(r.proves(&ha1, "REGISTER"));
            assert!(!r.proves(&ha1, "INVITE"));
            let wrong = Ha1::of(algorithm, "alice", "contactd", "guess");
            assert!(!r.proves(&wrong, "REGISTER"));
        }
        assert_eq!(
            Algorithm::Md5.hash(""),
            "d41d8cd98f00b204e9800998ecf8427e",
            "MD5 of nothing"
        );
    }

    #[test]
    fn malformed_credentials_are_errors_not_panics() {
        for bad in [
            "",
            "Basic YWxpY2U6c2VjcmV0",
            "Digest",
            "Digest username=\"alice",
            "Digest =x",
            "Digest username=alice, username=bob",
            "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"r\", cnonce=\"c\", nc=1, qop=auth",
            "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"r\", cnonce=\"c\", nc=00000001",
            "Digest username=\"a\", algorithm=SHA-512-256, qop=auth",
            "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"r\", cnonce=\"c\", nc=0000000g, qop=auth",
        ] {
            assert!(DigestResponse::parse(bad).is_err(), "{bad:?}");
        }
        assert!(DigestResponse::parse(&"Digest a=b, ".repeat(400)).is_err());
    }

    #[test]
    fn nonces_are_bound_to_their_source_and_counts_only_move_forward() {
        let nonces = Nonces::new(Duration::from_secs(300));
        let here: IpAddr = "192.0.2.1".parse().unwrap();
        let there: IpAddr = "192.0.2.2".parse().unwrap();
        let n = nonces.issue(here);
        assert_eq!(nonces.check(&n, 1, there), NonceCheck::Unknown);
        assert_eq!(nonces.check(&n, 1, here), NonceCheck::Fresh);
        assert_eq!(nonces.check(&n, 1, here), NonceCheck::Stale, "replayed");
        assert_eq!(nonces.check(&n, 2, here), NonceCheck::Fresh);
        assert_eq!(nonces.check("0.00", 1, here), NonceCheck::Unknown);
        assert_eq!(nonces.check("zz", 1, here), NonceCheck::Unknown);
        assert_eq!(nonces.check("1.2.3.4", 1, here), NonceCheck::Unknown);
        let old = format!("{:x}.{:x}.{}", 1000, 7, nonces.mac(1000, 7, here));
        assert_eq!(nonces.check(&old, 1, here), NonceCheck::Stale);
    }

    #[test]
    fn phones_behind_one_address_challenged_at_once_each_get_their_own_nonce() {
        let nonces = Nonces::new(Duration::from_secs(300));
        let office: IpAddr = "192.0.2.1".parse().unwrap();
        let (a, b) = (nonces.issue(office), nonces.issue(office));
        assert_ne!(a, b);
        assert_eq!(nonces.check(&a, 1, office), NonceCheck::Fresh);
        assert_eq!(nonces.check(&b, 1, office), NonceCheck::Fresh);
    }
}
