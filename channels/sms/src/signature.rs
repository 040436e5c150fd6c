//! `X-Twilio-Signature`: base64 of HMAC-SHA1, keyed by the auth token, over the full
//! URL Twilio requested followed by every POST parameter's name and value, sorted by
//! name (and by value for a repeated name). Twilio may have signed the URL with or
//! without the scheme's default port, so both forms are tried.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;
use url::Url;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-Twilio-Signature header is missing")]
    Missing,
    #[error("the X-Twilio-Signature does not match")]
    Mismatch,
}

/// The signature Twilio computes for `url` and `params`.
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a request's signature in constant time, over `url` as given and with its
/// default port added or removed.
pub fn verify(
    auth_token: &str,
    url: &Url,
    params: &[(String, String)],
    signature: Option<&str>,
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::Missing)?.trim();
    for candidate in url_variants(url) {
        let expected = compute(auth_token, &candidate, params);
        if bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

fn url_variants(url: &Url) -> Vec<String> {
    let mut variants = vec![url.as_str().to_string()];
    let Some(default) = url.port_or_known_default() else {
        return variants;
    };
    let mut other = url.clone();
    if url.port().is_some() {
        // Url drops an explicit default port when parsing; rebuild without it.
        let _ = other.set_port(None);
    } else {
        // Url refuses to print a default port; splice it in by hand.
        let host = url.host_str().unwrap_or_default();
        let with = url
            .as_str()
            .replacen(&format!("://{host}"), &format!("://{host}:{default}"), 1);
        variants.push(with);
        return variants;
    }
    variants.push(other.as_str().to_string());
    variants
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The example in Twilio's security documentation.
    #[test]
    fn twilio_documentation_vector() {
        let p = params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(compute("12345", url, &p), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        let parsed = Url::parse(url).unwrap();
        assert_eq!(
            verify("12345", &parsed, &p, Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ=")),
            Ok(())
        );
        assert_eq!(
            verify("12345", &parsed, &p, Some("AAAATR6DLpKmkAf8muzZqo1nDgQ=")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("12345", &parsed, &p, None),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn either_form_of_the_default_port() {
        let p = params(&[("Body", "hi")]);
        let with_port = compute("t", "https://example.org:443/hook", &p);
        let url = Url::parse("https://example.org/hook").unwrap();
        assert_eq!(verify("t", &url, &p, Some(&with_port)), Ok(()));
        let without = compute("t", "https://example.org/hook", &p);
        let url = Url::parse("https://example.org:443/hook").unwrap();
        assert_eq!(verify("t", &url, &p, Some(&without)), Ok(()));
    }

    #[test]
    fn repeated_keys_sort_by_value() {
        let a = compute("t", "u", &params(&[("MediaUrl0", "b"), ("MediaUrl0", "a")]));
        let b = compute("t", "u", &params(&[("MediaUrl0", "a"), ("MediaUrl0", "b")]));
        assert_eq!(a, b);
    }
}
