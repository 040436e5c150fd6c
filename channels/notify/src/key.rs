//! A Notify API key: `{key name}-{service id}-{secret key}`, the last two UUIDs. The
//! name may itself contain dashes, so the key is read from the right.

use std::fmt;

/// The parts of an API key. Its `Debug` shows the service, never the secret.
#[derive(Clone)]
pub struct ApiKey {
    service_id: String,
    secret: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("a Notify API key ends with the service id and the secret key, two UUIDs")]
    Malformed,
}

const UUID_LEN: usize = 36;

fn is_uuid(s: &str) -> bool {
    s.len() == UUID_LEN
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

impl ApiKey {
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        let key = key.trim();
        // secret: the last 36 characters; service id: the 36 before the dash before it.
        if !key.is_ascii() || key.len() < 2 * UUID_LEN + 1 {
            return Err(KeyError::Malformed);
        }
        let secret = &key[key.len() - UUID_LEN..];
        let service_id = &key[key.len() - 2 * UUID_LEN - 1..key.len() - UUID_LEN - 1];
        let dash = &key[key.len() - UUID_LEN - 1..key.len() - UUID_LEN];
        if dash != "-" || !is_uuid(secret) || !is_uuid(service_id) {
            return Err(KeyError::Malformed);
        }
        Ok(ApiKey {
            service_id: service_id.to_string(),
            secret: secret.to_string(),
        })
    }

    pub fn service_id(&self) -> &str {
        &self.service_id
    }

    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey(service {}, secret hidden)", self.service_id)
    }
}

/// Whether `s` is a UUID as Notify writes them (template and notification ids).
pub fn is_notify_id(s: &str) -> bool {
    is_uuid(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "26785a09-ab16-4eb0-8407-a37497a57506";
    const SECRET: &str = "3d844edf-8d35-48ac-975b-e847b4f122b0";

    #[test]
    fn read_from_the_right_whatever_the_name() {
        for name in ["live", "my-test-key-with-dashes", "x"] {
            let k = ApiKey::parse(&format!("{name}-{SERVICE}-{SECRET}")).unwrap();
            assert_eq!(k.service_id(), SERVICE);
            assert_eq!(k.secret(), SECRET);
        }
    }

    #[test]
    fn the_secret_is_never_printed() {
        let k = ApiKey::parse(&format!("live-{SERVICE}-{SECRET}")).unwrap();
        assert!(!format!("{k:?}").contains(SECRET));
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            SECRET,
            &format!("{SERVICE}{SECRET}"),
            &format!("live-{SERVICE}-{}", &SECRET[1..]),
            &format!("live-{}-{SECRET}", SERVICE.replace('a', "g")),
            &format!("live-{SERVICE}-{}é", &SECRET[..35]),
        ] {
            assert_eq!(
                ApiKey::parse(bad).unwrap_err(),
                KeyError::Malformed,
                "{bad}"
            );
        }
    }
}
