/**
 * Every refusal of this reader is a FlwireError carrying the id of the check
 * that failed, as docs/wire-format.md names them (`[dtype]`, `[frames]`, ...;
 * section 10, the lossy checks of 9.1, the protobuf rules of 2.4 and the
 * limits of 11), plus the ids this consumer adds for envelopes and transfer
 * parts (`envelope`, `transfer`, `signature`).
 */
export class FlwireError extends Error {
  readonly check: string;

  constructor(check: string, message: string) {
    super(`[${check}] ${message}`);
    this.name = "FlwireError";
    this.check = check;
  }
}

export function refuse(check: string, message: string): never {
  throw new FlwireError(check, message);
}
