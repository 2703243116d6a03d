package io.flwire.crosslang;

import com.google.gson.JsonObject;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.UUID;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * The command line of the Java consumer.
 *
 * <pre>
 * java -jar flwire-consume.jar --bootstrap HOST:PORT --topics t1,t2 --expect N [--timeout-s 60]
 * java -jar flwire-consume.jar produce-update --bootstrap HOST:PORT --topic JOB.updates
 *     --client-id ID --round R [--from-global FILE|none] [--examples N]
 * </pre>
 *
 * The first reads the topics from their earliest offset with a group id of its own, reassembles
 * transfer parts, reads streamed transfers (a record with the flwire-stream header: section 14.5,
 * {@link StreamReader}), decodes every envelope and its weights (CRCs checked), and prints one
 * JSON line per distinct message, sorted by message_id; it exits 1 if fewer than N distinct messages arrive
 * in time. The second writes one ClientUpdate (see {@link ProduceUpdate}).
 */
public final class Consume {
  private Consume() {}

  public static void main(String[] args) throws Exception {
    System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
    System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
    List<String> list = Arrays.asList(args);
    try {
      if (!list.isEmpty() && list.get(0).equals("produce-update")) {
        ProduceUpdate.run(options(list.subList(1, list.size())));
      } else {
        System.exit(consume(options(list)));
      }
    } catch (IllegalArgumentException e) {
      System.err.println("flwire-consume: " + e.getMessage());
      System.exit(2);
    }
  }

  static Map<String, String> options(List<String> args) {
    Map<String, String> out = new HashMap<>();
    for (int i = 0; i < args.size(); i++) {
      String a = args.get(i);
      if (!a.startsWith("--") || i + 1 >= args.size()) {
        throw new IllegalArgumentException("expected --name value, got " + a);
      }
      out.put(a.substring(2), args.get(++i));
    }
    return out;
  }

  static String required(Map<String, String> o, String name) {
    String v = o.get(name);
    if (v == null) {
      throw new IllegalArgumentException("--" + name + " is required");
    }
    return v;
  }

  private static String header(ConsumerRecord<byte[], byte[]> r, String name) {
    Header h = r.headers().lastHeader(name);
    return h == null ? null : new String(h.value(), StandardCharsets.UTF_8);
  }

  static int consume(Map<String, String> o) {
    String bootstrap = required(o, "bootstrap");
    List<String> topics = Arrays.asList(required(o, "topics").split(","));
    int expect = Integer.parseInt(required(o, "expect"));
    double timeoutS = Double.parseDouble(o.getOrDefault("timeout-s", "60"));
    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ConsumerConfig.GROUP_ID_CONFIG, "flwire-crosslang-java-" + UUID.randomUUID());
    p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    p.put(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, String.valueOf(16 << 20));
    p.put(ConsumerConfig.FETCH_MAX_BYTES_CONFIG, String.valueOf(64 << 20));
    Map<String, JsonObject> seen = new TreeMap<>();
    Reassembler parts = new Reassembler();
    StreamReader streams = new StreamReader();
    int records = 0;
    long deadline = System.nanoTime() + (long) (timeoutS * 1e9);
    try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p, new ByteArrayDeserializer(),
        new ByteArrayDeserializer())) {
      c.subscribe(topics);
      while (seen.size() < expect && System.nanoTime() < deadline) {
        for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
          records++;
          if (header(r, "flwire-stream") != null) {
            StreamReader.StreamMessage m = streams.add(r.value());
            if (m != null) { // the seal: its headers are the message's
              check(r, "flwire-message-id", m.envelope().getMessageId());
              check(r, "flwire-type", m.type());
              check(r, "flwire-sender-id", m.envelope().getSenderId());
              seen.putIfAbsent(m.envelope().getMessageId(), Summary.of(m));
            }
            continue;
          }
          byte[] whole = header(r, "flwire-part") != null ? parts.add(r.value()) : r.value();
          if (whole == null) {
            continue;
          }
          Envelopes.Decoded d = Envelopes.decode(whole, Limits.DEFAULT);
          String id = d.envelope().getMessageId();
          check(r, "flwire-message-id", id);
          check(r, "flwire-type", d.type());
          check(r, "flwire-sender-id", d.envelope().getSenderId());
          seen.putIfAbsent(id, Summary.of(d));
        }
      }
    }
    seen.values().forEach(System.out::println);
    System.err.printf("flwire-consume: %d records, %d messages, %d duplicate parts ignored, "
        + "%d transfers incomplete, %d streamed transfers under way, %d stream parts skipped%n",
        records, seen.size(), parts.duplicates(), parts.pending(), streams.pending(),
        streams.skipped());
    if (seen.size() < expect) {
      System.err.printf("flwire-consume: %d distinct messages within %.0f s, expected %d%n",
          seen.size(), timeoutS, expect);
      return 1;
    }
    return 0;
  }

  private static void check(ConsumerRecord<byte[], byte[]> r, String name, String want) {
    String got = header(r, name);
    if (got != null && !got.equals(want)) {
      throw new FlwireException("envelope", "header " + name + " is " + got + ", the envelope says "
          + want);
    }
  }
}
