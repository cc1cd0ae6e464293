// Offline check of deletion receipts (docs/protocol.md §7): Ed25519 (RFC 8032,
// pure) over "facevault/v1 receipt" || body, with the 32-byte
// GetSealingKeys.receipt_verification_key, via node:crypto.

import { createPublicKey, verify as edVerify } from "node:crypto";

import { ReceiptError } from "./errors.js";
import { loadProtos, type DeletionReceipt, type DeletionTicket, type ReceiptBody, type ShredBody } from "./proto.js";

export const RECEIPT_CONTEXT = Buffer.from("facevault/v1 receipt");
export const SHRED_RECEIPT_CONTEXT = Buffer.from("facevault/v1 shred-receipt");

function checkSignature(publicKey: Uint8Array, context: Buffer, receipt: DeletionReceipt): void {
  if (publicKey.byteLength !== 32) throw new ReceiptError("the receipt verification key must be 32 bytes");
  const key = createPublicKey({
    key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(publicKey).toString("base64url") },
    format: "jwk",
  });
  let ok = false;
  try {
    ok = edVerify(null, Buffer.concat([context, receipt.body]), key, receipt.signature);
  } catch {
    ok = false;
  }
  if (!ok) throw new ReceiptError("receipt signature INVALID");
}

function isTicket(x: DeletionTicket | DeletionReceipt): x is DeletionTicket {
  return "ticketId" in x;
}

/**
 * Checks the receipt's signature over the body bytes exactly as received and
 * returns the decoded ReceiptBody. Given a DeletionTicket, also checks that the
 * body names the same ticket and subject. Throws ReceiptError.
 */
export function verifyReceipt(publicKey: Uint8Array, ticketOrReceipt: DeletionTicket | DeletionReceipt): ReceiptBody {
  let receipt: DeletionReceipt;
  let ticket: DeletionTicket | undefined;
  if (isTicket(ticketOrReceipt)) {
    ticket = ticketOrReceipt;
    if (!ticket.receipt || ticket.receipt.signature.length === 0) {
      throw new ReceiptError("the ticket has no receipt (is it COMPLETED?)");
    }
    receipt = ticket.receipt;
  } else {
    receipt = ticketOrReceipt;
  }
  checkSignature(publicKey, RECEIPT_CONTEXT, receipt);
  const body = loadProtos().message("ReceiptBody").deserialize(receipt.body) as ReceiptBody;
  if (ticket && (body.ticketId !== ticket.ticketId || body.subjectRef !== ticket.subjectRef)) {
    throw new ReceiptError("the receipt belongs to another ticket");
  }
  return body;
}

/** Checks a ticket's shred statement (docs/protocol.md §7.1) against its receipt. */
export function verifyShredReceipt(publicKey: Uint8Array, ticket: DeletionTicket): ShredBody {
  const body = verifyReceipt(publicKey, ticket);
  if (!ticket.shredReceipt || ticket.shredReceipt.signature.length === 0) {
    throw new ReceiptError("the ticket has no shred statement yet");
  }
  checkSignature(publicKey, SHRED_RECEIPT_CONTEXT, ticket.shredReceipt);
  const shred = loadProtos().message("ShredBody").deserialize(ticket.shredReceipt.body) as ShredBody;
  const same = (a: { seconds: string; nanos: number } | null, b: { seconds: string; nanos: number } | null) =>
    (a?.seconds ?? "0") === (b?.seconds ?? "0") && (a?.nanos ?? 0) === (b?.nanos ?? 0);
  if (
    shred.ticketId !== body.ticketId ||
    shred.tenant !== body.tenant ||
    shred.subjectRef !== body.subjectRef ||
    !body.completedAt ||
    !same(shred.completedAt, body.completedAt)
  ) {
    throw new ReceiptError("the shred statement belongs to another receipt");
  }
  // It proves the erasure's copies unreadable only if it retires every epoch
  // that could have wrapped them (the receipt's keyEpochs, at least one).
  const retired = new Set(shred.retiredEpochs);
  if (body.keyEpochs.length === 0 || !body.keyEpochs.every((e) => retired.has(e))) {
    throw new ReceiptError("the shred statement does not retire every key epoch the receipt names");
  }
  return shred;
}
