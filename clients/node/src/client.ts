// FaceVaultClient: facevault.v1.FaceVault (role app) over mutual TLS with
// @grpc/grpc-js, sealing every embedding afresh with sealEmbedding(), or, with
// `sealingSessions: true`, through a SealingSession (docs/protocol.md §5.1).

import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

import * as grpc from "@grpc/grpc-js";

import { fromGrpcError, InvalidArgumentError, UnavailableError } from "./errors.js";
import {
  loadProtos,
  type ComplianceReport,
  type Consent,
  type ConsentMethod,
  type DeletionTicket,
  type EnrollResponse,
  type GetSealingKeysResponse,
  type ReceiptBody,
  type SealedEmbedding,
  type SealingKey,
  type SubjectRecord,
  type VerifyRequest,
  type VerifyResponse,
} from "./proto.js";
import { verifyReceipt } from "./receipt.js";
import { SUITE_IDS, SUITE_PARAMS, sealEmbedding, type Op, type SuiteName } from "./seal.js";
import { SealingSession } from "./session.js";

export interface ClientOptions {
  /** host:port of the mTLS gRPC listener. */
  target: string;
  /** PEM: the CA that signed the server certificate, this caller's certificate and key. */
  ca: string | Buffer;
  cert: string | Buffer;
  key: string | Buffer;
  /** The tenant of the certificate (part of every AAD); defaults to the certificate's SPIFFE SAN. */
  tenant?: string;
  /** Sealing suite: "x25519" (default) or "xwing" (post-quantum hybrid). */
  suite?: SuiteName;
  /** TLS name to expect when it differs from the target host. */
  serverName?: string;
  /** Per-call deadline, ms (default 10 000). */
  timeoutMs?: number;
  /**
   * Seal through sealing sessions (docs/protocol.md §5.1): one KEM
   * encapsulation per session instead of one per call, each embedding sealed
   * with AES-256-GCM under the exported session key. A session is replaced
   * after min(240 s, half the service's sessionTtlSeconds), 2^20 messages, or
   * when the sealing key changes. Default false (one-shot sealing).
   */
  sealingSessions?: boolean;
}

/** What the client's sealing sessions did so far (no key material). */
export interface SealingSessionStats {
  /** Sessions set up (HPKE setups) by this client. */
  sessionsStarted: number;
  /** Sessions replaced after the service refused them as expired or full. */
  sessionsRefused: number;
  /** The current session, if any. */
  current?: { keyId: string; messages: number; ageSeconds: number; rollOverAfterSeconds: number };
}

/** Reads PEM files: `FaceVaultClient.fromFiles({target, ca: "dev/ca.pem", ...})`. */
function pem(x: string | Buffer): Buffer {
  return Buffer.isBuffer(x) ? x : x.includes("-----BEGIN") ? Buffer.from(x) : readFileSync(x);
}

/** (trustDomain, tenant, role) of a SPIFFE URI SAN spiffe://<td>/tenant/<t>/role/<r>, or undefined. */
export function identityFromCertificate(certPem: Buffer): { trustDomain: string; tenant: string; role: string } | undefined {
  let san: string | undefined;
  try {
    san = new X509Certificate(certPem).subjectAltName;
  } catch {
    return undefined;
  }
  for (const entry of (san ?? "").split(/,\s*/)) {
    const m = /^URI:spiffe:\/\/([^/]+)\/tenant\/([^/]+)\/role\/([^/]+)$/.exec(entry);
    if (m) return { trustDomain: m[1]!, tenant: m[2]!, role: m[3]! };
  }
  return undefined;
}

const KEY_CACHE_MS = 10 * 60 * 1000;
const UNAVAILABLE_RETRIES = 2;

export interface ConsentInput {
  purposes: string[];
  consentId: string;
  method?: ConsentMethod;
  noticeVersion?: string;
  grantedAt?: Date;
  /** The person separately consented to their face data leaving the device (required by the service). */
  offDeviceStorage: boolean;
  /** Needs method CONSENT_METHOD_GUARDIAN. */
  subjectUnder14?: boolean;
}

export function consent(c: ConsentInput): Consent {
  const granted = c.grantedAt ?? new Date();
  return {
    consentId: c.consentId,
    purposes: c.purposes,
    grantedAt: { seconds: String(Math.floor(granted.getTime() / 1000)), nanos: 0 },
    method: c.method ?? "CONSENT_METHOD_SEPARATE_IN_APP",
    noticeVersion: c.noticeVersion ?? "1",
    offDeviceStorage: c.offDeviceStorage,
    subjectUnder14: c.subjectUnder14 ?? false,
  };
}

export class FaceVaultClient {
  readonly tenant: string;
  readonly suite: SuiteName;
  readonly timeoutMs: number;
  readonly sealingSessions: boolean;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  private readonly stub: any;
  private keys?: GetSealingKeysResponse;
  private keysFetchedAt = 0;
  private session?: SealingSession;
  private sessionStarting?: Promise<SealingSession>;
  private sessionsStarted = 0;
  private sessionsRefused = 0;

  constructor(opts: ClientOptions) {
    const protos = loadProtos();
    const ca = pem(opts.ca);
    const cert = pem(opts.cert);
    const key = pem(opts.key);
    const certTenant = identityFromCertificate(cert)?.tenant;
    if (opts.tenant === undefined) {
      if (certTenant === undefined) throw new Error("no tenant given and none in the certificate's SPIFFE URI SAN");
      this.tenant = certTenant;
    } else {
      if (certTenant !== undefined && certTenant !== opts.tenant) {
        process.emitWarning(
          `tenant ${JSON.stringify(opts.tenant)} differs from the certificate's ${JSON.stringify(certTenant)}; the service will refuse the sealed embeddings`,
        );
      }
      this.tenant = opts.tenant;
    }
    this.suite = opts.suite ?? "x25519";
    if (!(this.suite in SUITE_IDS)) throw new Error(`suite must be x25519 or xwing, not ${JSON.stringify(this.suite)}`);
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.sealingSessions = opts.sealingSessions ?? false;
    const credentials = grpc.credentials.createSsl(ca, key, cert);
    const options: grpc.ChannelOptions = opts.serverName
      ? { "grpc.ssl_target_name_override": opts.serverName, "grpc.default_authority": opts.serverName }
      : {};
    this.stub = new protos.v1.FaceVault(opts.target, credentials, options);
  }

  close(): void {
    this.stub.close();
  }

  // --- plumbing -------------------------------------------------------------

  /** One unary call; grpc-js errors become typed FaceVaultErrors. */
  private call<T>(method: string, request: object): Promise<T> {
    const deadline = new Date(Date.now() + this.timeoutMs);
    return new Promise<T>((resolve, reject) => {
      this.stub[method](request, { deadline }, (err: grpc.ServiceError | null, response: T) => {
        if (err) reject(fromGrpcError(err));
        else resolve(response);
      });
    });
  }

  /**
   * A call that is safe to repeat (README: reads; deletion, consent withdrawal
   * and cancellation "can simply be repeated"): retried on UNAVAILABLE.
   */
  private async idempotent<T>(method: string, request: object): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.call<T>(method, request);
      } catch (e) {
        if (e instanceof UnavailableError && attempt < UNAVAILABLE_RETRIES) {
          await sleep(100 << (attempt + 1));
          continue;
        }
        throw e;
      }
    }
  }

  // --- keys -----------------------------------------------------------------

  /** GetSealingKeys, cached for ten minutes. */
  async getSealingKeys(refresh = false): Promise<GetSealingKeysResponse> {
    if (refresh || this.keys === undefined || Date.now() - this.keysFetchedAt > KEY_CACHE_MS) {
      this.keys = await this.idempotent<GetSealingKeysResponse>("GetSealingKeys", {});
      this.keysFetchedAt = Date.now();
    }
    return this.keys;
  }

  /** The key of the suite that stays valid longest (at least one more minute). */
  async sealingKey(suite: SuiteName = this.suite, refresh = false): Promise<SealingKey> {
    for (const again of refresh ? [true] : [false, true]) {
      const soon = Date.now() / 1000 + 60;
      const keys = (await this.getSealingKeys(again)).keys.filter(
        (k) =>
          k.suite === SUITE_IDS[suite] &&
          k.publicKey.length === SUITE_PARAMS[suite].npk &&
          (k.notAfter === null || Number(k.notAfter.seconds) > soon),
      );
      if (keys.length > 0) {
        keys.sort((a, b) => Number(b.notAfter?.seconds ?? Infinity) - Number(a.notAfter?.seconds ?? Infinity) || (a.keyId < b.keyId ? -1 : 1));
        return keys[0]!;
      }
    }
    throw new Error(`the service offers no ${SUITE_IDS[suite]} key`);
  }

  async receiptVerificationKey(): Promise<Buffer> {
    return (await this.getSealingKeys()).receiptVerificationKey;
  }

  /**
   * Seals an embedding to the current key of this client's suite: one-shot, or
   * with `sealingSessions` through the current sealing session.
   */
  async seal(op: Op, subjectId: string, model: string, values: ArrayLike<number>, refresh = false): Promise<SealedEmbedding> {
    const key = await this.sealingKey(this.suite, refresh);
    if (!this.sealingSessions) {
      return sealEmbedding({ model, values }, { suite: this.suite, op, tenant: this.tenant, subjectId, key });
    }
    if (refresh) this.session = undefined;
    const session = await this.currentSession(key);
    return session.seal(op, subjectId, { model, values });
  }

  /** The session to seal with for `key`: the current one while usable, else a new one (one setup at a time). */
  private async currentSession(key: SealingKey): Promise<SealingSession> {
    for (;;) {
      const current = this.session;
      if (current !== undefined && current.usableFor(key, this.tenant, this.suite)) return current;
      if (this.sessionStarting !== undefined) {
        // Another call is setting one up: use it if it fits.
        await this.sessionStarting.catch(() => undefined);
        const s = this.session;
        if (s !== undefined && s.usableFor(key, this.tenant, this.suite)) return s;
        if (this.sessionStarting !== undefined) continue;
      }
      const starting = (async () => {
        const ttl = Number((await this.getSealingKeys()).sessionTtlSeconds ?? 0);
        return SealingSession.start({ suite: this.suite, tenant: this.tenant, key, serverTtlSeconds: ttl });
      })();
      this.sessionStarting = starting;
      try {
        const started = await starting;
        this.sessionsStarted++;
        this.session = started;
        return started;
      } finally {
        if (this.sessionStarting === starting) this.sessionStarting = undefined;
      }
    }
  }

  /** Drops the current session if it is the one that sealed `sealed` (refused as expired or full). */
  private retireSession(sealed: SealedEmbedding | undefined): void {
    if (sealed?.sessionNonce === undefined || sealed.sessionNonce.length === 0) return;
    if (this.session !== undefined && this.session.enc.equals(sealed.enc)) this.session = undefined;
  }

  /** Counts of this client's sealing sessions (no key material). */
  sealingSessionStats(): SealingSessionStats {
    const s = this.session;
    return {
      sessionsStarted: this.sessionsStarted,
      sessionsRefused: this.sessionsRefused,
      ...(s === undefined
        ? {}
        : { current: { keyId: s.keyId, messages: s.messages, ageSeconds: s.ageSeconds, rollOverAfterSeconds: s.rollOverAfterSeconds } }),
    };
  }

  /**
   * Sends a sealed call; a refusal for a retired key (no effect) refreshes the
   * keys and seals once more, a refusal of an expired or full sealing session
   * (no effect) starts a new session and seals once more, and ABORTED (no
   * effect: another verification was in flight) is retried with a fresh seal.
   * Nothing else is repeated.
   */
  private async sealedCall<T>(method: string, build: (refresh: boolean) => Promise<object>): Promise<T> {
    let refresh = false;
    let renewed = false;
    for (let attempt = 0; ; attempt++) {
      const request = await build(refresh);
      try {
        return await this.call<T>(method, request);
      } catch (e) {
        if (attempt < 2 && e instanceof InvalidArgumentError && e.staleKey && !refresh) {
          refresh = true;
          continue;
        }
        const sealed = request as { embedding?: SealedEmbedding; probe?: SealedEmbedding };
        const inSession = (sealed.embedding ?? sealed.probe)?.sessionNonce?.length === 12;
        if (attempt < 2 && e instanceof InvalidArgumentError && e.sessionExpired && inSession && !renewed) {
          renewed = true;
          this.sessionsRefused++;
          this.retireSession(sealed.embedding ?? sealed.probe);
          continue;
        }
        if (attempt < 2 && e instanceof Error && "retryable" in e && e.retryable) {
          await sleep(200 * (attempt + 1));
          continue;
        }
        throw e;
      }
    }
  }

  // --- FaceVault API -----------------------------------------------------------

  /** Enroll: never retried on UNAVAILABLE (a retry could store a second template unless `replace`). */
  enroll(subjectId: string, model: string, values: ArrayLike<number>, c: Consent, replace = false): Promise<EnrollResponse> {
    return this.sealedCall<EnrollResponse>("Enroll", async (refresh) => ({
      subjectId,
      embedding: await this.seal("enroll", subjectId, model, values, refresh),
      consent: c,
      replace,
    }));
  }

  /** Verify: never retried on UNAVAILABLE (it may already have counted towards the lockout). */
  async verify(subjectId: string, model: string, values: ArrayLike<number>, purpose: string): Promise<VerifyResponse> {
    return normalizeVerify(
      await this.sealedCall<VerifyResponse>("Verify", (refresh) => this.verifyRequest(subjectId, model, values, purpose, refresh)),
    );
  }

  /** A sealed VerifyRequest, to send with sendVerify (e.g. to show that a replay is refused). */
  async verifyRequest(subjectId: string, model: string, values: ArrayLike<number>, purpose: string, refresh = false): Promise<VerifyRequest> {
    return { subjectId, probe: await this.seal("verify", subjectId, model, values, refresh), purpose };
  }

  /** Sends a prepared VerifyRequest once, as it is. */
  async sendVerify(request: VerifyRequest): Promise<VerifyResponse> {
    return normalizeVerify(await this.call<VerifyResponse>("Verify", request));
  }

  deleteSubject(subjectId: string): Promise<DeletionTicket> {
    return this.idempotent("DeleteSubject", { subjectId });
  }

  withdrawConsent(subjectId: string, purposes: string[]): Promise<DeletionTicket> {
    return this.idempotent("WithdrawConsent", { subjectId, purposes });
  }

  /** Cancelling again returns the same ticket, so this is retried on UNAVAILABLE. */
  cancelAccount(subjectId: string, reason = ""): Promise<DeletionTicket> {
    return this.idempotent("CancelAccount", { subjectId, reason });
  }

  getDeletionTicket(ticketId: string): Promise<DeletionTicket> {
    return this.idempotent("GetDeletionTicket", { ticketId });
  }

  getComplianceReport(): Promise<ComplianceReport> {
    return this.idempotent("GetComplianceReport", {});
  }

  /** Subject access: what is held about the subject (no template, score or key). */
  getSubjectRecord(subjectId: string): Promise<SubjectRecord> {
    return this.idempotent("GetSubjectRecord", { subjectId });
  }

  /** Polls GetDeletionTicket until COMPLETED; throws after timeoutMs. */
  async waitForDeletion(ticketId: string, timeoutMs = 60_000, intervalMs = 500): Promise<DeletionTicket> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const ticket = await this.getDeletionTicket(ticketId);
      if (ticket.state === "COMPLETED") return ticket;
      if (Date.now() >= until) throw new Error(`ticket ${ticketId} still ${ticket.state} after ${timeoutMs} ms`);
      await sleep(intervalMs);
    }
  }

  /** Checks a ticket's receipt with the service's published key (fetched with the sealing keys). */
  async verifyReceipt(ticket: DeletionTicket): Promise<ReceiptBody> {
    return verifyReceipt(await this.receiptVerificationKey(), ticket);
  }
}

/** proto3 `optional float score`: present only when the oneof says so. */
function normalizeVerify(r: VerifyResponse & { _score?: string }): VerifyResponse {
  const out: VerifyResponse = { decision: r.decision, threshold: r.threshold, auditId: r.auditId };
  if (r._score === "score" && r.score !== undefined && r.score !== null) out.score = r.score;
  return out;
}
