export * from "./client.js";
export * from "./errors.js";
export * from "./proto.js";
export * from "./receipt.js";
export * from "./seal.js";
export * from "./session.js";
export * from "./health.js";
