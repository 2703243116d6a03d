/**
 * The consumer's command line (issue 16):
 *   node dist/src/cli.js --bootstrap HOST:PORT --topics t1,t2 --expect N [--timeout-s 60]
 *   node dist/src/cli.js produce-update --bootstrap HOST:PORT --topic JOB.updates --client-id ID
 *       --round R --from-global FILE|none [--examples 100]
 * (consume.ts and produce_update.ts say what each does).
 */
import { consume } from "./consume.js";
import { produceUpdate } from "./produce_update.js";

const argv = process.argv.slice(2);
const run = argv[0] === "produce-update" ? produceUpdate(argv.slice(1)) : consume(argv[0] === "consume" ? argv.slice(1) : argv);
run.then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`flwire-ts: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
