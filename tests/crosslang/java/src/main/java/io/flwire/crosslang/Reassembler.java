package io.flwire.crosslang;

import com.google.protobuf.ByteString;
import flwire.v1.Transfer.TransferPart;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Reassembles messages split into TransferParts (spec section 14.1): parts placed at their
 * offset, in any order and interleaved with other transfers; a part already held byte for byte
 * is ignored; a copy with other bytes is kept beside it (at most 4 per part), and when every part
 * is in but the CRC-32C of the whole fails, other copies are tried and the transfer stays open.
 */
public final class Reassembler {
  static final int MAX_COPIES = 4;
  static final long MAX_TOTAL = 1L << 31;

  private static final class Transfer {
    final int count;
    final long total;
    final int crc;
    final Map<Integer, List<TransferPart>> parts = new HashMap<>();

    Transfer(TransferPart p) {
      count = p.getPartCount();
      total = p.getTotalSize();
      crc = p.getPayloadCrc32C();
    }
  }

  private final Map<String, Transfer> open = new HashMap<>();
  // Transfers completed lately: a late copy of one of their parts is a duplicate, not a new
  // transfer. Bounded: the oldest are forgotten.
  private final java.util.LinkedHashSet<String> done = new java.util.LinkedHashSet<>();
  static final int MAX_DONE = 10_000;
  private int duplicates;

  /** How many parts were ignored as copies of a part already held. */
  public int duplicates() {
    return duplicates;
  }

  /** Transfers under way. */
  public int pending() {
    return open.size();
  }

  /** Parses one record's value as a TransferPart and adds it; see {@link #add(TransferPart)}. */
  public byte[] add(byte[] record) {
    try {
      checkUint32Varints(record);
      return add(TransferPart.parseFrom(record));
    } catch (java.io.IOException e) {
      throw new FlwireException("transfer", "not a TransferPart: " + e.getMessage(), e);
    }
  }

  /**
   * Refuses a part_index or part_count varint that does not fit 32 bits (spec section 14.1):
   * protobuf-java, like every runtime, would keep its low 32 bits, so it is read raw first.
   */
  static void checkUint32Varints(byte[] record) throws java.io.IOException {
    com.google.protobuf.CodedInputStream in = com.google.protobuf.CodedInputStream.newInstance(record);
    for (int tag = in.readTag(); tag != 0; tag = in.readTag()) {
      int number = tag >>> 3;
      if ((number == 2 || number == 3) && (tag & 7) == 0) {
        long value = in.readRawVarint64();
        if (Long.compareUnsigned(value, 0xFFFFFFFFL) > 0) {
          throw new FlwireException("transfer", (number == 2 ? "part_index " : "part_count ")
              + Long.toUnsignedString(value) + " does not fit its uint32 field");
        }
      } else if (!in.skipField(tag)) {
        break;
      }
    }
  }

  /** Adds a part; returns the whole message once every part is in and its CRC-32C matches. */
  public byte[] add(TransferPart p) {
    String id = p.getTransferId();
    if (id.getBytes(StandardCharsets.UTF_8).length > Envelopes.MAX_ID_BYTES) {
      throw new FlwireException("transfer", "transfer_id longer than 128 bytes");
    }
    long count = Integer.toUnsignedLong(p.getPartCount());
    long index = Integer.toUnsignedLong(p.getPartIndex());
    if (count < 1 || index >= count) {
      throw new FlwireException("transfer", "part_index " + index + " of part_count " + count);
    }
    if (p.getTotalSize() < 0 || p.getTotalSize() >= MAX_TOTAL) {
      throw new FlwireException("transfer", "total_size " + Long.toUnsignedString(p.getTotalSize())
          + " is 2^31 or more");
    }
    if (p.getOffset() < 0 || p.getOffset() + p.getData().size() > p.getTotalSize()) {
      throw new FlwireException("transfer", "data at offset " + p.getOffset()
          + " runs past total_size " + p.getTotalSize());
    }
    if (done.contains(id)) {
      duplicates++;
      return null;
    }
    Transfer t = open.computeIfAbsent(id, k -> new Transfer(p));
    if (t.count != p.getPartCount() || t.total != p.getTotalSize()
        || t.crc != p.getPayloadCrc32C()) {
      throw new FlwireException("transfer", "part " + index + " of " + id
          + " disagrees with earlier parts on count, size or checksum");
    }
    List<TransferPart> copies = t.parts.computeIfAbsent((int) index, k -> new ArrayList<>());
    for (TransferPart c : copies) {
      if (c.equals(p)) {
        duplicates++;
        return null;
      }
    }
    if (copies.size() >= MAX_COPIES) {
      return null;
    }
    copies.add(0, p); // newest first
    if (t.parts.size() < t.count) {
      return null;
    }
    // Every part is in: the newest copy of each, then each other copy in turn.
    byte[] whole = join(t, -1, 0);
    if (whole == null) {
      for (Map.Entry<Integer, List<TransferPart>> e : t.parts.entrySet()) {
        for (int c = 1; c < e.getValue().size() && whole == null; c++) {
          whole = join(t, e.getKey(), c);
        }
      }
    }
    if (whole != null) {
      open.remove(id);
      done.add(id);
      if (done.size() > MAX_DONE) {
        done.remove(done.iterator().next());
      }
    }
    return whole;
  }

  private static byte[] join(Transfer t, int index, int copy) {
    byte[] out = new byte[(int) t.total];
    long covered = 0;
    for (Map.Entry<Integer, List<TransferPart>> e : t.parts.entrySet()) {
      TransferPart p = e.getValue().get(e.getKey() == index ? copy : 0);
      ByteString d = p.getData();
      d.copyTo(out, (int) p.getOffset());
      covered += d.size();
    }
    if (covered != t.total || TensorMapReader.crc32c(out) != t.crc) {
      return null;
    }
    return out;
  }
}
