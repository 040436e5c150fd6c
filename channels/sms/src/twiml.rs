//! TwiML, the XML Twilio expects in answer to an inbound-message webhook: nothing to
//! do, or one reply message.

pub const CONTENT_TYPE: &str = "text/xml";

/// An empty answer, or one that sends `reply` back to the texter.
pub fn answer(reply: Option<&str>) -> String {
    match reply {
        Some(text) => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>{}</Message></Response>",
            xml_escape(text)
        ),
        None => "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>".to_string(),
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_the_reply() {
        assert_eq!(
            super::answer(Some("a<b & \"c\"")),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>a&lt;b &amp; &quot;c&quot;</Message></Response>"
        );
        assert!(super::answer(None).ends_with("<Response/>"));
    }
}
