#!/usr/bin/env python3
"""End-to-end example against a running facevault (e.g. `facevault dev`).

Enrolls a synthetic 512-dimension embedding for a fresh subject, verifies a
noisy second capture (MATCH) and an unrelated vector (NO_MATCH), shows that a
sealed probe is single-use, cancels the account, waits for the deletion ticket
to complete, checks the receipt's Ed25519 signature and prints the ticket.
Exits non-zero on any unexpected result.

    python example.py --target localhost:50051 \
        --ca dev/ca.pem --cert dev/app.pem --key dev/app.key --tenant demo
"""

from __future__ import annotations

import argparse
import random
import secrets
import sys

import grpc
from google.protobuf import json_format

import facevault_client as fv

MODEL = "demo-512"
DIMENSION = 512


def synthetic_faces(seed: int) -> tuple[list[float], list[float], list[float]]:
    """A face, a second capture of it (face + noise) and an unrelated face."""
    rng = random.Random(seed)
    face = [rng.gauss(0.0, 1.0) for _ in range(DIMENSION)]
    capture = [v + 0.4 * rng.gauss(0.0, 1.0) for v in face]
    other = [rng.gauss(0.0, 1.0) for _ in range(DIMENSION)]
    return face, capture, other


class Failed(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)
    print(f"  ok: {message}")


def run(args: argparse.Namespace) -> None:
    subject = args.subject or f"py-example-{secrets.token_hex(6)}"
    face, capture, other = synthetic_faces(args.seed)

    with fv.FaceVaultClient(
        args.target, args.ca, args.cert, args.key, args.tenant, server_name=args.server_name,
        sealing_sessions=args.sealing_sessions,
    ) as client:
        pb = client.protos.pb
        keys = client.sealing_keys()
        print(f"GetSealingKeys: {[(k.key_id, k.suite, len(k.public_key)) for k in keys.keys]}")
        key = client.sealing_key(fv.SUITE_X25519)
        expect(len(key.public_key) == 32, f"X25519 key {key.key_id} has 32 bytes")
        expect(len(keys.receipt_verification_key) == 32, "receipt verification key has 32 bytes")

        print("Enroll without consent to off-device storage")
        on_device_only = client.consent(
            purposes=["login"],
            consent_id=f"consent-{subject}",
            notice_version="2026-11",
            off_device_storage=False,
        )
        try:
            client.enroll(subject, MODEL, face, on_device_only)
            raise Failed("an enrollment without off-device consent was accepted")
        except grpc.RpcError as e:
            expect(
                e.code() == grpc.StatusCode.INVALID_ARGUMENT and "consent.off_device_storage" in e.details(),
                f"refused {e.code().name}: {e.details()}",
            )

        print(f"Enroll {subject} (tenant {client.tenant}, model {MODEL})")
        consent = client.consent(
            purposes=["login"],
            consent_id=f"consent-{subject}",
            method=pb.CONSENT_METHOD_SEPARATE_IN_APP,
            notice_version="2026-11",
            off_device_storage=True,
        )
        enrolled = client.enroll(subject, MODEL, face, consent)
        expect(enrolled.templates_held == 1, f"enrolled: template {enrolled.template_id}, held {enrolled.templates_held}")

        print("Verify a second capture")
        request = client.verify_request(subject, MODEL, capture, "login")
        same = client.stub.Verify(request, timeout=client.timeout)
        score = f", score {same.score:.3f}" if same.HasField("score") else ""
        expect(same.decision == pb.MATCH, f"decision {pb.Decision.Name(same.decision)} (threshold {same.threshold:.3g}{score})")

        print("Replay the same sealed probe")
        try:
            client.stub.Verify(request, timeout=client.timeout)
            raise Failed("a replayed probe was accepted")
        except grpc.RpcError as e:
            expect(e.code() == grpc.StatusCode.INVALID_ARGUMENT, f"refused {e.code().name}: {e.details()}")

        print("Verify an unrelated face")
        different = client.verify(subject, MODEL, other, "login")
        score = f", score {different.score:.3f}" if different.HasField("score") else ""
        expect(different.decision == pb.NO_MATCH, f"decision {pb.Decision.Name(different.decision)}{score}")

        print("CancelAccount")
        ticket = client.cancel_account(subject, reason="account closed by the user")
        expect(bool(ticket.ticket_id), f"ticket {ticket.ticket_id} {pb.DeletionState.Name(ticket.state)}, deadline {ticket.deadline.ToJsonString()}")

        print("GetDeletionTicket until COMPLETED")
        ticket = client.wait_for_deletion(ticket.ticket_id, timeout=args.wait)
        expect(ticket.state == pb.COMPLETED, f"completed at {ticket.completed_at.ToJsonString()}")

        body = client.verify_receipt(ticket)
        expect(body.tenant == client.tenant, f"receipt signature valid; erased {list(body.erased)}")
        forged = pb.DeletionTicket()
        forged.CopyFrom(ticket)
        forged.receipt.body = forged.receipt.body[:-1] + bytes([forged.receipt.body[-1] ^ 1])
        try:
            client.verify_receipt(forged)
            raise Failed("a tampered receipt verified")
        except fv.ReceiptError:
            expect(True, "a tampered receipt is rejected")

        print("Ticket:")
        print(json_format.MessageToJson(ticket, indent=2))
        print("Receipt body:")
        print(json_format.MessageToJson(body, indent=2))


def main() -> int:
    ap = argparse.ArgumentParser(description="facevault end-to-end example")
    ap.add_argument("--target", default="localhost:50051", help="host:port of the mTLS gRPC listener")
    ap.add_argument("--ca", default="dev/ca.pem")
    ap.add_argument("--cert", default="dev/app.pem")
    ap.add_argument("--key", default="dev/app.key")
    ap.add_argument("--tenant", default="demo", help="the tenant of the client certificate")
    ap.add_argument("--server-name", default=None, help="TLS name to expect when it differs from the target host")
    ap.add_argument("--sealing-sessions", action="store_true",
                    help="seal through a sealing session (docs/protocol.md §5.1) instead of one-shot HPKE")
    ap.add_argument("--subject", default=None, help="subject id (default: a fresh random one)")
    ap.add_argument("--seed", type=int, default=7, help="seed of the synthetic embeddings")
    ap.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the deletion")
    args = ap.parse_args()
    try:
        run(args)
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        print(f"FAILED: unexpected {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    except (TimeoutError, fv.ReceiptError, LookupError, OSError, ValueError) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print("example: all steps as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
