use std::collections::BTreeSet;

use super::InvalidInput;

/// Why face data is processed (e.g. `login`, `payment`). Consent is bound to purposes,
/// and every verification must name one the consent covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Purpose(String);

impl Purpose {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Purpose {
    type Error = InvalidInput;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let ok = (1..=64).contains(&value.len())
            && value.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
            });
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidInput::Purpose)
        }
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentMethod {
    SeparateInApp,
    Written,
}

impl ConsentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SeparateInApp => "separate-in-app",
            Self::Written => "written",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "separate-in-app" => Some(Self::SeparateInApp),
            "written" => Some(Self::Written),
            _ => None,
        }
    }
}

/// A person's separate consent to face processing for named purposes. It is
/// stored encrypted with the template it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub consent_id: String,
    pub purposes: BTreeSet<Purpose>,
    pub granted_at_unix_ms: i64,
    pub method: ConsentMethod,
    pub notice_version: String,
}

impl Consent {
    pub const MAX_PURPOSES: usize = 32;

    /// Checks everything about a consent that does not depend on the clock's
    /// reading, plus `granted_at` against `now` (clients' clocks drift, so a small
    /// skew is tolerated).
    pub fn new(
        consent_id: String,
        purposes: &[String],
        granted_at_unix_ms: Option<i64>,
        method: Option<ConsentMethod>,
        notice_version: String,
        now_unix_ms: i64,
    ) -> Result<Self, InvalidInput> {
        const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;
        if !printable(&consent_id, 128) {
            return Err(InvalidInput::ConsentId);
        }
        if purposes.is_empty() || purposes.len() > Self::MAX_PURPOSES {
            return Err(InvalidInput::ConsentPurposes);
        }
        let mut set = BTreeSet::new();
        for purpose in purposes {
            if !set.insert(Purpose::try_from(purpose.as_str())?) {
                return Err(InvalidInput::ConsentPurposes);
            }
        }
        let granted_at_unix_ms = match granted_at_unix_ms {
            Some(t) if t > 0 && t <= now_unix_ms + CLOCK_SKEW_MS => t,
            _ => return Err(InvalidInput::ConsentGrantedAt),
        };
        let method = method.ok_or(InvalidInput::ConsentMethod)?;
        if !printable(&notice_version, 64) {
            return Err(InvalidInput::NoticeVersion);
        }
        Ok(Self {
            consent_id,
            purposes: set,
            granted_at_unix_ms,
            method,
            notice_version,
        })
    }

    pub fn covers(&self, purpose: &Purpose) -> bool {
        self.purposes.contains(purpose)
    }
}

fn printable(value: &str, max_chars: usize) -> bool {
    !value.is_empty() && value.chars().count() <= max_chars && !value.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000_000;

    fn consent(purposes: &[&str]) -> Result<Consent, InvalidInput> {
        let purposes: Vec<String> = purposes.iter().map(|p| p.to_string()).collect();
        Consent::new(
            "c-1".into(),
            &purposes,
            Some(NOW - 1000),
            Some(ConsentMethod::SeparateInApp),
            "2026-01".into(),
            NOW,
        )
    }

    #[test]
    fn covers_only_named_purposes() {
        let c = consent(&["login", "payment"]).unwrap();
        assert!(c.covers(&Purpose::try_from("login").unwrap()));
        assert!(!c.covers(&Purpose::try_from("marketing").unwrap()));
    }

    #[test]
    fn refuses_malformed_consent() {
        assert_eq!(consent(&[]), Err(InvalidInput::ConsentPurposes));
        assert_eq!(
            consent(&["login", "login"]),
            Err(InvalidInput::ConsentPurposes)
        );
        assert_eq!(consent(&["Login"]), Err(InvalidInput::Purpose));
        let future = Consent::new(
            "c".into(),
            &["login".into()],
            Some(NOW + 3_600_000),
            Some(ConsentMethod::Written),
            "v1".into(),
            NOW,
        );
        assert_eq!(future, Err(InvalidInput::ConsentGrantedAt));
        let no_method = Consent::new(
            "c".into(),
            &["login".into()],
            Some(NOW),
            None,
            "v1".into(),
            NOW,
        );
        assert_eq!(no_method, Err(InvalidInput::ConsentMethod));
        let no_id = Consent::new(
            String::new(),
            &["login".into()],
            Some(NOW),
            Some(ConsentMethod::Written),
            "v1".into(),
            NOW,
        );
        assert_eq!(no_id, Err(InvalidInput::ConsentId));
    }
}
