// Loads proto/facevault/v1/*.proto at run time with @grpc/proto-loader (no
// generated code is kept in the repository), and types the messages the
// client uses, as proto-loader presents them with the options below:
// camelCase fields, 64-bit integers as decimal strings, enums by name,
// bytes as Buffer, defaults filled in.

import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

export const PROTO_FILES = ["facevault/v1/facevault.proto", "facevault/v1/audit.proto"];

/** The repository's proto/ directory, or $FACEVAULT_PROTO_DIR. */
export function defaultProtoDir(): string {
  if (process.env.FACEVAULT_PROTO_DIR) return resolve(process.env.FACEVAULT_PROTO_DIR);
  // clients/node/src/proto.ts -> ../../../proto
  return resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "proto");
}

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
};

export interface Protos {
  packageDefinition: protoLoader.PackageDefinition;
  /** grpc-js service constructors and the rest of facevault.v1. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  v1: any;
  /** Serializer / deserializer of one message type, e.g. "EmbeddingPayload". */
  message(name: string): protoLoader.MessageTypeDefinition<object, any>;
}

const cache = new Map<string, Protos>();

export function loadProtos(protoDir: string = defaultProtoDir()): Protos {
  const hit = cache.get(protoDir);
  if (hit) return hit;
  const missing = PROTO_FILES.filter((f) => !existsSync(join(protoDir, f)));
  if (missing.length > 0) {
    throw new Error(`${protoDir} lacks ${missing.join(", ")} (set FACEVAULT_PROTO_DIR)`);
  }
  const packageDefinition = protoLoader.loadSync(PROTO_FILES, {
    ...LOADER_OPTIONS,
    includeDirs: [protoDir],
  });
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const root = grpc.loadPackageDefinition(packageDefinition) as any;
  const protos: Protos = {
    packageDefinition,
    v1: root.facevault.v1,
    message(name: string) {
      const def = packageDefinition[`facevault.v1.${name}`];
      if (!def || !("serialize" in def)) throw new Error(`no message facevault.v1.${name}`);
      return def as protoLoader.MessageTypeDefinition<object, any>;
    },
  };
  cache.set(protoDir, protos);
  return protos;
}

// --- message shapes (as proto-loader decodes them) -----------------------------

export interface Timestamp {
  seconds: string;
  nanos: number;
}

export interface SealedEmbedding {
  suite: string;
  keyId: string;
  enc: Buffer;
  ciphertext: Buffer;
  /** Empty or absent: one-shot sealing; 12 bytes: a message of a sealing session (docs/protocol.md §5.1). */
  sessionNonce?: Buffer;
}

export interface SealingKey {
  keyId: string;
  suite: string;
  publicKey: Buffer;
  notAfter: Timestamp | null;
}

export interface GetSealingKeysResponse {
  keys: SealingKey[];
  receiptVerificationKey: Buffer;
  /** How long a sealing session lasts on the service, from its first message (0: not published). */
  sessionTtlSeconds: number;
}

export type ConsentMethod =
  | "CONSENT_METHOD_UNSPECIFIED"
  | "CONSENT_METHOD_SEPARATE_IN_APP"
  | "CONSENT_METHOD_WRITTEN"
  | "CONSENT_METHOD_GUARDIAN";

export interface Consent {
  consentId: string;
  purposes: string[];
  grantedAt: Timestamp | null;
  method: ConsentMethod;
  noticeVersion: string;
  offDeviceStorage: boolean;
  subjectUnder14: boolean;
}

export interface EnrollResponse {
  subjectRef: string;
  templateId: string;
  templatesHeld: number;
  expiresAt: Timestamp | null;
}

export interface VerifyRequest {
  subjectId: string;
  probe: SealedEmbedding;
  purpose: string;
}

export interface VerifyResponse {
  decision: "DECISION_UNSPECIFIED" | "MATCH" | "NO_MATCH";
  threshold: number;
  /** Present only when the tenant enables scores. */
  score?: number;
  auditId: string;
}

export interface DeletionReceipt {
  body: Buffer;
  signature: Buffer;
}

export interface DeletionTicket {
  ticketId: string;
  subjectRef: string;
  state: "DELETION_STATE_UNSPECIFIED" | "PENDING" | "COMPLETED";
  requestedAt: Timestamp | null;
  deadline: Timestamp | null;
  completedAt: Timestamp | null;
  receipt: DeletionReceipt | null;
  shreddedAt: Timestamp | null;
  shredReceipt: DeletionReceipt | null;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  erasureProof: any;
  deadlineProvisional: boolean;
}

export interface ReceiptBody {
  ticketId: string;
  tenant: string;
  subjectRef: string;
  requestedAt: Timestamp | null;
  deadline: Timestamp | null;
  completedAt: Timestamp | null;
  erased: string[];
  keyEpochs: number[];
  auditChainId: string;
  auditSeq: string;
  auditEventHash: Buffer;
}

export interface ShredBody {
  ticketId: string;
  tenant: string;
  subjectRef: string;
  completedAt: Timestamp | null;
  shreddedAt: Timestamp | null;
  retiredEpochs: number[];
  statement: string;
}

export interface TemplateRecord {
  model: string;
  enrolledAt: Timestamp | null;
  expiresAt: Timestamp | null;
}

export interface SubjectRecord {
  subjectRef: string;
  templates: TemplateRecord[];
  consents: Consent[];
  failedAttempts: number;
  lockedUntil: Timestamp | null;
  tickets: DeletionTicket[];
  auditEvents: string;
  lastVerifiedAt: Timestamp | null;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type ComplianceReport = Record<string, any>;

/** RFC 3339 text of a Timestamp (for printing). */
export function timestampToString(ts: Timestamp | null | undefined): string {
  if (!ts) return "-";
  const ms = Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6);
  return new Date(ms).toISOString();
}
