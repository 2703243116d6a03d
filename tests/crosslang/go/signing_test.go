package conformance

// The signed envelope vector (tests/vectors/messages/envelope_signed; spec
// section 14.3), verified from the spec: lukechampine.com/blake3 for the
// digest, the standard library's crypto/ed25519 for the signature. Every
// changed byte and every truncation is refused.

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"lukechampine.com/blake3"

	"flwire.test/conformance/flwirev1"
)

const (
	signatureField = 7
	signDomain     = "flwire.v1 envelope signature\x00"
)

// rfc8032Test1Public is the public key of RFC 8032, section 7.1, TEST 1.
const rfc8032Test1Public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"

type signatureExpectation struct {
	KeyID          string `json:"key_id"`
	Algorithm      string `json:"algorithm"`
	PublicKeyHex   string `json:"public_key_hex"`
	SignedLength   int    `json:"signed_length"`
	DigestHex      string `json:"digest_hex"`
	PayloadHex     string `json:"signed_payload_hex"`
	SignatureHex   string `json:"signature_hex"`
	TestKeySeedHex string `json:"test_key_seed_hex"`
}

// envelopeDigest is D of section 14.3: BLAKE3 of the signed bytes, 32 bytes.
func envelopeDigest(signed []byte) []byte {
	d := blake3.Sum256(signed)
	return d[:]
}

// signedPayload is M of section 14.3.
func signedPayload(algorithm flwirev1.SignatureAlgorithm, keyID string, digest []byte) []byte {
	var m bytes.Buffer
	m.WriteString(signDomain)
	var a [4]byte
	binary.LittleEndian.PutUint32(a[:], uint32(algorithm))
	m.Write(a[:])
	m.WriteByte(byte(len(keyID)))
	m.WriteString(keyID)
	m.Write(digest)
	return m.Bytes()
}

// verifyEnvelope follows section 14.3's steps: the signature field, once and
// last; Ed25519 under the trusted key of its id; then sender_id and the body's
// client_id equal to the key id. It returns the key id.
func verifyEnvelope(b []byte, trust map[string]ed25519.PublicKey) (string, error) {
	sigStart, sigFrom, seen := -1, -1, 0
	for pos := 0; pos < len(b); {
		n, typ, k := protowire.ConsumeTag(b[pos:])
		if k < 0 {
			return "", fmt.Errorf("offset %d: %v", pos, protowire.ParseError(k))
		}
		m := protowire.ConsumeFieldValue(n, typ, b[pos+k:])
		if m < 0 {
			return "", fmt.Errorf("offset %d: %v", pos, protowire.ParseError(m))
		}
		if n == signatureField {
			if typ != protowire.BytesType {
				return "", errors.New("signature field is not length-delimited")
			}
			seen++
			sigStart, sigFrom = pos, pos+k
			if pos+k+m != len(b) {
				return "", errors.New("signature is not the last field")
			}
		}
		pos += k + m
	}
	if seen == 0 {
		return "", errors.New("unsigned")
	}
	if seen > 1 {
		return "", errors.New("signature field more than once")
	}
	payload, _ := protowire.ConsumeBytes(b[sigFrom:])
	var sig flwirev1.Signature
	if err := proto.Unmarshal(payload, &sig); err != nil {
		return "", fmt.Errorf("malformed signature: %v", err)
	}
	if sig.GetAlgorithm() != flwirev1.SignatureAlgorithm_SIGNATURE_ALGORITHM_ED25519 ||
		len(sig.GetSignature()) != ed25519.SignatureSize || len(sig.GetKeyId()) > 128 {
		return "", errors.New("bad signature field")
	}
	pub, ok := trust[sig.GetKeyId()]
	if !ok {
		return "", fmt.Errorf("unknown key %q", sig.GetKeyId())
	}
	m := signedPayload(sig.GetAlgorithm(), sig.GetKeyId(), envelopeDigest(b[:sigStart]))
	if !ed25519.Verify(pub, m, sig.GetSignature()) {
		return "", errors.New("bad signature")
	}
	var env flwirev1.Envelope
	if err := proto.Unmarshal(b, &env); err != nil {
		return "", err
	}
	if env.GetSenderId() != sig.GetKeyId() {
		return "", errors.New("sender_id is not the key id")
	}
	m2 := env.ProtoReflect()
	if body := m2.WhichOneof(m2.Descriptor().Oneofs().ByName("body")); body != nil {
		b := m2.Get(body).Message()
		if f := b.Descriptor().Fields().ByName("client_id"); f != nil && b.Get(f).String() != sig.GetKeyId() {
			return "", fmt.Errorf("%s.client_id is not the key id", body.Name())
		}
	}
	return sig.GetKeyId(), nil
}

func loadSigned(t *testing.T) ([]byte, signatureExpectation, map[string]ed25519.PublicKey) {
	t.Helper()
	for _, entry := range loadMessages(t) {
		if entry.Name != "envelope_signed" {
			continue
		}
		var e struct {
			Signature signatureExpectation `json:"signature"`
		}
		if err := json.Unmarshal(readFile(t, entry.Files["json"].Path), &e); err != nil {
			t.Fatal(err)
		}
		pub, err := hex.DecodeString(e.Signature.PublicKeyHex)
		if err != nil || len(pub) != ed25519.PublicKeySize {
			t.Fatalf("public_key_hex: %v", err)
		}
		trust := map[string]ed25519.PublicKey{e.Signature.KeyID: ed25519.PublicKey(pub)}
		return readFile(t, entry.Files["bin"].Path), e.Signature, trust
	}
	t.Fatal("manifest.json lists no envelope_signed vector")
	return nil, signatureExpectation{}, nil
}

func TestSignedEnvelopeVector(t *testing.T) {
	b, e, trust := loadSigned(t)
	if e.PublicKeyHex != rfc8032Test1Public || e.Algorithm != "SIGNATURE_ALGORITHM_ED25519" {
		t.Fatalf("key %s, algorithm %s: want the RFC 8032 test key, Ed25519", e.PublicKeyHex, e.Algorithm)
	}
	seed, _ := hex.DecodeString(e.TestKeySeedHex)
	if got := hex.EncodeToString(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)); got != e.PublicKeyHex {
		t.Errorf("seed's public key %s, want %s", got, e.PublicKeyHex)
	}
	d := envelopeDigest(b[:e.SignedLength])
	if hex.EncodeToString(d) != e.DigestHex {
		t.Errorf("digest %x, want %s", d, e.DigestHex)
	}
	m := signedPayload(flwirev1.SignatureAlgorithm_SIGNATURE_ALGORITHM_ED25519, e.KeyID, d)
	if hex.EncodeToString(m) != e.PayloadHex {
		t.Errorf("signed payload %x, want %s", m, e.PayloadHex)
	}
	id, err := verifyEnvelope(b, trust)
	if err != nil || id != e.KeyID {
		t.Fatalf("verify: %q, %v", id, err)
	}
	var env flwirev1.Envelope
	if err := proto.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(env.GetSignature().GetSignature()) != e.SignatureHex {
		t.Errorf("signature %x, want %s", env.GetSignature().GetSignature(), e.SignatureHex)
	}
	other := map[string]ed25519.PublicKey{e.KeyID: ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)}
	if _, err := verifyEnvelope(b, other); err == nil {
		t.Error("another key under the same id verified")
	}
}

func TestSignedEnvelopeRefusesEveryChange(t *testing.T) {
	b, _, trust := loadSigned(t)
	for _, mask := range []byte{0x01, 0x80, 0xff} {
		for i := range b {
			c := bytes.Clone(b)
			c[i] ^= mask
			if _, err := verifyEnvelope(c, trust); err == nil {
				t.Errorf("byte %d ^ %#x verified", i, mask)
			}
		}
	}
	for end := 0; end < len(b); end++ {
		if _, err := verifyEnvelope(b[:end], trust); err == nil {
			t.Errorf("truncated to %d bytes verified", end)
		}
	}
}
