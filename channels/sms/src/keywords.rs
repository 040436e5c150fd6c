//! The keywords carriers and Twilio act on. A keyword is the whole message (trimmed,
//! any case): "stop" is a keyword, "please stop the noise" is a complaint.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    /// The sender no longer wants texts from this number.
    OptOut,
    /// The sender wants texts again.
    OptIn,
    Help,
}

impl Keyword {
    pub fn of(body: &str) -> Option<Keyword> {
        let word = body
            .trim()
            .trim_end_matches(['.', '!'])
            .to_ascii_uppercase();
        match word.as_str() {
            "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" | "REVOKE"
            | "OPTOUT" => Some(Keyword::OptOut),
            "START" | "YES" | "UNSTOP" => Some(Keyword::OptIn),
            "HELP" | "INFO" => Some(Keyword::Help),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_message_any_case() {
        for s in [
            "STOP",
            "stop",
            " Stop ",
            "StopAll",
            "unsubscribe",
            "cancel",
            "END",
            "quit",
            "revoke",
            "optout",
            "stop.",
        ] {
            assert_eq!(Keyword::of(s), Some(Keyword::OptOut), "{s}");
        }
        for s in ["START", "yes", "Unstop"] {
            assert_eq!(Keyword::of(s), Some(Keyword::OptIn), "{s}");
        }
        assert_eq!(Keyword::of("help"), Some(Keyword::Help));
        assert_eq!(Keyword::of("Info"), Some(Keyword::Help));
        for s in [
            "please stop the noise",
            "stop it",
            "",
            "yes please",
            "SR-1000002",
        ] {
            assert_eq!(Keyword::of(s), None, "{s}");
        }
    }
}
