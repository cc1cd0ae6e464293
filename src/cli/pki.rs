//! `facevault pki init|issue|server`: the certificates `serve` needs, for a
//! deployment without cert-manager. The files are those `facevault dev` uses:
//! `ca.pem`/`ca.key`, `server.pem`/`server.key`, `<tenant>-<role>.pem`/`.key`,
//! `operator-<name>.pem`/`.key`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::builder::PossibleValue;

use super::print_line;
use crate::domain::{OperatorName, Principal, Role, Tenant};
use crate::pki::{
    CertAuthority, CertFiles, DEFAULT_CA_COMMON_NAME, DEFAULT_TRUST_DOMAIN, MAX_LEAF_DAYS,
};

#[derive(Debug, clap::Subcommand)]
pub enum PkiCommand {
    /// Create a CA: ca.pem and ca.key (mode 0600). Never overwrites.
    Init {
        /// Directory to write into (created with mode 0700).
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// SPIFFE trust domain [default: cluster.local, the Helm chart's default];
        /// must equal `server.trust_domain` in the config. Recorded in the CA, so
        /// `issue` uses it by default.
        #[arg(long)]
        trust_domain: Option<String>,
        /// Common name of the CA certificate.
        #[arg(long, default_value = DEFAULT_CA_COMMON_NAME)]
        common_name: String,
    },
    /// Issue a client certificate (clientAuth) with the caller's SPIFFE ID
    /// spiffe://<trust domain>/tenant/<tenant>/role/<role>, or, with
    /// --operator, spiffe://<trust domain>/operator/<name>.
    Issue {
        /// Directory holding ca.pem and ca.key.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// Tenant, as declared under [tenants.<name>] in the config.
        #[arg(long, value_parser = parse_tenant, required_unless_present = "operator", requires = "role")]
        tenant: Option<Tenant>,
        /// What the caller may do for its tenant.
        #[arg(long, requires = "tenant")]
        role: Option<Role>,
        /// A deployment operator instead (no tenant): it may read the
        /// deployment-wide report and nothing of any tenant.
        #[arg(long, value_name = "NAME", value_parser = parse_operator, conflicts_with_all = ["tenant", "role"])]
        operator: Option<OperatorName>,
        /// SPIFFE trust domain [default: the one recorded in the CA by `pki init`,
        /// else cluster.local]; must equal `server.trust_domain` in the config.
        #[arg(long)]
        trust_domain: Option<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LEAF_DAYS)))]
        days: u32,
        /// Write <PREFIX>.pem and <PREFIX>.key [default: <dir>/<tenant>-<role>,
        /// or <dir>/operator-<name>].
        #[arg(long, value_name = "PREFIX")]
        out: Option<PathBuf>,
    },
    /// Issue the server certificate (serverAuth): server.pem and server.key.
    Server {
        /// Directory holding ca.pem and ca.key; server.pem and server.key go there.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// DNS names clients connect to (one or more).
        #[arg(long = "dns", value_name = "NAME", required = true, num_args = 1..)]
        dns_names: Vec<String>,
        /// IP addresses clients connect to.
        #[arg(long = "ip", value_name = "ADDR", num_args = 1..)]
        ips: Vec<IpAddr>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LEAF_DAYS)))]
        days: u32,
    },
}

/// The tenant rule is the server's own (`Tenant`), so a certificate is never
/// issued for a name the server would refuse.
fn parse_tenant(value: &str) -> Result<Tenant, String> {
    Tenant::try_from(value).map_err(|e| e.to_string())
}

/// An operator name follows the tenant alphabet, as the server parses it.
fn parse_operator(value: &str) -> Result<OperatorName, String> {
    OperatorName::try_from(value)
        .map_err(|_| "an operator name is 1 to 63 characters of [a-z0-9-]".to_owned())
}

impl clap::ValueEnum for Role {
    fn value_variants<'a>() -> &'a [Self] {
        &[Role::App, Role::Auditor, Role::Admin]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            Role::App => "app backends: enroll, verify, delete",
            Role::Auditor => "compliance officers: read the audit log",
            Role::Admin => "the tenant's administration: its decommission",
        };
        Some(PossibleValue::new(self.as_str()).help(help))
    }
}

pub fn run(command: PkiCommand) -> anyhow::Result<()> {
    match command {
        PkiCommand::Init {
            dir,
            trust_domain,
            common_name,
        } => {
            let defaulted = trust_domain.is_none();
            let trust_domain = trust_domain.unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_owned());
            let files = crate::pki::init_ca(&dir, &trust_domain, &common_name)?;
            wrote(&files, "the CA's private key: keep it offline")?;
            print_line(&format!(
                "trust domain {trust_domain}{}: set server.trust_domain = \"{trust_domain}\" in facevault.toml",
                if defaulted {
                    " (the default; --trust-domain to choose another)"
                } else {
                    ""
                }
            ))
        }
        PkiCommand::Issue {
            dir,
            tenant,
            role,
            operator,
            trust_domain,
            days,
            out,
        } => {
            // clap enforces one of --operator or --tenant with --role.
            let principal = match (operator, tenant, role) {
                (Some(name), _, _) => Principal::Operator(name),
                (None, Some(tenant), Some(role)) => Principal::Tenant { tenant, role },
                _ => anyhow::bail!("give --tenant and --role, or --operator"),
            };
            let ca = load_ca(&dir)?;
            let trust_domain = match (trust_domain, ca.trust_domain()?) {
                (Some(given), Some(recorded)) if given != recorded => anyhow::bail!(
                    "--trust-domain {given} differs from {recorded}, the trust domain this CA was created for"
                ),
                (Some(given), _) => given,
                (None, Some(recorded)) => recorded,
                (None, None) => {
                    print_line(&format!(
                        "the CA records no trust domain; using the default {DEFAULT_TRUST_DOMAIN} (--trust-domain to change)"
                    ))?;
                    DEFAULT_TRUST_DOMAIN.to_owned()
                }
            };
            let (_, stem) = crate::pki::principal_names(&trust_domain, &principal);
            let prefix = out.unwrap_or_else(|| dir.join(stem));
            let files = CertFiles::with_prefix(&prefix);
            let id = crate::pki::issue_client_files(&ca, &files, &trust_domain, &principal, days)?;
            wrote(&files, "the client's private key")?;
            match &principal {
                Principal::Tenant { tenant, .. } => print_line(&format!(
                    "identity {id}; the server must have server.trust_domain = \"{trust_domain}\" and [tenants.{tenant}]"
                )),
                Principal::Operator(_) => print_line(&format!(
                    "identity {id}; the server must have server.trust_domain = \"{trust_domain}\"; an operator has no tenant"
                )),
            }
        }
        PkiCommand::Server {
            dir,
            dns_names,
            ips,
            days,
        } => {
            let ca = load_ca(&dir)?;
            let files = CertFiles::server_in(&dir);
            crate::pki::issue_server_files(&ca, &files, &dns_names, &ips, days)?;
            wrote(&files, "the server's private key")
        }
    }
}

fn load_ca(dir: &Path) -> anyhow::Result<CertAuthority> {
    let ca = CertFiles::ca_in(dir);
    if !ca.cert.exists() || !ca.key.exists() {
        anyhow::bail!(
            "no CA in {}: run `facevault pki init --dir {}` first",
            dir.display(),
            dir.display()
        );
    }
    CertAuthority::load(&ca.cert, &ca.key)
        .with_context(|| format!("loading the CA in {}", dir.display()))
}

fn wrote(files: &CertFiles, key_note: &str) -> anyhow::Result<()> {
    print_line(&format!("wrote {}", files.cert.display()))?;
    print_line(&format!(
        "wrote {}  (mode 0600; {key_note})",
        files.key.display()
    ))
}
