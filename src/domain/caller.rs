use super::Tenant;

/// What a caller may do. Taken from the certificate, never from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// App backends: enroll, verify, delete.
    App,
    /// Compliance officers: read the audit log.
    Auditor,
    /// Operators.
    Admin,
}

impl Role {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "app" => Some(Self::App),
            "auditor" => Some(Self::Auditor),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Auditor => "auditor",
            Self::Admin => "admin",
        }
    }
}

/// An authenticated caller: tenant and role from its certificate, plus what the
/// audit log records about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: Tenant,
    pub role: Role,
    /// The certificate's identity, e.g. spiffe://td/tenant/demo/role/app.
    pub identity: String,
    /// SHA-256 of the leaf certificate (hex).
    pub cert_sha256: String,
}

/// A SPIFFE trust domain: lowercase letters, digits, '.', '-' and '_' (the SPIFFE
/// ID specification's alphabet). One rule for the config's `server.trust_domain`
/// and the certificates `facevault pki` issues, so the two always agree.
pub fn is_trust_domain(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
}

/// What to write where a trust domain is asked for.
pub const TRUST_DOMAIN_RULE: &str =
    "a trust domain is lowercase letters, digits, '.', '-' and '_', e.g. \"prod.example.com\"";

/// Parses `spiffe://<trust_domain>/tenant/<tenant>/role/<role>`.
pub fn parse_spiffe_id(uri: &str, trust_domain: &str) -> Option<(Tenant, Role)> {
    let path = uri.strip_prefix("spiffe://")?.strip_prefix(trust_domain)?;
    let mut parts = path.split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some(""), Some("tenant"), Some(tenant), Some("role"), Some(role), None) => {
            Some((Tenant::try_from(tenant).ok()?, Role::parse(role)?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_domain_alphabet() {
        for good in ["cluster.local", "prod.example.com", "td_1-a"] {
            assert!(is_trust_domain(good), "{good}");
        }
        for bad in [
            "",
            "Prod.example.com",
            "a/b",
            "x y",
            "spiffe://x",
            "ü.example",
        ] {
            assert!(!is_trust_domain(bad), "{bad}");
        }
    }

    #[test]
    fn parses_only_exact_spiffe_ids() {
        let (t, r) =
            parse_spiffe_id("spiffe://td.example/tenant/demo/role/app", "td.example").unwrap();
        assert_eq!((t.as_str(), r), ("demo", Role::App));
        for bad in [
            "spiffe://other/tenant/demo/role/app",
            "spiffe://td.example.evil/tenant/demo/role/app",
            "spiffe://td.example/tenant/demo/role/root",
            "spiffe://td.example/tenant/Demo/role/app",
            "spiffe://td.example/tenant/demo/role/app/extra",
            "https://td.example/tenant/demo/role/app",
        ] {
            assert!(parse_spiffe_id(bad, "td.example").is_none(), "{bad}");
        }
    }
}
