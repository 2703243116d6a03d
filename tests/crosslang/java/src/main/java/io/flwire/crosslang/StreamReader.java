package io.flwire.crosslang;

import com.google.protobuf.ByteString;
import com.google.protobuf.CodedInputStream;
import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import com.google.protobuf.WireFormat;
import flwire.v1.Messages.Envelope;
import flwire.v1.Messages.Signature;
import flwire.v1.TensorOuterClass.Tensor;
import flwire.v1.TensorOuterClass.TensorMap;
import flwire.v1.Transfer.StreamHead;
import flwire.v1.Transfer.StreamSeal;
import flwire.v1.Transfer.TensorInfo;
import java.io.IOException;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.zip.CRC32C;
import org.apache.commons.codec.digest.Blake3;

/**
 * Streamed transfers (spec section 14.5), read from the spec alone. {@link #add} takes the record
 * values of the transfers' parts in the order they arrive: it checks each part against its
 * transfer, decodes each chunk straight into its tensor's buffer as it arrives (a packed chunk's
 * tensors into theirs), and returns the message once its seal checked out. A refusal is a
 * {@link FlwireException} whose check is the id of section 14.5 ({@code stream_part},
 * {@code stream_gap}, {@code stream_no_head}, {@code stream_head}, {@code chunk_tensor_index},
 * {@code chunk_offset}, {@code chunk_elements}, {@code chunk_overrun}, {@code chunk_packed},
 * {@code chunk_decode}, {@code stream_part_count}, {@code stream_crc32c},
 * {@code stream_incomplete}, {@code stream_signed}); a refused transfer is given up, and its
 * later parts are skipped. What a transfer's chunks decode to is bounded by the bytes of its
 * records received, as a whole TensorMap's is by its size (section 11's {@code max_expansion} and
 * {@code expansion_floor_bytes} of the reader's {@link Limits}; a max_expansion of 0 turns it off):
 * a chunk past it is refused ({@code [chunk_elements]}, "[max_expansion]" in the text) before it
 * is decoded. A signed message's seal is verified by {@link Signatures#verifyStream}.
 */
public final class StreamReader {

  /** flwire-python's defaults (section 14.5): bytes one head may declare, all heads, streams. */
  public static final long DEFAULT_MAX_STREAM_BYTES = 16L << 30;
  public static final long DEFAULT_MAX_PENDING_BYTES = 32L << 30;
  public static final int DEFAULT_MAX_STREAMS = 64;
  static final long PER_TRANSFER_BYTES = 4096;
  /** This reader's own bound: each tensor is held in one Java array. */
  static final long MAX_TENSOR_BYTES = Integer.MAX_VALUE - 8;
  static final int MAX_ENDED = 10_000;
  private static final BigInteger TWO_63 = BigInteger.ONE.shiftLeft(63);

  /** A tensor of a streamed message: the head's name, dtype and shape, its raw bytes. */
  public record StreamTensor(String name, int dtype, long[] shape, byte[] raw) {}

  /**
   * A streamed transfer that checked out: the head's envelope (its body field's name and body),
   * the tensors in the head's order, the seal's signature (null: unsigned) with the BLAKE3 digest
   * of the parts before the seal (null unless the head said signed), their CRC-32C, the number of
   * parts.
   */
  public record StreamMessage(String transferId, Envelope envelope, String type, Message body,
      List<StreamTensor> tensors, Signature signature, byte[] digest, int crc32c, int parts) {}

  private static final class Slot {
    final TensorInfo info;
    final int width;
    final long numel;
    byte[] raw; // made at the tensor's first chunk
    long filled; // the next element expected

    Slot(TensorInfo info, int width, long numel) {
      this.info = info;
      this.width = width;
      this.numel = numel;
    }
  }

  private static final class Transfer {
    final String id;
    final Envelope envelope;
    final String type;
    final Message body;
    final Slot[] tensors;
    final long held; // the declared bytes, plus PER_TRANSFER_BYTES
    final CRC32C crc = new CRC32C();
    final Blake3 digest; // of every part, for a signed head
    int next = 1;
    long arrived; // bytes of the records taken, the head's included
    long decoded; // bytes the chunks decode to (a lossy chunk's logical size)

    Transfer(String id, Envelope envelope, Message body, Slot[] tensors, long held,
        boolean signed) {
      this.id = id;
      this.envelope = envelope;
      this.type = Envelopes.type(envelope);
      this.body = body;
      this.tensors = tensors;
      this.held = held;
      this.digest = signed ? Blake3.initHash() : null;
    }

    void take(byte[] value) {
      arrived += value.length;
      crc.update(value);
      if (digest != null) {
        digest.update(value);
      }
    }
  }

  /** A record value parsed as a StreamPart: exactly one of head, chunk and seal is set. */
  record Part(String transferId, long index, StreamHead head, Chunk chunk, StreamSeal seal) {}

  /** A TensorChunk, walked by hand: its elements are a TensorMap's bytes, parsed later. */
  record Chunk(long tensorIndex, long elementOffset, byte[] elements) {}

  private final Limits limits;
  private final long maxStreamBytes;
  private final long maxPendingBytes;
  private final int maxStreams;
  private final Map<String, Transfer> open = new HashMap<>();
  private final LinkedHashSet<String> ended = new LinkedHashSet<>();
  private long pendingBytes;
  private int skipped;

  /** A reader with the limits of section 11 and flwire-python's stream bounds. */
  public StreamReader() {
    this(Limits.DEFAULT, DEFAULT_MAX_STREAM_BYTES, DEFAULT_MAX_PENDING_BYTES, DEFAULT_MAX_STREAMS);
  }

  /** A reader with these limits of section 11 and flwire-python's stream bounds. */
  public StreamReader(Limits limits) {
    this(limits, DEFAULT_MAX_STREAM_BYTES, DEFAULT_MAX_PENDING_BYTES, DEFAULT_MAX_STREAMS);
  }

  public StreamReader(Limits limits, long maxStreamBytes, long maxPendingBytes, int maxStreams) {
    this.limits = limits;
    this.maxStreamBytes = maxStreamBytes;
    this.maxPendingBytes = maxPendingBytes;
    this.maxStreams = maxStreams;
  }

  /** Transfers under way. */
  public int pending() {
    return open.size();
  }

  /** Parts skipped: copies of parts already taken, parts of transfers that ended. */
  public int skipped() {
    return skipped;
  }

  /**
   * Takes one record value. Returns the message when it was a seal that checked out, null when
   * the part was taken (or skipped, see {@link #skipped()}); throws the refusal otherwise.
   */
  public StreamMessage add(byte[] value) {
    Part p = parse(value); // a bad record ends no transfer: its transfer id cannot be trusted
    if (ended.contains(p.transferId())) {
      skipped++;
      return null;
    }
    Transfer t = open.get(p.transferId());
    if (t == null) {
      if (p.head() == null) {
        end(p.transferId());
        throw new FlwireException("stream_no_head", "part " + p.index() + " of "
            + p.transferId() + ", whose head this reader did not see");
      }
      try {
        t = start(p);
      } catch (FlwireException e) {
        end(p.transferId());
        throw e;
      }
      t.take(value);
      open.put(t.id, t);
      pendingBytes += t.held;
      return null;
    }
    if (p.index() < t.next) {
      skipped++; // a redelivered copy, whatever its bytes
      return null;
    }
    if (p.index() > t.next) {
      throw giveUp(t, new FlwireException("stream_gap", "part " + p.index() + " of " + t.id
          + " where part " + t.next + " was expected"));
    }
    t.next++;
    if (p.chunk() != null) {
      t.take(value);
      try {
        chunk(t, p.chunk());
      } catch (FlwireException e) {
        throw giveUp(t, e.in("part " + p.index()));
      }
      return null;
    }
    return seal(t, p.seal());
  }

  private void end(String id) {
    ended.add(id);
    if (ended.size() > MAX_ENDED) {
      ended.remove(ended.iterator().next());
    }
  }

  private FlwireException giveUp(Transfer t, FlwireException e) {
    open.remove(t.id);
    pendingBytes -= t.held;
    end(t.id); // its buffers go with it
    return e;
  }

  private static FlwireException bad(String why) {
    return new FlwireException("stream_part", why);
  }

  /**
   * Walks a record value's fields by hand ([stream_part]): the item fields must occur exactly
   * once in all, a chunk's elements field once (protobuf would merge repeated message fields), and
   * part_index and tensor_index must fit 32 bits (protobuf-java would keep their low 32 bits).
   */
  static Part parse(byte[] b) {
    byte[] id = null;
    long index = 0;
    int items = 0;
    int itemField = 0;
    ByteString item = null;
    try {
      CodedInputStream in = CodedInputStream.newInstance(b);
      while (!in.isAtEnd()) {
        int tag = in.readTag();
        int num = WireFormat.getTagFieldNumber(tag);
        int wt = WireFormat.getTagWireType(tag);
        if (num == 1 || num >= 3 && num <= 5) {
          if (wt != WireFormat.WIRETYPE_LENGTH_DELIMITED) {
            throw bad("field " + num + " is not length-delimited");
          }
          ByteString v = in.readBytes();
          if (num == 1) {
            id = v.toByteArray();
          } else {
            items++;
            itemField = num;
            item = v;
          }
        } else if (num == 2) {
          if (wt != WireFormat.WIRETYPE_VARINT) {
            throw bad("part_index is not a varint");
          }
          index = uint32(in.readRawVarint64(), "part_index");
        } else if (!in.skipField(tag)) {
          throw bad("an end-group tag at the top level");
        }
      }
    } catch (InvalidProtocolBufferException e) {
      throw new FlwireException("stream_part", e.getMessage(), e);
    } catch (IOException e) {
      throw new FlwireException("stream_part", e.getMessage(), e);
    }
    String transferId = transferId(id);
    if (items != 1) {
      throw bad(items + " of head, chunk and seal, where exactly one is allowed");
    }
    StreamHead head = null;
    StreamSeal seal = null;
    Chunk chunk = null;
    try {
      switch (itemField) {
        case 3 -> head = StreamHead.parseFrom(item);
        case 5 -> seal = StreamSeal.parseFrom(item);
        default -> chunk = parseChunk(item);
      }
    } catch (InvalidProtocolBufferException e) {
      throw bad((itemField == 3 ? "head: " : "seal: ") + e.getMessage());
    }
    if ((index == 0) != (head != null)) {
      throw bad("part " + index + (head != null ? " holds a head" : " holds no head")
          + ": the head is part 0, and only it");
    }
    return new Part(transferId, index, head, chunk, seal);
  }

  private static long uint32(long v, String what) {
    if (Long.compareUnsigned(v, 0xFFFFFFFFL) > 0) {
      throw bad(what + " " + Long.toUnsignedString(v) + " does not fit 32 bits");
    }
    return v;
  }

  private static String transferId(byte[] id) {
    if (id == null || id.length == 0 || id.length > Envelopes.MAX_ID_BYTES) {
      throw bad("transfer_id absent, empty or longer than " + Envelopes.MAX_ID_BYTES + " bytes");
    }
    try {
      return StandardCharsets.UTF_8.newDecoder()
          .onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT)
          .decode(ByteBuffer.wrap(id)).toString();
    } catch (CharacterCodingException e) {
      throw bad("transfer_id is not valid UTF-8");
    }
  }

  private static Chunk parseChunk(ByteString b) {
    long tensor = 0;
    long offset = 0;
    byte[] elements = null;
    try {
      CodedInputStream in = b.newCodedInput();
      while (!in.isAtEnd()) {
        int tag = in.readTag();
        int num = WireFormat.getTagFieldNumber(tag);
        int wt = WireFormat.getTagWireType(tag);
        if (num == 1 || num == 2) {
          if (wt != WireFormat.WIRETYPE_VARINT) {
            throw bad("chunk field " + num + " is not a varint");
          }
          long v = in.readRawVarint64();
          if (num == 1) {
            tensor = uint32(v, "tensor_index");
          } else {
            offset = v;
          }
        } else if (num == 3) {
          if (wt != WireFormat.WIRETYPE_LENGTH_DELIMITED) {
            throw bad("elements is not length-delimited");
          }
          if (elements != null) {
            throw bad("the chunk gives its elements twice");
          }
          elements = in.readByteArray();
        } else if (!in.skipField(tag)) {
          throw bad("an end-group tag in the chunk");
        }
      }
    } catch (IOException e) {
      throw new FlwireException("stream_part", "chunk: " + e.getMessage(), e);
    }
    if (elements == null) {
      throw bad("a chunk without elements");
    }
    return new Chunk(tensor, offset, elements);
  }

  private static FlwireException head(String why) {
    return new FlwireException("stream_head", why);
  }

  /** The body's TensorMap field (weights; a PartialAggregate's sums), or null. */
  private static FieldDescriptor tensorMapField(Message body) {
    for (FieldDescriptor f : body.getDescriptorForType().getFields()) {
      if (f.getType() == FieldDescriptor.Type.MESSAGE && !f.isRepeated()
          && f.getMessageType().equals(TensorMap.getDescriptor())) {
        return f;
      }
    }
    return null;
  }

  /** Checks a head ([stream_head]) and opens its transfer. */
  private Transfer start(Part p) {
    StreamHead h = p.head();
    if (!h.hasEnvelope()) {
      throw head("no envelope");
    }
    Envelope env = h.getEnvelope();
    FieldDescriptor weights = null;
    if (env.getBodyCase() != Envelope.BodyCase.BODY_NOT_SET) {
      weights = tensorMapField((Message) env.getField(
          Envelope.getDescriptor().findFieldByNumber(env.getBodyCase().getNumber())));
    }
    Message body;
    try {
      body = Envelopes.check(env, weights); // the weights counted as present
    } catch (FlwireException e) {
      throw e.as("stream_head");
    }
    String type = Envelopes.type(env);
    if (weights == null) {
      throw head("a " + type + " carries no weights");
    }
    if (body.hasField(weights)) {
      throw head("the head's " + type + " has its " + weights.getName() + " field");
    }
    if (env.hasSignature()) {
      throw head("the head's envelope is signed: a stream is signed in its seal");
    }
    if (!env.getMessageId().equals(p.transferId())) {
      throw head("message_id " + env.getMessageId() + " is not the transfer_id "
          + p.transferId());
    }
    if (h.getTensorsCount() > limits.maxTensors()) {
      throw head(h.getTensorsCount() + " tensors, above max_tensors " + limits.maxTensors());
    }
    Set<String> names = new HashSet<>();
    Slot[] slots = new Slot[h.getTensorsCount()];
    long declared = 0;
    for (int i = 0; i < slots.length; i++) {
      TensorInfo info = h.getTensors(i);
      String what = "tensor " + i + " (\"" + info.getName() + "\"): ";
      int width = Dtypes.width(info.getDtypeValue());
      if (width == 0) {
        throw head(what + "dtype " + info.getDtypeValue());
      }
      if (!names.add(info.getName())) {
        throw head(what + "a second tensor of that name");
      }
      if (info.getShapeCount() > limits.maxRank()) {
        throw head(what + "rank " + info.getShapeCount() + ", above max_rank " + limits.maxRank());
      }
      // Check 2 of section 10: product(max(d, 1)) x width below 2^63; then the size.
      BigInteger span = BigInteger.valueOf(width);
      BigInteger numel = BigInteger.ONE;
      for (long d : info.getShapeList()) {
        BigInteger du = new BigInteger(Long.toUnsignedString(d));
        span = span.multiply(du.max(BigInteger.ONE));
        if (span.compareTo(TWO_63) >= 0) {
          throw head(what + "shape " + info.getShapeList() + " overflows: strides of 2^63 bytes"
              + " or more");
        }
        numel = numel.multiply(du);
      }
      long size = numel.longValueExact() * width; // at most span
      if (size > MAX_TENSOR_BYTES) {
        throw head(what + size + " bytes, above this reader's " + MAX_TENSOR_BYTES
            + " per tensor");
      }
      declared += size;
      if (declared > maxStreamBytes) {
        throw head("the tensors declare more than max_stream_bytes " + maxStreamBytes);
      }
      slots[i] = new Slot(info, width, numel.longValueExact());
    }
    if (open.size() >= maxStreams) {
      throw head(open.size() + " transfers under way, max_streams " + maxStreams);
    }
    long held = declared + PER_TRANSFER_BYTES;
    if (pendingBytes + held > maxPendingBytes) {
      throw head("the transfers under way would hold more than max_pending_bytes "
          + maxPendingBytes);
    }
    return new Transfer(p.transferId(), env, body, slots, held, h.getSigned());
  }

  /**
   * Checks a chunk against its transfer, every Tensor of it before any is decoded, then decodes
   * each straight into its tensor: the first holds elements of tensor_index from element_offset,
   * the i-th after it (a packed chunk, i = 1, 2, ...) elements of tensor tensor_index + i from its
   * element 0, and every one but the last holds the rest of its tensor ([chunk_packed]).
   */
  private void chunk(Transfer t, Chunk c) {
    slot(t, c.tensorIndex(), c.elementOffset(), "");
    TensorMap m;
    try {
      m = TensorMap.parseFrom(c.elements());
    } catch (InvalidProtocolBufferException e) {
      throw new FlwireException("chunk_elements", e.getMessage(), e);
    }
    int n = m.getTensorsCount();
    if (n == 0) {
      throw new FlwireException("chunk_elements", "no tensors, where one or more are expected");
    }
    Slot[] slots = new Slot[n];
    long[] counts = new long[n];
    long bytes = 0;
    for (int i = 0; i < n; i++) {
      // The chunk's tensors are unnamed: checked here, so check 9 (unique names) is not made.
      String packed = i == 0 ? "" : " (the chunk's tensor " + (i + 1) + " of " + n + ", packed)";
      Slot s = i == 0 ? t.tensors[(int) c.tensorIndex()] : slot(t, c.tensorIndex() + i, 0, packed);
      String name = "\"" + s.info.getName() + "\"";
      Tensor e = m.getTensors(i);
      if (!e.getName().isEmpty() || e.getDtypeValue() != s.info.getDtypeValue()
          || e.getShapeCount() != 1 || e.getShape(0) == 0) {
        throw new FlwireException("chunk_elements", "\"" + e.getName() + "\" of dtype "
            + e.getDtypeValue() + ", shape " + e.getShapeList() + packed + ": not one unnamed 1-D"
            + " tensor of " + name + "'s dtype " + s.info.getDtypeValue() + " with elements");
      }
      long k = e.getShape(0); // uint64
      long left = s.numel - s.filled;
      if (Long.compareUnsigned(k, left) > 0) {
        throw new FlwireException("chunk_overrun", Long.toUnsignedString(k) + " elements at element " + s.filled + " of "
            + name + ", which has " + s.numel + packed);
      }
      if (i < n - 1 && k != left) {
        throw new FlwireException("chunk_packed", "the chunk's tensor " + (i + 1) + " of " + n
            + " holds " + k + " of the " + left + " elements left of " + name
            + ": every tensor of a chunk but its last must end its tensor");
      }
      slots[i] = s;
      counts[i] = k;
      bytes += k * s.width; // each at most MAX_TENSOR_BYTES, at most 2^32 of them: no overflow
    }
    List<List<Frames.Frame>> frames;
    try {
      // Checks 1 to 9 (but unique names); a lossy tensor's, those of section 9.1 (lossy_method,
      // lossy_dtype, lossy_params, lossy_not_smaller, lossy_size, lossy_filter) of a tensor of
      // shape [k], its logical size (k x width) counted towards the limits and the expansion
      // bound.
      frames = TensorMapReader.check(m, c.elements().length, limits, false);
    } catch (FlwireException x) {
      throw x.as("chunk_elements");
    }
    // Each k x width: raw_size checked above, or a lossy tensor's logical size.
    expansion(t, bytes);
    for (int i = 0; i < n; i++) {
      Slot s = slots[i];
      Tensor e = m.getTensors(i);
      if (s.raw == null) {
        s.raw = new byte[Math.toIntExact(s.numel * s.width)];
      }
      int at = Math.toIntExact(s.filled * s.width);
      try {
        if (TensorMapReader.lossyOf(e) == null) {
          TensorMapReader.decodeInto(e, frames.get(i), s.width, s.raw, at);
        } else {
          // Section 9.1, as for a whole lossy tensor: the payload decoded (decompression, its
          // CRC-32C), then its k elements reconstructed (top-k's indices checked).
          byte[] elements = TensorMapReader.decodeData(e, frames.get(i)).raw();
          System.arraycopy(elements, 0, s.raw, at, elements.length);
        }
      } catch (FlwireException x) {
        boolean decode = Set.of("decompress", "crc32c", "bool", "topk_indices").contains(x.check());
        FlwireException y = x.as(decode ? "chunk_decode" : "chunk_elements");
        throw n == 1 ? y : y.in("the chunk's tensor " + (i + 1) + " of " + n);
      }
      s.filled += counts[i];
    }
  }

  /**
   * The tensor a Tensor of a chunk holds elements of: index below the head's tensor count
   * ([chunk_tensor_index]), offset the next element expected of it ([chunk_offset]).
   */
  private static Slot slot(Transfer t, long index, long offset, String packed) {
    if (Long.compareUnsigned(index, t.tensors.length) >= 0) {
      throw new FlwireException("chunk_tensor_index", "tensor_index " + index + " of "
          + t.tensors.length + " tensors" + packed);
    }
    Slot s = t.tensors[(int) index];
    if (offset != s.filled) {
      throw new FlwireException("chunk_offset", "\"" + s.info.getName() + "\" at element "
          + Long.toUnsignedString(offset) + ", where " + s.filled + " is expected" + packed);
    }
    return s;
  }

  /**
   * Counts a chunk's decoded bytes towards its transfer's, refused past what the records received
   * allow (section 14.5, a SHOULD): at most {@code max(expansion_floor_bytes, max_expansion x the
   * bytes of the transfer's records so far)}, the head's included, so that a few compressed records
   * cannot fill gigabytes of tensor memory. Checked before the chunk is decoded or its tensor's
   * buffer made; a max_expansion of 0 (none) turns it off, as for a whole TensorMap.
   */
  private void expansion(Transfer t, long bytes) {
    t.decoded += bytes;
    if (limits.maxExpansion() <= 0) {
      return;
    }
    double allowed = Math.max((double) limits.expansionFloorBytes(),
        limits.maxExpansion() * t.arrived);
    if (t.decoded > allowed) {
      throw new FlwireException("max_expansion", "the stream's chunks decode to " + t.decoded
          + " bytes from " + t.arrived + " bytes of records, over " + limits.maxExpansion()
          + " times their size (max(" + limits.expansionFloorBytes() + ", "
          + limits.maxExpansion() + " x the records' size))").as("chunk_elements");
    }
  }

  /** Checks the seal against what arrived and hands the message out. */
  private StreamMessage seal(Transfer t, StreamSeal seal) {
    if (Integer.toUnsignedLong(seal.getPartCount()) != t.next) {
      throw giveUp(t, new FlwireException("stream_part_count", "the seal counts "
          + Integer.toUnsignedString(seal.getPartCount()) + " parts, " + t.next + " arrived"));
    }
    int crc = (int) t.crc.getValue();
    if (seal.getStreamCrc32C() != crc) {
      throw giveUp(t, new FlwireException("stream_crc32c", String.format(
          "the parts have CRC-32C %08x, the seal says %08x", crc, seal.getStreamCrc32C())));
    }
    for (Slot s : t.tensors) {
      if (s.filled != s.numel) {
        throw giveUp(t, new FlwireException("stream_incomplete", "\"" + s.info.getName()
            + "\" got " + s.filled + " of its " + s.numel + " elements"));
      }
    }
    if (seal.hasSignature() != (t.digest != null)) {
      throw giveUp(t, new FlwireException("stream_signed", "the seal "
          + (seal.hasSignature() ? "carries" : "lacks") + " a signature, the head says signed = "
          + (t.digest != null)));
    }
    open.remove(t.id);
    pendingBytes -= t.held;
    end(t.id);
    List<StreamTensor> tensors = new ArrayList<>(t.tensors.length);
    for (Slot s : t.tensors) {
      tensors.add(new StreamTensor(s.info.getName(), s.info.getDtypeValue(),
          s.info.getShapeList().stream().mapToLong(Long::longValue).toArray(),
          s.raw == null ? new byte[0] : s.raw));
    }
    byte[] digest = null;
    if (t.digest != null) {
      digest = new byte[32];
      t.digest.doFinalize(digest);
    }
    return new StreamMessage(t.id, t.envelope, t.type, t.body, tensors,
        seal.hasSignature() ? seal.getSignature() : null, digest, crc, t.next);
  }
}
