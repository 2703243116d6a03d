package io.flwire.crosslang;

/**
 * What a reader agrees to allocate (spec section 11). Sizes are decoded sizes: raw_size, or the
 * logical size of a lossy tensor. A value of 0 for the per-MiB, unknown-bytes and expansion
 * limits means no limit.
 */
public record Limits(
    long maxTensorBytes,
    long maxTotalBytes,
    int maxTensors,
    int maxTensorsPerMiB,
    int maxRank,
    long maxUnknownBytes,
    double maxExpansion,
    long expansionFloorBytes) {

  /** The defaults of the spec's table in section 11. */
  public static final Limits DEFAULT =
      new Limits(1L << 32, 1L << 32, 100_000, 1024, 64, 64 << 10, 100, 16L << 20);

  /** These limits with one of them, named as in the refusal vectors' manifest, replaced. */
  public Limits with(String name, long value) {
    return switch (name) {
      case "max_tensor_bytes" -> new Limits(value, maxTotalBytes, maxTensors, maxTensorsPerMiB,
          maxRank, maxUnknownBytes, maxExpansion, expansionFloorBytes);
      case "max_total_bytes" -> new Limits(maxTensorBytes, value, maxTensors, maxTensorsPerMiB,
          maxRank, maxUnknownBytes, maxExpansion, expansionFloorBytes);
      case "max_tensors" -> new Limits(maxTensorBytes, maxTotalBytes, Math.toIntExact(value),
          maxTensorsPerMiB, maxRank, maxUnknownBytes, maxExpansion, expansionFloorBytes);
      case "max_rank" -> new Limits(maxTensorBytes, maxTotalBytes, maxTensors, maxTensorsPerMiB,
          Math.toIntExact(value), maxUnknownBytes, maxExpansion, expansionFloorBytes);
      case "max_unknown_bytes" -> new Limits(maxTensorBytes, maxTotalBytes, maxTensors,
          maxTensorsPerMiB, maxRank, value, maxExpansion, expansionFloorBytes);
      default -> throw new IllegalArgumentException("unknown limit " + name);
    };
  }

  /** These limits with max_expansion (0: none) and expansion_floor_bytes replaced. */
  public Limits withExpansion(double maxExpansion, long expansionFloorBytes) {
    return new Limits(maxTensorBytes, maxTotalBytes, maxTensors, maxTensorsPerMiB, maxRank,
        maxUnknownBytes, maxExpansion, expansionFloorBytes);
  }
}
