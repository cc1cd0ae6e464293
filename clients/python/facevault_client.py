"""A small Python client for facevault.

What a caller needs besides the generated gRPC stubs:

* ``load_protos()`` generates the ``facevault.v1`` Python modules from
  ``proto/`` at run time into a cache directory (generated code is not kept in
  the repository) and imports them;
* ``seal_embedding()`` builds an ``EmbeddingPayload`` and seals it with HPKE
  (RFC 9180) base mode, suite ``x25519-sha256-aes256gcm``, exactly as
  ``docs/protocol.md`` specifies;
* ``FaceVaultClient`` wraps the mTLS channel, caches the sealing keys and offers
  typed ``enroll`` / ``verify`` / ``delete_subject`` / ``withdraw_consent`` /
  ``cancel_account`` / ``get_deletion_ticket`` helpers;
* ``verify_receipt()`` checks a deletion receipt's Ed25519 signature offline.

Errors from the service surface as ``grpc.RpcError`` (``err.code()``,
``err.details()``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pyhpke import AEADId, CipherSuite, KDFId, KEMId

# --- protocol constants (docs/protocol.md) ---------------------------------

SUITE_X25519 = "x25519-sha256-aes256gcm"
SUITE_XWING = "xwing-sha256-aes256gcm"
INFO = b"facevault/v1 embedding"
SESSION_INFO_PREFIX = b"facevault/v1 session|"
SESSION_KEY_LABEL = b"facevault/v1 session key"
SESSION_NONCE_BYTES = 12
AAD_PREFIX = b"facevault/v1|"
RECEIPT_CONTEXT = b"facevault/v1 receipt"
OPS = ("enroll", "verify")
NONCE_BYTES = 16
MAX_NONCE_BYTES = 64

_X25519_SUITE = CipherSuite.new(
    KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM
)

HERE = Path(__file__).resolve().parent
DEFAULT_PROTO_DIR = HERE.parent.parent / "proto"
PROTO_FILES = ("facevault/v1/facevault.proto", "facevault/v1/audit.proto")


# --- generated code ---------------------------------------------------------


@dataclass(frozen=True)
class Protos:
    """The generated modules: messages and stubs of facevault.v1."""

    pb: object  # facevault_pb2
    grpc: object  # facevault_pb2_grpc
    audit_pb: object  # audit_pb2
    audit_grpc: object  # audit_pb2_grpc


_protos: Optional[Protos] = None
_protos_lock = threading.Lock()


def _default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "facevault" / "python-gen"


def generate(proto_dir: Path, out_dir: Path) -> None:
    """Runs ``python -m grpc_tools.protoc`` for facevault/v1/*.proto into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(proto_dir / f) for f in PROTO_FILES],
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed ({' '.join(cmd)}):\n{result.stderr}")
    # Regular packages, so that no other 'facevault' on sys.path can shadow them.
    for pkg in (out_dir / "facevault", out_dir / "facevault" / "v1"):
        (pkg / "__init__.py").touch()


def load_protos(proto_dir: Optional[os.PathLike] = None, cache_dir: Optional[os.PathLike] = None) -> Protos:
    """Generates (once per proto content and tool version) and imports the stubs.

    ``proto_dir`` defaults to ``$FACEVAULT_PROTO_DIR`` or the repository's
    ``proto/``; ``cache_dir`` to ``$FACEVAULT_PY_GEN_DIR`` or
    ``~/.cache/facevault/python-gen/<digest>``.
    """
    global _protos
    with _protos_lock:
        if _protos is not None:
            return _protos
        proto_dir = Path(proto_dir or os.environ.get("FACEVAULT_PROTO_DIR") or DEFAULT_PROTO_DIR).resolve()
        missing = [f for f in PROTO_FILES if not (proto_dir / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{proto_dir} lacks {', '.join(missing)} (set FACEVAULT_PROTO_DIR)")
        if cache_dir is None and os.environ.get("FACEVAULT_PY_GEN_DIR"):
            cache_dir = os.environ["FACEVAULT_PY_GEN_DIR"]
        if cache_dir is not None:
            # A directory of the caller's choosing (e.g. from generate.sh): used
            # as it is, generated into only when it holds no stubs yet.
            out = Path(cache_dir).resolve()
            if not (out / "facevault" / "v1" / "facevault_pb2.py").exists():
                generate(proto_dir, out)
        else:
            digest = hashlib.sha256()
            for f in PROTO_FILES:
                digest.update(f.encode() + b"\0" + (proto_dir / f).read_bytes() + b"\0")
            for dist in ("grpcio-tools", "protobuf"):
                try:
                    digest.update(f"{dist}={importlib.metadata.version(dist)}".encode())
                except importlib.metadata.PackageNotFoundError:
                    digest.update(f"{dist}=?".encode())
            digest.update(sys.version.encode())
            out = _default_cache_root() / digest.hexdigest()[:16]
        marker = out / ".complete"
        if cache_dir is None and not marker.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".gen-", dir=out.parent))
            try:
                generate(proto_dir, staging)
                (staging / ".complete").touch()
                if out.exists():
                    shutil.rmtree(out)
                try:
                    staging.rename(out)
                except OSError:
                    # Another process finished first; use its copy.
                    if not marker.exists():
                        raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        if str(out) not in sys.path:
            sys.path.insert(0, str(out))
        _protos = Protos(
            pb=importlib.import_module("facevault.v1.facevault_pb2"),
            grpc=importlib.import_module("facevault.v1.facevault_pb2_grpc"),
            audit_pb=importlib.import_module("facevault.v1.audit_pb2"),
            audit_grpc=importlib.import_module("facevault.v1.audit_pb2_grpc"),
        )
        return _protos


# --- sealing ----------------------------------------------------------------


def aad(op: str, tenant: str, subject_id: str) -> bytes:
    """``facevault/v1|<op>|<tenant>|<subject_id>`` (UTF-8, no terminator)."""
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, not {op!r}")
    return AAD_PREFIX + op.encode() + b"|" + tenant.encode() + b"|" + subject_id.encode()


def encode_payload(model: str, values: Sequence[float], sealed_at_ms: int, nonce: bytes) -> bytes:
    """The serialized ``facevault.v1.EmbeddingPayload`` (generated protobuf code)."""
    pb = load_protos().pb
    return pb.EmbeddingPayload(
        model=model, values=list(values), sealed_at_unix_ms=sealed_at_ms, nonce=nonce
    ).SerializeToString()


def hpke_seal_x25519(
    public_key: bytes,
    aad_bytes: bytes,
    plaintext: bytes,
    *,
    ephemeral_ikm: Optional[bytes] = None,
) -> tuple[bytes, bytes]:
    """HPKE base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM,
    info = INFO, one message (sequence 0). Returns (enc, ciphertext).

    ``ephemeral_ikm`` fixes the ephemeral key pair to DeriveKeyPair(ikm): for
    test vectors only. Never pass it in production: an ephemeral key must be
    fresh for every seal.
    """
    if len(public_key) != 32:
        raise ValueError(f"an X25519 public key is 32 bytes, got {len(public_key)}")
    pkr = _X25519_SUITE.kem.deserialize_public_key(public_key)
    eks = _X25519_SUITE.kem.derive_key_pair(ephemeral_ikm) if ephemeral_ikm is not None else None
    enc, ctx = _X25519_SUITE.create_sender_context(pkr, INFO, eks=eks)
    return enc, ctx.seal(plaintext, aad_bytes)


def seal_embedding(
    key,
    op: str,
    tenant: str,
    subject_id: str,
    model: str,
    values: Sequence[float],
    sealed_at_ms: Optional[int] = None,
    nonce: Optional[bytes] = None,
    *,
    ephemeral_ikm: Optional[bytes] = None,
):
    """Seals an embedding for one call; returns a ``facevault.v1.SealedEmbedding``.

    ``key`` is a ``SealingKey`` (from ``GetSealingKeys``) or any object with
    ``key_id``, ``suite`` and ``public_key``. ``sealed_at_ms`` defaults to now,
    ``nonce`` to 16 random bytes. Seal afresh for every call: the service
    accepts each ``enc`` once and only within the replay window.
    """
    if key.suite != SUITE_X25519:
        raise ValueError(
            f"suite {key.suite!r} is not implemented in Python; use {SUITE_X25519!r}"
            " (X-Wing: see docs/protocol.md)"
        )
    plaintext = _payload(model, values, sealed_at_ms, nonce)
    enc, ciphertext = hpke_seal_x25519(
        bytes(key.public_key), aad(op, tenant, subject_id), plaintext, ephemeral_ikm=ephemeral_ikm
    )
    return load_protos().pb.SealedEmbedding(
        suite=key.suite, key_id=key.key_id, enc=enc, ciphertext=ciphertext
    )


def _payload(model: str, values: Sequence[float], sealed_at_ms: Optional[int], nonce: Optional[bytes]) -> bytes:
    values = [float(v) for v in values]
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError("the embedding must be non-empty and finite")
    if sealed_at_ms is None:
        sealed_at_ms = int(time.time() * 1000)
    if nonce is None:
        nonce = secrets.token_bytes(NONCE_BYTES)
    if len(nonce) > MAX_NONCE_BYTES:
        raise ValueError(f"the nonce must be at most {MAX_NONCE_BYTES} bytes")
    return encode_payload(model, values, sealed_at_ms, nonce)


class SealingSession:
    """A sealing session (docs/protocol.md §5.1): one HPKE setup with
    info = ``facevault/v1 session|<tenant>``, the session key exported from it,
    then one AES-256-GCM seal per embedding, each with a fresh 12-byte nonce.

    Roll over (start a new session) after ``roll_over_after`` seconds (half the
    service's published TTL, at most 240) or ``ROLL_OVER_MESSAGES`` messages.
    """

    ROLL_OVER_SECONDS = 240.0
    ROLL_OVER_MESSAGES = 1 << 20

    def __init__(self, key, tenant: str, *, server_ttl_seconds: float = 600.0, ephemeral_ikm: Optional[bytes] = None):
        """``ephemeral_ikm`` fixes the ephemeral key pair: for test vectors only."""
        if key.suite != SUITE_X25519:
            raise ValueError(f"suite {key.suite!r} is not implemented in Python; use {SUITE_X25519!r}")
        if len(key.public_key) != 32:
            raise ValueError(f"an X25519 public key is 32 bytes, got {len(key.public_key)}")
        self.key = key
        self.tenant = tenant
        pkr = _X25519_SUITE.kem.deserialize_public_key(bytes(key.public_key))
        eks = _X25519_SUITE.kem.derive_key_pair(ephemeral_ikm) if ephemeral_ikm is not None else None
        self.enc, ctx = _X25519_SUITE.create_sender_context(
            pkr, SESSION_INFO_PREFIX + tenant.encode(), eks=eks
        )
        self.session_key = ctx.export(SESSION_KEY_LABEL, 32)
        self._aead = AESGCM(self.session_key)
        self.started = time.monotonic()
        self.roll_over_after = min(self.ROLL_OVER_SECONDS, server_ttl_seconds / 2)
        self.messages = 0

    def usable_for(self, key, tenant: str) -> bool:
        return (
            self.key.key_id == key.key_id
            and self.tenant == tenant
            and time.monotonic() - self.started < self.roll_over_after
            and self.messages < self.ROLL_OVER_MESSAGES
        )

    def seal(
        self,
        op: str,
        subject_id: str,
        model: str,
        values: Sequence[float],
        sealed_at_ms: Optional[int] = None,
        nonce: Optional[bytes] = None,
        *,
        session_nonce: Optional[bytes] = None,
    ):
        """One ``SealedEmbedding`` of this session. ``session_nonce`` is for
        test vectors only: it must be fresh and random for every message."""
        plaintext = _payload(model, values, sealed_at_ms, nonce)
        if session_nonce is None:
            session_nonce = secrets.token_bytes(SESSION_NONCE_BYTES)
        if len(session_nonce) != SESSION_NONCE_BYTES:
            raise ValueError("a session nonce is 12 bytes")
        ciphertext = self._aead.encrypt(session_nonce, plaintext, aad(op, self.tenant, subject_id))
        self.messages += 1
        return load_protos().pb.SealedEmbedding(
            suite=self.key.suite,
            key_id=self.key.key_id,
            enc=self.enc,
            ciphertext=ciphertext,
            session_nonce=session_nonce,
        )


# --- receipts ---------------------------------------------------------------


class ReceiptError(Exception):
    """The receipt is missing, forged, or does not belong to the ticket."""


def verify_receipt(public_key: bytes, ticket_or_receipt):
    """Checks the Ed25519 signature over ``RECEIPT_CONTEXT || body`` and returns
    the decoded ``ReceiptBody``. Given a ``DeletionTicket``, also checks that the
    body names the same ticket and subject. Raises ``ReceiptError``."""
    pb = load_protos().pb
    ticket = None
    receipt = ticket_or_receipt
    if isinstance(ticket_or_receipt, pb.DeletionTicket):
        ticket = ticket_or_receipt
        if not ticket.HasField("receipt"):
            raise ReceiptError("the ticket has no receipt (is it COMPLETED?)")
        receipt = ticket.receipt
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public_key)).verify(
            bytes(receipt.signature), RECEIPT_CONTEXT + bytes(receipt.body)
        )
    except (InvalidSignature, ValueError) as e:
        raise ReceiptError("receipt signature INVALID") from e
    body = pb.ReceiptBody.FromString(bytes(receipt.body))
    if ticket is not None:
        if body.ticket_id != ticket.ticket_id or body.subject_ref != ticket.subject_ref:
            raise ReceiptError("the receipt belongs to another ticket")
    return body


# --- identity ---------------------------------------------------------------


def identity_from_certificate(cert_pem: bytes) -> Optional[tuple[str, str, str]]:
    """(trust_domain, tenant, role) from the SPIFFE URI SAN
    ``spiffe://<td>/tenant/<tenant>/role/<role>``, or None."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if not uri.startswith("spiffe://"):
            continue
        parts = uri[len("spiffe://"):].split("/")
        if len(parts) == 5 and parts[1] == "tenant" and parts[3] == "role":
            return parts[0], parts[2], parts[4]
    return None


# --- health -----------------------------------------------------------------

HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def health_check(target: str, timeout: float = 2.0) -> str:
    """grpc.health.v1.Health/Check on the plaintext health port; returns the
    status name. The messages are tiny, so they are encoded by hand here."""
    with grpc.insecure_channel(target) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        raw = check(b"", timeout=timeout)
    status = 0
    if len(raw) >= 2 and raw[0] == 0x08:  # field 1, varint
        status = raw[1]
    return HEALTH_STATUS.get(status, str(status))


# --- the client ---------------------------------------------------------------


class FaceVaultClient:
    """mTLS client of facevault.v1.FaceVault (role ``app``)."""

    KEY_CACHE_SECONDS = 600

    def __init__(
        self,
        target: str,
        ca: os.PathLike,
        cert: os.PathLike,
        key: os.PathLike,
        tenant: Optional[str] = None,
        *,
        server_name: Optional[str] = None,
        timeout: float = 10.0,
        sealing_sessions: bool = False,
    ):
        """``target`` is host:port. The dev server certificate names
        ``localhost``, 127.0.0.1 and ::1; for another name, pass ``server_name``
        (sets ``grpc.ssl_target_name_override``). ``tenant`` defaults to the one
        in the client certificate; it goes into every AAD and must match it.
        ``sealing_sessions`` seals through sealing sessions (one KEM per session
        instead of one per call; docs/protocol.md §5.1)."""
        self.protos = load_protos()
        ca_pem, cert_pem, key_pem = (Path(p).read_bytes() for p in (ca, cert, key))
        identity = identity_from_certificate(cert_pem)
        cert_tenant = identity[1] if identity else None
        if tenant is None:
            if cert_tenant is None:
                raise ValueError("no tenant given and none in the certificate's SPIFFE URI SAN")
            tenant = cert_tenant
        elif cert_tenant is not None and cert_tenant != tenant:
            print(
                f"warning: tenant {tenant!r} differs from the certificate's {cert_tenant!r};"
                " the service will refuse the sealed embeddings",
                file=sys.stderr,
            )
        self.tenant = tenant
        self.timeout = timeout
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
        )
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        self.channel = grpc.secure_channel(target, credentials, options=options)
        self.stub = self.protos.grpc.FaceVaultStub(self.channel)
        self._keys = None
        self._keys_fetched = 0.0
        self.sealing_sessions = sealing_sessions
        self._session: Optional[SealingSession] = None
        self._session_lock = threading.Lock()

    # context manager
    def __enter__(self) -> "FaceVaultClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    # keys
    def sealing_keys(self, refresh: bool = False):
        """``GetSealingKeysResponse``, cached for KEY_CACHE_SECONDS."""
        if refresh or self._keys is None or time.monotonic() - self._keys_fetched > self.KEY_CACHE_SECONDS:
            self._keys = self.stub.GetSealingKeys(
                self.protos.pb.GetSealingKeysRequest(), timeout=self.timeout
            )
            self._keys_fetched = time.monotonic()
        return self._keys

    def sealing_key(self, suite: str = SUITE_X25519):
        """The key of ``suite`` that stays valid longest (at least one more minute)."""
        for refresh in (False, True):
            now = time.time() + 60
            keys = [
                k
                for k in self.sealing_keys(refresh=refresh).keys
                if k.suite == suite and (not k.HasField("not_after") or k.not_after.seconds > now)
            ]
            if keys:
                return max(keys, key=lambda k: (k.not_after.seconds, k.key_id))
        raise LookupError(f"the service offers no {suite} key")

    @property
    def receipt_verification_key(self) -> bytes:
        return bytes(self.sealing_keys().receipt_verification_key)

    def seal(self, op: str, subject_id: str, model: str, values: Sequence[float]):
        key = self.sealing_key()
        if not self.sealing_sessions:
            return seal_embedding(key, op, self.tenant, subject_id, model, values)
        with self._session_lock:
            if self._session is None or not self._session.usable_for(key, self.tenant):
                ttl = self.sealing_keys().session_ttl_seconds or 0
                self._session = SealingSession(key, self.tenant, server_ttl_seconds=float(ttl))
            return self._session.seal(op, subject_id, model, values)

    # FaceVault API
    def consent(
        self,
        purposes: Iterable[str],
        consent_id: str,
        method: Optional[int] = None,
        notice_version: str = "1",
        granted_at_unix: Optional[float] = None,
        *,
        off_device_storage: bool,
        subject_under_14: bool = False,
    ):
        """A Consent message. ``off_device_storage`` must state whether the person
        separately consented to their face data leaving the device (the service
        refuses Enroll without it); ``subject_under_14`` needs method
        CONSENT_METHOD_GUARDIAN."""
        pb = self.protos.pb
        c = pb.Consent(
            consent_id=consent_id,
            purposes=list(purposes),
            method=pb.CONSENT_METHOD_SEPARATE_IN_APP if method is None else method,
            notice_version=notice_version,
            off_device_storage=off_device_storage,
            subject_under_14=subject_under_14,
        )
        c.granted_at.FromSeconds(int(time.time() if granted_at_unix is None else granted_at_unix))
        return c

    def _sealed_call(self, send):
        """``send()`` seals and sends; when the service refuses the sealing
        session (expired or full: INVALID_ARGUMENT before any effect), a new
        session is started and the call sealed and sent once more."""
        try:
            return send()
        except grpc.RpcError as err:
            if not (
                self.sealing_sessions
                and err.code() == grpc.StatusCode.INVALID_ARGUMENT
                and "sealing session" in (err.details() or "")
            ):
                raise
            with self._session_lock:
                self._session = None
            return send()

    def enroll(self, subject_id: str, model: str, values: Sequence[float], consent, replace: bool = False):
        def send():
            request = self.protos.pb.EnrollRequest(
                subject_id=subject_id,
                embedding=self.seal("enroll", subject_id, model, values),
                consent=consent,
                replace=replace,
            )
            return self.stub.Enroll(request, timeout=self.timeout)

        return self._sealed_call(send)

    def verify(self, subject_id: str, model: str, values: Sequence[float], purpose: str):
        return self._sealed_call(
            lambda: self.stub.Verify(self.verify_request(subject_id, model, values, purpose), timeout=self.timeout)
        )

    def verify_request(self, subject_id: str, model: str, values: Sequence[float], purpose: str):
        return self.protos.pb.VerifyRequest(
            subject_id=subject_id,
            probe=self.seal("verify", subject_id, model, values),
            purpose=purpose,
        )

    def delete_subject(self, subject_id: str):
        return self.stub.DeleteSubject(
            self.protos.pb.DeleteSubjectRequest(subject_id=subject_id), timeout=self.timeout
        )

    def withdraw_consent(self, subject_id: str, purposes: Iterable[str]):
        return self.stub.WithdrawConsent(
            self.protos.pb.WithdrawConsentRequest(subject_id=subject_id, purposes=list(purposes)),
            timeout=self.timeout,
        )

    def cancel_account(self, subject_id: str, reason: str = ""):
        return self.stub.CancelAccount(
            self.protos.pb.CancelAccountRequest(subject_id=subject_id, reason=reason),
            timeout=self.timeout,
        )

    def get_deletion_ticket(self, ticket_id: str):
        return self.stub.GetDeletionTicket(
            self.protos.pb.GetDeletionTicketRequest(ticket_id=ticket_id), timeout=self.timeout
        )

    def wait_for_deletion(self, ticket_id: str, timeout: float = 60.0, interval: float = 0.5):
        """Polls GetDeletionTicket until COMPLETED; raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            ticket = self.get_deletion_ticket(ticket_id)
            if ticket.state == self.protos.pb.COMPLETED:
                return ticket
            if time.monotonic() >= deadline:
                raise TimeoutError(f"ticket {ticket_id} still {self.protos.pb.DeletionState.Name(ticket.state)}")
            time.sleep(interval)

    def compliance_report(self):
        return self.stub.GetComplianceReport(
            self.protos.pb.GetComplianceReportRequest(), timeout=self.timeout
        )

    def verify_receipt(self, ticket):
        return verify_receipt(self.receipt_verification_key, ticket)


__all__ = [
    "AAD_PREFIX",
    "FaceVaultClient",
    "INFO",
    "RECEIPT_CONTEXT",
    "ReceiptError",
    "SUITE_X25519",
    "SUITE_XWING",
    "aad",
    "encode_payload",
    "generate",
    "health_check",
    "hpke_seal_x25519",
    "identity_from_certificate",
    "load_protos",
    "seal_embedding",
    "verify_receipt",
]
