use super::Tenant;

/// What a tenant's caller may do. Taken from the certificate, never from the
/// request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// App backends: enroll, verify, delete.
    App,
    /// Compliance officers: read the audit log.
    Auditor,
    /// The tenant's administrators: its decommission.
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

/// The name of a deployment operator (`spiffe://<td>/operator/<name>`). Same
/// alphabet as a tenant name, so it is safe in logs and audit fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OperatorName(String);

impl OperatorName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for OperatorName {
    type Error = super::InvalidInput;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Tenant::try_from(value).map(|t| Self(t.as_str().to_owned()))
    }
}

impl std::fmt::Display for OperatorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whom a certificate names. A tenant's caller acts for one tenant in one
/// role; an operator runs the deployment and has no tenant, so nothing that
/// reads or changes a tenant's data can be reached with it by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Tenant { tenant: Tenant, role: Role },
    Operator(OperatorName),
}

/// An authenticated caller: who its certificate names, plus what the audit log
/// records about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    /// The certificate's identity, e.g. spiffe://td/tenant/demo/role/app.
    pub identity: String,
    /// SHA-256 of the leaf certificate (hex).
    pub cert_sha256: String,
}

impl Caller {
    /// The tenant the caller acts for; none for an operator.
    pub fn tenant(&self) -> Option<&Tenant> {
        match &self.principal {
            Principal::Tenant { tenant, .. } => Some(tenant),
            Principal::Operator(_) => None,
        }
    }

    /// The audit stream the caller's calls and refusals go to: its tenant's,
    /// or the operators' own stream.
    pub fn audit_stream(&self) -> Tenant {
        self.tenant().cloned().unwrap_or_else(Tenant::operators)
    }
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

/// Parses `spiffe://<trust_domain>/tenant/<tenant>/role/<role>` and
/// `spiffe://<trust_domain>/operator/<name>`.
pub fn parse_spiffe_id(uri: &str, trust_domain: &str) -> Option<Principal> {
    let path = uri.strip_prefix("spiffe://")?.strip_prefix(trust_domain)?;
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["", "tenant", tenant, "role", role] => Some(Principal::Tenant {
            tenant: Tenant::try_from(*tenant).ok()?,
            role: Role::parse(role)?,
        }),
        ["", "operator", name] => Some(Principal::Operator(OperatorName::try_from(*name).ok()?)),
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
        assert_eq!(
            parse_spiffe_id("spiffe://td.example/tenant/demo/role/app", "td.example"),
            Some(Principal::Tenant {
                tenant: Tenant::try_from("demo").unwrap(),
                role: Role::App
            })
        );
        assert_eq!(
            parse_spiffe_id("spiffe://td.example/operator/ops-1", "td.example"),
            Some(Principal::Operator(
                OperatorName::try_from("ops-1").unwrap()
            ))
        );
        for bad in [
            "spiffe://other/tenant/demo/role/app",
            "spiffe://td.example.evil/tenant/demo/role/app",
            "spiffe://td.example/tenant/demo/role/root",
            "spiffe://td.example/tenant/Demo/role/app",
            "spiffe://td.example/tenant/demo/role/app/extra",
            "https://td.example/tenant/demo/role/app",
            // An operator has no tenant and no role; its name is a plain label.
            "spiffe://td.example/operator",
            "spiffe://td.example/operator/",
            "spiffe://td.example/operator/Ops",
            "spiffe://td.example/operator/ops/role/admin",
            "spiffe://td.example/tenant/demo/operator/ops",
            "spiffe://other/operator/ops",
        ] {
            assert!(parse_spiffe_id(bad, "td.example").is_none(), "{bad}");
        }
    }
}
