//! Whether a received message's sender is proven: SPF, DKIM and DMARC checked by us
//! (Stalwart's mail-auth) for mail our SMTP receiver took. Only a DMARC pass proves
//! the From address; anything else — no DMARC record, a failure, a DNS error, a
//! check that took too long — leaves the sender unproven, which costs a resident
//! nothing but a staff member's look, and costs a forger everything.
//!
//! Alignment is strict (the From domain itself, no organisational-domain folding):
//! without a public-suffix list, relaxed alignment could be fooled across suffixes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mail_auth::hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use mail_auth::{
    AuthenticatedMessage, DmarcResult, MessageAuthenticator, dmarc::verify::DmarcParameters,
    spf::verify::SpfParameters,
};

/// The longest the three checks may take together.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

pub struct SenderCheck {
    authenticator: MessageAuthenticator,
    host_domain: String,
}

/// What the checks concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// DMARC passed for the From domain (through aligned SPF or DKIM).
    pub proven: bool,
    /// For the record: `dmarc=pass spf=pass dkim=none`, and so on.
    pub summary: String,
}

impl SenderCheck {
    /// `dns`: the resolver to ask, or `None` for the system's (`/etc/resolv.conf`).
    /// `host_domain`: our own name, for SPF's `%{r}` macro.
    pub fn new(dns: Option<SocketAddr>, host_domain: &str) -> Result<Self, String> {
        let mut options = ResolverOpts::default();
        options.timeout = Duration::from_secs(5);
        options.attempts = 2;
        let authenticator = match dns {
            Some(addr) => MessageAuthenticator::new(
                ResolverConfig::from_parts(
                    None,
                    Vec::new(),
                    NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true),
                ),
                options,
            ),
            None => MessageAuthenticator::new_system_conf(),
        }
        .map_err(|e| format!("email.dns_resolver: {e}"))?;
        Ok(SenderCheck {
            authenticator,
            host_domain: host_domain.to_string(),
        })
    }

    /// Checks `raw`, received from `ip` after `helo`, with envelope sender
    /// `mail_from` (`None` for `<>`).
    pub async fn verify(
        &self,
        raw: &[u8],
        ip: IpAddr,
        helo: &str,
        mail_from: Option<&str>,
    ) -> Verdict {
        match tokio::time::timeout(CHECK_TIMEOUT, self.check(raw, ip, helo, mail_from)).await {
            Ok(verdict) => verdict,
            Err(_) => Verdict {
                proven: false,
                summary: "dmarc=temperror (timed out)".into(),
            },
        }
    }

    async fn check(&self, raw: &[u8], ip: IpAddr, helo: &str, mail_from: Option<&str>) -> Verdict {
        let Some(message) = AuthenticatedMessage::parse(raw) else {
            return Verdict {
                proven: false,
                summary: "dmarc=permerror (unparseable)".into(),
            };
        };
        let dkim = self.authenticator.verify_dkim(&message).await;
        // With the null sender, SPF checks the HELO identity (RFC 7208 §2.4).
        let sender = mail_from.unwrap_or_default();
        let spf_domain = match mail_from.and_then(|m| m.rsplit_once('@')) {
            Some((_, domain)) => domain.to_ascii_lowercase(),
            None => helo.to_ascii_lowercase(),
        };
        let spf = self
            .authenticator
            .verify_spf(if sender.is_empty() {
                SpfParameters::verify_ehlo(ip, helo, &self.host_domain)
            } else {
                SpfParameters::verify_mail_from(ip, helo, &self.host_domain, sender)
            })
            .await;
        let dmarc = self
            .authenticator
            .verify_dmarc(DmarcParameters::new(&message, &dkim, &spf_domain, &spf))
            .await;
        let passed = |r: &DmarcResult| matches!(r, DmarcResult::Pass);
        let proven = passed(dmarc.dkim_result()) || passed(dmarc.spf_result());
        let word = |r: &DmarcResult| match r {
            DmarcResult::Pass => "pass",
            DmarcResult::Fail(_) => "fail",
            DmarcResult::TempError(_) => "temperror",
            DmarcResult::PermError(_) => "permerror",
            DmarcResult::None => "none",
        };
        Verdict {
            proven,
            summary: format!(
                "dmarc={} (spf {}, dkim {}) spf={:?} dkim={}",
                if proven { "pass" } else { "fail" },
                word(dmarc.spf_result()),
                word(dmarc.dkim_result()),
                spf.result(),
                dkim.len()
            ),
        }
    }
}

/// The verdict a trusted mailbox provider wrote into the message (for mail fetched
/// by IMAP, which we did not receive ourselves): only the topmost
/// `Authentication-Results` header, and only if the provider's own `authserv-id`
/// added it — a sender can write any number of such headers further down, and
/// comments are where forgeries hide a `dmarc=pass`.
pub fn from_authentication_results(
    raw: &[u8],
    trusted_authserv_id: &str,
    from_domain: &str,
) -> Verdict {
    let unproven = |why: &str| Verdict {
        proven: false,
        summary: why.to_string(),
    };
    if trusted_authserv_id.is_empty() {
        return unproven("no trusted provider configured");
    }
    let Some(message) = mail_parser::MessageParser::default().parse(raw) else {
        return unproven("unparseable");
    };
    let Some(value) = message
        .headers_raw()
        .find(|(name, _)| name.eq_ignore_ascii_case("Authentication-Results"))
        .map(|(_, v)| v)
    else {
        return unproven("no Authentication-Results");
    };
    let value = strip_comments(&value.replace(['\r', '\n'], " "));
    let mut parts = value.split(';').map(str::trim);
    let authserv = parts
        .next()
        .and_then(|p| p.split_whitespace().next())
        .unwrap_or_default();
    if !authserv.eq_ignore_ascii_case(trusted_authserv_id) {
        return unproven("the topmost Authentication-Results is not the provider's");
    }
    let proven = parts.any(|part| {
        let mut words = part.split_whitespace();
        let passed = words
            .next()
            .is_some_and(|m| m.eq_ignore_ascii_case("dmarc=pass"));
        let aligned = words.all(|w| match w.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("header.from") => {
                v.trim_matches('"').eq_ignore_ascii_case(from_domain)
            }
            _ => true,
        });
        passed && aligned
    });
    Verdict {
        proven,
        summary: format!(
            "{authserv}: dmarc={}",
            if proven { "pass" } else { "not pass" }
        ),
    }
}

/// Removes RFC 5322 comments (nested parentheses, backslash escapes).
fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let (mut depth, mut escaped) = (0usize, false);
    for c in s.chars() {
        match (c, depth, escaped) {
            (_, d, true) if d > 0 => escaped = false,
            ('\\', d, false) if d > 0 => escaped = true,
            ('(', d, _) => depth = d + 1,
            (')', d, _) if d > 0 => depth = d - 1,
            (c, 0, _) => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::from_authentication_results as verdict;

    const PASS: &str = "Authentication-Results: mx.microsoft.com 1; spf=pass smtp.mailfrom=example.org;\r\n dkim=pass header.d=example.org; dmarc=pass action=none header.from=example.org\r\n";

    fn mail(headers: &str) -> Vec<u8> {
        format!("{headers}From: ann@example.org\r\nSubject: x\r\n\r\nhi\r\n").into_bytes()
    }

    #[test]
    fn only_the_providers_topmost_verdict_counts() {
        assert!(verdict(&mail(PASS), "mx.microsoft.com", "example.org").proven);
        // Aligned to another domain: not Ann's.
        assert!(!verdict(&mail(PASS), "mx.microsoft.com", "example.net").proven);
        // A forged header below the provider's fail counts for nothing.
        let forged = format!(
            "Authentication-Results: mx.microsoft.com; dmarc=fail header.from=example.org\r\n{PASS}"
        );
        assert!(!verdict(&mail(&forged), "mx.microsoft.com", "example.org").proven);
        // Another server's header on top: not the provider's word.
        let other = PASS.replace("mx.microsoft.com", "evil.example");
        assert!(!verdict(&mail(&other), "mx.microsoft.com", "example.org").proven);
        // A pass hidden in a comment is no pass.
        let comment = "Authentication-Results: mx.microsoft.com; dmarc=fail (dmarc=pass) header.from=example.org\r\n";
        assert!(!verdict(&mail(comment), "mx.microsoft.com", "example.org").proven);
        assert!(!verdict(&mail(PASS), "", "example.org").proven);
    }
}
