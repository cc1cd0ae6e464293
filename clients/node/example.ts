// End-to-end example against a running facevault (e.g. `facevault dev`), with
// one sealing suite: the same story as clients/python/example.py.
//
// Enrollment without consent to off-device storage is refused; a synthetic
// 512-dimension face is enrolled for a fresh subject; a noisy second capture
// verifies MATCH; the same sealed probe sent again is refused as a replay; an
// unrelated face verifies NO_MATCH; the subject record lists the template; the
// account is cancelled, the ticket polled until COMPLETED, and its Ed25519
// receipt checked offline (a tampered copy must fail). Exits non-zero on any
// unexpected result. Subject ids, embeddings and keys are never printed.
// With --sealing-sessions every embedding is sealed through a sealing session
// (docs/protocol.md §5.1): one HPKE setup, then AES-256-GCM per message.
//
//   npm run example -- --target localhost:50051 --ca ../../dev/ca.pem \
//       --cert ../../dev/app.pem --key ../../dev/app.key --tenant demo --suite xwing [--sealing-sessions]

import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";

import {
  consent,
  FaceVaultClient,
  FaceVaultError,
  InvalidArgumentError,
  ReceiptError,
  SUITE_IDS,
  SUITE_PARAMS,
  timestampToString,
  verifyReceipt,
  type DeletionTicket,
  type SuiteName,
} from "./src/index.js";

const MODEL = "demo-512";
const DIMENSION = 512;

class Failed extends Error {}

function expect(condition: boolean, message: string): void {
  if (!condition) throw new Failed(message);
  console.log(`  ok: ${message}`);
}

/** A small seeded PRNG (mulberry32) with Box–Muller normals: reproducible synthetic faces. */
function gaussians(seed: number): () => number {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => {
    const u = 1 - uniform();
    const v = uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
}

/** A face, a second capture of it (face + noise) and an unrelated face. */
function syntheticFaces(seed: number): [number[], number[], number[]] {
  const g = gaussians(seed);
  const face = Array.from({ length: DIMENSION }, g);
  const capture = face.map((x) => x + 0.4 * g());
  const other = Array.from({ length: DIMENSION }, g);
  return [face, capture, other];
}

async function expectRefused(what: string, call: () => Promise<unknown>, check: (e: FaceVaultError) => boolean): Promise<void> {
  try {
    await call();
  } catch (e) {
    if (e instanceof FaceVaultError) {
      expect(check(e), `${what}: refused ${e.codeName}: ${e.details}`);
      return;
    }
    throw e;
  }
  throw new Failed(`${what}: accepted`);
}

interface Args {
  target: string;
  ca: string;
  cert: string;
  key: string;
  tenant: string;
  suite: SuiteName;
  sealingSessions: boolean;
  serverName?: string;
  seed: number;
  waitMs: number;
}

async function run(args: Args): Promise<void> {
  const subject = `node-example-${randomBytes(6).toString("hex")}`;
  const [face, capture, other] = syntheticFaces(args.seed);
  const client = new FaceVaultClient({
    target: args.target,
    ca: args.ca,
    cert: args.cert,
    key: args.key,
    tenant: args.tenant,
    suite: args.suite,
    serverName: args.serverName,
    sealingSessions: args.sealingSessions,
  });
  try {
    const mode = args.sealingSessions ? "sealing sessions" : "one-shot sealing";
    console.log(`Suite ${SUITE_IDS[args.suite]}, ${mode}, tenant ${client.tenant}, model ${MODEL}`);
    const keys = await client.getSealingKeys();
    console.log(`GetSealingKeys: ${keys.keys.map((k) => `${k.keyId} (${k.suite}, ${k.publicKey.length} B)`).join(", ")}`);
    if (args.sealingSessions) {
      expect(keys.sessionTtlSeconds > 0, `the service publishes its session TTL: ${keys.sessionTtlSeconds} s`);
    }
    const key = await client.sealingKey();
    expect(key.publicKey.length === SUITE_PARAMS[args.suite].npk, `${args.suite} key ${key.keyId} has ${SUITE_PARAMS[args.suite].npk} bytes`);
    expect(keys.receiptVerificationKey.length === 32, "receipt verification key has 32 bytes");

    console.log("Enroll without consent to off-device storage");
    const onDeviceOnly = consent({ purposes: ["login"], consentId: `consent-${subject}`, noticeVersion: "2026-11", offDeviceStorage: false });
    await expectRefused(
      "enrollment without off-device consent",
      () => client.enroll(subject, MODEL, face, onDeviceOnly),
      (e) => e instanceof InvalidArgumentError && e.details.includes("consent.off_device_storage"),
    );

    console.log("Enroll a fresh subject");
    const granted = consent({
      purposes: ["login"],
      consentId: `consent-${subject}`,
      method: "CONSENT_METHOD_SEPARATE_IN_APP",
      noticeVersion: "2026-11",
      offDeviceStorage: true,
    });
    const enrolled = await client.enroll(subject, MODEL, face, granted);
    expect(enrolled.templatesHeld === 1, `enrolled: template ${enrolled.templateId}, held ${enrolled.templatesHeld}`);

    console.log("Verify a second capture");
    const request = await client.verifyRequest(subject, MODEL, capture, "login");
    expect(request.probe.enc.length === SUITE_PARAMS[args.suite].nenc, `sealed probe: enc ${request.probe.enc.length} B, ciphertext ${request.probe.ciphertext.length} B`);
    const sessionNonceBytes = request.probe.sessionNonce?.length ?? 0;
    expect(
      sessionNonceBytes === (args.sealingSessions ? 12 : 0),
      args.sealingSessions ? "sealed in a sealing session: 12-byte session_nonce" : "sealed one-shot: no session_nonce",
    );
    const same = await client.sendVerify(request);
    const score = same.score === undefined ? "" : `, score ${same.score.toFixed(3)}`;
    expect(same.decision === "MATCH", `decision ${same.decision} (threshold ${same.threshold.toPrecision(3)}${score})`);

    console.log("Replay the same sealed probe");
    await expectRefused(
      "the replayed probe",
      () => client.sendVerify(request),
      (e) => e instanceof InvalidArgumentError && e.replay,
    );

    console.log("Verify an unrelated face");
    const different = await client.verify(subject, MODEL, other, "login");
    const score2 = different.score === undefined ? "" : `, score ${different.score.toFixed(3)}`;
    expect(different.decision === "NO_MATCH", `decision ${different.decision}${score2}`);

    if (args.sealingSessions) {
      const stats = client.sealingSessionStats();
      expect(
        stats.sessionsStarted === 1 && stats.current?.messages === 4,
        `one sealing session carried all ${stats.current?.messages} messages (rolls over after ${stats.current?.rollOverAfterSeconds} s)`,
      );
    }

    console.log("GetSubjectRecord");
    const record = await client.getSubjectRecord(subject);
    expect(
      record.templates.length === 1 && record.templates[0]!.model === MODEL && record.subjectRef === enrolled.subjectRef,
      `${record.templates.length} template (${record.templates[0]?.model}), ${record.consents.length} consent, ${record.auditEvents} audit events`,
    );

    console.log("CancelAccount");
    let ticket: DeletionTicket = await client.cancelAccount(subject, "account closed by the user");
    expect(ticket.ticketId !== "", `ticket ${ticket.ticketId} ${ticket.state}, deadline ${timestampToString(ticket.deadline)}`);
    await expectRefused(
      "a verification after cancellation",
      () => client.verify(subject, MODEL, capture, "login"),
      // FAILED_PRECONDITION while the erasure is queued; NOT_FOUND once it ran (due at once by default).
      (e) => e.codeName === "FAILED_PRECONDITION" || e.codeName === "NOT_FOUND",
    );

    console.log("GetDeletionTicket until COMPLETED");
    ticket = await client.waitForDeletion(ticket.ticketId, args.waitMs);
    expect(ticket.state === "COMPLETED", `completed at ${timestampToString(ticket.completedAt)}`);

    const body = await client.verifyReceipt(ticket);
    expect(body.tenant === client.tenant && body.ticketId === ticket.ticketId, `receipt signature valid; erased ${JSON.stringify(body.erased)}`);
    const forgedBody = Buffer.from(ticket.receipt!.body);
    forgedBody[forgedBody.length - 1]! ^= 1;
    try {
      verifyReceipt(keys.receiptVerificationKey, { ...ticket, receipt: { body: forgedBody, signature: ticket.receipt!.signature } });
      throw new Failed("a tampered receipt verified");
    } catch (e) {
      if (!(e instanceof ReceiptError)) throw e;
      expect(true, "a tampered receipt is rejected");
    }

    console.log("Ticket:");
    console.log(
      JSON.stringify(
        {
          ticketId: ticket.ticketId,
          subjectRef: ticket.subjectRef,
          state: ticket.state,
          requestedAt: timestampToString(ticket.requestedAt),
          deadline: timestampToString(ticket.deadline),
          deadlineProvisional: ticket.deadlineProvisional,
          completedAt: timestampToString(ticket.completedAt),
          receipt: { erased: body.erased, keyEpochs: body.keyEpochs, auditChainId: body.auditChainId, auditSeq: body.auditSeq },
        },
        null,
        2,
      ),
    );
  } finally {
    client.close();
  }
}

function usage(): string {
  return "usage: npm run example -- --target HOST:PORT --ca CA.pem --cert APP.pem --key APP.key --tenant TENANT --suite x25519|xwing [--sealing-sessions] [--server-name NAME] [--seed N] [--wait SECONDS]";
}

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        target: { type: "string", default: "localhost:50051" },
        ca: { type: "string", default: "dev/ca.pem" },
        cert: { type: "string", default: "dev/app.pem" },
        key: { type: "string", default: "dev/app.key" },
        tenant: { type: "string", default: "demo" },
        suite: { type: "string", default: "x25519" },
        "sealing-sessions": { type: "boolean", default: false },
        "server-name": { type: "string" },
        seed: { type: "string", default: "7" },
        wait: { type: "string", default: "60" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }));
  } catch (e) {
    console.error(`${e instanceof Error ? e.message : String(e)}\n${usage()}`);
    return 2;
  }
  if (values.help) {
    console.log(usage());
    return 0;
  }
  if (values.suite !== "x25519" && values.suite !== "xwing") {
    console.error(`--suite must be x25519 or xwing\n${usage()}`);
    return 2;
  }
  const args: Args = {
    target: values.target!,
    ca: values.ca!,
    cert: values.cert!,
    key: values.key!,
    tenant: values.tenant!,
    suite: values.suite,
    sealingSessions: values["sealing-sessions"] ?? false,
    serverName: values["server-name"],
    seed: Number(values.seed),
    waitMs: Number(values.wait) * 1000,
  };
  try {
    await run(args);
  } catch (e) {
    if (e instanceof Failed) console.error(`FAILED: ${e.message}`);
    else if (e instanceof FaceVaultError) console.error(`FAILED: unexpected ${e.codeName}: ${e.details} (${e.meaning})`);
    else console.error(`FAILED: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
  console.log(`example (${args.suite}${args.sealingSessions ? ", sealing sessions" : ""}): all steps as expected`);
  return 0;
}

main().then((code) => process.exit(code));
