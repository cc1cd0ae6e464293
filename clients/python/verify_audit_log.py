#!/usr/bin/env python3
"""Checks facevault's audit log from the outside (docs/audit-log.md).

An implementation of its own, with nothing of the service: SHA-256 from
hashlib, Ed25519 from `cryptography`, the RFC 9162 Merkle tree and its proof
verifiers written out below. Input is proto3 JSON as grpcurl (or protobuf's
json_format) prints it: camelCase or snake_case names, 64-bit numbers as
strings or numbers, bytes as base64, fields that are zero left out.

    verify_audit_log.py vector docs/test-vectors/audit-log.json
    verify_audit_log.py vector --print            # the vector computed from its inputs
    verify_audit_log.py head --key KEY HEAD.json
    verify_audit_log.py inclusion --key KEY [--head HEAD.json] PROOF.json
    verify_audit_log.py consistency --key KEY --first OLD.json --second NEW.json PROOF.json
    verify_audit_log.py anchors --key KEY audit-anchors.jsonl
    verify_audit_log.py trim --key KEY STATEMENT.json   # a value of fv:audit:{tenant}:trims

KEY is the receipt verification key: base64 of its 32 bytes, or a JSON file
holding `receiptVerificationKey` (GetSealingKeys output, keys/sealing-public.json).

PROOF.json for `inclusion` is GetInclusionProof output, a DeletionTicket's
`erasureProof`, or a whole DeletionTicket (then its signed receipt must name
the proven event). A head file is a SignedTreeHead, a line of the anchor file,
or GetSignedTreeHead output holding one head.

Exit status 0 when everything holds; 1 with a message naming what failed.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

HEAD_CONTEXT = "facevault/v1 tree-head"
REGISTRY_CONTEXT = "facevault/v1 audit-registry"
TRIM_CONTEXT = "facevault/v1 audit-trim"
RECEIPT_CONTEXT = b"facevault/v1 receipt"
HASH_LEN = 32

DEFAULT_VECTOR = Path(__file__).resolve().parent.parent.parent / "docs" / "test-vectors" / "audit-log.json"


class Failed(Exception):
    """Something did not hold; the message names it."""


# --- RFC 9162 §2.1: the Merkle tree over SHA-256 -------------------------------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return sha256(b"\x00" + data)


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return sha256(b"\x01" + left + right)


def split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes (§2.1.1); the empty tree is SHA-256("")."""
    if not leaves:
        return sha256(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = split(len(leaves))
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) (§2.1.3.1)."""
    if len(leaves) <= 1:
        return []
    k = split(len(leaves))
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]


def proof(m: int, leaves: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true) (§2.1.4.1)."""

    def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
        if m == len(d):
            return [] if b else [mth(d)]
        k = split(len(d))
        if m <= k:
            return subproof(m, d[:k], b) + [mth(d[k:])]
        return subproof(m - k, d[k:], False) + [mth(d[:k])]

    return subproof(m, leaves, True)


def verify_inclusion(leaf: bytes, index: int, size: int, hashes: list[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2, step by step. Raises Failed."""
    # 1.
    if index >= size:
        raise Failed(f"leaf index {index} is not inside a tree of size {size}")
    # 2., 3.
    fn, sn, r = index, size - 1, leaf
    # 4.
    for p in hashes:
        if sn == 0:
            raise Failed("the inclusion proof has more hashes than the tree size requires")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn != 0 and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    # 5.
    if sn != 0:
        raise Failed("the inclusion proof has fewer hashes than the tree size requires")
    if r != root:
        raise Failed(
            f"the inclusion proof leads to root {r.hex()}, not to the head's root {root.hex()}"
        )


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, hashes: list[bytes]) -> None:
    """RFC 9162 §2.1.4.2, step by step, for 0 < first < second; equal sizes
    need an empty proof and equal roots. Raises Failed."""
    if first == 0:
        raise Failed("a consistency proof from the empty tree proves nothing")
    if first > second:
        raise Failed(f"the first tree ({first}) is larger than the second ({second})")
    if first == second:
        if hashes:
            raise Failed("a consistency proof between equal sizes must be empty")
        if first_root != second_root:
            raise Failed(f"two heads of size {first} have different roots: a fork")
        return
    # 1.
    if not hashes:
        raise Failed("the consistency proof is empty")
    # 2.
    path_ = list(hashes)
    if first & (first - 1) == 0:
        path_.insert(0, first_root)
    # 3.
    fn, sn = first - 1, second - 1
    # 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path_[0]
    # 6.
    for c in path_[1:]:
        if sn == 0:
            raise Failed("the consistency proof has more hashes than the tree sizes require")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn != 0 and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # 7.
    if sn != 0:
        raise Failed("the consistency proof has fewer hashes than the tree sizes require")
    if fr != first_root:
        raise Failed(f"the consistency proof does not lead to the first head's root (got {fr.hex()})")
    if sr != second_root:
        raise Failed(f"the consistency proof does not lead to the second head's root (got {sr.hex()})")


# --- signed statements -----------------------------------------------------------


def head_text(tenant: str, chain_id: str, size: int, ms: int, root: bytes) -> str:
    return f"{HEAD_CONTEXT}\n{tenant}\n{chain_id}\n{size}\n{ms}\n{root.hex()}"


def registry_text(generation: int, ms: int, heads: list[dict], incidents: list[dict]) -> str:
    text = f"{REGISTRY_CONTEXT}\n{generation}\n{ms}\n"
    for h in sorted(heads, key=lambda h: (h["tenant"].encode(), h["chainId"].encode())):
        text += f"head {h['tenant']} {h['chainId']} {h['treeSize']} {h['timestampMs']} {h['rootHash'].hex()}\n"
    for i in incidents:
        detail = i["detail"].replace("\n", " ")
        text += f"incident {i['timestampMs']} {i['kind']} {detail}\n"
    return text


def trim_text(tenant: str, chain_id: str, first_index: int, size: int, ms: int, root: bytes,
              newest_excused_ms: int, retention_days: int) -> str:
    return (f"{TRIM_CONTEXT}\n{tenant}\n{chain_id}\n{first_index}\n{size}\n{ms}\n{root.hex()}"
            f"\n{newest_excused_ms}\n{retention_days}")


# The least retention a trim may apply (audit.retention_days cannot be lower).
MIN_RETENTION_DAYS = 180
DAY_MS = 86_400_000


def signature_holds(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False


# --- proto3 JSON -------------------------------------------------------------------


def field(obj: dict, camel: str, default=None):
    """A field by its JSON name or its proto name (json_format may keep those)."""
    if camel in obj:
        return obj[camel]
    snake = "".join("_" + c.lower() if c.isupper() else c for c in camel)
    return obj.get(snake, default)


def b64(text, what: str) -> bytes:
    """Standard or URL-safe base64, padded or not, as proto3 JSON allows."""
    if not isinstance(text, str):
        raise Failed(f"{what} is not a base64 string")
    t = text.strip().replace("-", "+").replace("_", "/")
    t += "=" * (-len(t) % 4)
    try:
        return base64.b64decode(t, validate=True)
    except (binascii.Error, ValueError):
        raise Failed(f"{what} is not base64") from None


def u64(obj: dict, name: str, what: str) -> int:
    value = field(obj, name, 0)
    if isinstance(value, bool):
        raise Failed(f"{what}.{name} is not a number")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and value.isdigit():
        n = int(value)
    else:
        raise Failed(f"{what}.{name} is not an unsigned number: {value!r}")
    if n >= 1 << 64:
        raise Failed(f"{what}.{name} does not fit 64 bits")
    return n


def hash32(obj: dict, name: str, what: str) -> bytes:
    value = field(obj, name)
    if value is None:
        raise Failed(f"{what} has no {name}")
    h = b64(value, f"{what}.{name}")
    if len(h) != HASH_LEN:
        raise Failed(f"{what}.{name} is {len(h)} bytes, not {HASH_LEN}")
    return h


def hash_list(obj: dict, name: str, what: str) -> list[bytes]:
    values = field(obj, name, [])
    if not isinstance(values, list):
        raise Failed(f"{what}.{name} is not a list")
    out = []
    for i, v in enumerate(values):
        h = b64(v, f"{what}.{name}[{i}]")
        if len(h) != HASH_LEN:
            raise Failed(f"{what}.{name}[{i}] is {len(h)} bytes, not {HASH_LEN}")
        out.append(h)
    return out


class Head:
    """A SignedTreeHead from proto3 JSON."""

    def __init__(self, obj, what: str = "the head"):
        if not isinstance(obj, dict):
            raise Failed(f"{what} is not a JSON object")
        self.what = what
        self.tenant = field(obj, "tenant", "")
        self.chain_id = field(obj, "chainId", "")
        if not isinstance(self.tenant, str) or not isinstance(self.chain_id, str):
            raise Failed(f"{what}: tenant and chainId must be strings")
        self.tree_size = u64(obj, "treeSize", what)
        self.root_hash = hash32(obj, "rootHash", what)
        self.timestamp_ms = u64(obj, "timestampMs", what)
        signature = field(obj, "signature")
        if signature is None:
            raise Failed(f"{what} has no signature")
        self.signature = b64(signature, f"{what}.signature")

    def text(self) -> str:
        return head_text(self.tenant, self.chain_id, self.tree_size, self.timestamp_ms, self.root_hash)

    def check(self, key: bytes) -> None:
        if not signature_holds(key, self.text().encode(), self.signature):
            raise Failed(
                f"{self.what}: signature INVALID for tenant {self.tenant!r} chain {self.chain_id!r} "
                f"size {self.tree_size} (wrong key, or the head was altered)"
            )

    def __str__(self) -> str:
        return f"{self.tenant} {self.chain_id} size {self.tree_size} root {self.root_hash.hex()}"


def read_json(path: str, what: str):
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as e:
        raise Failed(f"cannot read {what} {path}: {e.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise Failed(f"{what} {path} is not JSON: {e}") from None


def read_head(path: str, what: str) -> Head:
    obj = read_json(path, what)
    if isinstance(obj, dict) and "heads" in obj:
        heads = obj["heads"] or []
        if len(heads) != 1:
            raise Failed(f"{what} {path} holds {len(heads)} heads; give one (a chainId in the request)")
        obj = heads[0]
    return Head(obj, what)


def load_key(arg: str) -> bytes:
    """base64 of 32 bytes, or a JSON file holding receiptVerificationKey."""
    p = Path(arg)
    if p.is_file():
        try:
            obj = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise Failed(f"the key file {arg} is not readable JSON: {e}") from None
        text = field(obj, "receiptVerificationKey") if isinstance(obj, dict) else None
        if not text:
            raise Failed(f"the key file {arg} has no receiptVerificationKey")
    else:
        text = arg
    key = b64(text, "the key")
    if len(key) != 32:
        raise Failed(f"the receipt verification key is {len(key)} bytes, not 32 (Ed25519)")
    return key


# --- a tiny protobuf reader (for ReceiptBody) ---------------------------------------


def read_varint(data: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise Failed("the receipt body is not a valid protobuf message (varint)")
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def protobuf_fields(data: bytes) -> dict[int, list]:
    """field number -> values (int for varints, bytes for length-delimited)."""
    out: dict[int, list] = {}
    i = 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(data, i)
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 2:
            length, i = read_varint(data, i)
            value, i = data[i:i + length], i + length
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise Failed(f"the receipt body is not a valid protobuf message (wire type {wire})")
        if i > len(data) or number == 0:
            raise Failed("the receipt body is not a valid protobuf message (truncated)")
        out.setdefault(number, []).append(value)
    return out


def receipt_fields(body: bytes) -> dict:
    """The ReceiptBody fields an erasure proof is checked against."""
    f = protobuf_fields(body)

    def last(n, default):
        return f[n][-1] if n in f else default

    def text(n):
        v = last(n, b"")
        if not isinstance(v, bytes):
            raise Failed(f"receipt body field {n} has the wrong wire type")
        try:
            return v.decode()
        except UnicodeDecodeError:
            raise Failed(f"receipt body field {n} is not UTF-8") from None

    seq = last(10, 0)
    event_hash = last(11, b"")
    if not isinstance(seq, int) or not isinstance(event_hash, bytes):
        raise Failed("receipt body audit fields have the wrong wire type")
    return {
        "ticket_id": text(1),
        "tenant": text(2),
        "subject_ref": text(3),
        "audit_chain_id": text(9),
        "audit_seq": seq,
        "audit_event_hash": event_hash,
    }


# --- subcommands ---------------------------------------------------------------------


def cmd_head(args) -> str:
    key = load_key(args.key)
    head = read_head(args.head, "the head")
    head.check(key)
    return f"head signature valid: {head}"


def receipt_binding(ticket: dict, key: bytes) -> dict:
    """The signed receipt body of a DeletionTicket JSON, its signature checked."""
    receipt = field(ticket, "receipt")
    if not isinstance(receipt, dict):
        raise Failed("the ticket has no receipt (is it COMPLETED?)")
    body = b64(field(receipt, "body"), "receipt.body")
    signature = b64(field(receipt, "signature"), "receipt.signature")
    if not signature_holds(key, RECEIPT_CONTEXT + body, signature):
        raise Failed("receipt signature INVALID: the receipt body cannot be trusted")
    r = receipt_fields(body)
    ticket_id = field(ticket, "ticketId")
    if ticket_id is not None and ticket_id != r["ticket_id"]:
        raise Failed(f"the ticket's ticketId {ticket_id!r} differs from the signed {r['ticket_id']!r}")
    if not r["audit_chain_id"]:
        raise Failed("the signed receipt names no audit event (audit_chain_id is empty)")
    return r


def cmd_inclusion(args) -> str:
    key = load_key(args.key)
    doc = read_json(args.proof, "the proof")
    if not isinstance(doc, dict):
        raise Failed("the proof is not a JSON object")
    ticket = None
    p = doc
    if field(doc, "erasureProof") is not None or field(doc, "receipt") is not None:
        ticket = doc
        p = field(doc, "erasureProof")
        if p is None:
            raise Failed("the ticket has no erasureProof (no signed head covers its erasure event yet?)")
    what = "erasureProof" if ticket is not None else "the proof"
    if not isinstance(p, dict):
        raise Failed(f"{what} is not a JSON object")
    chain_id = field(p, "chainId", "")
    index = u64(p, "leafIndex", what)
    size = u64(p, "treeSize", what)
    event_hash = hash32(p, "eventHash", what)
    hashes = hash_list(p, "hashes", what)
    lines = []
    if ticket is not None:
        # The proof must be of the very event the signed receipt names.
        r = receipt_binding(ticket, key)
        if r["audit_chain_id"] != chain_id:
            raise Failed(f"the receipt names chain {r['audit_chain_id']!r}, erasureProof.chainId is {chain_id!r}")
        if r["audit_seq"] == 0 or r["audit_seq"] - 1 != index:
            raise Failed(f"the receipt names seq {r['audit_seq']}, erasureProof.leafIndex is {index} (seq - 1 expected)")
        if r["audit_event_hash"] != event_hash:
            raise Failed(
                f"the receipt names event hash {r['audit_event_hash'].hex()}, erasureProof.eventHash is {event_hash.hex()}"
            )
        lines.append(f"receipt signature valid: ticket {r['ticket_id']}, tenant {r['tenant']}")
        lines.append(f"the signed receipt names this event: chain {chain_id} seq {r['audit_seq']}")
    if args.head:
        head = read_head(args.head, "the head")
    elif field(p, "head") is not None:
        head = Head(field(p, "head"), f"{what}.head")
    else:
        raise Failed(f"{what} carries no head (tree size {size} is not the latest): pass --head with a kept head of that size")
    head.check(key)
    if head.chain_id != chain_id:
        raise Failed(f"the head is of chain {head.chain_id!r}, the proof of {chain_id!r}")
    if head.tree_size != size:
        raise Failed(f"the head has size {head.tree_size}, the proof is for size {size}")
    if ticket is not None and r["tenant"] != head.tenant:
        raise Failed(f"the receipt is of tenant {r['tenant']!r}, the head of {head.tenant!r}")
    verify_inclusion(leaf_hash(event_hash), index, size, hashes, head.root_hash)
    lines.append(f"head signature valid: {head}")
    lines.append(f"event {event_hash.hex()} is leaf {index} (seq {index + 1}) of {size} (RFC 9162 §2.1.3.2)")
    return "\n".join(lines)


def cmd_consistency(args) -> str:
    key = load_key(args.key)
    first = read_head(args.first, "the first head")
    second = read_head(args.second, "the second head")
    first.check(key)
    second.check(key)
    if (first.tenant, first.chain_id) != (second.tenant, second.chain_id):
        raise Failed(
            f"the heads are of different chains: {first.tenant}/{first.chain_id} and {second.tenant}/{second.chain_id}"
        )
    doc = read_json(args.proof, "the proof")
    if not isinstance(doc, dict):
        raise Failed("the proof is not a JSON object")
    chain_id = field(doc, "chainId")
    if chain_id is not None and chain_id != first.chain_id:
        raise Failed(f"the proof is of chain {chain_id!r}, the heads of {first.chain_id!r}")
    for name, head in (("firstSize", first), ("secondSize", second)):
        if field(doc, name) is not None and u64(doc, name, "the proof") != head.tree_size:
            raise Failed(f"the proof's {name} is {u64(doc, name, 'the proof')}, the head's size {head.tree_size}")
    hashes = hash_list(doc, "hashes", "the proof")
    verify_consistency(first.tree_size, second.tree_size, first.root_hash, second.root_hash, hashes)
    return (
        f"head signatures valid: {first.tenant} {first.chain_id} sizes {first.tree_size} and {second.tree_size}\n"
        f"the tree of {second.tree_size} extends the tree of {first.tree_size} (RFC 9162 §2.1.4.2)"
    )


def cmd_trim(args) -> str:
    """A trim statement excuses events only if signed, if it applied at least
    the retention floor, and if its newest excused event was older than that
    retention at the statement's own time."""
    key = load_key(args.key)
    obj = read_json(args.statement, "the trim statement")
    if not isinstance(obj, dict):
        raise Failed("the trim statement is not a JSON object")
    what = "the trim statement"
    for name in ("newestExcusedMs", "retentionDays"):
        if field(obj, name) is None:
            raise Failed(f"{what} has no {name}: it excuses nothing")
    tenant, chain_id = field(obj, "tenant", ""), field(obj, "chainId", "")
    if not isinstance(tenant, str) or not isinstance(chain_id, str):
        raise Failed(f"{what}: tenant and chainId must be strings")
    first = u64(obj, "firstIndex", what)
    size = u64(obj, "treeSize", what)
    ms = u64(obj, "timestampMs", what)
    root = hash32(obj, "rootHash", what)
    newest = u64(obj, "newestExcusedMs", what)
    days = u64(obj, "retentionDays", what)
    signature = b64(field(obj, "signature", ""), f"{what}.signature")
    text = trim_text(tenant, chain_id, first, size, ms, root, newest, days)
    if not signature_holds(key, text.encode(), signature):
        raise Failed(f"{what}: signature INVALID for tenant {tenant!r} chain {chain_id!r}: it excuses nothing")
    if days < MIN_RETENTION_DAYS:
        raise Failed(f"{what} applied a retention of {days} days, below the floor of {MIN_RETENTION_DAYS}")
    if first > 0 and newest >= ms - days * DAY_MS:
        raise Failed(
            f"{what} at {ms} ms excuses an event of {newest} ms, younger than its {days} days of retention allow"
        )
    return (
        f"trim statement valid: {tenant} {chain_id} leaves 0..{first} removed, newest at {newest} ms, "
        f"{days} days of retention at {ms} ms"
    )


def cmd_anchors(args) -> str:
    key = load_key(args.key)
    try:
        lines = Path(args.file).read_text().splitlines()
    except OSError as e:
        raise Failed(f"cannot read {args.file}: {e.strerror}") from None
    chains: dict[tuple[str, str], list[Head]] = {}
    registries: list[tuple[int, int]] = []
    count = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{args.file}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise Failed(f"{where}: not JSON") from None
        if isinstance(obj, dict) and "registryGeneration" in obj:
            # A registry the service wrote: its generation and chain count
            # only grow (`facevault audit verify --anchors` compares them).
            generation = u64(obj, "registryGeneration", where)
            chains_named = u64(obj, "registryChains", where)
            if registries and (generation, chains_named) < registries[-1]:
                raise Failed(f"{where}: registry generation {generation} with {chains_named} chains after "
                             f"generation {registries[-1][0]} with {registries[-1][1]}: it went back")
            registries.append((generation, chains_named))
            continue
        head = Head(obj, where)
        head.check(key)
        seen = chains.setdefault((head.tenant, head.chain_id), [])
        for earlier in seen:
            if earlier.tree_size == head.tree_size and earlier.root_hash != head.root_hash:
                raise Failed(f"{where}: two signed heads of size {head.tree_size} with different roots: a fork")
        if seen and head.tree_size < seen[-1].tree_size:
            raise Failed(f"{where}: size {head.tree_size} after size {seen[-1].tree_size}: the chain went back")
        seen.append(head)
        count += 1
    if count == 0:
        raise Failed(f"{args.file} holds no signed tree head")
    out = [f"{count} signed tree heads, every signature valid"]
    for (tenant, chain_id), heads in sorted(chains.items()):
        sizes = []
        for h in heads:
            if not sizes or sizes[-1] != h.tree_size:
                sizes.append(h.tree_size)
        out.append(f"  {tenant} {chain_id}: sizes {', '.join(map(str, sizes))}")
    if registries:
        out.append(f"  registry: generation {registries[-1][0]} naming {registries[-1][1]} chains "
                   f"({len(registries)} records)")
    return "\n".join(out)


# --- the test vector -------------------------------------------------------------------


def hx(b: bytes) -> str:
    return b.hex()


def compute_vector(inputs: dict) -> dict:
    """Everything the vector states, computed from its inputs."""
    seed = bytes.fromhex(inputs["ed25519Seed"])
    signer = Ed25519PrivateKey.from_private_bytes(seed)
    public = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    data = [sha256(s.encode()) for s in inputs["leafInputs"]]
    leaves = [leaf_hash(d) for d in data]
    roots = [mth(leaves[:n]) for n in range(len(leaves) + 1)]
    h = inputs["head"]
    size = h["treeSize"]
    text = head_text(h["tenant"], h["chainId"], size, h["timestampMs"], roots[size])
    signature = signer.sign(text.encode())
    head_json = {
        "tenant": h["tenant"],
        "chainId": h["chainId"],
        "treeSize": str(size),
        "rootHash": base64.b64encode(roots[size]).decode(),
        "timestampMs": str(h["timestampMs"]),
        "signature": base64.b64encode(signature).decode(),
    }
    reg = inputs["registry"]
    reg_heads = [{"tenant": h["tenant"], "chainId": h["chainId"], "treeSize": size,
                  "timestampMs": h["timestampMs"], "rootHash": roots[size]}]
    reg_text = registry_text(reg["generation"], reg["timestampMs"], reg_heads, reg["incidents"])
    trim = inputs["trim"]
    trim_text_ = trim_text(h["tenant"], h["chainId"], trim["firstIndex"], size, trim["timestampMs"], roots[size],
                           trim["newestExcusedMs"], trim["retentionDays"])
    return {
        "publicKey": hx(public),
        "publicKeyBase64": base64.b64encode(public).decode(),
        "leaves": [
            {"index": i, "input": s, "data": hx(d), "leafHash": hx(l)}
            for i, (s, d, l) in enumerate(zip(inputs["leafInputs"], data, leaves))
        ],
        "roots": [{"treeSize": n, "rootHash": hx(r)} for n, r in enumerate(roots)],
        "treeHead": {
            "rootHash": hx(roots[size]),
            "signedText": text,
            "signedTextHex": hx(text.encode()),
            "signature": hx(signature),
            "json": json.dumps(head_json, separators=(",", ":")),
        },
        "inclusionProofs": [
            {"leafIndex": i, "treeSize": n, "leafHash": hx(leaves[i]), "hashes": [hx(p) for p in path(i, leaves[:n])],
             "rootHash": hx(roots[n])}
            for i, n in ((p["leafIndex"], p["treeSize"]) for p in inputs["inclusionProofs"])
        ],
        "consistencyProofs": [
            {"firstSize": m, "secondSize": n, "hashes": [hx(p) for p in proof(m, leaves[:n])],
             "firstRoot": hx(roots[m]), "secondRoot": hx(roots[n])}
            for m, n in ((p["firstSize"], p["secondSize"]) for p in inputs["consistencyProofs"])
        ],
        "registry": {"signedText": reg_text, "signature": hx(signer.sign(reg_text.encode()))},
        "trim": {"signedText": trim_text_, "signature": hx(signer.sign(trim_text_.encode()))},
    }


def compare(expected, actual, where: str) -> int:
    """Compares computed values with the file's; returns how many were compared."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            raise Failed(f"{where}: expected an object")
        n = 0
        for k, v in expected.items():
            if k not in actual:
                raise Failed(f"{where}.{k} is missing from the file")
            n += compare(v, actual[k], f"{where}.{k}")
        return n
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            raise Failed(f"{where}: expected {len(expected)} entries")
        return sum(compare(e, a, f"{where}[{i}]") for i, (e, a) in enumerate(zip(expected, actual)))
    if expected != actual:
        raise Failed(f"{where}: the file says {actual!r}, computed {expected!r}")
    return 1


def default_inputs() -> dict:
    return {
        "ed25519Seed": "01" * 32,
        "leafInputs": [f"event {i}" for i in range(1, 8)],
        "head": {"tenant": "demo", "chainId": "w-0123456789abcdef", "treeSize": 7, "timestampMs": 1764547200000},
        "inclusionProofs": [{"leafIndex": 2, "treeSize": 7}, {"leafIndex": 6, "treeSize": 7}],
        "consistencyProofs": [{"firstSize": 3, "secondSize": 7}, {"firstSize": 4, "secondSize": 7}],
        "registry": {
            "generation": 42,
            "timestampMs": 1764547201000,
            "incidents": [{"timestampMs": 1764547100000, "kind": "rolled-back",
                           "detail": "the registry went back from generation 40 to 38"}],
        },
        "trim": {"firstIndex": 3, "timestampMs": 1764547202000, "newestExcusedMs": 1748995000000,
                 "retentionDays": 180},
    }


def cmd_vector(args) -> str:
    if args.print:
        inputs = default_inputs()
        vector = {"inputs": inputs, **compute_vector(inputs)}
        print(json.dumps(vector, indent=2, ensure_ascii=False))
        return ""
    doc = read_json(args.file or str(DEFAULT_VECTOR), "the vector")
    if not isinstance(doc, dict) or "inputs" not in doc:
        raise Failed("the vector has no inputs")
    computed = compute_vector(doc["inputs"])
    n = compare(computed, doc, "vector")
    # The file's values must also pass the verifiers, and fail once altered.
    key = bytes.fromhex(doc["publicKey"])
    th = doc["treeHead"]
    head = Head(json.loads(th["json"]), "vector.treeHead.json")
    head.check(key)
    if head.text() != th["signedText"]:
        raise Failed("vector.treeHead.json does not sign the stated text")
    altered = bytearray(head.signature)
    altered[0] ^= 1
    if signature_holds(key, head.text().encode(), bytes(altered)):
        raise Failed("an altered head signature still verifies")
    for p in doc["inclusionProofs"]:
        hashes = [bytes.fromhex(h) for h in p["hashes"]]
        leaf, root = bytes.fromhex(p["leafHash"]), bytes.fromhex(p["rootHash"])
        verify_inclusion(leaf, p["leafIndex"], p["treeSize"], hashes, root)
        for i in range(len(hashes)):
            bad = list(hashes)
            bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
            try:
                verify_inclusion(leaf, p["leafIndex"], p["treeSize"], bad, root)
            except Failed:
                continue
            raise Failed(f"inclusion {p['leafIndex']}:{p['treeSize']} holds with hash {i} altered")
    for p in doc["consistencyProofs"]:
        hashes = [bytes.fromhex(h) for h in p["hashes"]]
        r1, r2 = bytes.fromhex(p["firstRoot"]), bytes.fromhex(p["secondRoot"])
        verify_consistency(p["firstSize"], p["secondSize"], r1, r2, hashes)
        for i in range(len(hashes)):
            bad = list(hashes)
            bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
            try:
                verify_consistency(p["firstSize"], p["secondSize"], r1, r2, bad)
            except Failed:
                continue
            raise Failed(f"consistency {p['firstSize']}:{p['secondSize']} holds with hash {i} altered")
    for name in ("registry", "trim"):
        s = doc[name]
        if not signature_holds(key, s["signedText"].encode(), bytes.fromhex(s["signature"])):
            raise Failed(f"vector.{name}.signature does not verify")
    return f"audit-log test vector: all {n} values match, every proof and signature verifies"


# --- self-check of the verifiers (RFC 9162 shapes up to 16 leaves) ---------------------------


def self_check() -> None:
    """Generation and verification must agree on every shape up to 16 leaves;
    a failure here is a bug in this script, not in the input."""
    leaves = [leaf_hash(bytes([i])) for i in range(16)]
    for n in range(1, 17):
        root = mth(leaves[:n])
        for i in range(n):
            verify_inclusion(leaves[i], i, n, path(i, leaves[:n]), root)
        for m in range(1, n + 1):
            verify_consistency(m, n, mth(leaves[:m]), root, proof(m, leaves[:n]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    v = sub.add_parser("vector", help="check the test vector file (docs/test-vectors/audit-log.json)")
    v.add_argument("file", nargs="?", help=f"default {DEFAULT_VECTOR}")
    v.add_argument("--print", action="store_true", help="print the vector computed from the built-in inputs")
    v.set_defaults(run=cmd_vector)
    h = sub.add_parser("head", help="check a signed tree head's signature")
    h.add_argument("--key", required=True, help="base64 key, or a JSON file with receiptVerificationKey")
    h.add_argument("head", help="SignedTreeHead JSON (or - for stdin)")
    h.set_defaults(run=cmd_head)
    i = sub.add_parser("inclusion", help="check an inclusion proof (or a ticket's erasureProof) against its head")
    i.add_argument("--key", required=True)
    i.add_argument("--head", help="a kept head of the proof's tree size, when the proof carries none")
    i.add_argument("proof", help="InclusionProof, erasureProof or DeletionTicket JSON (or -)")
    i.set_defaults(run=cmd_inclusion)
    c = sub.add_parser("consistency", help="check a consistency proof between two signed heads")
    c.add_argument("--key", required=True)
    c.add_argument("--first", required=True, help="the older head (JSON)")
    c.add_argument("--second", required=True, help="the newer head (JSON)")
    c.add_argument("proof", help="ConsistencyProof JSON (or -)")
    c.set_defaults(run=cmd_consistency)
    a = sub.add_parser("anchors", help="check every head of an anchor file and list the sizes per chain")
    a.add_argument("--key", required=True)
    a.add_argument("file", help="audit.anchor_file (JSON Lines)")
    a.set_defaults(run=cmd_anchors)
    t = sub.add_parser("trim", help="check a trim statement: signature, retention floor, age of what it excuses")
    t.add_argument("--key", required=True)
    t.add_argument("statement", help="a trim statement (JSON, a value of fv:audit:{tenant}:trims, or -)")
    t.set_defaults(run=cmd_trim)
    args = ap.parse_args(argv)
    try:
        self_check()
    except Failed as e:
        print(f"FAILED: this script's own RFC 9162 self-check: {e}", file=sys.stderr)
        return 1
    try:
        out = args.run(args)
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    if out:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
