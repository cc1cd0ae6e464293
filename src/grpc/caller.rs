use tonic::Request;

use super::tls::PeerInfo;
use crate::domain::{Caller, OperatorName, Principal, Role, Tenant};
use crate::error::Error;

/// A caller acting for its tenant in the role the call needs.
#[derive(Debug, Clone)]
pub struct TenantCaller {
    pub tenant: Tenant,
}

fn authenticated<T>(request: &Request<T>) -> Result<&Caller, Error> {
    request
        .extensions()
        .get::<PeerInfo>()
        .ok_or(Error::Unauthenticated)?
        .caller
        .as_ref()
        .map_err(|_| Error::Unauthenticated)
}

/// The authenticated tenant caller of a request, if its certificate names one
/// with the required role. Handlers call this first; nothing is read before it
/// succeeds. An operator is refused here: it has no tenant to act for.
pub fn require<T>(request: &Request<T>, role: Role) -> Result<TenantCaller, Error> {
    match &authenticated(request)?.principal {
        Principal::Tenant { tenant, role: held } if *held == role => Ok(TenantCaller {
            tenant: tenant.clone(),
        }),
        _ => Err(Error::WrongRole),
    }
}

/// The authenticated operator of a request: the deployment-wide views need
/// one. A tenant's caller, whatever its role, is refused.
pub fn require_operator<T>(request: &Request<T>) -> Result<OperatorName, Error> {
    match &authenticated(request)?.principal {
        Principal::Operator(name) => Ok(name.clone()),
        Principal::Tenant { .. } => Err(Error::WrongRole),
    }
}
