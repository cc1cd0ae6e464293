//! What an attacker who dumps or writes Redis gets: no subject id, no embedding,
//! unlinkable templates, and no way to move a template to another subject.

use facevault::crypto::envelope::{SealedTemplate, open_template};
use facevault::crypto::keyfiles;
use facevault::crypto::keyring::SubjectRef;
use facevault::crypto::transform;
use facevault::domain::Tenant;
use facevault::proto::Decision;
use prost::Message as _;
use tonic::Code;

use crate::helpers::*;

async fn dump_everything(app: &TestApp) -> Vec<u8> {
    let mut redis = app.redis().await;
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut out = Vec::new();
    for key in keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        out.extend_from_slice(&key);
        out.extend_from_slice(&dump);
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn redis_holds_neither_subject_ids_nor_embedding_floats() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let subject = "subject-7f3a9c@example.com";
    let values = face(1);
    app.enroll(&mut client, subject, &values).await;
    app.verify(&mut client, subject, &capture_of(&values, 0.2, 2))
        .await
        .unwrap();

    let dump = dump_everything(&app).await;
    assert!(dump.len() > 500, "the dump should hold the template");
    assert!(!contains(&dump, subject.as_bytes()));
    assert!(!contains(&dump, b"7f3a9c"));
    // Neither the raw values nor their normalised form, in either byte order.
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    for v in &values {
        for x in [*v, v / norm] {
            assert!(!contains(&dump, &x.to_le_bytes()), "raw float {x} found");
            assert!(!contains(&dump, &x.to_be_bytes()), "raw float {x} found");
        }
    }
}

#[tokio::test]
async fn a_cancellation_note_is_kept_sealed() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    app.enroll(&mut client, "alice", &face(1)).await;
    let note = "moved abroad, asked by phone";
    let ticket = client
        .cancel_account(facevault::proto::CancelAccountRequest {
            subject_id: "alice".to_owned(),
            reason: note.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();

    let mut redis = app.redis().await;
    let fields: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(format!(
            "fv:{{fv-deletion}}:ticket:demo:{}",
            ticket.ticket_id
        ))
        .query_async(&mut redis)
        .await
        .unwrap();
    let sealed = fields
        .iter()
        .find(|(k, _)| k == "reason_sealed")
        .map(|(_, v)| v.clone())
        .expect("the ticket keeps the note, sealed");
    for (field, value) in &fields {
        assert!(
            !contains(value, b"abroad"),
            "{field} holds the note in clear"
        );
    }

    let keys = keyfiles::load(&app.keys).unwrap();
    let tenant = Tenant::try_from("demo").unwrap();
    let opened = facevault::crypto::envelope::open_ticket_note(
        &keys.keyring.tenant(&tenant).unwrap(),
        &tenant,
        &ticket.ticket_id,
        &sealed,
    )
    .unwrap();
    assert_eq!(opened.as_str(), note);
}

#[tokio::test]
async fn one_face_under_two_salts_gives_unlinkable_templates() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let values = face(1);
    let a = app.enroll(&mut client, "alice", &values).await;
    let b = app
        .enroll(&mut client, "alice-second-account", &values)
        .await;

    // The test holds the keys, so it can look at what an attacker with the keyring
    // but without the transform's salts and key could not: the stored vectors.
    let material = keyfiles::load(&app.keys).unwrap();
    let tenant = Tenant::try_from("demo").unwrap();
    let keys = material.keyring.tenant(&tenant).unwrap();
    let mut redis = app.redis().await;
    let mut stored = Vec::new();
    for (r, template_id) in [
        (&a.subject_ref, &a.template_id),
        (&b.subject_ref, &b.template_id),
    ] {
        let bytes: Vec<u8> = redis::cmd("HGET")
            .arg(format!("fv:{{demo:{r}}}:templates"))
            .arg(template_id)
            .query_async(&mut redis)
            .await
            .unwrap();
        let sealed = SealedTemplate::decode(bytes.as_slice()).unwrap();
        let subject_ref = SubjectRef::parse(r).unwrap();
        let record = open_template(&keys, &tenant, &subject_ref, template_id, sealed).unwrap();
        stored.push(record.protected.clone());
    }
    let cos = transform::similarity(&stored[0], &stored[1]);
    // Random 128-dimensional unit vectors: cosine ~ N(0, 1/128), sd 0.09.
    assert!(
        cos.abs() < 0.35,
        "templates of one face are linkable: cos {cos}"
    );
}

#[tokio::test]
async fn swapped_templates_fail_closed_instead_of_matching() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let alice = face(1);
    let bob = face(2);
    let a = app.enroll(&mut client, "alice", &alice).await;
    let b = app.enroll(&mut client, "bob", &bob).await;
    let mut redis = app.redis().await;
    let key_a = format!("fv:{{demo:{}}}:templates", a.subject_ref);
    let key_b = format!("fv:{{demo:{}}}:templates", b.subject_ref);
    // An attacker with write access swaps the two subjects' templates (same field
    // names too, so only the cryptographic binding can notice).
    let va: Vec<u8> = redis::cmd("HGET")
        .arg(&key_a)
        .arg(&a.template_id)
        .query_async(&mut redis)
        .await
        .unwrap();
    let vb: Vec<u8> = redis::cmd("HGET")
        .arg(&key_b)
        .arg(&b.template_id)
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&key_a)
        .arg(&key_b)
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&key_a)
        .arg(&a.template_id)
        .arg(&vb)
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&key_b)
        .arg(&b.template_id)
        .arg(&va)
        .query_async(&mut redis)
        .await
        .unwrap();

    // Bob's face presented as alice must not match alice's (now bob's) slot.
    let r = app
        .verify(&mut client, "alice", &capture_of(&bob, 0.2, 3))
        .await;
    assert_eq!(code(r), Code::Internal);
    let r = app
        .verify(&mut client, "alice", &capture_of(&alice, 0.2, 4))
        .await;
    assert_eq!(code(r), Code::Internal);
    // Renaming the field does not help either.
    let _: () = redis::cmd("DEL")
        .arg(&key_a)
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&key_a)
        .arg(&b.template_id)
        .arg(&vb)
        .query_async(&mut redis)
        .await
        .unwrap();
    let r = app
        .verify(&mut client, "alice", &capture_of(&bob, 0.2, 5))
        .await;
    assert!(
        !matches!(r, Ok(ref v) if v.decision() == Decision::Match),
        "{r:?}"
    );
    assert_eq!(code(r), Code::Internal);
}
