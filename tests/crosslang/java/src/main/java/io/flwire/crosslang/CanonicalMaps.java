package io.flwire.crosslang;

import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.Message;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * Map entries in flwire writers' order (spec section 2.3, rule 6): by the UTF-8 bytes of their
 * keys, a key that is a prefix of another after it (protobuf-python's deterministic order).
 * protobuf-java's deterministic order puts the prefix first, so a message is rebuilt with its map
 * entries inserted in this order, at every depth, and serialized in insertion order.
 */
final class CanonicalMaps {
  private CanonicalMaps() {}

  static final Comparator<String> KEY_ORDER = (a, b) -> {
    byte[] x = a.getBytes(StandardCharsets.UTF_8);
    byte[] y = b.getBytes(StandardCharsets.UTF_8);
    int common = Math.min(x.length, y.length);
    int c = java.util.Arrays.compareUnsigned(x, 0, common, y, 0, common);
    return c != 0 ? c : Integer.compare(y.length, x.length);
  };

  @SuppressWarnings("unchecked")
  static <M extends Message> M sorted(M m) {
    Message.Builder b = m.toBuilder();
    for (FieldDescriptor f : m.getDescriptorForType().getFields()) {
      if (f.getJavaType() != FieldDescriptor.JavaType.MESSAGE) {
        continue;
      }
      if (f.isMapField()) {
        List<Message> entries = new ArrayList<>();
        for (Object e : (List<?>) m.getField(f)) {
          entries.add(sorted((Message) e));
        }
        FieldDescriptor key = f.getMessageType().findFieldByNumber(1);
        if (key.getType() == FieldDescriptor.Type.STRING) {
          entries.sort(Comparator.comparing(e -> (String) e.getField(key), KEY_ORDER));
        }
        b.setField(f, entries);
      } else if (f.isRepeated()) {
        List<Message> items = new ArrayList<>();
        for (Object e : (List<?>) m.getField(f)) {
          items.add(sorted((Message) e));
        }
        b.setField(f, items);
      } else if (m.hasField(f)) {
        b.setField(f, sorted((Message) m.getField(f)));
      }
    }
    return (M) b.build();
  }

  /** The message's bytes with its map entries in flwire writers' order. */
  static byte[] serialize(Message m) {
    return sorted(m).toByteArray(); // not deterministic: maps in insertion order
  }
}
