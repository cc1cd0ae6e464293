// Prints the health status of a facevault health port: `tsx health-check.ts 127.0.0.1:50052`.
import { healthCheck } from "./src/health.js";

healthCheck(process.argv[2] ?? "127.0.0.1:50052", 1000).then(
  (s) => {
    console.log(s);
    process.exit(s === "SERVING" ? 0 : 1);
  },
  () => {
    console.log("UNREACHABLE");
    process.exit(1);
  },
);
