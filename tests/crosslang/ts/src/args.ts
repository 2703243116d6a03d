/** A small `--name value` parser for the two command-line tools. */
export function parseArgs(argv: string[], known: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m || !(m[1]! in known)) usage(`unknown argument ${a}`, known);
    const value = m[2] ?? argv[++i];
    if (value === undefined) usage(`${a} needs a value`, known);
    out[m[1]!] = value;
  }
  for (const [name, dflt] of Object.entries(known)) {
    if (out[name] === undefined) {
      if (dflt === undefined) usage(`--${name} is required`, known);
      out[name] = dflt;
    }
  }
  return out;
}

function usage(problem: string, known: Record<string, string | undefined>): never {
  const list = Object.entries(known).map(([n, d]) => (d === undefined ? `--${n} V` : `[--${n} V (${d})]`));
  process.stderr.write(`${problem}\nusage: ${list.join(" ")}\n`);
  process.exit(2);
}

/** kafkajs logs to the console (stdout): send its lines to stderr, so stdout holds only results. */
export function stderrLogCreator() {
  return () =>
    ({ namespace, level, log }: { namespace: string; level: number; log: { message: string } & Record<string, unknown> }) => {
      process.stderr.write(`kafkajs ${level} ${namespace}: ${log.message}\n`);
    };
}
