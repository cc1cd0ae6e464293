// Sealing an embedding exactly as docs/protocol.md §4–§5 specify: the
// EmbeddingPayload, then HPKE (RFC 9180) base mode, one message, with
// info = "facevault/v1 embedding" and aad = "facevault/v1|<op>|<tenant>|<subject_id>".
// The HPKE implementation is @hpke/core with @hpke/dhkem-x25519 and
// @hpke/hybridkem-x-wing, independent of the service's Rust `hpke` crate.

import { randomBytes } from "node:crypto";

import { Aes256Gcm, CipherSuite, HkdfSha256 } from "@hpke/core";
import { DhkemX25519HkdfSha256 } from "@hpke/dhkem-x25519";
import { XWing } from "@hpke/hybridkem-x-wing";

import { loadProtos, type SealedEmbedding } from "./proto.js";

export const SUITE_X25519 = "x25519-sha256-aes256gcm";
export const SUITE_XWING = "xwing-sha256-aes256gcm";
export const INFO = new TextEncoder().encode("facevault/v1 embedding");
export const AAD_PREFIX = "facevault/v1|";
export const NONCE_BYTES = 16;
export const MAX_NONCE_BYTES = 64;

/** The short names used by this client and its example. */
export type SuiteName = "x25519" | "xwing";
export type Op = "enroll" | "verify";

export const SUITE_IDS: Record<SuiteName, string> = {
  x25519: SUITE_X25519,
  xwing: SUITE_XWING,
};

/** Per suite: RFC 9180 ids and sizes (docs/protocol.md §3). */
export const SUITE_PARAMS = {
  x25519: { kemId: 0x0020, npk: 32, nenc: 32 },
  xwing: { kemId: 0x647a, npk: 1216, nenc: 1120 },
} as const;

export function suiteName(suiteId: string): SuiteName {
  if (suiteId === SUITE_X25519) return "x25519";
  if (suiteId === SUITE_XWING) return "xwing";
  throw new Error(`unknown sealing suite ${JSON.stringify(suiteId)}`);
}

/** A new @hpke/core CipherSuite for one of the service's suites. */
export function cipherSuite(suite: SuiteName): CipherSuite {
  const kem = suite === "x25519" ? new DhkemX25519HkdfSha256() : new XWing();
  return new CipherSuite({ kem, kdf: new HkdfSha256(), aead: new Aes256Gcm() });
}

/** `facevault/v1|<op>|<tenant>|<subject_id>` as UTF-8 bytes, no terminator. */
export function aad(op: Op, tenant: string, subjectId: string): Uint8Array {
  if (op !== "enroll" && op !== "verify") throw new Error(`op must be enroll or verify, not ${JSON.stringify(op)}`);
  return new TextEncoder().encode(`${AAD_PREFIX}${op}|${tenant}|${subjectId}`);
}

export interface EmbeddingPayload {
  /** Embedding model id, e.g. "demo-512"; must be configured on the service. */
  model: string;
  /** The embedding; sent as IEEE 754 binary32 (float64 inputs are rounded). */
  values: ArrayLike<number>;
  /** Client clock at sealing, Unix ms; defaults to now. */
  sealedAtUnixMs?: number;
  /** Defaults to 16 fresh random bytes; at most 64. */
  nonce?: Uint8Array;
}

/**
 * The serialized `facevault.v1.EmbeddingPayload`, encoded by proto-loader
 * (protobufjs) from the proto file.
 */
export function encodePayload(payload: Required<EmbeddingPayload>): Buffer {
  const type = loadProtos().message("EmbeddingPayload");
  return type.serialize({
    model: payload.model,
    values: Array.from(payload.values),
    sealedAtUnixMs: payload.sealedAtUnixMs,
    nonce: Buffer.from(payload.nonce),
  });
}

/**
 * The payload checked (non-empty finite values, a nonce of at most 64 bytes,
 * 16 random by default; sealedAtUnixMs now by default) and serialized. The
 * caller seals `plaintext` and then zeroes both `plaintext` and `values`.
 */
export function checkedPayload(payload: EmbeddingPayload): { plaintext: Buffer; values: number[] } {
  const values = Array.from(payload.values, Number);
  if (values.length === 0 || !values.every(Number.isFinite)) {
    throw new Error("the embedding must be non-empty and finite");
  }
  const nonce = payload.nonce ?? randomBytes(NONCE_BYTES);
  if (nonce.byteLength > MAX_NONCE_BYTES) throw new Error(`the nonce must be at most ${MAX_NONCE_BYTES} bytes`);
  const sealedAtUnixMs = payload.sealedAtUnixMs ?? Date.now();
  if (!Number.isSafeInteger(sealedAtUnixMs)) throw new Error("sealedAtUnixMs must be an integer");
  return { plaintext: encodePayload({ model: payload.model, values, sealedAtUnixMs, nonce }), values };
}

export interface SealOptions {
  suite: SuiteName;
  op: Op;
  /** The tenant of the caller's certificate (it is part of the AAD). */
  tenant: string;
  /** Exactly the subject_id sent in the request. */
  subjectId: string;
  /** The SealingKey from GetSealingKeys (or anything with keyId and publicKey). */
  key: { keyId: string; publicKey: Uint8Array; suite?: string };
  /**
   * Fixes the KEM's randomness: for test vectors ONLY. X25519: the ephemeral
   * key pair is DeriveKeyPair(ekm), 32 bytes. X-Wing: the 64-byte encapsulation
   * seed (ML-KEM-768 m, then the X25519 ephemeral secret). Never pass it in
   * production: every seal needs fresh randomness.
   */
  ekm?: Uint8Array;
}

/** HPKE SealBase(pkR, info, aad, pt): returns enc and ciphertext (ct || tag). */
export async function hpkeSeal(
  suite: SuiteName,
  publicKey: Uint8Array,
  aadBytes: Uint8Array,
  plaintext: Uint8Array,
  ekm?: Uint8Array,
): Promise<{ enc: Buffer; ciphertext: Buffer }> {
  const { npk } = SUITE_PARAMS[suite];
  if (publicKey.byteLength !== npk) {
    throw new Error(`a ${SUITE_IDS[suite]} public key is ${npk} bytes, got ${publicKey.byteLength}`);
  }
  const cs = cipherSuite(suite);
  const recipientPublicKey = await cs.kem.deserializePublicKey(publicKey);
  const sender = await cs.createSenderContext({
    recipientPublicKey,
    info: INFO,
    ...(ekm === undefined ? {} : { ekm }),
  });
  const ciphertext = await sender.seal(plaintext, aadBytes);
  return { enc: Buffer.from(sender.enc), ciphertext: Buffer.from(ciphertext) };
}

/**
 * Seals an embedding for one Enroll or Verify call; returns the request's
 * `SealedEmbedding`. Seal afresh for every call: the service accepts each
 * `enc` once, and a payload only within its replay window (5 min by default).
 */
export async function sealEmbedding(payload: EmbeddingPayload, opts: SealOptions): Promise<SealedEmbedding> {
  const suiteId = SUITE_IDS[opts.suite];
  if (suiteId === undefined) throw new Error(`suite must be x25519 or xwing, not ${JSON.stringify(opts.suite)}`);
  if (opts.key.suite !== undefined && opts.key.suite !== suiteId) {
    throw new Error(`key ${opts.key.keyId} is a ${opts.key.suite} key, not ${suiteId}`);
  }
  const { plaintext, values } = checkedPayload(payload);
  try {
    const { enc, ciphertext } = await hpkeSeal(
      opts.suite,
      opts.key.publicKey,
      aad(opts.op, opts.tenant, opts.subjectId),
      plaintext,
      opts.ekm,
    );
    return { suite: suiteId, keyId: opts.key.keyId, enc, ciphertext };
  } finally {
    plaintext.fill(0);
    values.fill(0);
  }
}
