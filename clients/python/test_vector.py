#!/usr/bin/env python3
"""Checks docs/test-vectors/sealing-x25519.json and sealing-session-x25519.json
(exit 1 on any mismatch).

Three computations have to agree with the file:

1. pyhpke (the library facevault_client uses), with the ephemeral key pair
   fixed to DeriveKeyPair(ikm_e), through facevault_client.seal_embedding;
2. a from-scratch RFC 9180 implementation below (X25519, HKDF-SHA256 and
   AES-GCM from `cryptography`), which also yields the key-schedule values;
3. for the payload bytes: the generated protobuf code and a hand encoder.

Both HPKE paths are first checked against RFC 9180 Appendix A.1.1.

    python test_vector.py            # check the committed vector
    python test_vector.py --print    # print the vector computed from its inputs
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import struct
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pyhpke import AEADId, CipherSuite, KDFId, KEMId

import facevault_client as fv

HERE = Path(__file__).resolve().parent
DEFAULT_VECTOR = HERE.parent.parent / "docs" / "test-vectors" / "sealing-x25519.json"
DEFAULT_SESSION_VECTOR = HERE.parent.parent / "docs" / "test-vectors" / "sealing-session-x25519.json"

# The vector's inputs (docs/protocol.md, "Test vector").
INPUTS = {
    "ikm_r": bytes(range(0x01, 0x21)),
    "ikm_e": bytes(range(0x21, 0x41)),
    "payload_model": "demo-4",
    "payload_values": [0.5, -0.25, 0.125, 1.0],
    "payload_sealed_at_unix_ms": 1790000000000,
    "payload_nonce": bytes([0xAA] * 16),
    "op": "verify",
    "tenant": "demo",
    "subject_id": "alice",
}

KEM_X25519, KDF_SHA256, AEAD_AES128GCM, AEAD_AES256GCM = 0x0020, 0x0001, 0x0001, 0x0002

# RFC 9180 Appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base.
RFC9180_A1 = {
    "info": "4f6465206f6e2061204772656369616e2055726e",
    "ikm_e": "7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234",
    "pk_e": "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
    "sk_e": "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736",
    "ikm_r": "6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037",
    "pk_r": "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
    "sk_r": "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
    "shared_secret": "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc",
    "pt": "4265617574792069732074727574682c20747275746820626561757479",
    "aad": "436f756e742d30",
    "ct": "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a",
}


# --- RFC 9180 from scratch ----------------------------------------------------


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite_id + label + ikm)


def labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return _expand(prk, struct.pack(">H", length) + b"HPKE-v1" + suite_id + label + info, length)


KEM_SUITE_ID = b"KEM" + struct.pack(">H", KEM_X25519)


def x25519_pub(sk: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def derive_key_pair(ikm: bytes) -> tuple[bytes, bytes]:
    """RFC 9180 §7.1.3 DeriveKeyPair for X25519: (sk, pk)."""
    dkp_prk = labeled_extract(KEM_SUITE_ID, b"", b"dkp_prk", ikm)
    sk = labeled_expand(KEM_SUITE_ID, dkp_prk, b"sk", b"", 32)
    return sk, x25519_pub(sk)


def encap(pk_r: bytes, sk_e: bytes) -> tuple[bytes, bytes]:
    """RFC 9180 §4.1 Encap with a given ephemeral key: (shared_secret, enc)."""
    dh = X25519PrivateKey.from_private_bytes(sk_e).exchange(X25519PublicKey.from_public_bytes(pk_r))
    enc = x25519_pub(sk_e)
    eae_prk = labeled_extract(KEM_SUITE_ID, b"", b"eae_prk", dh)
    return labeled_expand(KEM_SUITE_ID, eae_prk, b"shared_secret", enc + pk_r, 32), enc


def key_schedule_base(shared_secret: bytes, info: bytes, aead_id: int) -> tuple[bytes, bytes]:
    """RFC 9180 §5.1, mode_base, empty psk: (key, base_nonce)."""
    suite_id = b"HPKE" + struct.pack(">HHH", KEM_X25519, KDF_SHA256, aead_id)
    nk = {AEAD_AES128GCM: 16, AEAD_AES256GCM: 32}[aead_id]
    psk_id_hash = labeled_extract(suite_id, b"", b"psk_id_hash", b"")
    info_hash = labeled_extract(suite_id, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash
    secret = labeled_extract(suite_id, shared_secret, b"secret", b"")
    return (
        labeled_expand(suite_id, secret, b"key", context, nk),
        labeled_expand(suite_id, secret, b"base_nonce", context, 12),
    )


def scratch_export(shared_secret: bytes, info: bytes, aead_id: int, exporter_context: bytes, length: int) -> bytes:
    """RFC 9180 §5.3 Export from the base-mode key schedule."""
    suite_id = b"HPKE" + struct.pack(">HHH", KEM_X25519, KDF_SHA256, aead_id)
    psk_id_hash = labeled_extract(suite_id, b"", b"psk_id_hash", b"")
    info_hash = labeled_extract(suite_id, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash
    secret = labeled_extract(suite_id, shared_secret, b"secret", b"")
    exporter_secret = labeled_expand(suite_id, secret, b"exp", context, 32)
    return labeled_expand(suite_id, exporter_secret, b"sec", exporter_context, length)


def scratch_seal(ikm_r: bytes, ikm_e: bytes, info: bytes, aad: bytes, pt: bytes, aead_id: int) -> dict:
    sk_r, pk_r = derive_key_pair(ikm_r)
    sk_e, pk_e = derive_key_pair(ikm_e)
    shared_secret, enc = encap(pk_r, sk_e)
    key, base_nonce = key_schedule_base(shared_secret, info, aead_id)
    ct = AESGCM(key).encrypt(base_nonce, pt, aad)  # sequence 0: nonce = base_nonce
    return dict(sk_r=sk_r, pk_r=pk_r, sk_e=sk_e, enc=enc, shared_secret=shared_secret,
                key=key, base_nonce=base_nonce, ciphertext=ct)


# --- protobuf by hand -----------------------------------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 is encoded as its two's complement
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def hand_encode_payload(model: str, values, sealed_at_ms: int, nonce: bytes) -> bytes:
    """EmbeddingPayload in canonical proto3 encoding (defaults omitted)."""
    out = b""
    if model:
        m = model.encode()
        out += b"\x0a" + _varint(len(m)) + m  # field 1, wire type 2 (LEN)
    if values:
        packed = b"".join(struct.pack("<f", v) for v in values)
        out += b"\x12" + _varint(len(packed)) + packed  # field 2, LEN, packed binary32 LE
    if sealed_at_ms:
        out += b"\x18" + _varint(sealed_at_ms)  # field 3, wire type 0 (VARINT)
    if nonce:
        out += b"\x22" + _varint(len(nonce)) + nonce  # field 4, LEN
    return out


# --- checks ---------------------------------------------------------------------


class Checker:
    def __init__(self) -> None:
        self.failures = 0
        self.passed = 0

    def eq(self, what: str, got, want) -> None:
        if got == want:
            self.passed += 1
        else:
            self.failures += 1
            g = got.hex() if isinstance(got, bytes) else got
            w = want.hex() if isinstance(want, bytes) else want
            print(f"MISMATCH {what}:\n  got  {g}\n  want {w}")


def check_rfc9180_a1(c: Checker) -> None:
    v = {k: bytes.fromhex(x) for k, x in RFC9180_A1.items()}
    s = scratch_seal(v["ikm_r"], v["ikm_e"], v["info"], v["aad"], v["pt"], AEAD_AES128GCM)
    for k in ("sk_r", "pk_r", "sk_e", "shared_secret"):
        c.eq(f"RFC 9180 A.1.1 {k} (from scratch)", s[k], v[k])
    c.eq("RFC 9180 A.1.1 enc (from scratch)", s["enc"], v["pk_e"])
    c.eq("RFC 9180 A.1.1 ct (from scratch)", s["ciphertext"], v["ct"])

    suite = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES128_GCM)
    r = suite.kem.derive_key_pair(v["ikm_r"])
    e = suite.kem.derive_key_pair(v["ikm_e"])
    c.eq("RFC 9180 A.1.1 pk_r (pyhpke)", r.public_key.to_public_bytes(), v["pk_r"])
    enc, ctx = suite.create_sender_context(r.public_key, v["info"], eks=e)
    c.eq("RFC 9180 A.1.1 enc (pyhpke)", enc, v["pk_e"])
    c.eq("RFC 9180 A.1.1 ct (pyhpke)", ctx.seal(v["pt"], v["aad"]), v["ct"])


def compute() -> dict:
    """The vector from INPUTS, by pyhpke through facevault_client; cross-checked
    by the caller against the from-scratch path."""
    i = INPUTS
    pb = fv.load_protos().pb
    payload = pb.EmbeddingPayload(
        model=i["payload_model"],
        values=i["payload_values"],
        sealed_at_unix_ms=i["payload_sealed_at_unix_ms"],
        nonce=i["payload_nonce"],
    ).SerializeToString()
    aad = fv.aad(i["op"], i["tenant"], i["subject_id"])
    suite = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)
    r = suite.kem.derive_key_pair(i["ikm_r"])
    e = suite.kem.derive_key_pair(i["ikm_e"])
    pk_r = r.public_key.to_public_bytes()

    class Key:  # what GetSealingKeys would publish for this key pair
        key_id, suite, public_key = "test-vector", fv.SUITE_X25519, pk_r

    sealed = fv.seal_embedding(
        Key, i["op"], i["tenant"], i["subject_id"], i["payload_model"], i["payload_values"],
        i["payload_sealed_at_unix_ms"], i["payload_nonce"], ephemeral_ikm=i["ikm_e"],
    )
    s = scratch_seal(i["ikm_r"], i["ikm_e"], fv.INFO, aad, payload, AEAD_AES256GCM)
    return {
        "description": (
            "facevault/v1 sealing test vector: HPKE base mode (RFC 9180), "
            "DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM, one message (sequence 0). "
            "Recipient and ephemeral key pairs are DeriveKeyPair(ikm_r) and DeriveKeyPair(ikm_e). "
            "Byte strings are hex; payload_* are the EmbeddingPayload fields (payload_nonce in hex). "
            "See docs/protocol.md."
        ),
        "suite": fv.SUITE_X25519,
        "mode": 0,
        "kem_id": KEM_X25519,
        "kdf_id": KDF_SHA256,
        "aead_id": AEAD_AES256GCM,
        "op": i["op"],
        "tenant": i["tenant"],
        "subject_id": i["subject_id"],
        "ikm_r": i["ikm_r"].hex(),
        "sk_r": r.private_key.to_private_bytes().hex(),
        "pk_r": pk_r.hex(),
        "ikm_e": i["ikm_e"].hex(),
        "sk_e": e.private_key.to_private_bytes().hex(),
        "enc": sealed.enc.hex(),
        "payload_model": i["payload_model"],
        "payload_values": i["payload_values"],
        "payload_sealed_at_unix_ms": i["payload_sealed_at_unix_ms"],
        "payload_nonce": i["payload_nonce"].hex(),
        "payload_serialized": payload.hex(),
        "info": fv.INFO.hex(),
        "aad": aad.hex(),
        "shared_secret": s["shared_secret"].hex(),
        "key": s["key"].hex(),
        "base_nonce": s["base_nonce"].hex(),
        "ciphertext": sealed.ciphertext.hex(),
        "_scratch": s,
    }


def check_session_vector(c: Checker, path: Path) -> None:
    """docs/test-vectors/sealing-session-x25519.json (docs/protocol.md §5.1), by
    pyhpke through facevault_client.SealingSession and by the from-scratch path."""
    v = json.loads(path.read_text())
    ikm_r, ikm_e = bytes.fromhex(v["ikm_r"]), bytes.fromhex(v["ikm_e"])
    tenant = v["tenant"]
    sk_r, pk_r = derive_key_pair(ikm_r)
    c.eq("session: pk_r", pk_r.hex(), v["pk_r"])
    c.eq("session: info literal", (b"facevault/v1 session|" + tenant.encode()).hex(), v["info"])
    c.eq("session: exporter context literal", b"facevault/v1 session key".hex(), v["exporter_context"])

    class Key:
        suite, key_id, public_key = fv.SUITE_X25519, "tv", pk_r

    session = fv.SealingSession(Key, tenant, ephemeral_ikm=ikm_e)
    c.eq("session (pyhpke): enc", session.enc.hex(), v["enc"])
    c.eq("session (pyhpke): session_key", session.session_key.hex(), v["session_key"])
    sk_e, _ = derive_key_pair(ikm_e)
    shared_secret, enc = encap(pk_r, sk_e)
    c.eq("session (from scratch): enc", enc.hex(), v["enc"])
    scratch_key = scratch_export(shared_secret, bytes.fromhex(v["info"]), AEAD_AES256GCM,
                                 bytes.fromhex(v["exporter_context"]), 32)
    c.eq("session (from scratch): session_key", scratch_key.hex(), v["session_key"])
    for m in v["messages"]:
        nonce = bytes.fromhex(m["session_nonce"])
        sealed = session.seal(m["op"], m["subject_id"], "demo-4", m["payload_values"],
                              1790000000000, bytes([0xAA] * 16), session_nonce=nonce)
        hand = hand_encode_payload("demo-4", m["payload_values"], 1790000000000, bytes([0xAA] * 16))
        c.eq(f"session {m['op']}: payload", hand.hex(), m["payload_serialized"])
        c.eq(f"session {m['op']}: aad", fv.aad(m["op"], tenant, m["subject_id"]).hex(), m["aad"])
        c.eq(f"session {m['op']}: ciphertext", bytes(sealed.ciphertext).hex(), m["ciphertext"])
        c.eq(f"session {m['op']}: session_nonce field", bytes(sealed.session_nonce).hex(), m["session_nonce"])
        c.eq(f"session {m['op']}: enc field", bytes(sealed.enc).hex(), v["enc"])
        opened = AESGCM(scratch_key).decrypt(nonce, bytes.fromhex(m["ciphertext"]), bytes.fromhex(m["aad"]))
        c.eq(f"session {m['op']}: opened", opened.hex(), m["payload_serialized"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vector", type=Path, default=DEFAULT_VECTOR)
    ap.add_argument("--session-vector", type=Path, default=DEFAULT_SESSION_VECTOR)
    ap.add_argument("--print", action="store_true", help="print the computed vector as JSON and exit")
    args = ap.parse_args()

    c = Checker()
    check_rfc9180_a1(c)
    got = compute()
    s = got.pop("_scratch")
    i = INPUTS

    # The two HPKE paths and the two protobuf encoders must agree.
    c.eq("pyhpke vs from-scratch: sk_r", got["sk_r"], s["sk_r"].hex())
    c.eq("pyhpke vs from-scratch: pk_r", got["pk_r"], s["pk_r"].hex())
    c.eq("pyhpke vs from-scratch: sk_e", got["sk_e"], s["sk_e"].hex())
    c.eq("pyhpke vs from-scratch: enc", got["enc"], s["enc"].hex())
    c.eq("pyhpke vs from-scratch: ciphertext", got["ciphertext"], s["ciphertext"].hex())
    hand = hand_encode_payload(i["payload_model"], i["payload_values"], i["payload_sealed_at_unix_ms"], i["payload_nonce"])
    c.eq("generated protobuf vs hand encoding", got["payload_serialized"], hand.hex())
    c.eq("aad literal", got["aad"], b"facevault/v1|verify|demo|alice".hex())
    c.eq("info literal", got["info"], b"facevault/v1 embedding".hex())
    c.eq("enc length", len(bytes.fromhex(got["enc"])), 32)
    c.eq("ciphertext length", len(bytes.fromhex(got["ciphertext"])), len(hand) + 16)

    # The recipient side opens it.
    suite = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)
    skr = suite.kem.derive_key_pair(i["ikm_r"]).private_key
    opened = suite.create_recipient_context(bytes.fromhex(got["enc"]), skr, fv.INFO).open(
        bytes.fromhex(got["ciphertext"]), bytes.fromhex(got["aad"])
    )
    c.eq("opened plaintext", opened.hex(), got["payload_serialized"])
    decoded = fv.load_protos().pb.EmbeddingPayload.FromString(opened)
    c.eq("decoded model", decoded.model, i["payload_model"])
    c.eq("decoded values", list(decoded.values), i["payload_values"])
    c.eq("decoded sealed_at", decoded.sealed_at_unix_ms, i["payload_sealed_at_unix_ms"])
    c.eq("decoded nonce", decoded.nonce, i["payload_nonce"])

    if args.print:
        if c.failures:
            print(f"{c.failures} internal check(s) failed; not printing", file=sys.stderr)
            return 1
        print(json.dumps(got, indent=2))
        return 0

    check_session_vector(c, args.session_vector)
    want = json.loads(args.vector.read_text())
    for k, v in got.items():
        if k == "description":
            continue
        c.eq(f"{args.vector.name}: {k} (got = computed, want = file)", v, want.get(k))

    if c.failures:
        print(f"test_vector: {c.passed} passed, {c.failures} failed")
        return 1
    print(f"ciphertext {got['ciphertext']}")
    print(f"test_vector: {c.passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
