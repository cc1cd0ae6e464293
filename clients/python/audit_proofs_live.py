#!/usr/bin/env python3
"""Checks a running facevault's audit log from the outside, with
verify_audit_log.py (run as a separate program, as an auditor would):

1. waits (bounded) until the anchor file holds two signed heads of one chain
   of the tenant with different sizes, making calls meanwhile so the chain grows;
2. asks GetConsistencyProof between them and checks it (`consistency`);
3. checks every head of the anchor file (`anchors`);
4. asks GetInclusionProof for a listed event and checks it (`inclusion`);
5. checks the erasure proof on the example's completed deletion ticket
   (`inclusion` of the whole ticket), waiting for it to appear.

Each check is also run once on a copy with one byte flipped, which must fail
with exit status 1. Exits 1 on the first thing that does not hold.

    python audit_proofs_live.py --target localhost:50051 --dev-dir DEV \
        --example-output example.out
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from google.protobuf import json_format

import facevault_client as fv

HERE = Path(__file__).resolve().parent
VERIFIER = HERE / "verify_audit_log.py"


class Failed(Exception):
    pass


def verifier(*args: str, expect: int) -> None:
    """Runs verify_audit_log.py and insists on its exit status."""
    cmd = [sys.executable, str(VERIFIER), *args]
    shown = " ".join(["verify_audit_log.py", *(Path(a).name if Path(a).exists() else a for a in args)])
    result = subprocess.run(cmd, capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    for line in output.splitlines():
        print(f"    | {line}")
    if result.returncode != expect:
        raise Failed(f"`{shown}` exited {result.returncode}, expected {expect}")
    print(f"  ok: `{shown}` exited {expect}" + (" (tampered input refused)" if expect == 1 else ""))


def flip_b64(text: str) -> str:
    """The same base64 value with its first byte changed."""
    raw = bytearray(base64.b64decode(text))
    raw[0] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, indent=2) + "\n")
    return path


def to_json(message) -> dict:
    """proto3 JSON as grpcurl prints it (camelCase, 64-bit as strings, zero fields left out)."""
    return json.loads(json_format.MessageToJson(message))


def anchored_heads(anchor_file: Path, tenant: str) -> dict[str, list[dict]]:
    """chain id -> heads of `tenant`, in file order."""
    chains: dict[str, list[dict]] = {}
    if not anchor_file.exists():
        return chains
    for line in anchor_file.read_text().splitlines():
        if line.strip():
            head = json.loads(line)
            if head.get("tenant") == tenant:
                chains.setdefault(head["chainId"], []).append(head)
    return chains


def wait_for_two_heads(anchor_file: Path, tenant: str, audit, pb, wait: float) -> tuple[dict, dict]:
    """Two anchored heads of one chain with different sizes; calls ListEvents
    (itself an audited call) meanwhile so that the chain keeps growing."""
    print(f"Waiting up to {wait:.0f} s for two heads of one chain in {anchor_file.name}")
    deadline = time.monotonic() + wait
    while True:
        for chain, heads in anchored_heads(anchor_file, tenant).items():
            sizes = sorted({int(h["treeSize"]) for h in heads})
            if len(sizes) >= 2:
                first = next(h for h in heads if int(h["treeSize"]) == sizes[0])
                second = next(h for h in reversed(heads) if int(h["treeSize"]) == sizes[-1])
                print(f"  ok: chain {chain} has heads of sizes {', '.join(map(str, sizes))}")
                return first, second
        seen = {c: sorted({int(h["treeSize"]) for h in hs}) for c, hs in anchored_heads(anchor_file, tenant).items()}
        if time.monotonic() >= deadline:
            raise Failed(f"no chain of tenant {tenant} got two heads of different sizes in {wait:.0f} s (seen: {seen})")
        audit.ListEvents(pb.ListEventsRequest(page_size=1), timeout=10)
        print(f"  ... heads so far {seen or 'none'}; made a call, waiting")
        time.sleep(1.0)


def check_consistency(work: Path, key: str, audit, pb, first: dict, second: dict) -> None:
    print(f"GetConsistencyProof {first['chainId']} {first['treeSize']} -> {second['treeSize']}")
    response = audit.GetConsistencyProof(
        pb.GetConsistencyProofRequest(
            chain_id=first["chainId"], first_size=int(first["treeSize"]), second_size=int(second["treeSize"])
        ),
        timeout=10,
    )
    proof = to_json(response)
    first_file = write_json(work / "head-first.json", first)
    second_file = write_json(work / "head-second.json", second)
    proof_file = write_json(work / "consistency.json", proof)
    verifier("consistency", "--key", key, "--first", str(first_file), "--second", str(second_file),
             str(proof_file), expect=0)
    tampered = dict(proof, hashes=[flip_b64(proof["hashes"][0]), *proof["hashes"][1:]])
    verifier("consistency", "--key", key, "--first", str(first_file), "--second", str(second_file),
             str(write_json(work / "consistency-tampered.json", tampered)), expect=1)


def check_anchors(work: Path, key: str, anchor_file: Path) -> None:
    print(f"Anchor file {anchor_file}")
    verifier("anchors", "--key", key, str(anchor_file), expect=0)
    lines = anchor_file.read_text().splitlines()
    # The newest signed head (registry records, which carry no signature, sit
    # between heads): its signature flipped.
    at = max(i for i, line in enumerate(lines) if "signature" in json.loads(line))
    head = json.loads(lines[at])
    head["signature"] = flip_b64(head["signature"])
    lines[at] = json.dumps(head, separators=(",", ":"))
    tampered = work / "anchors-tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n")
    verifier("anchors", "--key", key, str(tampered), expect=1)


def check_inclusion(work: Path, key: str, audit, pb) -> None:
    events = list(audit.ListEvents(pb.ListEventsRequest(page_size=1000), timeout=10).events)
    events = [e for e in events if e.event_id]
    if len(events) < 2:
        raise Failed(f"ListEvents gave {len(events)} events with an eventId; expected more")
    event = events[len(events) // 2]
    print(f"GetInclusionProof {event.event_id} ({event.op}, chain {event.chain_id} seq {event.seq})")
    response = audit.GetInclusionProof(pb.GetInclusionProofRequest(event_id=event.event_id), timeout=10)
    if bytes(response.event_hash) != bytes(event.hash):
        raise Failed("GetInclusionProof names another event hash than ListEvents gave")
    if (response.chain_id, response.leaf_index) != (event.chain_id, event.seq - 1):
        raise Failed("GetInclusionProof names another position than the event's chain and seq")
    proof = to_json(response)
    proof_file = write_json(work / "inclusion.json", proof)
    verifier("inclusion", "--key", key, str(proof_file), expect=0)
    if not proof.get("hashes"):
        raise Failed("the inclusion proof has no hashes to tamper with (a tree of one leaf?)")
    tampered = dict(proof, hashes=[*proof["hashes"][:-1], flip_b64(proof["hashes"][-1])])
    verifier("inclusion", "--key", key, str(write_json(work / "inclusion-tampered.json", tampered)), expect=1)


def example_ticket_id(example_output: Path) -> str:
    match = re.search(r"ok: ticket (\S+) ", example_output.read_text())
    if not match:
        raise Failed(f"no ticket id in {example_output}")
    return match.group(1)


def check_erasure_proof_of_example_ticket(work: Path, key: str, app: fv.FaceVaultClient, audit, pb,
                                          ticket_id: str, wait: float) -> None:
    """The completed ticket of the example must carry `erasureProof`, the
    inclusion proof of its erasure event, which its signed receipt names. A head
    covers the event at most audit.checkpoint_interval_secs after completion."""
    print(f"GetDeletionTicket {ticket_id} until it carries erasureProof (up to {wait:.0f} s)")
    deadline = time.monotonic() + wait
    while True:
        ticket = app.get_deletion_ticket(ticket_id)
        if ticket.HasField("erasure_proof"):
            break
        if time.monotonic() >= deadline:
            raise Failed(
                f"ticket {ticket_id} still has no erasureProof after {wait:.0f} s "
                f"(state {app.protos.pb.DeletionState.Name(ticket.state)})"
            )
        print("  ... no erasureProof yet")
        time.sleep(1.0)
    doc = to_json(ticket)
    ticket_file = write_json(work / "ticket.json", doc)
    verifier("inclusion", "--key", key, str(ticket_file), expect=0)
    # One byte of the proven event hash changed.
    tampered = json.loads(json.dumps(doc))
    tampered["erasureProof"]["eventHash"] = flip_b64(tampered["erasureProof"]["eventHash"])
    verifier("inclusion", "--key", key, str(write_json(work / "ticket-tampered.json", tampered)), expect=1)
    # A valid proof, but of another event than the one the signed receipt names.
    proven = ticket.erasure_proof
    other = next(
        (e for e in audit.ListEvents(pb.ListEventsRequest(page_size=1000), timeout=10).events
         if e.event_id and (e.chain_id, e.seq - 1) != (proven.chain_id, proven.leaf_index)),
        None,
    )
    if other is None:
        raise Failed("ListEvents gave no other event to substitute")
    substitute = to_json(audit.GetInclusionProof(pb.GetInclusionProofRequest(event_id=other.event_id), timeout=10))
    verifier("inclusion", "--key", key, str(write_json(work / "other-event.json", substitute)), expect=0)
    swapped = dict(doc, erasureProof=substitute)
    verifier("inclusion", "--key", key, str(write_json(work / "ticket-other-event.json", swapped)), expect=1)


def run(args) -> None:
    dev = Path(args.dev_dir)
    key_file = dev / "keys" / "sealing-public.json"
    anchor_file = dev / "audit-anchors.jsonl"
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="facevault-audit-"))
    work.mkdir(parents=True, exist_ok=True)
    protos = fv.load_protos()
    with fv.FaceVaultClient(args.target, dev / "ca.pem", dev / "app.pem", dev / "app.key", args.tenant) as app:
        served = base64.b64encode(app.receipt_verification_key).decode()
        filed = json.loads(key_file.read_text()).get("receiptVerificationKey")
        if served != filed:
            raise Failed(f"GetSealingKeys serves receipt key {served}, {key_file} holds {filed}")
        print(f"  ok: receipt verification key {served} (GetSealingKeys and {key_file.name} agree)")
        key = str(key_file)

        credentials = grpc.ssl_channel_credentials(
            root_certificates=(dev / "ca.pem").read_bytes(),
            private_key=(dev / "auditor.key").read_bytes(),
            certificate_chain=(dev / "auditor.pem").read_bytes(),
        )
        with grpc.secure_channel(args.target, credentials) as channel:
            audit = protos.audit_grpc.AuditLogStub(channel)
            pb = protos.audit_pb
            first, second = wait_for_two_heads(anchor_file, args.tenant, audit, pb, args.wait)
            check_consistency(work, key, audit, pb, first, second)
            check_anchors(work, key, anchor_file)
            check_inclusion(work, key, audit, pb)
            if args.example_output:
                ticket_id = example_ticket_id(Path(args.example_output))
                check_erasure_proof_of_example_ticket(work, served, app, audit, pb, ticket_id, args.wait)
            else:
                print("(no --example-output: the erasure proof of a ticket is not checked)")


def main() -> int:
    ap = argparse.ArgumentParser(description="check a live facevault's audit proofs with verify_audit_log.py")
    ap.add_argument("--target", required=True, help="host:port of the mTLS gRPC listener")
    ap.add_argument("--dev-dir", required=True, help="the `facevault dev` directory (certificates, keys, anchors)")
    ap.add_argument("--tenant", default="demo")
    ap.add_argument("--example-output", help="example.py's output, naming its deletion ticket")
    ap.add_argument("--wait", type=float, default=30.0, help="seconds to wait for heads and for the erasure proof")
    ap.add_argument("--out", help="directory for the JSON files checked (default: a new temporary one)")
    args = ap.parse_args()
    try:
        run(args)
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        print(f"FAILED: unexpected {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError) as e:
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("audit proofs: all checks as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
