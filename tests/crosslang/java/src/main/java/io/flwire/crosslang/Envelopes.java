package io.flwire.crosslang;

import com.google.protobuf.ByteString;
import com.google.protobuf.CodedOutputStream;
import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import flwire.v1.Messages.Envelope;
import flwire.v1.Options;
import flwire.v1.Options.FieldRules;
import flwire.v1.TensorOuterClass.TensorMap;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;

/** The envelope of spec section 14: reading it (with its rules) and writing it (with padding). */
public final class Envelopes {
  private Envelopes() {}

  public static final int MAX_ID_BYTES = 128;
  private static final long MIN_SECONDS = -62_135_596_800L;
  private static final long MAX_SECONDS = 253_402_300_799L;

  /** A decoded envelope: the message, its body's field name and body, and its weights. */
  public record Decoded(Envelope envelope, String type, Message body,
      TensorMapReader.DecodedMap weights) {
    /** The body's round_id, or -1 when the body has none. */
    public long round() {
      FieldDescriptor f = body.getDescriptorForType().findFieldByName("round_id");
      return f == null ? -1 : (Long) body.getField(f);
    }
  }

  /** Parses and checks an envelope (section 14), then decodes its weights if it has any. */
  public static Decoded decode(byte[] b, Limits lim) {
    Envelope env;
    try {
      env = Envelope.parseFrom(b);
    } catch (InvalidProtocolBufferException e) {
      throw new FlwireException("protobuf", "envelope: " + e.getMessage(), e);
    }
    Message body = check(env, null);
    String type = type(env);
    TensorMapReader.DecodedMap weights = null;
    FieldDescriptor wf = weightsField(body);
    if (wf != null && body.hasField(wf)) {
      TensorMap m = (TensorMap) body.getField(wf);
      weights = TensorMapReader.decode(m, m.getSerializedSize(), lim);
    }
    return new Decoded(env, type, body, weights);
  }

  /**
   * The checks of sections 14 and 14.2 (a known major version, a body, bounded ids, a timestamp
   * in range, extension keys, custom.type, and the body's (flwire.v1.field) rules read from the
   * descriptors: required, non_negative). present: a field counted as set whatever it holds (a
   * streamed transfer's head, section 14.5, has its weights field absent), or null. Returns the
   * body.
   */
  static Message check(Envelope env, FieldDescriptor present) {
    if (!env.hasSchemaVersion() || env.getSchemaVersion().getMajor() != 1) {
      throw new FlwireException("envelope", "schema_version major "
          + (env.hasSchemaVersion() ? env.getSchemaVersion().getMajor() : 0)
          + " (this reader knows 1)");
    }
    if (env.getMessageId().isEmpty()) {
      throw new FlwireException("envelope", "message_id is required");
    }
    checkId("message_id", env.getMessageId());
    checkId("sender_id", env.getSenderId());
    if (env.hasTimestamp()) {
      long s = env.getTimestamp().getSeconds();
      int n = env.getTimestamp().getNanos();
      if (s < MIN_SECONDS || s > MAX_SECONDS || n < 0 || n > 999_999_999) {
        throw new FlwireException("envelope", "timestamp out of range: " + s + " s, " + n + " ns");
      }
    }
    if (env.getBodyCase() == Envelope.BodyCase.BODY_NOT_SET) {
      throw new FlwireException("envelope", "the envelope has no body");
    }
    FieldDescriptor bodyField = Envelope.getDescriptor()
        .findFieldByNumber(env.getBodyCase().getNumber());
    Message body = (Message) env.getField(bodyField);
    if (env.hasCustom()) {
      String ct = env.getCustom().getType();
      if (ct.isEmpty()) {
        throw new FlwireException("envelope", "custom.type is required");
      }
      if (Envelope.getDescriptor().getRealOneofs().get(0).getFields().stream()
          .anyMatch(f -> f.getName().equals(ct))) {
        throw new FlwireException("envelope", "custom.type names the body field " + ct);
      }
    }
    for (String key : env.getExtensionsMap().keySet()) {
      if (key.equals("weights") || body.getDescriptorForType().findFieldByName(key) != null) {
        throw new FlwireException("envelope", "extensions key " + key
            + " names a field of the body");
      }
    }
    for (FieldDescriptor f : body.getDescriptorForType().getFields()) {
      FieldRules rules = f.getOptions().getExtension(Options.field);
      String at = bodyField.getName() + "." + f.getName();
      if (rules.getRequired() && !f.equals(present) && !f.isRepeated()
          && (f.getJavaType() == FieldDescriptor.JavaType.STRING
              ? ((String) body.getField(f)).isEmpty() : !body.hasField(f))) {
        throw new FlwireException("envelope", at + " is required");
      }
      if (rules.getNonNegative() && body.getField(f) instanceof Number v && v.longValue() < 0) {
        throw new FlwireException("envelope", at + " is negative");
      }
    }
    return body;
  }

  /** The body's field name (the Kafka header flwire-type), e.g. "client_update". */
  static String type(Envelope env) {
    return Envelope.getDescriptor().findFieldByNumber(env.getBodyCase().getNumber()).getName();
  }

  private static void checkId(String what, String id) {
    if (id.getBytes(StandardCharsets.UTF_8).length > MAX_ID_BYTES) {
      throw new FlwireException("envelope", what + " longer than " + MAX_ID_BYTES + " bytes");
    }
  }

  /** The body's {@code weights} field (a TensorMap), or null. */
  static FieldDescriptor weightsField(Message body) {
    FieldDescriptor f = body.getDescriptorForType().findFieldByName("weights");
    return f != null && f.getType() == FieldDescriptor.Type.MESSAGE
        && f.getMessageType().equals(TensorMap.getDescriptor()) ? f : null;
  }

  /** The Kafka headers of section 14.1 for this envelope. */
  public static Map<String, String> headers(Envelope env) {
    Map<String, String> h = new LinkedHashMap<>();
    h.put("flwire-type", Envelope.getDescriptor()
        .findFieldByNumber(env.getBodyCase().getNumber()).getName());
    h.put("flwire-schema-version", env.getSchemaVersion().getMajor() + "."
        + env.getSchemaVersion().getMinor());
    h.put("flwire-sender-id", env.getSenderId());
    h.put("flwire-message-id", env.getMessageId());
    return h;
  }

  /**
   * Encodes an envelope (without a signature) as section 14 says: fields in field-number order,
   * and, when the body carries weights, the shortest padding field (field 6) that puts the
   * TensorMap at a multiple of 64 from the start of the envelope.
   */
  public static byte[] encode(Envelope env) {
    if (env.hasSignature()) {
      throw new IllegalArgumentException("sign after encoding: the signature is the last field");
    }
    Envelope bare = CanonicalMaps.sorted(env.toBuilder().clearPadding().build());
    FieldDescriptor bodyField = Envelope.getDescriptor()
        .findFieldByNumber(bare.getBodyCase().getNumber());
    Message body = bodyField == null ? null : (Message) bare.getField(bodyField);
    FieldDescriptor wf = body == null ? null : weightsField(body);
    if (wf == null || !body.hasField(wf)) {
      return bare.toByteArray();
    }
    // Fields 1 to 5, then padding, then the body's key and length, then the body's fields
    // before weights (field-number order), then the weights' key and length.
    Envelope head = bare.toBuilder().clearBody().build();
    int headSize = head.getSerializedSize();
    int bodySize = body.getSerializedSize();
    Message.Builder before = body.toBuilder();
    for (FieldDescriptor f : body.getDescriptorForType().getFields()) {
      if (f.getNumber() >= wf.getNumber()) {
        before.clearField(f);
      }
    }
    int beforeSize = before.build().getSerializedSize();
    int weightsSize = ((TensorMap) body.getField(wf)).getSerializedSize();
    for (int p = 0; ; p++) {
      int field = p == 0 ? 0 : TensorMapWriter.lenField(p);
      long offset = headSize + field + CodedOutputStream.computeTagSize(bodyField.getNumber())
          + CodedOutputStream.computeUInt32SizeNoTag(bodySize) + beforeSize
          + CodedOutputStream.computeTagSize(wf.getNumber())
          + CodedOutputStream.computeUInt32SizeNoTag(weightsSize);
      if (offset % TensorMapWriter.ALIGN == 0) {
        Envelope out = p == 0 ? bare
            : bare.toBuilder().setPadding(ByteString.copyFrom(new byte[p])).build();
        return out.toByteArray(); // maps in insertion order: CanonicalMaps' order
      }
    }
  }
}
