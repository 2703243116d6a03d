package io.flwire.crosslang;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;

/** The golden vectors of tests/vectors, read with their manifest's SHA-256 checked. */
final class VectorFiles {
  private VectorFiles() {}

  static final Path DIR = root().resolve("tests").resolve("vectors");

  private static Path root() {
    String r = System.getProperty("flwire.root");
    if (r != null) {
      return Path.of(r).toAbsolutePath().normalize();
    }
    Path p = Path.of("").toAbsolutePath();
    while (p != null && !Files.isDirectory(p.resolve("tests").resolve("vectors"))) {
      p = p.getParent();
    }
    if (p == null) {
      throw new IllegalStateException("no tests/vectors above the working directory");
    }
    return p;
  }

  static byte[] read(String rel) {
    try {
      return Files.readAllBytes(DIR.resolve(rel));
    } catch (IOException e) {
      throw new AssertionError("cannot read " + rel, e);
    }
  }

  static JsonObject json(String rel) {
    return JsonParser.parseString(new String(read(rel), StandardCharsets.UTF_8)).getAsJsonObject();
  }

  static JsonObject manifest() {
    return json("manifest.json");
  }

  /** The file of a manifest entry ({"path", "size", "sha256"}), checked against both. */
  static byte[] checked(JsonObject file) {
    byte[] b = read(file.get("path").getAsString());
    assertEquals(file.get("size").getAsInt(), b.length, file.get("path").getAsString() + " size");
    assertEquals(file.get("sha256").getAsString(), sha256(b),
        file.get("path").getAsString() + " sha256");
    return b;
  }

  static String sha256(byte[] b) {
    try {
      return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(b));
    } catch (NoSuchAlgorithmException e) {
      throw new AssertionError(e);
    }
  }

  static byte[] hex(String s) {
    return HexFormat.of().parseHex(s);
  }

  static int crcHex(String s) {
    return (int) Long.parseLong(s, 16);
  }

  static void failWith(String what, Throwable t) {
    fail(what + ": " + t, t);
  }
}
