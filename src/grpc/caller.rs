use tonic::Request;

use super::tls::PeerInfo;
use crate::domain::{Caller, Role};
use crate::error::Error;

/// The authenticated caller of a request, if its certificate names one with the
/// required role. Handlers call this first; nothing is read before it succeeds.
pub fn require<T>(request: &Request<T>, role: Role) -> Result<Caller, Error> {
    let caller = request
        .extensions()
        .get::<PeerInfo>()
        .ok_or(Error::Unauthenticated)?
        .caller
        .clone()
        .map_err(|_| Error::Unauthenticated)?;
    if caller.role != role {
        return Err(Error::WrongRole);
    }
    Ok(caller)
}
