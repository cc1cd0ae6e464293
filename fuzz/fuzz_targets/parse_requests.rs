//! Any bytes as Enroll/Verify/Withdraw/Cancel requests, parsed into domain
//! commands: INVALID_ARGUMENT or a command, never a panic.
#![no_main]

use facevault::proto;
use facevault::vault::{CancelCommand, EnrollCommand, VerifyCommand, WithdrawCommand};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = proto::EnrollRequest::decode(data) {
        let _ = EnrollCommand::try_from(r);
    }
    if let Ok(r) = proto::VerifyRequest::decode(data) {
        let _ = VerifyCommand::try_from(r);
    }
    if let Ok(r) = proto::WithdrawConsentRequest::decode(data) {
        let _ = WithdrawCommand::try_from(r);
    }
    if let Ok(r) = proto::CancelAccountRequest::decode(data) {
        let _ = CancelCommand::try_from(r);
    }
});
