//! Session timers (RFC 4028) for calls from the trunk: a caller that asks for them
//! (`Session-Expires`) gets them, with exactly one refresher per dialog, so a dialog
//! whose other end died without a BYE is ended even when its media looked alive
//! (a carrier's media server still sending, or a hold with no media at all).
//!
//! - An interval below our minimum is refused with 422 and our `Min-SE` (never
//!   below 90 s, RFC 4028 §5), so the caller can retry with a longer one.
//! - The refresher is the one the caller named; else the caller if it supports
//!   timers (`Supported: timer`), else us. Our 2xx says which
//!   (`Session-Expires: N;refresher=uac|uas`) and requires `timer` of a caller
//!   that supports it.
//! - When the caller refreshes, every re-INVITE or UPDATE answered 2xx restarts the
//!   interval; one that has not come by `interval - min(32 s, interval / 3)` ends
//!   the call (§10). When we refresh, we send UPDATE (a re-INVITE to a caller that
//!   does not allow UPDATE) at half the interval; a refresh that fails ends it.

use std::time::Duration;

use rsipstack::sip::{Header, HeadersExt, Request};

/// The smallest interval RFC 4028 lets anyone ask for.
pub const RFC_MIN_SE: u32 = 90;

/// Who sends the refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The caller (`refresher=uac`): we watch for its refreshes.
    Caller,
    /// We do (`refresher=uas`).
    Us,
}

/// The timer agreed for a dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    pub interval: Duration,
    pub refresher: Refresher,
    /// The caller said `Supported: timer`: our 2xx carries `Require: timer`.
    caller_supports: bool,
    /// The caller allows UPDATE: our refreshes are UPDATEs without a body.
    pub caller_allows_update: bool,
}

/// The caller asked for an interval shorter than we allow: answer 422 with this
/// `Min-SE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooSmall {
    pub min_se: u32,
}

/// What a request (an INVITE, or a refreshing re-INVITE or UPDATE) asks for.
/// `Ok(None)`: no session timer (the caller did not ask).
pub fn negotiate(
    request: &Request,
    our_min_se: u32,
    our_max: u32,
) -> Result<Option<SessionTimer>, TooSmall> {
    let asked = Asked {
        session_expires: request.header_value("Session-Expires"),
        min_se: request.header_value("Min-SE"),
        supports_timer: lists(request, "Supported", "timer"),
        allows_update: lists(request, "Allow", "UPDATE"),
    };
    asked.decide(our_min_se, our_max)
}

/// Whether any `name` header of `request` lists `token` (comma-separated, any case).
fn lists(request: &Request, name: &str, token: &str) -> bool {
    request
        .headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .flat_map(|h| h.value().split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

struct Asked {
    session_expires: Option<String>,
    min_se: Option<String>,
    supports_timer: bool,
    allows_update: bool,
}

impl Asked {
    fn decide(&self, our_min_se: u32, our_max: u32) -> Result<Option<SessionTimer>, TooSmall> {
        let Some(value) = &self.session_expires else {
            return Ok(None);
        };
        let mut parts = value.split(';').map(str::trim);
        // An interval we cannot read is treated as not asked for: the call goes on
        // without a timer rather than being refused for a header we do not need.
        let Some(asked) = parts.next().and_then(|s| s.parse::<u32>().ok()) else {
            return Ok(None);
        };
        let their_min = self
            .min_se
            .as_deref()
            .and_then(|m| m.split(';').next()?.trim().parse::<u32>().ok())
            .unwrap_or(0);
        let min_se = our_min_se.max(RFC_MIN_SE);
        if asked < min_se {
            return Err(TooSmall { min_se });
        }
        // We may shorten a long interval, never below either side's minimum.
        let interval = asked.min(our_max.max(min_se).max(their_min));
        let named = parts.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("refresher")
                .then(|| v.trim().to_ascii_lowercase())
        });
        let refresher = match named.as_deref() {
            Some("uac") => Refresher::Caller,
            Some("uas") => Refresher::Us,
            _ if self.supports_timer => Refresher::Caller,
            _ => Refresher::Us,
        };
        Ok(Some(SessionTimer {
            interval: Duration::from_secs(interval.into()),
            refresher,
            caller_supports: self.supports_timer,
            caller_allows_update: self.allows_update,
        }))
    }
}

impl SessionTimer {
    /// The headers of our 2xx (to the INVITE, and to each refresh).
    pub fn answer_headers(&self) -> Vec<Header> {
        let refresher = match self.refresher {
            Refresher::Caller => "uac",
            Refresher::Us => "uas",
        };
        let mut headers = vec![Header::Other(
            "Session-Expires".into(),
            format!("{};refresher={refresher}", self.interval.as_secs()),
        )];
        if self.caller_supports {
            headers.push(Header::Other("Require".into(), "timer".into()));
        }
        headers
    }

    /// The headers of a refresh we send (re-INVITE or UPDATE).
    pub fn refresh_headers(&self) -> Vec<Header> {
        vec![
            Header::Other(
                "Session-Expires".into(),
                format!("{};refresher=uas", self.interval.as_secs()),
            ),
            Header::Other("Supported".into(), "timer".into()),
        ]
    }

    /// How long after a refresh the next must happen: when we send it (half the
    /// interval), or when we give up waiting for the caller's (RFC 4028 §10).
    pub fn next_due(&self) -> Duration {
        match self.refresher {
            Refresher::Us => self.interval / 2,
            Refresher::Caller => self.interval - Duration::from_secs(32).min(self.interval / 3),
        }
    }
}

/// The `Min-SE` header of a 422.
pub fn min_se_header(too_small: TooSmall) -> Header {
    Header::Other("Min-SE".into(), too_small.min_se.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(se: Option<&str>, min_se: Option<&str>, supports: bool) -> Asked {
        Asked {
            session_expires: se.map(str::to_string),
            min_se: min_se.map(str::to_string),
            supports_timer: supports,
            allows_update: true,
        }
    }

    #[test]
    fn too_short_an_interval_gets_422_with_our_minimum() {
        assert_eq!(
            asked(Some("30"), None, true).decide(90, 1800),
            Err(TooSmall { min_se: 90 })
        );
        assert_eq!(
            asked(Some("100"), None, true).decide(120, 1800),
            Err(TooSmall { min_se: 120 })
        );
        // Nobody goes below RFC 4028's 90 s, whatever is configured.
        assert_eq!(
            asked(Some("60"), None, true).decide(10, 1800),
            Err(TooSmall { min_se: 90 })
        );
    }

    #[test]
    fn one_refresher_the_one_named_else_the_caller_if_it_can() {
        let timer = |a: Asked| a.decide(90, 1800).unwrap().unwrap();
        let t = timer(asked(Some("1800;refresher=uas"), None, true));
        assert_eq!((t.refresher, t.interval.as_secs()), (Refresher::Us, 1800));
        assert_eq!(
            timer(asked(Some("600"), None, true)).refresher,
            Refresher::Caller
        );
        assert_eq!(
            timer(asked(Some("600"), None, false)).refresher,
            Refresher::Us,
            "a caller without timer support cannot refresh"
        );
        let headers = timer(asked(Some("600;Refresher=UAC"), None, true)).answer_headers();
        let text: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
        assert_eq!(
            text,
            ["Session-Expires: 600;refresher=uac", "Require: timer"]
        );
        let headers = timer(asked(Some("600"), None, false)).answer_headers();
        assert_eq!(
            headers.len(),
            1,
            "Require only of a caller that supports it"
        );
    }

    #[test]
    fn a_long_interval_is_shortened_but_not_below_their_minimum() {
        let t = asked(Some("7200"), Some("3600"), true)
            .decide(90, 1800)
            .unwrap()
            .unwrap();
        assert_eq!(t.interval.as_secs(), 3600);
        let t = asked(Some("7200"), None, true)
            .decide(90, 1800)
            .unwrap()
            .unwrap();
        assert_eq!(t.interval.as_secs(), 1800);
    }

    #[test]
    fn no_session_expires_no_timer_and_garbage_is_ignored() {
        assert_eq!(asked(None, None, true).decide(90, 1800), Ok(None));
        assert_eq!(asked(Some("soon"), None, true).decide(90, 1800), Ok(None));
        assert_eq!(
            asked(Some("99999999999999"), None, true).decide(90, 1800),
            Ok(None)
        );
    }

    #[test]
    fn refreshes_are_due_at_half_or_given_up_on_before_the_end() {
        let t = |refresher, secs| SessionTimer {
            interval: Duration::from_secs(secs),
            refresher,
            caller_supports: true,
            caller_allows_update: true,
        };
        assert_eq!(t(Refresher::Us, 90).next_due(), Duration::from_secs(45));
        assert_eq!(t(Refresher::Caller, 90).next_due(), Duration::from_secs(60));
        assert_eq!(
            t(Refresher::Caller, 1800).next_due(),
            Duration::from_secs(1768)
        );
    }
}
