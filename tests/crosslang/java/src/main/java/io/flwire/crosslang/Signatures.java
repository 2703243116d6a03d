package io.flwire.crosslang;

import com.google.protobuf.CodedInputStream;
import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.WireFormat;
import flwire.v1.Messages.Signature;
import flwire.v1.Messages.SignatureAlgorithm;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.PrivateKey;
import java.security.PublicKey;
import java.security.spec.PKCS8EncodedKeySpec;
import java.security.spec.X509EncodedKeySpec;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.Map;
import org.apache.commons.codec.digest.Blake3;

/**
 * Signed envelopes (spec section 14.3): Ed25519 from the JDK over M, which holds the BLAKE3
 * digest (commons-codec) of every byte before the signature field; and signed streamed transfers
 * (section 14.5), whose seal signs the BLAKE3 digest of the parts before it under another domain
 * string. Refusals carry section 14.3's reason as their check: {@code unsigned},
 * {@code bad_signature}, {@code unknown_key}, {@code sender_mismatch}.
 */
public final class Signatures {
  private Signatures() {}

  private static final byte[] DOMAIN = "flwire.v1 envelope signature".getBytes(StandardCharsets.US_ASCII);
  private static final byte[] STREAM_DOMAIN =
      "flwire.v1 stream signature".getBytes(StandardCharsets.US_ASCII);
  private static final HexFormat HEX = HexFormat.of();

  /** Where the signature field is: the signed bytes end at keyStart. */
  public record Located(int keyStart, Signature signature) {}

  /**
   * Finds field 7 of the envelope: once, length-delimited, the last field, parsing as a
   * Signature; null when the envelope has no field 7.
   */
  public static Located locate(byte[] env) {
    CodedInputStream in = CodedInputStream.newInstance(env);
    Located found = null;
    try {
      while (!in.isAtEnd()) {
        int start = in.getTotalBytesRead();
        int tag = in.readTag();
        if (found != null) {
          throw bad("a field follows the signature field");
        }
        if (WireFormat.getTagFieldNumber(tag) == 7) {
          if (WireFormat.getTagWireType(tag) != WireFormat.WIRETYPE_LENGTH_DELIMITED) {
            throw bad("the signature field is not length-delimited");
          }
          found = new Located(start, Signature.parseFrom(in.readBytes()));
        } else if (!in.skipField(tag)) {
          throw bad("end-group tag at the top level");
        }
      }
    } catch (InvalidProtocolBufferException e) {
      throw new FlwireException("bad_signature", e.getMessage(), e);
    } catch (IOException e) {
      throw new FlwireException("protobuf", e.getMessage(), e);
    }
    return found;
  }

  private static FlwireException bad(String why) {
    return new FlwireException("bad_signature", why);
  }

  /** D: the BLAKE3 hash (32 bytes) of the signed bytes. */
  public static byte[] digest(byte[] env, int len) {
    byte[] d = new byte[32];
    Blake3.initHash().update(Arrays.copyOf(env, len)).doFinalize(d);
    return d;
  }

  /** M = domain || 0x00 || uint32_le(algorithm) || uint8(len(key_id)) || key_id || D. */
  public static byte[] signedPayload(int algorithm, String keyId, byte[] digest) {
    return payload(DOMAIN, algorithm, keyId, digest);
  }

  /** M of section 14.5: as an envelope's, under the domain "flwire.v1 stream signature". */
  public static byte[] streamPayload(int algorithm, String keyId, byte[] digest) {
    return payload(STREAM_DOMAIN, algorithm, keyId, digest);
  }

  private static byte[] payload(byte[] domain, int algorithm, String keyId, byte[] digest) {
    byte[] id = keyId.getBytes(StandardCharsets.UTF_8);
    ByteArrayOutputStream m = new ByteArrayOutputStream();
    m.writeBytes(domain);
    m.write(0);
    m.write(algorithm);
    m.write(algorithm >>> 8);
    m.write(algorithm >>> 16);
    m.write(algorithm >>> 24);
    m.write(id.length);
    m.writeBytes(id);
    m.writeBytes(digest);
    return m.toByteArray();
  }

  /**
   * Verifies a signed envelope (steps 1 to 4 of section 14.3) against a trust store of key id to
   * Ed25519 public key; returns the verified key id.
   */
  public static String verify(byte[] env, Map<String, PublicKey> trust) {
    Located loc = locate(env);
    if (loc == null) {
      throw new FlwireException("unsigned", "the envelope has no signature field");
    }
    Signature s = loc.signature();
    verify(s, trust, signedPayload(s.getAlgorithmValue(), s.getKeyId(),
        digest(env, loc.keyStart())));
    return s.getKeyId();
  }

  /**
   * Verifies a streamed message's seal signature (section 14.5) as section 14.3 does an
   * envelope's, steps 1 to 5 (the envelope's sender_id, and its body's client_id where it has
   * one, must be the key id); returns the verified key id.
   */
  public static String verifyStream(StreamReader.StreamMessage msg, Map<String, PublicKey> trust) {
    Signature s = msg.signature();
    if (s == null || msg.digest() == null) {
      throw new FlwireException("unsigned", "the stream's seal carries no signature");
    }
    verify(s, trust, streamPayload(s.getAlgorithmValue(), s.getKeyId(), msg.digest()));
    if (!msg.envelope().getSenderId().equals(s.getKeyId())) {
      throw new FlwireException("sender_mismatch", "sender_id " + msg.envelope().getSenderId()
          + " is not the key id " + s.getKeyId());
    }
    FieldDescriptor clientId = msg.body().getDescriptorForType().findFieldByName("client_id");
    if (clientId != null && !msg.body().getField(clientId).equals(s.getKeyId())) {
      throw new FlwireException("sender_mismatch", msg.type() + ".client_id "
          + msg.body().getField(clientId) + " is not the key id " + s.getKeyId());
    }
    return s.getKeyId();
  }

  /** Steps 2 to 4: the signature's form, its key in the trust store, Ed25519 of m under it. */
  private static void verify(Signature s, Map<String, PublicKey> trust, byte[] m) {
    byte[] id = s.getKeyId().getBytes(StandardCharsets.UTF_8);
    if (s.getAlgorithmValue() != SignatureAlgorithm.SIGNATURE_ALGORITHM_ED25519_VALUE
        || s.getSignature().size() != 64 || id.length == 0 || id.length > 128) {
      throw bad("algorithm " + s.getAlgorithmValue() + ", signature of "
          + s.getSignature().size() + " bytes, key id of " + id.length + " bytes");
    }
    PublicKey key = trust.get(s.getKeyId());
    if (key == null) {
      throw new FlwireException("unknown_key", "key id " + s.getKeyId() + " is not trusted");
    }
    try {
      java.security.Signature v = java.security.Signature.getInstance("Ed25519");
      v.initVerify(key);
      v.update(m);
      if (!v.verify(s.getSignature().toByteArray())) {
        throw bad("the signature does not verify under " + s.getKeyId());
      }
    } catch (GeneralSecurityException e) {
      throw new FlwireException("bad_signature", e.getMessage(), e);
    }
  }

  /** Appends the signature field (field 7, last) to an encoded, unsigned envelope. */
  public static byte[] sign(byte[] env, String keyId, PrivateKey key) {
    byte[] m = signedPayload(1, keyId, digest(env, env.length));
    try {
      java.security.Signature s = java.security.Signature.getInstance("Ed25519");
      s.initSign(key);
      s.update(m);
      Signature field = Signature.newBuilder().setKeyId(keyId)
          .setAlgorithm(SignatureAlgorithm.SIGNATURE_ALGORITHM_ED25519)
          .setSignature(com.google.protobuf.ByteString.copyFrom(s.sign())).build();
      byte[] f = field.toByteArray();
      ByteArrayOutputStream out = new ByteArrayOutputStream();
      out.writeBytes(env);
      out.write(0x3a);
      out.write(f.length); // a Signature is at most 128 + 64 + a few bytes: one varint byte
      out.writeBytes(f);
      if (f.length > 127) {
        throw new IllegalStateException("key id too long for this writer");
      }
      return out.toByteArray();
    } catch (GeneralSecurityException e) {
      throw new IllegalStateException(e);
    }
  }

  /** An Ed25519 public key from its 32 raw bytes (RFC 8032), via its X.509 SPKI encoding. */
  public static PublicKey publicKey(byte[] raw) throws GeneralSecurityException {
    byte[] spki = concat(HEX.parseHex("302a300506032b6570032100"), raw);
    return KeyFactory.getInstance("Ed25519").generatePublic(new X509EncodedKeySpec(spki));
  }

  /** An Ed25519 private key from its 32-byte seed, via its PKCS#8 encoding. */
  public static PrivateKey privateKey(byte[] seed) throws GeneralSecurityException {
    byte[] pkcs8 = concat(HEX.parseHex("302e020100300506032b657004220420"), seed);
    return KeyFactory.getInstance("Ed25519").generatePrivate(new PKCS8EncodedKeySpec(pkcs8));
  }

  private static byte[] concat(byte[] a, byte[] b) {
    byte[] out = Arrays.copyOf(a, a.length + b.length);
    System.arraycopy(b, 0, out, a.length, b.length);
    return out;
  }
}
