//! Certificates: a CA, server certificates, and client certificates that carry
//! caller identities. `facevault pki init|issue|server` issues them for a
//! deployment without cert-manager ([`init_ca`], [`issue_client_files`],
//! [`issue_server_files`]); `facevault dev` and the integration tests use
//! [`DevPki`], a complete throwaway set.
//!
//! Caller identities are SPIFFE-style URI SANs,
//! `spiffe://<trust-domain>/tenant/<tenant>/role/<app|auditor|admin>`; see [`spiffe_id`].
//!
//! All keys are ECDSA P-256 and are written as PKCS#8 PEM. Timestamps in this API are
//! [`SystemTime`]s: rcgen's timestamp type lives in the `time` crate, which is not a direct
//! dependency of this crate.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::{Add, Sub};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, RevokedCertParams, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use x509_parser::asn1_rs::Tag;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use zeroize::Zeroizing;

use crate::domain::Principal;
use crate::domain::caller::{TRUST_DOMAIN_RULE, is_trust_domain};

/// Trust domain used by `facevault dev` and the tests.
pub const DEV_TRUST_DOMAIN: &str = "facevault.dev";

/// Common name of the CA written by [`DevPki::ensure`].
pub const DEV_CA_COMMON_NAME: &str = "facevault dev CA";

/// Trust domain of `facevault pki init` when none is given: the Helm chart's
/// default `server.trustDomain`.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// Common name of the CA `facevault pki init` writes when none is given.
pub const DEFAULT_CA_COMMON_NAME: &str = "facevault CA";

/// File names in a PKI directory, shared by `facevault pki` and [`DevPki`].
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
pub const SERVER_CERT_FILE: &str = "server.pem";
pub const SERVER_KEY_FILE: &str = "server.key";

/// Longest validity `facevault pki` issues a leaf certificate for.
pub const MAX_LEAF_DAYS: u32 = 3650;

const CA_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 60 * 60);
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
const CRL_VALIDITY: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Certificates start slightly in the past so that a peer whose clock lags a
/// little (containers, VMs) does not reject a freshly minted certificate.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o700;

fn check_trust_domain(trust_domain: &str) -> Result<()> {
    ensure!(
        is_trust_domain(trust_domain),
        "invalid trust domain {trust_domain:?}: {TRUST_DOMAIN_RULE}"
    );
    Ok(())
}

/// `spiffe://<trust_domain>/tenant/<tenant>/role/<role>`.
pub fn spiffe_id(trust_domain: &str, tenant: &str, role: &str) -> String {
    format!("spiffe://{trust_domain}/tenant/{tenant}/role/{role}")
}

/// `spiffe://<trust_domain>/operator/<name>`: a deployment operator, no tenant.
pub fn operator_spiffe_id(trust_domain: &str, name: &str) -> String {
    format!("spiffe://{trust_domain}/operator/{name}")
}

/// The SPIFFE id and the common name (also the default file stem) of a
/// principal's certificate.
pub fn principal_names(trust_domain: &str, principal: &Principal) -> (String, String) {
    match principal {
        Principal::Tenant { tenant, role } => (
            spiffe_id(trust_domain, tenant.as_str(), role.as_str()),
            format!("{tenant}-{}", role.as_str()),
        ),
        Principal::Operator(name) => (
            operator_spiffe_id(trust_domain, name.as_str()),
            format!("operator-{name}"),
        ),
    }
}

/// Paths of a dev PKI written to a directory by [`DevPki::ensure`].
///
/// Client pairs are `(certificate PEM path, private key PEM path)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPki {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    /// The CA's private key; needed by [`CertAuthority::load`] to mint extra certificates.
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Tenant "demo", role "app".
    pub app: (PathBuf, PathBuf),
    /// Tenant "demo", role "auditor".
    pub auditor: (PathBuf, PathBuf),
    /// Tenant "other", role "app": for cross-tenant isolation checks.
    pub other: (PathBuf, PathBuf),
    /// Tenant "demo", role "admin": the tenant's administration.
    pub admin: (PathBuf, PathBuf),
    /// Operator "dev" (no tenant): the deployment-wide report.
    pub operator: (PathBuf, PathBuf),
}

/// The name of the dev operator (`dev/operator.pem`).
pub const DEV_OPERATOR: &str = "dev";

/// (tenant, role) of the `app`, `auditor`, `other` and `admin` client pairs, in that order.
const DEV_CLIENTS: [(&str, &str); 4] = [
    ("demo", "app"),
    ("demo", "auditor"),
    ("other", "app"),
    ("demo", "admin"),
];

impl DevPki {
    /// The paths a dev PKI in `dir` uses, without touching the filesystem.
    pub fn paths(dir: &Path) -> DevPki {
        let pair = |stem: &str| {
            (
                dir.join(format!("{stem}.pem")),
                dir.join(format!("{stem}.key")),
            )
        };
        DevPki {
            dir: dir.to_path_buf(),
            ca_cert: dir.join(CA_CERT_FILE),
            ca_key: dir.join(CA_KEY_FILE),
            server_cert: dir.join(SERVER_CERT_FILE),
            server_key: dir.join(SERVER_KEY_FILE),
            app: pair("app"),
            auditor: pair("auditor"),
            other: pair("other"),
            admin: pair("admin"),
            operator: pair("operator"),
        }
    }

    /// Creates `dir` (mode 0700) if needed and makes sure it holds a complete dev PKI:
    ///
    /// * `ca.pem` + `ca.key`: self-signed ECDSA P-256 CA, 10 years, CN "facevault dev CA";
    /// * `server.pem` + `server.key`: 1 year, serverAuth, SANs `localhost`, `127.0.0.1`, `::1`
    ///   and `extra_server_names` (entries that parse as IP addresses become IP SANs, the rest
    ///   DNS SANs);
    /// * `app`, `auditor`, `other`, `admin` client pairs: 1 year, clientAuth, CN `<tenant>-<role>`, URI
    ///   SAN [`spiffe_id`]`(trust_domain, tenant, role)`;
    /// * `operator` pair: the same for [`operator_spiffe_id`]`(trust_domain, "dev")`, CN
    ///   `operator-dev`.
    ///
    /// Existing files are reused exactly as they are and keys are never overwritten. A key
    /// without its certificate gets a new certificate for that same key; a certificate
    /// without its key, or a certificate not issued by `ca.pem`, is an error (remove the
    /// directory to start over). `trust_domain` and `extra_server_names` therefore only
    /// affect certificates issued by this call. Keys are written 0600, certificates 0644.
    /// Concurrent calls on the same directory are safe and agree on one PKI.
    pub fn ensure(dir: &Path, trust_domain: &str, extra_server_names: &[String]) -> Result<DevPki> {
        check_trust_domain(trust_domain)?;
        create_private_dir(dir)?;
        let pki = DevPki::paths(dir);

        let ca = ensure_ca(&pki.ca_cert, &pki.ca_key)?;

        let mut server_sans = vec![
            SanType::DnsName(ia5("localhost")?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        for name in extra_server_names {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    ia5(name).with_context(|| format!("invalid server name {name:?}"))?,
                ),
            };
            if !server_sans.contains(&san) {
                server_sans.push(san);
            }
        }
        ensure_leaf(&ca, &pki.server_cert, &pki.server_key, |key| {
            let params = leaf_params(
                "facevault dev server",
                server_sans,
                ExtendedKeyUsagePurpose::ServerAuth,
                default_leaf_validity()?,
            )?;
            ca.sign(&params, key)
        })?;

        for ((tenant, role), (cert, key)) in
            DEV_CLIENTS
                .iter()
                .zip([&pki.app, &pki.auditor, &pki.other, &pki.admin])
        {
            ensure_leaf(&ca, cert, key, |key| {
                let uri = spiffe_id(trust_domain, tenant, role);
                let params = client_params(
                    &format!("{tenant}-{role}"),
                    Some(&uri),
                    default_leaf_validity()?,
                )?;
                ca.sign(&params, key)
            })?;
        }
        ensure_leaf(&ca, &pki.operator.0, &pki.operator.1, |key| {
            let uri = operator_spiffe_id(trust_domain, DEV_OPERATOR);
            let params = client_params(
                &format!("operator-{DEV_OPERATOR}"),
                Some(&uri),
                default_leaf_validity()?,
            )?;
            ca.sign(&params, key)
        })?;
        Ok(pki)
    }
}

/// A CA held in memory, for tests that need extra certificates (another CA, a certificate
/// without a URI SAN, an expired one, a revoked one).
///
/// Serial numbers for [`CertAuthority::crl_pem`] come from [`serial_of`].
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// Kept so that CRLs carry the same authority key identifier as issued certificates.
    key_id: Vec<u8>,
    cert_der: Vec<u8>,
    cert_pem: String,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the issuer, whose own Debug elides the private key.
        f.debug_struct("CertAuthority")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// A new self-signed ECDSA P-256 CA valid for 10 years, allowed to sign end-entity
    /// certificates and CRLs only (path length 0).
    pub fn generate(common_name: &str) -> Result<Self> {
        Self::generate_with_key(common_name, None, new_key()?)
    }

    /// `trust_domain`, when given, is written as the CA's own SPIFFE ID
    /// (`spiffe://<trust_domain>`, a URI SAN the X.509-SVID specification allows a
    /// signing certificate), so that [`CertAuthority::trust_domain`] finds it later.
    fn generate_with_key(
        common_name: &str,
        trust_domain: Option<&str>,
        key: KeyPair,
    ) -> Result<Self> {
        let (not_before, not_after) = validity_from_now(CA_VALIDITY)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        if let Some(trust_domain) = trust_domain {
            params.subject_alt_names =
                vec![SanType::URI(ia5(&format!("spiffe://{trust_domain}"))?)];
        }
        // webpki refuses to use a CA for certificates without keyCertSign and for CRLs
        // without cRLSign once a key usage extension is present.
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        params.not_before = from_system_time(rcgen::date_time_ymd(1970, 1, 1), not_before)?;
        params.not_after = from_system_time(rcgen::date_time_ymd(1970, 1, 1), not_after)?;
        let key_id = params.key_identifier(&key);
        params.key_identifier_method = KeyIdMethod::PreSpecified(key_id.clone());
        let cert = params
            .self_signed(&key)
            .context("self-signing the CA certificate")?;
        Ok(Self {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            key_id,
        })
    }

    /// Loads a CA certificate and its PKCS#8 key, such as `ca.pem` + `ca.key` written by
    /// [`DevPki::ensure`].
    pub fn load(cert_pem_path: &Path, key_pem_path: &Path) -> Result<Self> {
        let cert_pem = fs::read_to_string(cert_pem_path)
            .with_context(|| format!("reading {}", cert_pem_path.display()))?;
        let key_pem = fs::read_to_string(key_pem_path)
            .with_context(|| format!("reading {}", key_pem_path.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| anyhow!("{}: not a PKCS#8 private key: {e}", key_pem_path.display()))?;
        Self::from_pem_and_key(cert_pem, key)
            .with_context(|| format!("loading CA {}", cert_pem_path.display()))
    }

    fn from_pem_and_key(cert_pem: String, key: KeyPair) -> Result<Self> {
        let cert_der = pem_to_der(&cert_pem)?;
        let cert = parse_cert(&cert_der)?;

        let is_ca = cert
            .basic_constraints()
            .map_err(|e| anyhow!("bad basic constraints: {e}"))?
            .is_some_and(|bc| bc.value.ca);
        ensure!(is_ca, "certificate is not a CA certificate");
        ensure!(
            cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw(),
            "private key does not belong to the certificate"
        );
        let key_id = subject_key_id(&cert)
            .ok_or_else(|| anyhow!("CA certificate has no subject key identifier"))?;

        // rcgen (without its x509-parser feature) cannot read an existing certificate, so
        // the issuer is rebuilt from the parsed fields. Issued certificates must carry the
        // CA's subject byte-for-byte or chain building fails; checked below.
        let mut dn = DistinguishedName::new();
        for rdn in cert.subject().iter_rdn() {
            let mut attrs = rdn.iter();
            let (Some(attr), None) = (attrs.next(), attrs.next()) else {
                bail!("multi-valued RDNs in the CA subject are not supported");
            };
            let oid: Vec<u64> = attr
                .attr_type()
                .iter()
                .ok_or_else(|| anyhow!("CA subject attribute OID out of range"))?
                .collect();
            let text = attr
                .as_str()
                .map_err(|e| anyhow!("CA subject attribute is not a string: {e}"))?;
            let value = match attr.attr_value().tag() {
                Tag::Utf8String => DnValue::Utf8String(text.to_owned()),
                Tag::PrintableString => DnValue::PrintableString(
                    text.try_into()
                        .map_err(|e| anyhow!("bad PrintableString in CA subject: {e}"))?,
                ),
                Tag::Ia5String => DnValue::Ia5String(ia5(text)?),
                other => bail!("CA subject attribute string type {other} is not supported"),
            };
            dn.push(DnType::from_oid(&oid), value);
        }

        let mut key_usages = Vec::new();
        if let Some(ku) = cert
            .key_usage()
            .map_err(|e| anyhow!("bad key usage: {e}"))?
        {
            let ku = ku.value;
            let flags = [
                (ku.digital_signature(), KeyUsagePurpose::DigitalSignature),
                (ku.key_cert_sign(), KeyUsagePurpose::KeyCertSign),
                (ku.crl_sign(), KeyUsagePurpose::CrlSign),
            ];
            key_usages.extend(flags.into_iter().filter(|(set, _)| *set).map(|(_, p)| p));
        }

        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.key_usages = key_usages;
        params.key_identifier_method = KeyIdMethod::PreSpecified(key_id.clone());
        let ca = Self {
            issuer: Issuer::new(params, key),
            key_id,
            cert_der,
            cert_pem,
        };

        let probe = leaf_params(
            "facevault issuer probe",
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            default_leaf_validity()?,
        )?;
        let probe = ca.sign(&probe, ca.issuer.key())?;
        ensure!(
            ca.issued(&pem_to_der(&probe)?)?,
            "cannot reproduce the CA subject name exactly; certificates issued from it would not chain"
        );
        Ok(ca)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The trust domain [`init_ca`] recorded in the CA (its `spiffe://<trust_domain>`
    /// URI SAN); `None` for a CA without one (the dev CA, one made by openssl).
    pub fn trust_domain(&self) -> Result<Option<String>> {
        let cert = parse_cert(&self.cert_der)?;
        let Some(san) = cert
            .subject_alternative_name()
            .map_err(|e| anyhow!("bad subject alternative name in the CA: {e}"))?
        else {
            return Ok(None);
        };
        Ok(san.value.general_names.iter().find_map(|name| match name {
            GeneralName::URI(uri) => uri
                .strip_prefix("spiffe://")
                .filter(|td| is_trust_domain(td))
                .map(str::to_owned),
            _ => None,
        }))
    }

    /// Issues a 1-year client certificate (clientAuth) with CN `common_name` and, unless
    /// `uri_san` is `None`, that URI SAN. Returns (certificate PEM, PKCS#8 key PEM).
    pub fn issue_client(
        &self,
        common_name: &str,
        uri_san: Option<&str>,
    ) -> Result<(String, String)> {
        let (not_before, not_after) = validity_from_now(LEAF_VALIDITY)?;
        self.issue_client_valid(common_name, uri_san, not_before, not_after)
    }

    /// Like [`CertAuthority::issue_client`] with an explicit validity window, e.g. one
    /// entirely in the past for expired-certificate tests.
    pub fn issue_client_valid(
        &self,
        common_name: &str,
        uri_san: Option<&str>,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<(String, String)> {
        ensure!(not_before < not_after, "not_before must precede not_after");
        let key = new_key()?;
        let params = client_params(common_name, uri_san, (not_before, not_after))?;
        Ok((self.sign(&params, &key)?, key.serialize_pem()))
    }

    /// A CRL (PEM) signed by this CA, valid for 30 days, revoking the certificates with the
    /// given serial numbers (big-endian bytes as returned by [`serial_of`]).
    pub fn crl_pem(&self, revoked_serials: &[Vec<u8>]) -> Result<String> {
        let (this_update, next_update) = validity_from_now(CRL_VALIDITY)?;
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let revoked_at = from_system_time(epoch, this_update)?;
        let mut revoked_certs = Vec::with_capacity(revoked_serials.len());
        for serial in revoked_serials {
            let significant = serial.iter().skip_while(|b| **b == 0).count();
            ensure!(
                (1..=20).contains(&significant),
                "certificate serial numbers are 1 to 20 non-zero-padded bytes"
            );
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial),
                revocation_time: revoked_at,
                reason_code: None,
                invalidity_date: None,
            });
        }
        // RFC 5280 wants CRL numbers to increase; the clock does that well enough here.
        let crl_number = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| anyhow!("system clock is before 1970"))?
            .as_nanos()
            .to_be_bytes();
        let params = CertificateRevocationListParams {
            this_update: from_system_time(epoch, this_update)?,
            next_update: from_system_time(epoch, next_update)?,
            crl_number: SerialNumber::from_slice(&crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::PreSpecified(self.key_id.clone()),
        };
        let crl = params.signed_by(&self.issuer).context("signing the CRL")?;
        crl.pem().context("encoding the CRL")
    }

    fn sign(&self, params: &CertificateParams, key: &KeyPair) -> Result<String> {
        let cert = params
            .signed_by(key, &self.issuer)
            .context("signing a certificate")?;
        Ok(cert.pem())
    }

    /// Whether `cert_der` names this CA as its issuer (subject bytes and key identifier).
    /// A name-and-key-id check, not a signature check: it catches a regenerated CA, which
    /// is what [`DevPki::ensure`] needs.
    fn issued(&self, cert_der: &[u8]) -> Result<bool> {
        let ca = parse_cert(&self.cert_der)?;
        let cert = parse_cert(cert_der)?;
        let aki = cert
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|k| k.0)
                }
                _ => None,
            });
        Ok(cert.issuer().as_raw() == ca.subject().as_raw()
            && aki.is_none_or(|aki| aki == self.key_id.as_slice()))
    }
}

/// A certificate and its private key, as `facevault pki` writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// `<prefix>.pem` and `<prefix>.key`.
    pub fn with_prefix(prefix: &Path) -> Self {
        let mut cert = prefix.as_os_str().to_owned();
        cert.push(".pem");
        let mut key = prefix.as_os_str().to_owned();
        key.push(".key");
        Self {
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// `ca.pem` and `ca.key` in `dir`.
    pub fn ca_in(dir: &Path) -> Self {
        Self {
            cert: dir.join(CA_CERT_FILE),
            key: dir.join(CA_KEY_FILE),
        }
    }

    /// `server.pem` and `server.key` in `dir`.
    pub fn server_in(dir: &Path) -> Self {
        Self {
            cert: dir.join(SERVER_CERT_FILE),
            key: dir.join(SERVER_KEY_FILE),
        }
    }

    /// Writes a new key (0600) and certificate (0644). Existing files are never
    /// replaced: a replaced CA key orphans every certificate it issued, and a
    /// replaced client key locks out whoever holds the old pair.
    fn create(&self, cert_pem: &str, key_pem: &str) -> Result<()> {
        for path in [&self.cert, &self.key] {
            ensure!(
                !path.exists(),
                "{} already exists; facevault pki never overwrites a key or certificate: \
                 move it away first, or write elsewhere (--dir, --out)",
                path.display()
            );
        }
        for (path, contents, mode) in [
            (&self.key, key_pem, KEY_MODE),
            (&self.cert, cert_pem, CERT_MODE),
        ] {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                create_private_dir(parent)?;
            }
            ensure!(
                create_file_atomic(path, contents.as_bytes(), mode)?,
                "{} appeared while writing; nothing was overwritten",
                path.display()
            );
        }
        Ok(())
    }
}

/// `facevault pki init`: a new CA in `dir` (created 0700 if needed), `ca.key`
/// (0600) and `ca.pem`, valid 10 years, recording `trust_domain` (see
/// [`CertAuthority::trust_domain`]). Refuses if either file exists.
pub fn init_ca(dir: &Path, trust_domain: &str, common_name: &str) -> Result<CertFiles> {
    check_trust_domain(trust_domain)?;
    ensure!(!common_name.is_empty(), "the CA common name is empty");
    let files = CertFiles::ca_in(dir);
    let key = new_key()?;
    let ca = CertAuthority::generate_with_key(common_name, Some(trust_domain), key)?;
    let key_pem = Zeroizing::new(ca.issuer.key().serialize_pem());
    files.create(&ca.cert_pem, &key_pem)?;
    Ok(files)
}

/// `facevault pki issue`: a client certificate (clientAuth) for `principal`,
/// URI SAN and CN from [`principal_names`], valid `days` days, and its new
/// key. Returns the SPIFFE ID. Refuses to replace existing files.
pub fn issue_client_files(
    ca: &CertAuthority,
    files: &CertFiles,
    trust_domain: &str,
    principal: &Principal,
    days: u32,
) -> Result<String> {
    check_trust_domain(trust_domain)?;
    let (uri, common_name) = principal_names(trust_domain, principal);
    let key = new_key()?;
    let params = client_params(&common_name, Some(&uri), leaf_validity_days(days)?)?;
    let cert_pem = ca.sign(&params, &key)?;
    files.create(&cert_pem, &Zeroizing::new(key.serialize_pem()))?;
    Ok(uri)
}

/// `facevault pki server`: a server certificate (serverAuth) for `dns_names` and
/// `ips` (at least one in all), CN the first of them, valid `days` days, and its
/// new key. Refuses to replace existing files.
pub fn issue_server_files(
    ca: &CertAuthority,
    files: &CertFiles,
    dns_names: &[String],
    ips: &[IpAddr],
    days: u32,
) -> Result<()> {
    let mut sans = Vec::with_capacity(dns_names.len() + ips.len());
    for name in dns_names {
        ensure!(
            !name.is_empty() && name.parse::<IpAddr>().is_err(),
            "--dns {name:?}: give a DNS name here and IP addresses with --ip"
        );
        sans.push(SanType::DnsName(
            ia5(name).with_context(|| format!("invalid server name {name:?}"))?,
        ));
    }
    sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    let common_name = dns_names
        .first()
        .cloned()
        .or_else(|| ips.first().map(IpAddr::to_string))
        .ok_or_else(|| anyhow!("a server certificate needs at least one --dns name or --ip"))?;
    let key = new_key()?;
    let params = leaf_params(
        &common_name,
        sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        leaf_validity_days(days)?,
    )?;
    let cert_pem = ca.sign(&params, &key)?;
    files.create(&cert_pem, &Zeroizing::new(key.serialize_pem()))
}

fn leaf_validity_days(days: u32) -> Result<(SystemTime, SystemTime)> {
    ensure!(
        (1..=MAX_LEAF_DAYS).contains(&days),
        "a certificate's validity must be 1 to {MAX_LEAF_DAYS} days"
    );
    validity_from_now(Duration::from_secs(u64::from(days) * 24 * 60 * 60))
}

/// The serial number of a PEM certificate as big-endian bytes, for
/// [`CertAuthority::crl_pem`].
pub fn serial_of(cert_pem: &str) -> Result<Vec<u8>> {
    let der = pem_to_der(cert_pem)?;
    let cert = parse_cert(&der)?;
    Ok(cert.raw_serial().to_vec())
}

// Keys are always written before their certificate, and every file is created with
// `create_file_atomic` (which never replaces), so concurrent `ensure` calls on one
// directory converge: a loser re-reads the winner's key, and any certificate written
// for that key is consistent with it.

fn ensure_ca(cert_path: &Path, key_path: &Path) -> Result<CertAuthority> {
    ensure_key(cert_path, key_path)?;
    if cert_path.exists() {
        return CertAuthority::load(cert_path, key_path);
    }
    // Same key and subject give the same key id, so certificates issued earlier by this
    // key still chain to a re-created CA certificate.
    let ca = CertAuthority::generate_with_key(DEV_CA_COMMON_NAME, None, read_key(key_path)?)?;
    if create_file_atomic(cert_path, ca.cert_pem.as_bytes(), CERT_MODE)? {
        Ok(ca)
    } else {
        CertAuthority::load(cert_path, key_path)
    }
}

fn ensure_leaf(
    ca: &CertAuthority,
    cert_path: &Path,
    key_path: &Path,
    issue: impl FnOnce(&KeyPair) -> Result<String>,
) -> Result<()> {
    ensure_key(cert_path, key_path)?;
    let key = read_key(key_path)?;
    if !cert_path.exists() {
        create_file_atomic(cert_path, issue(&key)?.as_bytes(), CERT_MODE)?;
    }

    let pem = fs::read_to_string(cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?;
    let der = pem_to_der(&pem).with_context(|| format!("reading {}", cert_path.display()))?;
    ensure!(
        ca.issued(&der)?,
        "{} was not issued by the CA in the same directory; remove the directory to regenerate the dev PKI",
        cert_path.display()
    );
    ensure!(
        parse_cert(&der)?
            .public_key()
            .subject_public_key
            .data
            .as_ref()
            == key.public_key_raw(),
        "{} does not belong to {}; remove both to have a new pair issued",
        key_path.display(),
        cert_path.display()
    );
    Ok(())
}

/// Makes sure `key_path` exists, generating a key unless a certificate is already there
/// (a new key could never match it).
fn ensure_key(cert_path: &Path, key_path: &Path) -> Result<()> {
    if key_path.exists() {
        return Ok(());
    }
    ensure!(
        !cert_path.exists(),
        "{} exists but {} does not; remove the certificate to have a new pair issued",
        cert_path.display(),
        key_path.display()
    );
    create_file_atomic(key_path, new_key()?.serialize_pem().as_bytes(), KEY_MODE)?;
    Ok(())
}

fn read_key(path: &Path) -> Result<KeyPair> {
    let pem = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    KeyPair::from_pem(&pem)
        .map_err(|e| anyhow!("{}: not a PKCS#8 private key: {e}", path.display()))
}

fn new_key() -> Result<KeyPair> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating an ECDSA P-256 key")
}

fn client_params(
    common_name: &str,
    uri_san: Option<&str>,
    validity: (SystemTime, SystemTime),
) -> Result<CertificateParams> {
    let sans = match uri_san {
        Some(uri) => vec![SanType::URI(
            ia5(uri).with_context(|| format!("invalid URI SAN {uri:?}"))?,
        )],
        None => Vec::new(),
    };
    leaf_params(
        common_name,
        sans,
        ExtendedKeyUsagePurpose::ClientAuth,
        validity,
    )
}

fn leaf_params(
    common_name: &str,
    sans: Vec<SanType>,
    eku: ExtendedKeyUsagePurpose,
    (not_before, not_after): (SystemTime, SystemTime),
) -> Result<CertificateParams> {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name_dn(common_name);
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    params.not_before = from_system_time(epoch, not_before)?;
    params.not_after = from_system_time(epoch, not_after)?;
    Ok(params)
}

fn common_name_dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn default_leaf_validity() -> Result<(SystemTime, SystemTime)> {
    validity_from_now(LEAF_VALIDITY)
}

fn validity_from_now(lifetime: Duration) -> Result<(SystemTime, SystemTime)> {
    let now = SystemTime::now();
    let not_before = now
        .checked_sub(BACKDATE)
        .ok_or_else(|| anyhow!("system clock out of range"))?;
    let not_after = now
        .checked_add(lifetime)
        .ok_or_else(|| anyhow!("system clock out of range"))?;
    Ok((not_before, not_after))
}

/// Converts to rcgen's timestamp type by offsetting rcgen's own 1970-01-01 value, so the
/// `time` crate never has to be named.
fn from_system_time<T>(epoch: T, t: SystemTime) -> Result<T>
where
    T: Add<Duration, Output = T> + Sub<Duration, Output = T>,
{
    // Year 1 to 9999: what GeneralizedTime can encode; the range check also keeps the
    // arithmetic below from overflowing (it panics on overflow).
    const MIN_BEFORE_EPOCH: u64 = 62_135_596_800;
    const MAX_AFTER_EPOCH: u64 = 253_402_300_799;
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) if after.as_secs() <= MAX_AFTER_EPOCH => Ok(epoch + after),
        Err(before) if before.duration().as_secs() < MIN_BEFORE_EPOCH => {
            Ok(epoch - before.duration())
        }
        _ => bail!("timestamp outside years 1-9999"),
    }
}

fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow!("system RNG failure"))?;
    // A positive serial with a non-zero first byte encodes as exactly these 16 bytes, so
    // `serial_of` hands back what was chosen here.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn ia5(s: &str) -> Result<rcgen::string::Ia5String> {
    s.try_into()
        .map_err(|e| anyhow!("{s:?} is not an IA5 string: {e}"))
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| anyhow!("not a PEM certificate: {e}"))?;
    ensure!(
        pem.label == "CERTIFICATE",
        "expected a CERTIFICATE PEM block, found {:?}",
        pem.label
    );
    Ok(pem.contents)
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| anyhow!("bad certificate: {e}"))?;
    ensure!(rest.is_empty(), "trailing data after the certificate");
    Ok(cert)
}

fn subject_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Writes `contents` to `path` with permission bits `mode` (ignored off Unix), replacing
/// any existing file, so that readers never see a partial file: a temporary file in the
/// same directory is written, synced and renamed over `path`.
pub fn write_file_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    publish(path, contents, mode, false).map(|_| ())
}

/// Like [`write_file_atomic`] but never replaces an existing file: returns `Ok(false)`,
/// leaving it untouched, when `path` already exists.
pub fn create_file_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<bool> {
    publish(path, contents, mode, true)
}

fn publish(path: &Path, contents: &[u8], mode: u32, no_clobber: bool) -> Result<bool> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))?;
    let mut nonce = [0u8; 8];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| anyhow!("system RNG failure"))?;
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{}.tmp-{nonce}", name.to_string_lossy()));

    let result = (|| -> std::io::Result<bool> {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        // Created with the final mode (minus umask) so a key is never briefly readable by others.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        let mut file = options.open(&tmp)?;
        // The umask may have stripped bits the caller asked for (0644 certificates).
        #[cfg(unix)]
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        #[cfg(not(unix))]
        let _ = mode;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        let created = if no_clobber {
            // A hard link appears atomically and, unlike rename, fails if the target exists.
            match fs::hard_link(&tmp, path) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                // Filesystems without hard links: check-then-rename, racy but rare.
                Err(_) if path.exists() => false,
                Err(_) => {
                    fs::rename(&tmp, path)?;
                    true
                }
            }
        } else {
            fs::rename(&tmp, path)?;
            true
        };
        // Make the new directory entry durable.
        #[cfg(unix)]
        if created {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(created)
    })();
    // After a hard link (or a failure) the temporary name is still there.
    let _ = fs::remove_file(&tmp);
    result.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Role, Tenant};
    use std::sync::Arc;

    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::server::danger::ClientCertVerifier;
    use x509_parser::extensions::GeneralName;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(ca_pem: &str) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        Arc::new(roots)
    }

    fn client_verifier(ca_pem: &str, crl_pem: Option<&str>) -> Arc<dyn ClientCertVerifier> {
        let mut builder = WebPkiClientVerifier::builder_with_provider(roots(ca_pem), provider());
        if let Some(crl) = crl_pem {
            builder = builder
                .with_crls([CertificateRevocationListDer::from_pem_slice(crl.as_bytes()).unwrap()]);
        }
        builder.build().unwrap()
    }

    fn verify_client(
        verifier: &dyn ClientCertVerifier,
        cert_pem: &str,
    ) -> Result<(), rustls::Error> {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        verifier
            .verify_client_cert(&cert, &[], UnixTime::now())
            .map(|_| ())
    }

    fn uri_sans(cert_pem: &str) -> Vec<String> {
        let der = pem_to_der(cert_pem).unwrap();
        let cert = parse_cert(&der).unwrap();
        let Some(san) = cert.subject_alternative_name().unwrap() else {
            return Vec::new();
        };
        san.value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            })
            .collect()
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap()
    }

    fn all_files(pki: &DevPki) -> Vec<PathBuf> {
        vec![
            pki.ca_cert.clone(),
            pki.ca_key.clone(),
            pki.server_cert.clone(),
            pki.server_key.clone(),
            pki.app.0.clone(),
            pki.app.1.clone(),
            pki.auditor.0.clone(),
            pki.auditor.1.clone(),
            pki.other.0.clone(),
            pki.other.1.clone(),
            pki.admin.0.clone(),
            pki.admin.1.clone(),
            pki.operator.0.clone(),
            pki.operator.1.clone(),
        ]
    }

    #[test]
    fn ensure_twice_reuses_files_byte_for_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let first = DevPki::ensure(&dir, DEV_TRUST_DOMAIN, &[]).unwrap();
        let before: Vec<Vec<u8>> = all_files(&first)
            .iter()
            .map(|p| fs::read(p).unwrap())
            .collect();
        let second = DevPki::ensure(&dir, DEV_TRUST_DOMAIN, &["other.example".into()]).unwrap();
        assert_eq!(first, second);
        let after: Vec<Vec<u8>> = all_files(&second)
            .iter()
            .map(|p| fs::read(p).unwrap())
            .collect();
        assert_eq!(before, after);
        // No temporary files left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 14);
    }

    #[cfg(unix)]
    #[test]
    fn file_and_dir_modes() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let pki = DevPki::ensure(&dir, DEV_TRUST_DOMAIN, &[]).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for key in [
            &pki.ca_key,
            &pki.server_key,
            &pki.app.1,
            &pki.auditor.1,
            &pki.other.1,
        ] {
            assert_eq!(mode(key), 0o600, "{}", key.display());
            assert!(read(key).starts_with("-----BEGIN PRIVATE KEY-----"));
        }
        for cert in [
            &pki.ca_cert,
            &pki.server_cert,
            &pki.app.0,
            &pki.auditor.0,
            &pki.other.0,
        ] {
            assert_eq!(mode(cert), 0o644, "{}", cert.display());
        }
    }

    #[test]
    fn client_identities() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = DevPki::ensure(tmp.path(), DEV_TRUST_DOMAIN, &[]).unwrap();
        assert_eq!(
            uri_sans(&read(&pki.app.0)),
            ["spiffe://facevault.dev/tenant/demo/role/app"]
        );
        assert_eq!(
            uri_sans(&read(&pki.auditor.0)),
            ["spiffe://facevault.dev/tenant/demo/role/auditor"]
        );
        assert_eq!(
            uri_sans(&read(&pki.other.0)),
            ["spiffe://facevault.dev/tenant/other/role/app"]
        );
        assert_eq!(
            uri_sans(&read(&pki.operator.0)),
            ["spiffe://facevault.dev/operator/dev"]
        );
        let der = pem_to_der(&read(&pki.app.0)).unwrap();
        let cert = parse_cert(&der).unwrap();
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(cn, ["demo-app"]);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);

        let ca_der = pem_to_der(&read(&pki.ca_cert)).unwrap();
        let ca = parse_cert(&ca_der).unwrap();
        let cn: Vec<_> = ca
            .subject()
            .iter_common_name()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(cn, [DEV_CA_COMMON_NAME]);
        let ku = ca.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
    }

    #[test]
    fn custom_trust_domain() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = DevPki::ensure(tmp.path(), "example.org", &[]).unwrap();
        assert_eq!(
            uri_sans(&read(&pki.app.0)),
            [spiffe_id("example.org", "demo", "app")]
        );
    }

    #[test]
    fn webpki_accepts_dev_client_certs_and_rejects_foreign_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = DevPki::ensure(tmp.path(), DEV_TRUST_DOMAIN, &[]).unwrap();
        let verifier = client_verifier(&read(&pki.ca_cert), None);
        for (cert, _) in [
            &pki.app,
            &pki.auditor,
            &pki.other,
            &pki.admin,
            &pki.operator,
        ] {
            verify_client(verifier.as_ref(), &read(cert)).unwrap();
        }

        let foreign = CertAuthority::generate("some other CA").unwrap();
        let (cert, _) = foreign
            .issue_client(
                "demo-app",
                Some(&spiffe_id(DEV_TRUST_DOMAIN, "demo", "app")),
            )
            .unwrap();
        let err = verify_client(verifier.as_ref(), &cert).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ),
            "{err:?}"
        );

        // A server certificate is not a client certificate.
        assert!(verify_client(verifier.as_ref(), &read(&pki.server_cert)).is_err());
    }

    #[test]
    fn crl_from_loaded_ca_revokes() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = DevPki::ensure(tmp.path(), DEV_TRUST_DOMAIN, &[]).unwrap();
        let ca = CertAuthority::load(&pki.ca_cert, &pki.ca_key).unwrap();
        assert_eq!(ca.cert_pem(), read(&pki.ca_cert));

        let (revoked, _) = ca
            .issue_client(
                "demo-app",
                Some(&spiffe_id(DEV_TRUST_DOMAIN, "demo", "app")),
            )
            .unwrap();
        let serial = serial_of(&revoked).unwrap();
        assert_eq!(serial.len(), 16);
        let crl = ca.crl_pem(std::slice::from_ref(&serial)).unwrap();
        assert!(crl.starts_with("-----BEGIN X509 CRL-----"));

        let verifier = client_verifier(&read(&pki.ca_cert), Some(&crl));
        let err = verify_client(verifier.as_ref(), &revoked).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
            ),
            "{err:?}"
        );
        // Only the listed serial is revoked, including certificates from ensure().
        verify_client(verifier.as_ref(), &read(&pki.app.0)).unwrap();

        // An empty CRL is also accepted.
        let verifier = client_verifier(&read(&pki.ca_cert), Some(&ca.crl_pem(&[]).unwrap()));
        verify_client(verifier.as_ref(), &revoked).unwrap();
    }

    #[test]
    fn crl_from_generated_ca_revokes() {
        let ca = CertAuthority::generate("test CA").unwrap();
        let (cert, key) = ca
            .issue_client("t-app", Some("spiffe://x/tenant/t/role/app"))
            .unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        let verifier = client_verifier(&ca.cert_pem(), None);
        verify_client(verifier.as_ref(), &cert).unwrap();
        let crl = ca.crl_pem(&[serial_of(&cert).unwrap()]).unwrap();
        let verifier = client_verifier(&ca.cert_pem(), Some(&crl));
        assert!(verify_client(verifier.as_ref(), &cert).is_err());
    }

    #[test]
    fn expired_and_sanless_certs() {
        let ca = CertAuthority::generate("test CA").unwrap();
        let verifier = client_verifier(&ca.cert_pem(), None);
        let now = SystemTime::now();
        let (expired, _) = ca
            .issue_client_valid(
                "demo-app",
                Some(&spiffe_id(DEV_TRUST_DOMAIN, "demo", "app")),
                now - 10 * DAY,
                now - DAY,
            )
            .unwrap();
        let err = verify_client(verifier.as_ref(), &expired).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired
                        | rustls::CertificateError::ExpiredContext { .. }
                )
            ),
            "{err:?}"
        );

        // TLS accepts it; rejecting a certificate without an identity is the service's job.
        let (no_san, _) = ca.issue_client("anonymous", None).unwrap();
        assert!(uri_sans(&no_san).is_empty());
        verify_client(verifier.as_ref(), &no_san).unwrap();
    }

    #[test]
    fn operator_pki_issues_chaining_certificates_and_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let ca_files = init_ca(&dir, "prod.example.com", "Example CA").unwrap();
        let ca = CertAuthority::load(&ca_files.cert, &ca_files.key).unwrap();
        assert_eq!(
            ca.trust_domain().unwrap().as_deref(),
            Some("prod.example.com")
        );
        let again = init_ca(&dir, "prod.example.com", "Example CA").unwrap_err();
        assert!(format!("{again:#}").contains("already exists"), "{again:#}");
        assert!(init_ca(&tmp.path().join("td"), "Prod.example.com", "x").is_err());

        let client = CertFiles::with_prefix(&dir.join("bank-app"));
        let app = Principal::Tenant {
            tenant: Tenant::try_from("bank").unwrap(),
            role: Role::App,
        };
        let id = issue_client_files(&ca, &client, "prod.example.com", &app, 30).unwrap();
        assert_eq!(id, "spiffe://prod.example.com/tenant/bank/role/app");
        assert_eq!(uri_sans(&read(&client.cert)), [id]);
        let verifier = client_verifier(&read(&ca_files.cert), None);
        verify_client(verifier.as_ref(), &read(&client.cert)).unwrap();
        let twice = issue_client_files(&ca, &client, "prod.example.com", &app, 30);
        assert!(twice.is_err());
        for days in [0, MAX_LEAF_DAYS + 1] {
            let files = CertFiles::with_prefix(&dir.join(format!("days-{days}")));
            assert!(issue_client_files(&ca, &files, "x", &app, days).is_err());
        }
        let operator = CertFiles::with_prefix(&dir.join("operator-ops"));
        let ops = Principal::Operator(crate::domain::OperatorName::try_from("ops").unwrap());
        let id = issue_client_files(&ca, &operator, "prod.example.com", &ops, 30).unwrap();
        assert_eq!(id, "spiffe://prod.example.com/operator/ops");
        assert_eq!(uri_sans(&read(&operator.cert)), [id]);
        verify_client(verifier.as_ref(), &read(&operator.cert)).unwrap();

        let server = CertFiles::server_in(&dir);
        let no_names = issue_server_files(&ca, &server, &[], &[], 30).unwrap_err();
        assert!(format!("{no_names:#}").contains("--dns"), "{no_names:#}");
        assert!(issue_server_files(&ca, &server, &["10.0.0.1".into()], &[], 30).is_err());
        issue_server_files(
            &ca,
            &server,
            &["facevault.internal".into()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            30,
        )
        .unwrap();
        let verifier =
            WebPkiServerVerifier::builder_with_provider(roots(&read(&ca_files.cert)), provider())
                .build()
                .unwrap();
        let cert = CertificateDer::from_pem_file(&server.cert).unwrap();
        for name in ["facevault.internal", "127.0.0.1"] {
            let name = ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
                .unwrap_or_else(|e| panic!("{name:?}: {e:?}"));
        }

        #[cfg(unix)]
        for key in [&ca_files.key, &client.key, &server.key] {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }

    #[test]
    fn server_cert_verifies_for_localhost_and_extra_names() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = DevPki::ensure(
            tmp.path(),
            DEV_TRUST_DOMAIN,
            &["facevault.internal".into(), "10.1.2.3".into()],
        )
        .unwrap();
        let verifier =
            WebPkiServerVerifier::builder_with_provider(roots(&read(&pki.ca_cert)), provider())
                .build()
                .unwrap();
        let cert = CertificateDer::from_pem_file(&pki.server_cert).unwrap();
        for name in [
            "localhost",
            "127.0.0.1",
            "::1",
            "facevault.internal",
            "10.1.2.3",
        ] {
            let name = ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
                .unwrap_or_else(|e| panic!("{name:?}: {e:?}"));
        }
        let wrong = ServerName::try_from("example.com").unwrap();
        assert!(
            verifier
                .verify_server_cert(&cert, &[], &wrong, &[], UnixTime::now())
                .is_err()
        );
        // Client certificates are not server certificates.
        let app = CertificateDer::from_pem_file(&pki.app.0).unwrap();
        let localhost = ServerName::try_from("localhost").unwrap();
        assert!(
            verifier
                .verify_server_cert(&app, &[], &localhost, &[], UnixTime::now())
                .is_err()
        );
    }

    /// Drives a full in-memory TLS handshake; returns the server side on success.
    fn handshake(
        client: rustls::ClientConfig,
        server: rustls::ServerConfig,
    ) -> Result<rustls::ServerConnection, rustls::Error> {
        let mut client = rustls::ClientConnection::new(
            Arc::new(client),
            ServerName::try_from("localhost").unwrap(),
        )?;
        let mut server = rustls::ServerConnection::new(Arc::new(server))?;
        for _ in 0..10 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).unwrap();
                server.process_new_packets()?;
            }
            buf.clear();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
                client.process_new_packets()?;
            }
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(server);
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn mutual_tls_handshake_with_dev_pki() {
        use rustls::pki_types::PrivateKeyDer;
        let tmp = tempfile::tempdir().unwrap();
        let pki = DevPki::ensure(tmp.path(), DEV_TRUST_DOMAIN, &[]).unwrap();
        let ca_pem = read(&pki.ca_cert);
        let load_chain = |p: &Path| vec![CertificateDer::from_pem_file(p).unwrap()];
        let load_key = |p: &Path| PrivateKeyDer::from_pem_file(p).unwrap();

        let server_config = |crl: Option<&str>| {
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(client_verifier(&ca_pem, crl))
                .with_single_cert(load_chain(&pki.server_cert), load_key(&pki.server_key))
                .unwrap()
        };
        let client_config = |chain, key| {
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots(&ca_pem))
                .with_client_auth_cert(chain, key)
                .unwrap()
        };

        let server = handshake(
            client_config(load_chain(&pki.app.0), load_key(&pki.app.1)),
            server_config(None),
        )
        .unwrap();
        let peer = server.peer_certificates().unwrap();
        assert_eq!(peer[0].as_ref(), pem_to_der(&read(&pki.app.0)).unwrap());

        let ca = CertAuthority::load(&pki.ca_cert, &pki.ca_key).unwrap();
        let crl = ca
            .crl_pem(&[serial_of(&read(&pki.app.0)).unwrap()])
            .unwrap();
        assert!(
            handshake(
                client_config(load_chain(&pki.app.0), load_key(&pki.app.1)),
                server_config(Some(&crl)),
            )
            .is_err()
        );
        handshake(
            client_config(load_chain(&pki.auditor.0), load_key(&pki.auditor.1)),
            server_config(Some(&crl)),
        )
        .unwrap();
    }

    #[test]
    fn concurrent_ensure_agrees_on_one_pki() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| DevPki::ensure(&dir, DEV_TRUST_DOMAIN, &[])))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for result in results {
            result.unwrap();
        }
        let pki = DevPki::ensure(&dir, DEV_TRUST_DOMAIN, &[]).unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 14);
        let verifier = client_verifier(&read(&pki.ca_cert), None);
        for (cert, _) in [
            &pki.app,
            &pki.auditor,
            &pki.other,
            &pki.admin,
            &pki.operator,
        ] {
            verify_client(verifier.as_ref(), &read(cert)).unwrap();
        }
    }

    #[test]
    fn create_file_atomic_never_replaces() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        assert!(create_file_atomic(&path, b"one", 0o600).unwrap());
        assert!(!create_file_atomic(&path, b"two", 0o600).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_file_atomic(&path, b"three", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
        assert!(write_file_atomic(&tmp.path().join("missing/f"), b"x", 0o600).is_err());
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_cert_reissued_for_existing_key() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = DevPki::ensure(tmp.path(), DEV_TRUST_DOMAIN, &[]).unwrap();
        let ca_key = read(&pki.ca_key);
        let app_key = read(&pki.app.1);
        let old_app = read(&pki.app.0);
        fs::remove_file(&pki.app.0).unwrap();
        fs::remove_file(&pki.ca_cert).unwrap();

        let pki = DevPki::ensure(tmp.path(), DEV_TRUST_DOMAIN, &[]).unwrap();
        assert_eq!(read(&pki.ca_key), ca_key);
        assert_eq!(read(&pki.app.1), app_key);
        assert_ne!(read(&pki.app.0), old_app);
        let verifier = client_verifier(&read(&pki.ca_cert), None);
        // The re-created CA certificate keeps the key and name, so old certificates chain.
        verify_client(verifier.as_ref(), &old_app).unwrap();
        verify_client(verifier.as_ref(), &read(&pki.app.0)).unwrap();
        verify_client(verifier.as_ref(), &read(&pki.auditor.0)).unwrap();
    }

    #[test]
    fn inconsistent_directories_are_errors_not_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = DevPki::ensure(tmp.path(), DEV_TRUST_DOMAIN, &[]).unwrap();

        // A new CA would orphan every existing leaf certificate.
        fs::remove_file(&pki.ca_cert).unwrap();
        fs::remove_file(&pki.ca_key).unwrap();
        let app_before = read(&pki.app.0);
        let err = DevPki::ensure(tmp.path(), DEV_TRUST_DOMAIN, &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains("not issued by the CA"),
            "{err:#}"
        );
        assert_eq!(read(&pki.app.0), app_before);

        let tmp = tempfile::tempdir().unwrap();
        let pki = DevPki::ensure(tmp.path(), DEV_TRUST_DOMAIN, &[]).unwrap();
        fs::remove_file(&pki.ca_key).unwrap();
        assert!(DevPki::ensure(tmp.path(), DEV_TRUST_DOMAIN, &[]).is_err());

        let tmp = tempfile::tempdir().unwrap();
        let pki = DevPki::ensure(tmp.path(), DEV_TRUST_DOMAIN, &[]).unwrap();
        fs::remove_file(&pki.other.1).unwrap();
        assert!(DevPki::ensure(tmp.path(), DEV_TRUST_DOMAIN, &[]).is_err());

        // Swapped keys.
        let tmp = tempfile::tempdir().unwrap();
        let pki = DevPki::ensure(tmp.path(), DEV_TRUST_DOMAIN, &[]).unwrap();
        fs::copy(&pki.auditor.1, &pki.app.1).unwrap();
        let err = DevPki::ensure(tmp.path(), DEV_TRUST_DOMAIN, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("does not belong"), "{err:#}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let garbage = tmp.path().join("garbage.pem");
        fs::write(&garbage, "not pem").unwrap();
        assert!(CertAuthority::load(&garbage, &garbage).is_err());
        assert!(CertAuthority::load(&tmp.path().join("missing"), &garbage).is_err());
        assert!(serial_of("not pem").is_err());
        assert!(
            serial_of("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err()
        );

        // A CA key paired with another CA's certificate.
        let a = CertAuthority::generate("a").unwrap();
        let b = CertAuthority::generate("b").unwrap();
        let cert = tmp.path().join("a.pem");
        let key = tmp.path().join("b.key");
        fs::write(&cert, a.cert_pem()).unwrap();
        fs::write(&key, b.issuer.key().serialize_pem()).unwrap();
        assert!(CertAuthority::load(&cert, &key).is_err());

        // A leaf certificate is not a CA.
        let (leaf, leaf_key) = a.issue_client("x", None).unwrap();
        fs::write(&cert, leaf).unwrap();
        fs::write(&key, leaf_key).unwrap();
        assert!(CertAuthority::load(&cert, &key).is_err());

        assert!(a.issue_client("x", Some("spiffe://ü")).is_err());
        let now = SystemTime::now();
        assert!(a.issue_client_valid("x", None, now, now - DAY).is_err());
        assert!(
            a.issue_client_valid(
                "x",
                None,
                UNIX_EPOCH,
                UNIX_EPOCH + Duration::from_secs(300_000_000_000)
            )
            .is_err()
        );
        assert!(a.crl_pem(&[vec![]]).is_err());
        assert!(a.crl_pem(&[vec![1; 21]]).is_err());
        assert!(DevPki::ensure(tmp.path(), DEV_TRUST_DOMAIN, &["bad name ü".into()]).is_err());
        for domain in ["", "Facevault.dev", "a/b", "x y"] {
            assert!(
                DevPki::ensure(&tmp.path().join("td"), domain, &[]).is_err(),
                "{domain:?}"
            );
        }
    }

    #[test]
    fn issued_certs_chain_through_loaded_printable_string_subject() {
        // CAs not made by this module (e.g. openssl's PrintableString names) still load.
        let key = new_key().unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::OrganizationName,
            DnValue::PrintableString("Example Org".try_into().unwrap()),
        );
        dn.push(DnType::CommonName, "Example CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let (cp, kp) = (tmp.path().join("ca.pem"), tmp.path().join("ca.key"));
        fs::write(&cp, cert.pem()).unwrap();
        fs::write(&kp, key.serialize_pem()).unwrap();
        let ca = CertAuthority::load(&cp, &kp).unwrap();
        let (leaf, _) = ca
            .issue_client("x", Some("spiffe://x/tenant/t/role/app"))
            .unwrap();
        let verifier = client_verifier(&cert.pem(), None);
        verify_client(verifier.as_ref(), &leaf).unwrap();
        let crl = ca.crl_pem(&[serial_of(&leaf).unwrap()]).unwrap();
        let verifier = client_verifier(&cert.pem(), Some(&crl));
        assert!(verify_client(verifier.as_ref(), &leaf).is_err());
    }
}
