//! The bad-input catalogue: every malformed request gets its documented code
//! and changes nothing in Redis (only the audit log records the refusal).

use facevault::crypto::sealing::{SealedFor, Suite};
use facevault::proto;
use facevault::proto::face_vault_client::FaceVaultClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::*;

/// Every key and value outside the audit streams, serialized.
async fn snapshot(app: &TestApp) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut redis = app.redis().await;
    let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis)
        .await
        .unwrap();
    keys.retain(|k| !k.starts_with(b"fv:audit:"));
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        out.push((key, dump));
    }
    out
}

/// A VerifyRequest whose subject id is arbitrary bytes (not valid UTF-8).
#[derive(Clone, PartialEq, prost::Message)]
struct RawVerifyRequest {
    #[prost(bytes = "vec", tag = "1")]
    subject_id: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    probe: Option<proto::SealedEmbedding>,
    #[prost(string, tag = "3")]
    purpose: String,
}

async fn raw_verify(
    channel: Channel,
    request: RawVerifyRequest,
) -> Result<proto::VerifyResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<RawVerifyRequest, proto::VerifyResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/facevault.v1.FaceVault/Verify");
    grpc.unary(tonic::Request::new(request), path, codec)
        .await
        .map(|r| r.into_inner())
}

type Case = (&'static str, Code);

#[tokio::test]
async fn malformed_requests_get_their_code_and_change_nothing() {
    let app = spawn_app().await;
    let mut client: FaceVaultClient<Channel> = app.app_client().await;
    let values = face(1);
    app.enroll(&mut client, "alice", &values).await;
    let before = snapshot(&app).await;

    let seal = |values: &[f32], model: &str, at: i64| {
        app.seal_with(
            Suite::X25519Sha256Aes256Gcm,
            SealedFor::Verify,
            "demo",
            "alice",
            model,
            values,
            at,
        )
    };
    let verify =
        |probe: proto::SealedEmbedding, subject: String, purpose: &str| proto::VerifyRequest {
            subject_id: subject,
            probe: Some(probe),
            purpose: purpose.to_owned(),
        };
    let good = || seal(&values, MODEL, now_ms());
    let mut nan = values.clone();
    nan[7] = f32::NAN;
    let mut inf = values.clone();
    inf[9] = f32::NEG_INFINITY;

    let mut verify_cases: Vec<(Case, proto::VerifyRequest)> = Vec::new();
    let mut truncated = good();
    truncated
        .ciphertext
        .truncate(truncated.ciphertext.len() / 2);
    verify_cases.push((
        ("truncated ciphertext", Code::InvalidArgument),
        verify(truncated, "alice".into(), "login"),
    ));
    let mut oversized = good();
    oversized.ciphertext = vec![1; 100 * 1024];
    verify_cases.push((
        ("oversized ciphertext", Code::InvalidArgument),
        verify(oversized, "alice".into(), "login"),
    ));
    let mut short_enc = good();
    short_enc.enc.pop();
    verify_cases.push((
        ("truncated enc", Code::InvalidArgument),
        verify(short_enc, "alice".into(), "login"),
    ));
    let mut suite = good();
    suite.suite = "p256-sha256-aes128gcm".into();
    verify_cases.push((
        ("unknown suite", Code::InvalidArgument),
        verify(suite, "alice".into(), "login"),
    ));
    let mut key = good();
    key.key_id = "no-such-key".into();
    verify_cases.push((
        ("unknown key id", Code::InvalidArgument),
        verify(key, "alice".into(), "login"),
    ));
    let mut empty = good();
    empty.ciphertext.clear();
    verify_cases.push((
        ("empty ciphertext", Code::InvalidArgument),
        verify(empty, "alice".into(), "login"),
    ));
    for (name, v) in [
        ("NaN value", nan),
        ("infinite value", inf),
        ("zero vector", vec![0.0; DIM]),
    ] {
        verify_cases.push((
            (name, Code::InvalidArgument),
            verify(seal(&v, MODEL, now_ms()), "alice".into(), "login"),
        ));
    }
    verify_cases.push((
        ("wrong dimension", Code::InvalidArgument),
        verify(
            seal(&values[..DIM / 2], MODEL, now_ms()),
            "alice".into(),
            "login",
        ),
    ));
    verify_cases.push((
        ("huge vector", Code::InvalidArgument),
        verify(
            seal(&vec![0.5; 20_000], MODEL, now_ms()),
            "alice".into(),
            "login",
        ),
    ));
    verify_cases.push((
        ("unknown model", Code::InvalidArgument),
        verify(
            seal(&values, "unknown-128", now_ms()),
            "alice".into(),
            "login",
        ),
    ));
    verify_cases.push((
        ("stale payload", Code::InvalidArgument),
        verify(
            seal(&values, MODEL, now_ms() - 10 * 60 * 1000),
            "alice".into(),
            "login",
        ),
    ));
    verify_cases.push((
        ("future payload", Code::InvalidArgument),
        verify(
            seal(&values, MODEL, now_ms() + 10 * 60 * 1000),
            "alice".into(),
            "login",
        ),
    ));
    verify_cases.push((
        ("empty purpose", Code::InvalidArgument),
        verify(good(), "alice".into(), ""),
    ));
    verify_cases.push((
        ("malformed purpose", Code::InvalidArgument),
        verify(good(), "alice".into(), "LOGIN!"),
    ));
    verify_cases.push((
        ("empty subject id", Code::InvalidArgument),
        verify(good(), String::new(), "login"),
    ));
    verify_cases.push((
        ("1 KiB subject id", Code::InvalidArgument),
        verify(good(), "a".repeat(1024), "login"),
    ));
    verify_cases.push((
        ("1 MiB subject id", Code::OutOfRange),
        verify(good(), "a".repeat(1 << 20), "login"),
    ));
    verify_cases.push((
        ("no probe", Code::InvalidArgument),
        proto::VerifyRequest {
            subject_id: "alice".into(),
            probe: None,
            purpose: "login".into(),
        },
    ));

    let mut failures = Vec::new();
    for ((name, expected), request) in verify_cases {
        let got = client
            .verify(request)
            .await
            .map(|_| Code::Ok)
            .unwrap_or_else(|s| s.code());
        if got != expected {
            failures.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
    }

    // Invalid UTF-8 is not a protobuf string: the gRPC status-code spec answers
    // a request that fails to parse with INTERNAL, and nothing is read.
    let tls = app.tls_config(&app.pki.app.0, &app.pki.app.1);
    let raw = raw_verify(
        app.channel_with(tls).await.unwrap(),
        RawVerifyRequest {
            subject_id: vec![0xff, 0xfe, b'a'],
            probe: Some(good()),
            purpose: "login".into(),
        },
    )
    .await;
    let got = raw.map(|_| Code::Ok).unwrap_or_else(|s| s.code());
    if got != Code::Internal {
        failures.push(format!(
            "invalid UTF-8 subject id: expected Internal, got {got:?}"
        ));
    }

    let enroll = |consent: Option<proto::Consent>| proto::EnrollRequest {
        subject_id: "alice".into(),
        embedding: Some(app.seal(SealedFor::Enroll, "demo", "alice", &values)),
        consent,
        replace: true,
    };
    let mut future_consent = consent(&["login"]);
    future_consent.granted_at = Some(prost_types::Timestamp {
        seconds: now_ms() / 1000 + 3600,
        nanos: 0,
    });
    let mut no_method = consent(&["login"]);
    no_method.method = 0;
    let enroll_cases = [
        (("no consent", Code::InvalidArgument), enroll(None)),
        (
            ("consent without purposes", Code::InvalidArgument),
            enroll(Some(consent(&[]))),
        ),
        (
            ("consent granted in the future", Code::InvalidArgument),
            enroll(Some(future_consent)),
        ),
        (
            ("consent without method", Code::InvalidArgument),
            enroll(Some(no_method)),
        ),
        (
            ("duplicate purposes", Code::InvalidArgument),
            enroll(Some(consent(&["login", "login"]))),
        ),
    ];
    for ((name, expected), request) in enroll_cases {
        let got = client
            .enroll(request)
            .await
            .map(|_| Code::Ok)
            .unwrap_or_else(|s| s.code());
        if got != expected {
            failures.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
    }
    let other = [
        (
            "withdraw nothing",
            client
                .withdraw_consent(proto::WithdrawConsentRequest {
                    subject_id: "alice".into(),
                    purposes: vec![],
                })
                .await
                .map(|_| ()),
        ),
        (
            "cancel with an overlong reason",
            client
                .cancel_account(proto::CancelAccountRequest {
                    subject_id: "alice".into(),
                    reason: "x".repeat(300),
                })
                .await
                .map(|_| ()),
        ),
        (
            "malformed ticket id",
            client
                .get_deletion_ticket(proto::GetDeletionTicketRequest {
                    ticket_id: "../x".into(),
                })
                .await
                .map(|_| ()),
        ),
    ];
    for (name, result) in other {
        let got = result.map(|_| Code::Ok).unwrap_or_else(|s| s.code());
        if got != Code::InvalidArgument {
            failures.push(format!("{name}: expected InvalidArgument, got {got:?}"));
        }
    }

    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        snapshot(&app).await == before,
        "a refused request changed Redis"
    );
    // And the subject still works.
    let ok = app
        .verify(&mut client, "alice", &capture_of(&values, 0.2, 2))
        .await
        .unwrap();
    assert_eq!(ok.decision(), proto::Decision::Match);
}

/// grpcurl sends an empty body when the command piped into it (`facevault
/// seal …`) printed nothing. Enroll and Verify say so instead of naming the
/// first missing field; the refusal changes nothing and is audited like any
/// other.
#[tokio::test]
async fn an_empty_request_asks_whether_sealing_failed_and_is_audited() {
    let app = spawn_app().await;
    let mut client: FaceVaultClient<Channel> = app.app_client().await;
    let before = snapshot(&app).await;
    let enroll = client
        .enroll(proto::EnrollRequest::default())
        .await
        .unwrap_err();
    let verify = client
        .verify(proto::VerifyRequest::default())
        .await
        .unwrap_err();
    for status in [&enroll, &verify] {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(
            status.message(),
            "empty request: did the sealing step fail?"
        );
    }
    // A request that carries something still gets the missing field named.
    let no_probe = client
        .verify(proto::VerifyRequest {
            subject_id: "alice".into(),
            probe: None,
            purpose: "login".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(no_probe.message(), "the sealed embedding is missing");
    assert_eq!(snapshot(&app).await, before, "nothing changed in Redis");

    let events = crate::audit::all_events(&mut crate::audit::auditor(&app).await).await;
    for op in ["Enroll", "Verify"] {
        assert!(
            events
                .iter()
                .any(|e| e.op == op && e.code == "INVALID_ARGUMENT"),
            "the refused {op} is audited: {events:?}"
        );
    }
}
