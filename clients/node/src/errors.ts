// Typed errors: each gRPC status code the service answers with, and what it
// means for facevault (README "Answers you will see, and why"). Messages never
// carry embeddings or subject ids; `details` is the service's text.

import { status as Status, type ServiceError } from "@grpc/grpc-js";

export class FaceVaultError extends Error {
  /** The gRPC status code (number) and its name. */
  readonly code: number;
  readonly codeName: string;
  /** The service's status message. */
  readonly details: string;
  /** What the code means for facevault. */
  readonly meaning: string;
  /**
   * The call had no effect and may be sent again (with a fresh seal, for
   * Enroll and Verify): ABORTED only. Calls the README calls safe to repeat
   * (deletion, consent withdrawal, cancellation, reads) are also retried on
   * UNAVAILABLE by the client itself.
   */
  readonly retryable: boolean;

  constructor(code: number, details: string, meaning: string, retryable = false) {
    const codeName = Status[code] ?? String(code);
    super(`${codeName}: ${details}`);
    this.name = new.target.name;
    this.code = code;
    this.codeName = codeName;
    this.details = details;
    this.meaning = meaning;
    this.retryable = retryable;
  }
}

/** Bad envelope (tampered, sealed for another subject/op/tenant, replayed, stale, unknown key), bad dimension or model, NaN/Inf, zero vector, missing or insufficient consent. */
export class InvalidArgumentError extends FaceVaultError {
  /** The envelope was refused as a replay (docs/protocol.md §6, check 16). */
  get replay(): boolean {
    return this.details.includes("already used (replay)");
  }
  /** The envelope's key is retired or unknown: re-fetch the keys and seal again. */
  get staleKey(): boolean {
    return this.details.includes("sealing key");
  }
  /**
   * The envelope's sealing session is past the service's TTL or message cap
   * (docs/protocol.md §5.1), refused before any effect: start a new session
   * and seal again.
   */
  get sessionExpired(): boolean {
    return this.details.includes("sealing session") && !this.details.includes("session_nonce");
  }
}
/** The certificate names no acceptable identity. */
export class UnauthenticatedError extends FaceVaultError {}
/** Wrong role; purpose not covered by the consent; tenant not declared. */
export class PermissionDeniedError extends FaceVaultError {}
/** No template for this subject in your tenant. */
export class NotFoundError extends FaceVaultError {}
/** Template limit reached (enroll with replace), account cancelled, tenant decommissioned. */
export class FailedPreconditionError extends FaceVaultError {}
/** Locked out after repeated failures (the message says when to retry), or disabled after 50. */
export class LockedOutError extends FaceVaultError {}
/** Another verification of the same subject is in flight; retry. */
export class ConcurrentVerificationError extends FaceVaultError {}
/** Redis or the audit log unreachable, too few replicas, or load shed: fails closed. After a write began the outcome is unknown (the audit log has it). */
export class UnavailableError extends FaceVaultError {}
/** The deadline passed; the call still runs to its end and its audit event records what it did. */
export class DeadlineExceededError extends FaceVaultError {}
/** The request message is larger than 256 KiB. */
export class MessageTooLargeError extends FaceVaultError {}
/** A stored template failed its integrity check, or the request is not valid protobuf. */
export class InternalError extends FaceVaultError {}

const MEANINGS: Record<number, [new (c: number, d: string, m: string, r?: boolean) => FaceVaultError, string, boolean]> = {
  [Status.INVALID_ARGUMENT]: [InvalidArgumentError, "bad envelope, dimension, model, value or consent", false],
  [Status.UNAUTHENTICATED]: [UnauthenticatedError, "the certificate names no acceptable identity", false],
  [Status.PERMISSION_DENIED]: [PermissionDeniedError, "wrong role, purpose not consented, or tenant not declared", false],
  [Status.NOT_FOUND]: [NotFoundError, "no template for this subject in your tenant", false],
  [Status.FAILED_PRECONDITION]: [FailedPreconditionError, "template limit reached, account cancelled, or tenant decommissioned", false],
  [Status.RESOURCE_EXHAUSTED]: [LockedOutError, "locked out after repeated failures, or disabled", false],
  [Status.ABORTED]: [ConcurrentVerificationError, "another verification of the subject is in flight; retry", true],
  [Status.UNAVAILABLE]: [UnavailableError, "the service fails closed (storage or audit unavailable, or load shed); outcome of a begun write unknown", false],
  [Status.DEADLINE_EXCEEDED]: [DeadlineExceededError, "deadline passed; the call still runs to its end", false],
  [Status.OUT_OF_RANGE]: [MessageTooLargeError, "the request is larger than 256 KiB", false],
  [Status.INTERNAL]: [InternalError, "integrity check failed, or the request is not valid protobuf", false],
};

function isServiceError(e: unknown): e is ServiceError {
  return typeof e === "object" && e !== null && typeof (e as ServiceError).code === "number" && "details" in e;
}

/** Wraps a grpc-js error in the typed error of its status code. */
export function fromGrpcError(e: unknown): unknown {
  if (!isServiceError(e)) return e;
  const entry = MEANINGS[e.code];
  if (entry === undefined) return new FaceVaultError(e.code, e.details, "unexpected status");
  const [Cls, meaning, retryable] = entry;
  return new Cls(e.code, e.details, meaning, retryable);
}

/** The receipt is missing, forged, or does not belong to the ticket. */
export class ReceiptError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ReceiptError";
  }
}
