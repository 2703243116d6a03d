package io.flwire.crosslang;

import com.google.protobuf.ByteString;
import com.google.protobuf.Timestamp;
import flwire.v1.Messages.ClientUpdate;
import flwire.v1.Messages.Envelope;
import flwire.v1.Messages.SchemaVersion;
import flwire.v1.TensorOuterClass.Dtype;
import flwire.v1.TensorOuterClass.TensorMap;
import flwire.v1.Transfer.TransferPart;
import flwire.v1.Values.Value;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * {@code produce-update}: writes one ClientUpdate with this consumer's own encoder, as a flwire
 * client would (spec sections 9, 14 and 14.1): weights with the names, dtypes and shapes of the
 * global model (from {@code --from-global}, an encoded global update envelope; {@code none}: a
 * built-in layout), each element a known value (see {@link #value}), zstd-compressed; the
 * envelope split into TransferParts when it is above the 1,000,000-byte record limit, each record
 * with the flwire headers and the client id as key. Prints the message's summary line.
 */
final class ProduceUpdate {
  private ProduceUpdate() {}

  /** Kafka's default record limit, which flwire never raises (section 14.1). */
  static final int RECORD_LIMIT = 1_000_000;

  /** Room for the record's key, headers and the TransferPart's own fields. */
  static final int PART_HEADROOM = 4096;

  record Layout(String name, int dtype, long[] shape) {}

  /**
   * The known values (the live test's contract, shared with the TypeScript consumer): for tensor
   * j (0-based, in the global model's order) and its element of flat C-order index i, with
   * h = ((i + 1) * 2654435761 + j * 40503) mod 2^32: float32 and float64 ((h >>> 8) - 2^23) / 256,
   * float16 ((h >>> 21) - 1024) / 16, int64 h; all exact in their dtype.
   */
  static long hash(long i, int j) {
    return ((i + 1) * 2654435761L + j * 40503L) & 0xffffffffL;
  }

  static byte[] values(int j, Layout l) {
    long n = 1;
    for (long d : l.shape()) {
      n *= d;
    }
    int w = Dtypes.width(l.dtype());
    ByteBuffer b = ByteBuffer.allocate(Math.toIntExact(n * w)).order(ByteOrder.LITTLE_ENDIAN);
    for (long i = 0; i < n; i++) {
      long h = hash(i, j);
      switch (l.dtype()) {
        case Dtype.DTYPE_FLOAT32_VALUE -> b.putFloat(((h >>> 8) - 8388608) / 256f);
        case Dtype.DTYPE_FLOAT64_VALUE -> b.putDouble(((h >>> 8) - 8388608) / 256.0);
        case Dtype.DTYPE_FLOAT16_VALUE -> b.putShort((short) Floats.float32ToFloat16(
            Float.floatToRawIntBits(((h >>> 21) - 1024) / 16f)));
        case Dtype.DTYPE_INT64_VALUE -> b.putLong(h);
        default -> throw new IllegalArgumentException("tensor " + l.name() + ": dtype "
            + Dtypes.name(l.dtype()) + " has no known values in this writer");
      }
    }
    return b.array();
  }

  static List<Layout> layout(String fromGlobal) throws java.io.IOException {
    List<Layout> out = new ArrayList<>();
    if (fromGlobal.equals("none")) {
      out.add(new Layout("encoder.weight", Dtype.DTYPE_FLOAT32_VALUE, new long[] {768, 1024}));
      out.add(new Layout("head.weight", Dtype.DTYPE_FLOAT16_VALUE, new long[] {64, 64}));
      out.add(new Layout("steps", Dtype.DTYPE_INT64_VALUE, new long[] {10}));
      return out;
    }
    Envelopes.Decoded g = Envelopes.decode(Files.readAllBytes(Path.of(fromGlobal)), Limits.DEFAULT);
    if (g.weights() == null) {
      throw new IllegalArgumentException(fromGlobal + " holds a " + g.type() + " without weights");
    }
    for (TensorMapReader.DecodedTensor t : g.weights().tensors()) {
      out.add(new Layout(t.name(), t.dtype(), t.shape()));
    }
    return out;
  }

  static void run(Map<String, String> o) throws Exception {
    String bootstrap = Consume.required(o, "bootstrap");
    String topic = Consume.required(o, "topic");
    String clientId = Consume.required(o, "client-id");
    long round = Long.parseLong(Consume.required(o, "round"));
    long examples = Long.parseLong(o.getOrDefault("examples", "100"));
    List<TensorMapWriter.WireTensor> tensors = new ArrayList<>();
    List<Layout> layout = layout(o.getOrDefault("from-global", "none"));
    for (int j = 0; j < layout.size(); j++) {
      Layout l = layout.get(j);
      tensors.add(TensorMapWriter.encodeTensor(l.name(), l.dtype(), l.shape(), values(j, l),
          Frames.CODEC_ZSTD, 1, false, null));
    }
    TensorMap weights = TensorMap.parseFrom(TensorMapWriter.encode(tensors, Map.of()));
    Instant now = Instant.now();
    Envelope env = Envelope.newBuilder()
        .setMessageId(UUID.randomUUID().toString())
        .setSenderId(clientId)
        .setTimestamp(Timestamp.newBuilder().setSeconds(now.getEpochSecond())
            .setNanos(now.getNano()))
        .setSchemaVersion(SchemaVersion.newBuilder().setMajor(1).setMinor(2))
        .setClientUpdate(ClientUpdate.newBuilder().setClientId(clientId).setRoundId(round)
            .setWeights(weights).setNumExamples(examples)
            .putMetrics("loss", Value.newBuilder().setDoubleValue(0.5).build()))
        .build();
    byte[] blob = Envelopes.encode(env);
    // What this writer wrote must read back: decoded by its own reader, CRCs checked.
    Envelopes.Decoded back = Envelopes.decode(blob, Limits.DEFAULT);
    List<byte[]> values = new ArrayList<>();
    List<String> partHeaders = new ArrayList<>();
    if (blob.length + PART_HEADROOM <= RECORD_LIMIT) {
      values.add(blob);
      partHeaders.add(null);
    } else {
      int chunk = RECORD_LIMIT - PART_HEADROOM;
      int count = (blob.length + chunk - 1) / chunk;
      int crc = TensorMapReader.crc32c(blob);
      for (int i = 0; i < count; i++) {
        int start = i * chunk;
        int len = Math.min(chunk, blob.length - start);
        values.add(TransferPart.newBuilder().setTransferId(env.getMessageId()).setPartIndex(i)
            .setPartCount(count).setTotalSize(blob.length).setOffset(start)
            .setPayloadCrc32C(crc).setData(ByteString.copyFrom(blob, start, len)).build()
            .toByteArray());
        partHeaders.add(i + "/" + count);
      }
    }
    Properties p = new Properties();
    p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ProducerConfig.ACKS_CONFIG, "all");
    p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
    p.put(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, "1"); // parts stay in order
    try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p,
        new ByteArraySerializer(), new ByteArraySerializer())) {
      for (int i = 0; i < values.size(); i++) {
        ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(topic, null,
            clientId.getBytes(StandardCharsets.UTF_8), values.get(i));
        Envelopes.headers(env).forEach((k, hv) ->
            r.headers().add(new RecordHeader(k, hv.getBytes(StandardCharsets.UTF_8))));
        if (partHeaders.get(i) != null) {
          r.headers().add(new RecordHeader("flwire-part",
              partHeaders.get(i).getBytes(StandardCharsets.UTF_8)));
        }
        producer.send(r).get();
      }
    }
    System.err.printf("flwire-consume: wrote %s (%d bytes) to %s in %d record(s)%n",
        env.getMessageId(), blob.length, topic, values.size());
    System.out.println(Summary.of(back));
  }
}
