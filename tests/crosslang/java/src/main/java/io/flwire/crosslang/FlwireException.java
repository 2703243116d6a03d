package io.flwire.crosslang;

/**
 * A refusal: the input breaks one rule of docs/wire-format.md. {@link #check()} is the id of
 * that rule as the spec names it in brackets ({@code crc32c}, {@code frames}, {@code protobuf},
 * ...; section 10 and the lossy checks of section 9.1; {@code stream_gap}, {@code chunk_offset},
 * ... of section 14.5), a reason of section 14.3 for signatures ({@code unsigned},
 * {@code bad_signature}, {@code unknown_key}, {@code sender_mismatch}), or an id of this
 * consumer for rules of the envelope and transfer layers ({@code envelope}, {@code transfer}).
 */
public final class FlwireException extends RuntimeException {
  private static final long serialVersionUID = 1L;
  private final String check;

  public FlwireException(String check, String message) {
    super("flwire [" + check + "]: " + message);
    this.check = check;
  }

  public FlwireException(String check, String message, Throwable cause) {
    super("flwire [" + check + "]: " + message, cause);
    this.check = check;
  }

  /** The id of the check that refused the input. */
  public String check() {
    return check;
  }

  /** The same refusal, prefixed with the tensor it is about. */
  FlwireException inTensor(int index, String name) {
    return new FlwireException(check, "tensor " + index + " (\"" + name + "\"): " + rawMessage(), this);
  }

  /** The same refusal, prefixed with where it was found ("part 3"). */
  FlwireException in(String where) {
    return new FlwireException(check, where + ": " + rawMessage(), this);
  }

  /** This refusal as one of an enclosing check, its own id kept in the text: "[crc32c] ...". */
  FlwireException as(String outer) {
    return new FlwireException(outer, "[" + check + "] " + rawMessage(), this);
  }

  private String rawMessage() {
    String m = getMessage();
    return m.substring(m.indexOf("]: ") + 3);
  }
}
