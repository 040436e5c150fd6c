//! Reply tokens: how a reply finds its request without trusting anything the sender
//! could make up. A token names a request and carries an HMAC of it under a key only
//! the daemon holds, so it cannot be forged or guessed; it travels in the Reply-To
//! plus-address and in every Message-ID we send, and comes back in the recipient
//! address or in In-Reply-To/References.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Reference;

/// Bytes of HMAC carried in a token: 64 bits is beyond guessing by mail.
const TAG_BYTES: usize = 8;

#[derive(Clone)]
pub struct ReplyTokens {
    key: Vec<u8>,
}

impl std::fmt::Debug for ReplyTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyTokens(***)")
    }
}

impl ReplyTokens {
    pub fn new(key: &[u8]) -> Self {
        ReplyTokens { key: key.to_vec() }
    }

    fn tag(&self, number: i64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(b"contactd reply token\0");
        mac.update(&number.to_be_bytes());
        hex::encode(&mac.finalize().into_bytes()[..TAG_BYTES])
    }

    /// `r<number>-<tag>`: lower case, since mail systems may fold the case of a
    /// local part.
    pub fn issue(&self, reference: Reference) -> String {
        format!("r{}-{}", reference.number(), self.tag(reference.number()))
    }

    /// The request a token names, if the token is one of ours.
    pub fn verify(&self, token: &str) -> Option<Reference> {
        let (number, tag) = token.strip_prefix(['r', 'R'])?.split_once('-')?;
        if number.is_empty() || number.len() > 18 || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let number: i64 = number.parse().ok()?;
        let expected = self.tag(number);
        // Constant-time: the tag must not leak through timing.
        let given = tag.to_ascii_lowercase();
        (given.len() == expected.len()
            && given
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0)
            .then(|| Reference::from_number(number))
    }

    /// Every token of ours in `text` (a recipient address, Message-IDs): the first
    /// that verifies.
    pub fn find_in(&self, text: &str) -> Option<Reference> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .flat_map(|word| word.split('.'))
            .find_map(|candidate| self.verify(candidate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_others_do_not() {
        let tokens = ReplyTokens::new(b"k");
        let r = Reference::from_number(1000002);
        let t = tokens.issue(r);
        assert_eq!(tokens.verify(&t), Some(r));
        assert_eq!(tokens.verify(&t.to_uppercase()), Some(r));
        assert_eq!(ReplyTokens::new(b"other").verify(&t), None);
        let forged = t.replace("r1000002", "r1000003");
        assert_eq!(tokens.verify(&forged), None);
        assert_eq!(
            tokens.find_in(&format!("contact+{t}@council.example")),
            Some(r)
        );
        assert_eq!(
            tokens.find_in(&format!("<{t}.0190abc@council.example>")),
            Some(r)
        );
        assert_eq!(tokens.find_in("<r1-0000000000000000@x>"), None);
    }
}
