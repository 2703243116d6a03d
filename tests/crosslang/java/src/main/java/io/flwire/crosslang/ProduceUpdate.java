package io.flwire.crosslang;

import java.util.Map;

/** Placeholder until the writing mode lands. */
final class ProduceUpdate {
  private ProduceUpdate() {}

  static void run(Map<String, String> o) {
    throw new IllegalArgumentException("produce-update is not implemented yet");
  }
}
