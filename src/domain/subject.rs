use super::InvalidInput;

/// The caller's identifier of a person. It is secret-ish personal data: it is never
/// stored, logged or echoed; only its keyed pseudonym (`subject_ref`) is. `Debug`
/// is redacted so that a stray `{:?}` cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct SubjectId(String);

impl SubjectId {
    pub const MAX_BYTES: usize = 256;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SubjectId {
    type Error = InvalidInput;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let ok = !value.is_empty()
            && value.len() <= Self::MAX_BYTES
            && !value.chars().any(char::is_control);
        if ok {
            Ok(Self(value))
        } else {
            Err(InvalidInput::SubjectId)
        }
    }
}

impl std::fmt::Debug for SubjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectId(<redacted>)")
    }
}

/// A tenant name taken from the caller's certificate. Restricted to a DNS-label
/// alphabet because it becomes part of Redis keys, AAD and key-derivation info.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(String);

impl Tenant {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where calls without an acceptable identity are audited. Its name cannot
    /// come from a certificate (`_` is outside the tenant alphabet).
    pub fn unauthenticated() -> Self {
        Self(Self::UNAUTHENTICATED.to_owned())
    }

    const UNAUTHENTICATED: &str = "_unauthenticated";

    /// Where calls of deployment operators (who have no tenant) are audited,
    /// allowed or refused. Outside the tenant alphabet, like the above.
    pub fn operators() -> Self {
        Self(Self::OPERATORS.to_owned())
    }

    const OPERATORS: &str = "_operators";

    /// A tenant name as stored in audit stream names (which include the
    /// unauthenticated and the operators' streams).
    pub fn from_audit_stream(name: &str) -> Option<Self> {
        match name {
            Self::UNAUTHENTICATED => Some(Self::unauthenticated()),
            Self::OPERATORS => Some(Self::operators()),
            _ => Self::try_from(name).ok(),
        }
    }
}

impl TryFrom<&str> for Tenant {
    type Error = InvalidInput;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let ok = (1..=63).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !value.starts_with('-');
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidInput::Tenant)
        }
    }
}

impl std::fmt::Display for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_id_bounds() {
        assert!(SubjectId::try_from("alice".to_owned()).is_ok());
        assert!(SubjectId::try_from(String::new()).is_err());
        assert!(SubjectId::try_from("a".repeat(257)).is_err());
        assert!(SubjectId::try_from("a".repeat(256)).is_ok());
        assert!(SubjectId::try_from("a\nb".to_owned()).is_err());
        assert!(SubjectId::try_from("用户-42".to_owned()).is_ok());
    }

    #[test]
    fn subject_id_debug_is_redacted() {
        let id = SubjectId::try_from("alice@example.com".to_owned()).unwrap();
        assert!(!format!("{id:?}").contains("alice"));
    }

    #[test]
    fn tenant_alphabet() {
        assert!(Tenant::try_from("demo").is_ok());
        assert!(Tenant::try_from("bank-01").is_ok());
        for bad in ["", "Demo", "a:b", "-x", "a/b", &"x".repeat(64)] {
            assert!(Tenant::try_from(bad).is_err(), "{bad}");
        }
    }
}
