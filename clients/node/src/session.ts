// Sealing sessions, exactly as docs/protocol.md §5.1 specifies: one HPKE
// (RFC 9180) base-mode setup per session with
// info = "facevault/v1 session|" || tenant, the 32-byte session key exported
// from it with exporter_context = "facevault/v1 session key", and then one
// AES-256-GCM seal per embedding with a fresh random 12-byte nonce and the
// same AAD as one-shot sealing ("facevault/v1|<op>|<tenant>|<subject_id>").
// Every message carries the setup's `enc` and its nonce in `session_nonce`.
//
// The HPKE setup and export are @hpke/core's (createSenderContext, export);
// the per-message AEAD is node:crypto's AES-256-GCM.

import { createCipheriv, randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";

import type { SealedEmbedding } from "./proto.js";
import {
  aad,
  checkedPayload,
  cipherSuite,
  SUITE_IDS,
  SUITE_PARAMS,
  type EmbeddingPayload,
  type Op,
  type SuiteName,
} from "./seal.js";

export const SESSION_INFO_PREFIX = "facevault/v1 session|";
/** RFC 9180 §5.3 exporter_context of the session key. */
export const SESSION_KEY_CONTEXT = new TextEncoder().encode("facevault/v1 session key");
export const SESSION_KEY_BYTES = 32;
export const SESSION_NONCE_BYTES = 12;
const TAG_BYTES = 16;

/** A session is replaced after this long at most (or half the service's TTL, if sooner) ... */
export const ROLL_OVER_SECONDS = 240;
/** ... or after this many messages, far under the service's cap (2^24). */
export const ROLL_OVER_MESSAGES = 2 ** 20;

/** `facevault/v1 session|<tenant>` as UTF-8 bytes. */
export function sessionInfo(tenant: string): Uint8Array {
  return new TextEncoder().encode(SESSION_INFO_PREFIX + tenant);
}

/** AES-256-GCM(key, nonce, aad, pt): ct || 16-byte tag. */
export function aesGcmSeal(key: Uint8Array, nonce: Uint8Array, aadBytes: Uint8Array, plaintext: Uint8Array): Buffer {
  const cipher = createCipheriv("aes-256-gcm", key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aadBytes);
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([ct, cipher.getAuthTag()]);
}

export interface SessionOptions {
  suite: SuiteName;
  /** The tenant of the caller's certificate (in the session info and every AAD). */
  tenant: string;
  /** The SealingKey from GetSealingKeys (or anything with keyId and publicKey). */
  key: { keyId: string; publicKey: Uint8Array; suite?: string };
  /**
   * GetSealingKeysResponse.sessionTtlSeconds: the session is replaced after
   * min(240 s, half of it). 0 (a service that publishes none) means a new
   * session for every message. Defaults to 600, the service's default.
   */
  serverTtlSeconds?: number;
  /**
   * Fixes the KEM's randomness: for test vectors ONLY (as for sealEmbedding:
   * X25519 DeriveKeyPair(ekm), 32 bytes; X-Wing the 64-byte seed). Never in
   * production.
   */
  ekm?: Uint8Array;
}

export interface SessionSealOptions {
  /**
   * Fixes this message's 12-byte AES-GCM nonce: for test vectors ONLY. A
   * nonce must never repeat within a session; leave it out to draw it fresh.
   */
  sessionNonce?: Uint8Array;
}

/**
 * One sealing session (docs/protocol.md §5.1) to one service key for one
 * tenant. `SealingSession.start(...)` does the HPKE setup; `seal(...)` seals
 * one embedding with the AEAD alone. Replace it when `usableFor` turns false
 * (FaceVaultClient does this with `sealingSessions: true`).
 */
export class SealingSession {
  readonly suite: SuiteName;
  readonly suiteId: string;
  readonly keyId: string;
  readonly tenant: string;
  /** The setup's encapsulated key, sent in every message of the session. */
  readonly enc: Buffer;
  /** Seconds after the start at which this client replaces the session. */
  readonly rollOverAfterSeconds: number;
  #key: Buffer;
  #startedMs: number;
  #messages = 0;

  private constructor(opts: SessionOptions, enc: Buffer, key: Buffer) {
    this.suite = opts.suite;
    this.suiteId = SUITE_IDS[opts.suite];
    this.keyId = opts.key.keyId;
    this.tenant = opts.tenant;
    this.enc = enc;
    this.#key = key;
    this.#startedMs = performance.now();
    const ttl = opts.serverTtlSeconds ?? 600;
    this.rollOverAfterSeconds = Math.min(ROLL_OVER_SECONDS, Math.max(0, ttl) / 2);
  }

  /** SetupBaseS(pkR, "facevault/v1 session|" || tenant), then Export("facevault/v1 session key", 32). */
  static async start(opts: SessionOptions): Promise<SealingSession> {
    const suiteId = SUITE_IDS[opts.suite];
    if (suiteId === undefined) throw new Error(`suite must be x25519 or xwing, not ${JSON.stringify(opts.suite)}`);
    if (opts.key.suite !== undefined && opts.key.suite !== suiteId) {
      throw new Error(`key ${opts.key.keyId} is a ${opts.key.suite} key, not ${suiteId}`);
    }
    const { npk } = SUITE_PARAMS[opts.suite];
    if (opts.key.publicKey.byteLength !== npk) {
      throw new Error(`a ${suiteId} public key is ${npk} bytes, got ${opts.key.publicKey.byteLength}`);
    }
    const cs = cipherSuite(opts.suite);
    const recipientPublicKey = await cs.kem.deserializePublicKey(opts.key.publicKey);
    const sender = await cs.createSenderContext({
      recipientPublicKey,
      info: sessionInfo(opts.tenant),
      ...(opts.ekm === undefined ? {} : { ekm: opts.ekm }),
    });
    const exported = await sender.export(SESSION_KEY_CONTEXT, SESSION_KEY_BYTES);
    const key = Buffer.from(new Uint8Array(exported));
    if (key.length !== SESSION_KEY_BYTES) throw new Error(`the exported session key has ${key.length} bytes`);
    return new SealingSession(opts, Buffer.from(sender.enc), key);
  }

  /** Messages sealed so far. */
  get messages(): number {
    return this.#messages;
  }

  /** Seconds since the setup (monotonic clock). */
  get ageSeconds(): number {
    return (performance.now() - this.#startedMs) / 1000;
  }

  /** Whether this session may still seal for this key and tenant (not due to roll over). */
  usableFor(key: { keyId: string }, tenant: string, suite: SuiteName = this.suite): boolean {
    return (
      this.#key.length === SESSION_KEY_BYTES &&
      suite === this.suite &&
      key.keyId === this.keyId &&
      tenant === this.tenant &&
      this.ageSeconds < this.rollOverAfterSeconds &&
      this.#messages < ROLL_OVER_MESSAGES
    );
  }

  /**
   * Seals one embedding of this session for an Enroll (`op = "enroll"`) or
   * Verify (`op = "verify"`) call: AES-256-GCM under the session key with a
   * fresh 12-byte nonce and aad = "facevault/v1|<op>|<tenant>|<subject_id>".
   */
  seal(op: Op, subjectId: string, payload: EmbeddingPayload, opts: SessionSealOptions = {}): SealedEmbedding {
    if (this.#key.length !== SESSION_KEY_BYTES) throw new Error("the sealing session was destroyed");
    const aadBytes = aad(op, this.tenant, subjectId);
    const sessionNonce = Buffer.from(opts.sessionNonce ?? randomBytes(SESSION_NONCE_BYTES));
    if (sessionNonce.length !== SESSION_NONCE_BYTES) throw new Error(`a session nonce is ${SESSION_NONCE_BYTES} bytes`);
    const { plaintext, values } = checkedPayload(payload);
    try {
      const ciphertext = aesGcmSeal(this.#key, sessionNonce, aadBytes, plaintext);
      this.#messages++;
      return { suite: this.suiteId, keyId: this.keyId, enc: Buffer.from(this.enc), ciphertext, sessionNonce };
    } finally {
      plaintext.fill(0);
      values.fill(0);
    }
  }

  /** The exported session key: for checking test vectors ONLY. */
  sessionKeyForTestVectors(): Buffer {
    return Buffer.from(this.#key);
  }

  /** Zeroes the session key; the session cannot seal afterwards. */
  destroy(): void {
    this.#key.fill(0);
    this.#key = Buffer.alloc(0);
  }
}
