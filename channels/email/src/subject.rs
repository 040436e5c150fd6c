//! The subject tag: `[SR-1000002]` anywhere in a subject, whatever reply and forward
//! prefixes a mail client put before it (Re:, AW:, SV:, VS:, WG:, 回复:, Fwd:, RE[2]:).
//! Only the subject is searched, never the quoted text of the body.

/// The reference text inside the first `[SR-…]` tag, e.g. `SR-1000002`.
pub fn tag(subject: &str) -> Option<&str> {
    let mut rest = subject;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let close = after.find(']')?;
        let inside = after[..close].trim();
        if inside.len() > 3
            && inside[..3].eq_ignore_ascii_case("SR-")
            && inside[3..].bytes().all(|b| b.is_ascii_digit())
            && inside.len() <= 24
        {
            return Some(inside);
        }
        rest = &after[close + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::tag;

    #[test]
    fn finds_the_tag_past_any_prefix() {
        for s in [
            "Re: Bins [SR-1000002]",
            "AW: SV: VS: WG: [SR-1000002] Bins",
            "回复: [SR-1000002]",
            "Fwd: RE[2]: [SR-1000002]x",
            "[sr-1000002]",
        ] {
            assert_eq!(
                tag(s).map(str::to_ascii_uppercase).as_deref(),
                Some("SR-1000002"),
                "{s}"
            );
        }
        let long = format!("{} [SR-1000002]", "x".repeat(240));
        assert_eq!(tag(&long), Some("SR-1000002"));
        assert_eq!(tag("SR-1000002 without brackets"), None);
        assert_eq!(tag("[SR-] [SR-12a]"), None);
    }
}
