//! A received message, parsed (mail-parser) into the plain values the hub needs:
//! who sent it, its Message-ID and thread headers, its text (the text part, else the
//! HTML part as text), whether it was sent automatically (RFC 3834), and whether it
//! is a delivery report (RFC 3464). Bounded: the text kept is cut at a limit.

use mail_parser::{HeaderValue, Message, MessageParser, MimeHeaders};

/// The most text kept from one message; the raw message keeps the rest.
pub const MAX_TEXT_CHARS: usize = 100_000;
/// Attachments kept apart per message, and the largest one; the rest stay in the raw
/// message (kept whole) and are counted in `attachments_skipped`.
pub const MAX_ATTACHMENTS: usize = 20;
pub const MAX_ATTACHMENT_BYTES: usize = 15 * 1024 * 1024;

/// A part the sender attached (or an inline image), decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The file name the sender gave, cleaned; `attachment-N` if none.
    pub name: String,
    /// `type/subtype`, lower case, as the sender declared it.
    pub content_type: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundEmail {
    /// With angle brackets; `None` if the message had none.
    pub message_id: Option<String>,
    /// The From address (lower case), if it had one that parses.
    pub from: Option<String>,
    pub subject: String,
    /// In-Reply-To, then References (newest last), with angle brackets.
    pub answers: Vec<String>,
    /// Outlook's Thread-Index (base64), if the message had one.
    pub thread_index: Option<String>,
    /// What the sender wrote this time.
    pub text: String,
    /// The history they quoted below it (kept, shown after the new text).
    pub quoted: String,
    /// Why the message must not be answered automatically, if it must not.
    pub automatic: Option<&'static str>,
    /// A delivery status notification (multipart/report; report-type=delivery-status).
    pub delivery_report: bool,
    pub attachments: Vec<Attachment>,
    /// Attachments past the limits, left in the raw message only.
    pub attachments_skipped: usize,
}

impl InboundEmail {
    /// What stands in for a message that could not be read in time: nothing taken
    /// from it but a note; the raw message is kept whole for staff.
    pub fn unread() -> InboundEmail {
        InboundEmail {
            message_id: None,
            from: None,
            subject: String::new(),
            answers: Vec::new(),
            thread_index: None,
            text: "(This message could not be read in time. It is kept exactly as it arrived.)"
                .into(),
            quoted: String::new(),
            automatic: None,
            delivery_report: false,
            attachments: Vec::new(),
            attachments_skipped: 0,
        }
    }
}

/// Parses `raw`. A message mail-parser cannot read at all still yields a value (no
/// headers, the bytes as lossy text), so nothing received is ever dropped.
pub fn parse(raw: &[u8]) -> InboundEmail {
    let Some(message) = MessageParser::default().parse(raw) else {
        return InboundEmail {
            message_id: None,
            from: None,
            subject: String::new(),
            answers: Vec::new(),
            thread_index: None,
            text: truncate(&String::from_utf8_lossy(raw)),
            quoted: String::new(),
            automatic: None,
            delivery_report: false,
            attachments: Vec::new(),
            attachments_skipped: 0,
        };
    };
    let from = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(|a| a.trim().to_lowercase())
        .filter(|a| a.contains('@'));
    let mut answers = ids(message.in_reply_to());
    for id in ids(message.references()) {
        if !answers.contains(&id) {
            answers.push(id);
        }
    }
    let content_type = message
        .header("Content-Type")
        .and_then(HeaderValue::as_content_type);
    let delivery_report = content_type.is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    });
    let attachments = attachments_of(&message);
    let whole = truncate(text_of(&message).trim());
    let (text, quoted) = split_reply(&whole);
    InboundEmail {
        message_id: message.message_id().map(|id| format!("<{}>", id.trim())),
        subject: message.subject().unwrap_or_default().trim().to_string(),
        thread_index: message
            .header_raw("Thread-Index")
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty() && v.len() <= 2048),
        text,
        quoted,
        automatic: automatic(&message, from.as_deref(), delivery_report),
        from,
        answers,
        delivery_report,
        attachments_skipped: message.attachment_count().saturating_sub(attachments.len()),
        attachments,
    }
}

fn attachments_of(message: &Message) -> Vec<Attachment> {
    message
        .attachments()
        .filter(|part| part.contents().len() <= MAX_ATTACHMENT_BYTES)
        .take(MAX_ATTACHMENTS)
        .enumerate()
        .map(|(i, part)| {
            let content_type = part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_string(),
                })
                .unwrap_or_else(|| "application/octet-stream".into())
                .to_ascii_lowercase();
            Attachment {
                name: clean_name(part.attachment_name())
                    .unwrap_or_else(|| format!("attachment-{}", i + 1)),
                content_type,
                bytes: part.contents().to_vec(),
            }
        })
        .collect()
}

/// A file name fit to show and to offer for download: no path, no control
/// characters, at most 200 characters.
fn clean_name(name: Option<&str>) -> Option<String> {
    let name = name?.rsplit(['/', '\\']).next()?;
    let cleaned: String = name
        .chars()
        .filter(|c| !c.is_control() && *c != '"')
        .take(200)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_string();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// Splits a reply into what was written now and the history quoted below it: from
/// the first attribution line ("On … wrote:", Outlook's "-----Original Message-----"
/// or "From: …" header block) or the first run of ">" lines. With nothing new above
/// (a bottom-poster, or a forward), everything counts as new.
pub fn split_reply(text: &str) -> (String, String) {
    let lines: Vec<&str> = text.lines().collect();
    let starts_history = |i: usize| {
        let l = lines[i].trim();
        (l.starts_with("On ") && l.ends_with("wrote:"))
            || l.starts_with("-----Original Message-----")
            || l.starts_with("________________________________")
            || (l.starts_with("From: ")
                && lines.get(i + 1).is_some_and(|n| {
                    let n = n.trim();
                    n.starts_with("Sent: ") || n.starts_with("Date: ")
                }))
            || l.starts_with('>')
    };
    match (0..lines.len()).find(|&i| starts_history(i)) {
        Some(i) if lines[..i].iter().any(|l| !l.trim().is_empty()) => (
            lines[..i].join("\n").trim_end().to_string(),
            lines[i..].join("\n"),
        ),
        _ => (text.to_string(), String::new()),
    }
}

fn ids(value: &HeaderValue) -> Vec<String> {
    let list: Vec<&str> = match (value.as_text_list(), value.as_text()) {
        (Some(list), _) => list.iter().map(|c| c.as_ref()).collect(),
        (None, Some(one)) => vec![one],
        _ => Vec::new(),
    };
    list.into_iter()
        .map(|id| format!("<{}>", id.trim().trim_matches(['<', '>'])))
        .filter(|id| id.len() > 2 && id.len() <= 998)
        .take(100)
        .collect()
}

/// The text part, else the HTML part reduced to text, else nothing.
fn text_of(message: &Message) -> String {
    if message.text_body_count() > 0
        && let Some(text) = message.body_text(0)
    {
        return text.into_owned();
    }
    if let Some(html) = message.body_html(0) {
        return html_to_text(&html);
    }
    String::new()
}

/// Tags dropped, block ends made line breaks, entities of the common kind decoded.
/// Linear in the input, whatever it holds (2,000 links or a broken tag).
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let Some(close) = after.find('>') else {
            rest = "";
            break;
        };
        let tag = after[1..close].trim_start_matches('/').to_ascii_lowercase();
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if matches!(
            name.as_str(),
            "br" | "p" | "div" | "tr" | "li" | "h1" | "h2" | "h3" | "blockquote"
        ) {
            out.push('\n');
        }
        rest = &after[close + 1..];
        // The contents of style and script are not text.
        if (name == "style" || name == "script") && !tag.starts_with('/') {
            let end = format!("</{name}");
            match rest.to_ascii_lowercase().find(&end) {
                Some(i) => rest = &rest[i..],
                None => rest = "",
            }
        }
    }
    out.push_str(rest);
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    let lines: Vec<&str> = decoded.lines().map(str::trim).collect();
    let mut text = String::new();
    let mut blank = false;
    for line in lines {
        if line.is_empty() {
            blank = !text.is_empty();
            continue;
        }
        if blank {
            text.push_str("\n\n");
        } else if !text.is_empty() {
            text.push('\n');
        }
        blank = false;
        text.push_str(line);
    }
    text
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_TEXT_CHARS) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// RFC 3834 and the conventions of auto-responders and list servers: why this
/// message must not be answered automatically. `Auto-Submitted: no` and
/// `X-Auto-Response-Suppress` alone mean nothing (Outlook sends the latter on
/// ordinary mail).
fn automatic(message: &Message, from: Option<&str>, report: bool) -> Option<&'static str> {
    let raw = |name: &str| {
        message
            .header_raw(name)
            .map(|v| v.trim().to_ascii_lowercase())
    };
    if let Some(v) = raw("Auto-Submitted")
        && !v.starts_with("no")
    {
        return Some("Auto-Submitted");
    }
    if let Some(v) = raw("Precedence")
        && ["bulk", "list", "junk", "auto_reply"]
            .iter()
            .any(|p| v.contains(p))
    {
        return Some("Precedence");
    }
    if message.headers_raw().any(|(name, _)| {
        name.get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("list-"))
    }) {
        return Some("List-*");
    }
    if raw("X-Autoreply").is_some() || raw("X-Autorespond").is_some() {
        return Some("X-Autoreply");
    }
    if report {
        return Some("multipart/report");
    }
    match from {
        None => Some("no sender"),
        Some(f) => {
            let local = f.split('@').next().unwrap_or_default();
            (local.eq_ignore_ascii_case("mailer-daemon")
                || local.eq_ignore_ascii_case("postmaster"))
            .then_some("MAILER-DAEMON")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_plain_reply() {
        let raw =
            b"From: Ann <Ann@Example.org>\r\nTo: contact@council.example\r\nSubject: Re: bins\r\n\
Message-ID: <m1@example.org>\r\nIn-Reply-To: <r1-aa.1@council.example>\r\n\
References: <a@x> <r1-aa.1@council.example>\r\nAuto-Submitted: no\r\n\r\nStill not collected.\r\n";
        let m = parse(raw);
        assert_eq!(m.from.as_deref(), Some("ann@example.org"));
        assert_eq!(m.message_id.as_deref(), Some("<m1@example.org>"));
        assert_eq!(m.answers, vec!["<r1-aa.1@council.example>", "<a@x>"]);
        assert_eq!(m.text.trim(), "Still not collected.");
        assert_eq!(m.automatic, None);
    }

    #[test]
    fn recognises_automatic_mail() {
        let ooo = b"From: b@example.org\r\nAuto-Submitted: auto-replied\r\n\r\nAway\r\n";
        assert_eq!(parse(ooo).automatic, Some("Auto-Submitted"));
        let list = b"From: b@example.org\r\nList-Id: <x.example>\r\n\r\nHi\r\n";
        assert_eq!(parse(list).automatic, Some("List-*"));
        let daemon = b"From: MAILER-DAEMON@mx.example\r\n\r\nfailed\r\n";
        assert_eq!(parse(daemon).automatic, Some("MAILER-DAEMON"));
        let outlook = b"From: c@example.org\r\nX-Auto-Response-Suppress: All\r\n\r\nHello\r\n";
        assert_eq!(parse(outlook).automatic, None);
    }

    #[test]
    fn html_only_mail_becomes_text() {
        let raw = b"From: a@b.example\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><style>p{}</style><p>Hello &amp; welcome</p><p>Line<br>two</p></html>\r\n";
        assert_eq!(parse(raw).text, "Hello & welcome\nLine\ntwo");
    }

    #[test]
    fn the_new_text_comes_before_the_quoted_history() {
        let (new, quoted) = split_reply(
            "Still broken.\n\nOn Mon, 23 Nov 2026, Council wrote:\n> Your reference is SR-1000002",
        );
        assert_eq!(new, "Still broken.");
        assert!(quoted.starts_with("On Mon") && quoted.contains("SR-1000002"));
        let (new, quoted) = split_reply("Thanks\n\nFrom: Council\nSent: Monday\nSubject: x");
        assert_eq!(
            (new.as_str(), quoted.starts_with("From: Council")),
            ("Thanks", true)
        );
        let (new, quoted) = split_reply("> quoted first\nthen my answer");
        assert_eq!(
            (new.as_str(), quoted.as_str()),
            ("> quoted first\nthen my answer", "")
        );
    }

    #[test]
    fn garbage_is_kept_not_dropped() {
        let m = parse(b"\xff\xfe\x00garbage");
        assert!(!m.text.is_empty() || m.subject.is_empty());
    }
}
