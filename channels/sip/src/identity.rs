//! Who is calling and whom they called, read strictly from From, To and
//! P-Asserted-Identity (RFC 3261 §20.10 name-addr / addr-spec, RFC 3325).
//!
//! Strict means: quoted display names (commas, semicolons and angle brackets inside
//! them included) are skipped as quoted strings, every `<` has its `>`, and a value
//! that cannot be read is an error, answered 400 by the server, never a guess from a
//! substring. P-Asserted-Identity is only believed from a trunk: the server asks for it
//! only then.

use crate::call::CallerId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("{0}: missing")]
    Missing(&'static str),
    #[error("{0}: unterminated quoted string")]
    UnterminatedQuote(&'static str),
    #[error("{0}: unbalanced angle brackets")]
    UnbalancedBrackets(&'static str),
    #[error("{0}: expected exactly one address")]
    NotOne(&'static str),
    #[error("{0}: too many addresses")]
    TooMany(&'static str),
    #[error("{0}: not a SIP, SIPS or TEL URI")]
    BadUri(&'static str),
    #[error("{0}: too long")]
    TooLong(&'static str),
}

/// The longest header value read here; real ones are a few hundred bytes.
const MAX_VALUE: usize = 1024;
/// The longest user part kept as a number.
const MAX_USER: usize = 64;

/// The identity of an incoming call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallIdentity {
    pub caller: CallerId,
    /// The user part of the To URI (the number dialled), empty when it has none.
    pub called: String,
    /// The From tag, part of what tells one dialog from another.
    pub from_tag: String,
}

impl CallIdentity {
    /// Reads an INVITE's identity. `trusted` says the request came from a trunk, whose
    /// P-Asserted-Identity is believed; from anyone else it is ignored.
    pub fn parse(request: &rsipstack::sip::Request, trusted: bool) -> Result<Self, HeaderError> {
        use rsipstack::sip::HeadersExt;
        let from_value = one_header(request, "From")?;
        let from = only_one("From", &from_value)?;
        let to_value = one_header(request, "To")?;
        let to = only_one("To", &to_value)?;
        let from_tag = from.param("tag").unwrap_or_default().to_string();
        let pai = match request.header_value("P-Asserted-Identity") {
            Some(v) if trusted => {
                let values = name_addrs("P-Asserted-Identity", &v)?;
                if values.len() > 2 {
                    return Err(HeaderError::TooMany("P-Asserted-Identity"));
                }
                for a in &values {
                    a.uri
                        .scheme()
                        .ok_or(HeaderError::BadUri("P-Asserted-Identity"))?;
                }
                // RFC 3325: at most one sip(s) URI and one tel URI; prefer tel.
                values
                    .iter()
                    .find(|a| a.uri.scheme() == Some(Scheme::Tel))
                    .or(values.first())
                    .and_then(|a| a.uri.user())
            }
            _ => None,
        };
        let privacy = request
            .header_value("Privacy")
            .is_some_and(|p| p.split(';').any(|t| t.trim().eq_ignore_ascii_case("id")));
        let user = pai.or_else(|| from.uri.user());
        let caller = match user {
            Some(u) if !privacy && !u.eq_ignore_ascii_case("anonymous") => CallerId::Number(u),
            _ => CallerId::Withheld,
        };
        Ok(CallIdentity {
            caller,
            called: to.uri.user().unwrap_or_default(),
            from_tag,
        })
    }
}

/// The address-of-record a REGISTER is for: the user part of its sip(s): To URI.
pub fn registered_user(request: &rsipstack::sip::Request) -> Result<String, HeaderError> {
    let to = only_one("To", &one_header(request, "To")?)?;
    if to.uri.scheme() != Some(Scheme::Sip) {
        return Err(HeaderError::BadUri("To"));
    }
    to.uri.user().ok_or(HeaderError::BadUri("To"))
}

/// Where a REFER asks the call to go: the user part of its sip(s): Refer-To (an
/// advisor's username, or a service's code).
pub fn refer_target(request: &rsipstack::sip::Request) -> Result<String, HeaderError> {
    let to = only_one("Refer-To", &one_header(request, "Refer-To")?)?;
    if to.uri.scheme() != Some(Scheme::Sip) {
        return Err(HeaderError::BadUri("Refer-To"));
    }
    to.uri.user().ok_or(HeaderError::BadUri("Refer-To"))
}

/// A Contact of a REGISTER: the URI as written, and its own `expires`, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterContact {
    pub uri: String,
    pub expires: Option<u32>,
}

/// What a REGISTER's Contact headers ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterContacts {
    /// `Contact: *`: every binding of the address-of-record (with `Expires: 0`).
    All,
    /// These contacts (none: only asking what is bound).
    These(Vec<RegisterContact>),
}

/// Contacts read from one REGISTER at most; a phone has one, a few devices a handful.
const MAX_REGISTER_CONTACTS: usize = 10;

/// Reads a REGISTER's Contact headers strictly: sip(s) URIs only, `*` alone.
pub fn register_contacts(
    request: &rsipstack::sip::Request,
) -> Result<RegisterContacts, HeaderError> {
    use rsipstack::sip::HeadersExt;
    let mut contacts = Vec::new();
    let mut wildcard = false;
    for header in request.contact_headers() {
        let value = header.value();
        if value.len() > MAX_VALUE {
            return Err(HeaderError::TooLong("Contact"));
        }
        if value.trim() == "*" {
            wildcard = true;
            continue;
        }
        for a in name_addrs("Contact", value)? {
            if a.uri.scheme() != Some(Scheme::Sip) {
                return Err(HeaderError::BadUri("Contact"));
            }
            let expires = match a.param("expires") {
                None => None,
                Some(e) => Some(e.parse().map_err(|_| HeaderError::BadUri("Contact"))?),
            };
            contacts.push(RegisterContact {
                uri: a.uri.0,
                expires,
            });
            if contacts.len() > MAX_REGISTER_CONTACTS {
                return Err(HeaderError::TooMany("Contact"));
            }
        }
    }
    match (wildcard, contacts.is_empty()) {
        (true, true) => Ok(RegisterContacts::All),
        (true, false) => Err(HeaderError::NotOne("Contact")),
        (false, _) => Ok(RegisterContacts::These(contacts)),
    }
}

fn one_header(
    request: &rsipstack::sip::Request,
    name: &'static str,
) -> Result<String, HeaderError> {
    use rsipstack::sip::HeadersExt;
    // Two of a header meant once (two Refer-To, two From) are refused, not read as
    // whichever comes first.
    let count = request
        .headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .count();
    if count > 1 {
        return Err(HeaderError::NotOne(name));
    }
    let value = request
        .header_value(name)
        .ok_or(HeaderError::Missing(name))?;
    if value.len() > MAX_VALUE {
        return Err(HeaderError::TooLong(name));
    }
    Ok(value)
}

fn only_one(name: &'static str, value: &str) -> Result<NameAddr, HeaderError> {
    let mut all = name_addrs(name, value)?;
    if all.len() != 1 {
        return Err(HeaderError::NotOne(name));
    }
    Ok(all.remove(0))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Sip,
    Tel,
}

/// A URI as written, without its angle brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Uri(String);

impl Uri {
    fn scheme(&self) -> Option<Scheme> {
        let lower = self.0.get(..5).unwrap_or(&self.0).to_ascii_lowercase();
        if lower.starts_with("sips:") || lower.starts_with("sip:") {
            Some(Scheme::Sip)
        } else if lower.starts_with("tel:") {
            Some(Scheme::Tel)
        } else {
            None
        }
    }

    /// The user part of a sip(s): URI (`user@host`), or a tel: URI's number; `None`
    /// when there is none or it is not printable ASCII of a sensible length.
    fn user(&self) -> Option<String> {
        let (_, rest) = self.0.split_once(':')?;
        let user = match self.scheme()? {
            Scheme::Sip => rest.split_once('@')?.0,
            Scheme::Tel => rest,
        };
        // User parameters (`;npdi`) and a password (`user:pw`) are not part of the number.
        let user = user.split([';', ':']).next()?;
        let ok = !user.is_empty()
            && user.len() <= MAX_USER
            && user
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
        ok.then(|| user.to_string())
    }
}

/// One element of a name-addr list: `"Display" <uri>;params` or `uri;params`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NameAddr {
    uri: Uri,
    params: String,
}

impl NameAddr {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.split(';').find_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Splits a header value into its addresses: commas inside quoted strings or angle
/// brackets do not separate.
fn name_addrs(name: &'static str, value: &str) -> Result<Vec<NameAddr>, HeaderError> {
    let mut out = Vec::new();
    for element in split_top_level(name, value)? {
        out.push(name_addr(name, element.trim())?);
    }
    Ok(out)
}

fn split_top_level<'a>(name: &'static str, value: &'a str) -> Result<Vec<&'a str>, HeaderError> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped, mut angle) = (0, false, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' if !angle => quoted = !quoted,
            '<' if !quoted => {
                if angle {
                    return Err(HeaderError::UnbalancedBrackets(name));
                }
                angle = true;
            }
            '>' if !quoted => {
                if !angle {
                    return Err(HeaderError::UnbalancedBrackets(name));
                }
                angle = false;
            }
            ',' if !quoted && !angle => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(HeaderError::UnterminatedQuote(name));
    }
    if angle {
        return Err(HeaderError::UnbalancedBrackets(name));
    }
    parts.push(&value[start..]);
    Ok(parts)
}

fn name_addr(name: &'static str, element: &str) -> Result<NameAddr, HeaderError> {
    if element.is_empty() {
        return Err(HeaderError::BadUri(name));
    }
    // Find `<` outside a quoted display name.
    let mut quoted = false;
    let mut escaped = false;
    let mut open = None;
    for (i, c) in element.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => {
                open = Some(i);
                break;
            }
            _ => {}
        }
    }
    let (uri, params) = match open {
        Some(i) => {
            let close = element[i..]
                .find('>')
                .map(|j| i + j)
                .ok_or(HeaderError::UnbalancedBrackets(name))?;
            let display = element[..i].trim();
            if !display.is_empty() && !display.starts_with('"') && display.contains(['"', '<', '>'])
            {
                return Err(HeaderError::BadUri(name));
            }
            let rest = element[close + 1..].trim();
            if !rest.is_empty() && !rest.starts_with(';') {
                return Err(HeaderError::BadUri(name));
            }
            (element[i + 1..close].trim(), rest)
        }
        // addr-spec: header parameters follow the first `;` (RFC 3261 §20.10).
        None => match element.find(';') {
            Some(i) => (element[..i].trim(), &element[i..]),
            None => (element, ""),
        },
    };
    if uri.is_empty() || uri.contains(char::is_whitespace) || !uri.contains(':') {
        return Err(HeaderError::BadUri(name));
    }
    Ok(NameAddr {
        uri: Uri(uri.to_string()),
        params: params.trim_start_matches(';').to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(extra: &str) -> rsipstack::sip::Request {
        let text = format!(
            "INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK1\r\n\
             From: \"Jo\" <sip:07700900123@192.0.2.9>;tag=1\r\nTo: <sip:1000@127.0.0.1>\r\n\
             Call-ID: abc\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        rsipstack::sip::Request::try_from(text.as_str()).unwrap()
    }

    fn caller(extra: &str, trusted: bool) -> CallerId {
        CallIdentity::parse(&invite(extra), trusted).unwrap().caller
    }

    #[test]
    fn from_to_and_asserted_identity() {
        let id = CallIdentity::parse(&invite(""), true).unwrap();
        assert_eq!(id.caller, CallerId::Number("07700900123".into()));
        assert_eq!((id.called.as_str(), id.from_tag.as_str()), ("1000", "1"));
        let pai = "P-Asserted-Identity: \"Council, Trunk\" <sip:+447700900999@trunk.example>, <tel:+447700900998>\r\n";
        assert_eq!(caller(pai, true), CallerId::Number("+447700900998".into()));
        // From outside a trunk, P-Asserted-Identity counts for nothing.
        assert_eq!(caller(pai, false), CallerId::Number("07700900123".into()));
        assert_eq!(
            caller(&format!("{pai}Privacy: id\r\n"), true),
            CallerId::Withheld
        );
    }

    #[test]
    fn quoted_commas_and_brackets_do_not_split() {
        let from = "P-Asserted-Identity: \"Smith, J <admin>\" <sip:+447700900111@t.example;user=phone>\r\n";
        assert_eq!(caller(from, true), CallerId::Number("+447700900111".into()));
    }

    #[test]
    fn what_cannot_be_read_strictly_is_an_error() {
        for bad in [
            "P-Asserted-Identity: \"unterminated <sip:1@x>\r\n",
            "P-Asserted-Identity: <sip:1@x\r\n",
            "P-Asserted-Identity: <sip:1@x>>\r\n",
            "P-Asserted-Identity: <http://example.com>\r\n",
            "P-Asserted-Identity: <sip:1@a>, <sip:2@b>, <tel:3>\r\n",
        ] {
            assert!(CallIdentity::parse(&invite(bad), true).is_err(), "{bad}");
        }
        let two_froms = "INVITE sip:1000@h SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK1\r\n\
            From: <sip:1@a>;tag=1, <sip:2@b>\r\nTo: <sip:1000@h>\r\n\
            Call-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        if let Ok(r) = rsipstack::sip::Request::try_from(two_froms) {
            assert!(CallIdentity::parse(&r, true).is_err());
        }
    }

    #[test]
    fn anonymous_and_host_only_uris_are_withheld() {
        let text = "INVITE sip:1000@h SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK1\r\n\
            From: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1\r\nTo: <sip:1000@h>\r\n\
            Call-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let r = rsipstack::sip::Request::try_from(text).unwrap();
        assert_eq!(
            CallIdentity::parse(&r, true).unwrap().caller,
            CallerId::Withheld
        );
        let host_only = "P-Asserted-Identity: <sip:trunk.example>\r\n";
        assert_eq!(
            caller(host_only, true),
            CallerId::Number("07700900123".into())
        );
    }

    fn request(method: &str, extra: &str) -> rsipstack::sip::Request {
        let text = format!(
            "{method} sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK1\r\n\
             From: <sip:amy@h>;tag=1\r\nTo: <sip:amy@h>\r\nCall-ID: x\r\n\
             CSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        rsipstack::sip::Request::try_from(text.as_str()).unwrap()
    }

    #[test]
    fn a_register_with_too_many_or_odd_contacts_is_refused() {
        let many: String = (0..11)
            .map(|i| format!("Contact: <sip:amy@192.0.2.{i}>\r\n"))
            .collect();
        assert!(register_contacts(&request("REGISTER", &many)).is_err());
        let in_one: Vec<String> = (0..11).map(|i| format!("<sip:amy@192.0.2.{i}>")).collect();
        let in_one = format!("Contact: {}\r\n", in_one.join(", "));
        assert!(register_contacts(&request("REGISTER", &in_one)).is_err());
        for odd in [
            "Contact: <tel:+441632960000>\r\n",
            "Contact: *\r\nContact: <sip:amy@192.0.2.1>\r\n",
            "Contact: <sip:amy@192.0.2.1>;expires=soon\r\n",
            "Contact: <sip:amy@192.0.2.1\r\n",
        ] {
            assert!(
                register_contacts(&request("REGISTER", odd)).is_err(),
                "{odd:?}"
            );
        }
        let ten: String = (0..10)
            .map(|i| format!("Contact: <sip:amy@192.0.2.{i}>;expires=60\r\n"))
            .collect();
        match register_contacts(&request("REGISTER", &ten)).unwrap() {
            RegisterContacts::These(c) => assert_eq!(c.len(), 10),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refer_to_that_is_not_one_sip_uri_with_a_user_is_refused() {
        for bad in [
            "",
            "Refer-To: <tel:+441632960000>\r\n",
            "Refer-To: <sip:192.0.2.1>\r\n",
            "Refer-To: <sip:bob@h>, <sip:eve@h>\r\n",
            "Refer-To: <sip:bob@h>\r\nRefer-To: <sip:eve@h>\r\n",
            "Refer-To: <sip:bob@h\r\n",
        ] {
            assert!(refer_target(&request("REFER", bad)).is_err(), "{bad:?}");
        }
        assert_eq!(
            refer_target(&request("REFER", "Refer-To: <sip:waste@h>\r\n")).unwrap(),
            "waste"
        );
    }
}
