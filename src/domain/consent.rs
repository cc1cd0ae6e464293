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
    /// A parent or guardian consented for the person (required under 14).
    Guardian,
}

impl ConsentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SeparateInApp => "separate-in-app",
            Self::Written => "written",
            Self::Guardian => "guardian",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "separate-in-app" => Some(Self::SeparateInApp),
            "written" => Some(Self::Written),
            "guardian" => Some(Self::Guardian),
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
    /// The person separately consented to their face data leaving the device
    /// and being kept by the service; always true in a parsed consent, kept so
    /// the stored record says so.
    pub off_device_storage: bool,
    pub subject_under_14: bool,
}

/// A consent as the caller sent it, before any check.
#[derive(Debug, Clone, Default)]
pub struct ConsentFields {
    pub consent_id: String,
    pub purposes: Vec<String>,
    pub granted_at_unix_ms: Option<i64>,
    pub method: Option<ConsentMethod>,
    pub notice_version: String,
    pub off_device_storage: bool,
    pub subject_under_14: bool,
}

impl Consent {
    pub const MAX_PURPOSES: usize = 32;

    /// Checks everything about a consent that does not depend on the clock's
    /// reading, plus `granted_at` against `now` (clients' clocks drift, so a small
    /// skew is tolerated).
    pub fn new(fields: ConsentFields, now_unix_ms: i64) -> Result<Self, InvalidInput> {
        const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;
        let ConsentFields {
            consent_id,
            purposes,
            granted_at_unix_ms,
            method,
            notice_version,
            off_device_storage,
            subject_under_14,
        } = fields;
        if !printable(&consent_id, 128) {
            return Err(InvalidInput::ConsentId);
        }
        if purposes.is_empty() || purposes.len() > Self::MAX_PURPOSES {
            return Err(InvalidInput::ConsentPurposes);
        }
        let mut set = BTreeSet::new();
        for purpose in &purposes {
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
        // The 2025 measures ask for a consent of its own to keeping face data
        // off the device; consent to processing alone does not cover it.
        if !off_device_storage {
            return Err(InvalidInput::OffDeviceStorage);
        }
        // PIPL art. 31: a child's personal information needs a guardian's
        // consent. Guardian consent for a person not flagged as under 14 is
        // accepted: a guardian may consent for an adult in their care.
        if subject_under_14 && method != ConsentMethod::Guardian {
            return Err(InvalidInput::GuardianRequired);
        }
        Ok(Self {
            consent_id,
            purposes: set,
            granted_at_unix_ms,
            method,
            notice_version,
            off_device_storage,
            subject_under_14,
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

    fn fields(purposes: &[&str]) -> ConsentFields {
        ConsentFields {
            consent_id: "c-1".into(),
            purposes: purposes.iter().map(|p| p.to_string()).collect(),
            granted_at_unix_ms: Some(NOW - 1000),
            method: Some(ConsentMethod::SeparateInApp),
            notice_version: "2026-01".into(),
            off_device_storage: true,
            subject_under_14: false,
        }
    }

    fn consent(purposes: &[&str]) -> Result<Consent, InvalidInput> {
        Consent::new(fields(purposes), NOW)
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
        let future = ConsentFields {
            granted_at_unix_ms: Some(NOW + 3_600_000),
            ..fields(&["login"])
        };
        assert_eq!(
            Consent::new(future, NOW),
            Err(InvalidInput::ConsentGrantedAt)
        );
        let no_method = ConsentFields {
            method: None,
            ..fields(&["login"])
        };
        assert_eq!(
            Consent::new(no_method, NOW),
            Err(InvalidInput::ConsentMethod)
        );
        let no_id = ConsentFields {
            consent_id: String::new(),
            ..fields(&["login"])
        };
        assert_eq!(Consent::new(no_id, NOW), Err(InvalidInput::ConsentId));
    }

    #[test]
    fn requires_separate_consent_to_off_device_storage() {
        let on_device_only = ConsentFields {
            off_device_storage: false,
            ..fields(&["login"])
        };
        assert_eq!(
            Consent::new(on_device_only, NOW),
            Err(InvalidInput::OffDeviceStorage)
        );
        assert!(consent(&["login"]).unwrap().off_device_storage);
    }

    #[test]
    fn a_child_needs_a_guardian_s_consent() {
        for method in [ConsentMethod::SeparateInApp, ConsentMethod::Written] {
            let child = ConsentFields {
                subject_under_14: true,
                method: Some(method),
                ..fields(&["login"])
            };
            assert_eq!(
                Consent::new(child, NOW),
                Err(InvalidInput::GuardianRequired)
            );
        }
        let by_guardian = ConsentFields {
            subject_under_14: true,
            method: Some(ConsentMethod::Guardian),
            ..fields(&["login"])
        };
        let c = Consent::new(by_guardian, NOW).unwrap();
        assert!(c.subject_under_14);
        assert_eq!(c.method, ConsentMethod::Guardian);
        let guardian_of_an_adult = ConsentFields {
            method: Some(ConsentMethod::Guardian),
            ..fields(&["login"])
        };
        assert!(Consent::new(guardian_of_an_adult, NOW).is_ok());
    }

    #[test]
    fn methods_round_trip_through_their_stored_names() {
        for method in [
            ConsentMethod::SeparateInApp,
            ConsentMethod::Written,
            ConsentMethod::Guardian,
        ] {
            assert_eq!(ConsentMethod::parse(method.as_str()), Some(method));
        }
    }
}
