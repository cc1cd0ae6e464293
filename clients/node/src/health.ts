// grpc.health.v1.Health/Check on the plaintext health port. The messages are
// tiny, so they are encoded by hand (no health.proto needed).

import * as grpc from "@grpc/grpc-js";

const STATUS: Record<number, string> = { 0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN" };

/** The overall status name ("SERVING", …) of a facevault health port (host:port, plaintext). */
export function healthCheck(target: string, timeoutMs = 2000): Promise<string> {
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  return new Promise<string>((resolve, reject) => {
    client.makeUnaryRequest<Buffer, Buffer>(
      "/grpc.health.v1.Health/Check",
      (b) => b,
      (b) => b,
      Buffer.alloc(0),
      { deadline: new Date(Date.now() + timeoutMs) },
      (err, raw) => {
        client.close();
        if (err || raw === undefined) return reject(err ?? new Error("no answer"));
        // HealthCheckResponse { status = 1 (varint) }; absent means UNKNOWN.
        const status = raw.length >= 2 && raw[0] === 0x08 ? raw[1]! : 0;
        resolve(STATUS[status] ?? String(status));
      },
    );
  });
}
