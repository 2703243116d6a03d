package conformance

// The streamed-transfer vectors (tests/vectors/messages/stream*.json) and the
// stream refusals (manifest.json, "stream_refusals"; spec section 14.5), read
// with the StreamReader of stream.go. Each test prints one line per result
// ("STREAM ..." and "STREAM-REFUSAL ..."), which
// tests/conformance/test_crosslang_go.py compares with what the vectors'
// .json and the manifest say.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"lukechampine.com/blake3"

	"flwire.test/conformance/flwirev1"
)

type fileEntry struct {
	Path   string `json:"path"`
	Size   int    `json:"size"`
	SHA256 string `json:"sha256"`
}

type streamExpectation struct {
	Name         string              `json:"name"`
	TransferID   string              `json:"transfer_id"`
	PartCount    int                 `json:"part_count"`
	StreamCRC32C string              `json:"stream_crc32c"`
	Signed       bool                `json:"signed"`
	Envelope     envelopeExpectation `json:"envelope"`
	Tensors      []struct {
		Name    string   `json:"name"`
		Dtype   string   `json:"dtype"`
		Shape   []uint64 `json:"shape"`
		RawSize int      `json:"raw_size"`
		CRC32C  string   `json:"crc32c"`
		RawHex  string   `json:"raw_hex"`
	} `json:"tensors"`
	Parts []struct {
		Index         int               `json:"index"`
		Kind          string            `json:"kind"`
		Path          string            `json:"path"`
		Headers       map[string]string `json:"headers"`
		TensorIndex   uint32            `json:"tensor_index"`
		ElementOffset uint64            `json:"element_offset"`
		ElementCount  uint64            `json:"element_count"`
		Codec         string            `json:"codec"`
		Filter        string            `json:"filter"`
		CRC32C        string            `json:"crc32c"`
	} `json:"parts"`
	Signature *signatureExpectation `json:"signature"`
}

type streamRefusal struct {
	Name  string            `json:"name"`
	Check string            `json:"check"`
	Trust map[string]string `json:"trust"`
	Parts []fileEntry       `json:"parts"`
}

func loadStreams(t *testing.T) []streamExpectation {
	t.Helper()
	var out []streamExpectation
	for _, entry := range loadMessages(t) {
		if entry.Message != "flwire.v1.StreamPart" {
			continue
		}
		var e streamExpectation
		if err := json.Unmarshal(readFile(t, entry.Files["json"].Path), &e); err != nil {
			t.Fatal(err)
		}
		for k, p := range e.Parts {
			f := entry.Files[fmt.Sprintf("part%d", k)]
			b := readFile(t, p.Path)
			if f.Path != p.Path || f.Size != len(b) || hex.EncodeToString(sha(b)) != f.SHA256 {
				t.Fatalf("%s: part %d does not match the manifest", e.Name, k)
			}
		}
		out = append(out, e)
	}
	if len(out) < 2 {
		t.Fatalf("manifest.json lists %d streamed transfers", len(out))
	}
	return out
}

func sha(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

func streamParts(t *testing.T, e streamExpectation) [][]byte {
	t.Helper()
	out := make([][]byte, len(e.Parts))
	for k, p := range e.Parts {
		out[k] = readFile(t, p.Path)
	}
	return out
}

// readStream feeds values to a new reader in order: the message, and the
// first refusal (copies skipped aside).
func readStream(values [][]byte) (*StreamMessage, *StreamReader, error) {
	r := NewStreamReader()
	var msg *StreamMessage
	var first error
	for _, v := range values {
		m, err := r.Add(v)
		if m != nil {
			msg = m
		}
		if err != nil && !errors.Is(err, ErrSkipped) && first == nil {
			first = err
		}
	}
	return msg, r, first
}

func TestStreamVectors(t *testing.T) {
	for _, e := range loadStreams(t) {
		t.Run(e.Name, func(t *testing.T) {
			values := streamParts(t, e)
			if len(values) != e.PartCount {
				t.Fatalf("%d parts, part_count %d", len(values), e.PartCount)
			}
			// Every part but the last returns nothing; the seal returns the message.
			r := NewStreamReader()
			var msg *StreamMessage
			for k, v := range values {
				m, err := r.Add(v)
				if err != nil || (m != nil) != (k == len(values)-1) {
					t.Fatalf("part %d: message %v, %v", k, m != nil, err)
				}
				msg = m
				p := e.Parts[k]
				if p.Headers[streamHeader] != fmt.Sprint(k) {
					t.Errorf("part %d: header %q", k, p.Headers[streamHeader])
				}
				rest := map[string]string{}
				for h, v := range p.Headers {
					if h != streamHeader {
						rest[h] = v
					}
				}
				if fmt.Sprint(rest) != fmt.Sprint(e.Envelope.Headers) {
					t.Errorf("part %d: headers %v, the message's are %v", k, rest, e.Envelope.Headers)
				}
			}
			if r.Pending() != 0 || msg.TransferID != e.TransferID || msg.Parts != e.PartCount {
				t.Fatalf("transfer %q of %d parts, %d pending", msg.TransferID, msg.Parts, r.Pending())
			}
			// Section 14.5: the CRC-32C of parts 0 to n-2, concatenated.
			r0 := bytes.Join(values[:len(values)-1], nil)
			if fmt.Sprintf("%08x", CRC32C(r0)) != e.StreamCRC32C || msg.CRC32C != CRC32C(r0) {
				t.Errorf("stream CRC-32C %08x, .json says %s", CRC32C(r0), e.StreamCRC32C)
			}
			checkStreamEnvelope(t, msg.Envelope, e)
			if len(msg.Tensors) != len(e.Tensors) {
				t.Fatalf("%d tensors, want %d", len(msg.Tensors), len(e.Tensors))
			}
			for i, want := range e.Tensors {
				got := msg.Tensors[i]
				if got.Name != want.Name || got.Dtype.String() != want.Dtype ||
					fmt.Sprint(got.Shape) != fmt.Sprint(want.Shape) || len(got.Raw) != want.RawSize ||
					fmt.Sprintf("%08x", CRC32C(got.Raw)) != want.CRC32C || hex.EncodeToString(got.Raw) != want.RawHex {
					t.Errorf("tensor %d: %s %s %v, want %s %s %v", i, got.Name, got.Dtype, got.Shape,
						want.Name, want.Dtype, want.Shape)
				}
				fmt.Printf("STREAM %s tensor %s %s %s %s\n", e.Name, got.Name, got.Dtype, shapeText(got.Shape),
					hex.EncodeToString(got.Raw))
			}
			checkStreamChunks(t, values, e)
			if !e.Signed {
				if msg.Signature != nil || msg.Digest != nil {
					t.Fatal("an unsigned stream with a signature")
				}
				fmt.Printf("STREAM %s unsigned\n", e.Name)
				return
			}
			fmt.Printf("STREAM %s verified %s\n", e.Name, checkStreamSignature(t, msg, r0, e))
		})
	}
}

const streamHeader = "flwire-stream"

func shapeText(shape []uint64) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func checkStreamEnvelope(t *testing.T, env *flwirev1.Envelope, e streamExpectation) {
	t.Helper()
	want := e.Envelope
	got := [5]string{env.GetMessageId(), env.GetSenderId(),
		fmt.Sprint(env.GetTimestamp().GetSeconds(), env.GetTimestamp().GetNanos()),
		fmt.Sprintf("%d.%d", env.GetSchemaVersion().GetMajor(), env.GetSchemaVersion().GetMinor()),
		want.Headers["flwire-schema-version"]}
	exp := [5]string{want.MessageID, want.SenderID,
		fmt.Sprint(want.Timestamp.Seconds, want.Timestamp.Nanos),
		fmt.Sprintf("%d.%d", want.SchemaVersion.Major, want.SchemaVersion.Minor), got[3]}
	if got != exp || want.MessageID != e.TransferID {
		t.Errorf("(id, sender, time, version) = %v, want %v", got, exp)
	}
	r := env.ProtoReflect()
	which := r.WhichOneof(r.Descriptor().Oneofs().ByName("body"))
	if which == nil || string(which.Name()) != want.Type {
		t.Fatalf("body %v, want %s", which, want.Type)
	}
	body := r.Get(which).Message().Interface()
	wantBody := body.ProtoReflect().New().Interface()
	if err := protojson.Unmarshal(want.Body, wantBody); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(body, wantBody) {
		t.Errorf("body\n got %v\nwant %v", body, wantBody)
	}
}

// checkStreamChunks: what .json says of each chunk, and that one tensor takes
// several chunks and the chunks more than one codec.
func checkStreamChunks(t *testing.T, values [][]byte, e streamExpectation) {
	t.Helper()
	perTensor, codecs := map[uint32]int{}, map[string]bool{}
	for k, v := range values {
		p, err := parsePart(v)
		if err != nil {
			t.Fatal(err)
		}
		want := e.Parts[k]
		kind := map[bool]string{true: "head", false: "seal"}[p.head != nil]
		if p.chunk {
			kind = "chunk"
		}
		if kind != want.Kind || int(p.index) != want.Index {
			t.Errorf("part %d: %s, .json says %s", k, kind, want.Kind)
		}
		if !p.chunk {
			continue
		}
		m, err := Decode(p.elements, DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		c := m.Tensors[0]
		if p.tensor != want.TensorIndex || p.offset != want.ElementOffset ||
			uint64(c.Shape[0]) != want.ElementCount || c.Codec.String() != want.Codec ||
			c.Filter.String() != want.Filter || fmt.Sprintf("%08x", c.CRC32C) != want.CRC32C {
			t.Errorf("part %d: chunk %d@%d %v %s %s, .json %+v", k, p.tensor, p.offset, c.Shape, c.Codec, c.Filter, want)
		}
		perTensor[p.tensor]++
		codecs[c.Codec.String()] = true
	}
	most := 0
	for _, n := range perTensor {
		most = max(most, n)
	}
	if most < 2 || len(codecs) < 2 {
		t.Errorf("chunks per tensor at most %d, codecs %v", most, codecs)
	}
}

func checkStreamSignature(t *testing.T, msg *StreamMessage, r0 []byte, e streamExpectation) string {
	t.Helper()
	s := e.Signature
	if s == nil || len(r0) != s.SignedLength {
		t.Fatalf("signature %+v, R of %d bytes", s, len(r0))
	}
	d := blake3.Sum256(r0)
	if hex.EncodeToString(d[:]) != s.DigestHex || !bytes.Equal(msg.Digest, d[:]) {
		t.Errorf("digest %x, want %s", d, s.DigestHex)
	}
	m := StreamPayload(flwirev1.SignatureAlgorithm_SIGNATURE_ALGORITHM_ED25519, s.KeyID, d[:])
	if hex.EncodeToString(m) != s.PayloadHex {
		t.Errorf("payload %x, want %s", m, s.PayloadHex)
	}
	if s.PublicKeyHex != rfc8032Test1Public || hex.EncodeToString(msg.Signature.GetSignature()) != s.SignatureHex {
		t.Errorf("key %s, signature %x", s.PublicKeyHex, msg.Signature.GetSignature())
	}
	pub, _ := hex.DecodeString(s.PublicKeyHex)
	id, err := VerifyStream(msg, map[string]ed25519.PublicKey{s.KeyID: pub})
	if err != nil || id != s.KeyID {
		t.Fatalf("verify: %q, %v", id, err)
	}
	other := ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)
	if _, err := VerifyStream(msg, map[string]ed25519.PublicKey{s.KeyID: other}); !errors.Is(err, ErrBadSignature) {
		t.Errorf("another key under the same id: %v", err)
	}
	return id
}

func loadStreamRefusals(t *testing.T) []streamRefusal {
	t.Helper()
	var m struct {
		StreamRefusals []streamRefusal `json:"stream_refusals"`
	}
	if err := json.Unmarshal(readFile(t, "manifest.json"), &m); err != nil {
		t.Fatal(err)
	}
	if len(m.StreamRefusals) == 0 {
		t.Fatal("manifest.json lists no stream refusals")
	}
	return m.StreamRefusals
}

// refusalCheck reads a refusal's parts and names the check that refused it
// ("" if none did).
func refusalCheck(t *testing.T, rf streamRefusal) string {
	t.Helper()
	values := make([][]byte, len(rf.Parts))
	for k, f := range rf.Parts {
		values[k] = readFile(t, f.Path)
		if len(values[k]) != f.Size || hex.EncodeToString(sha(values[k])) != f.SHA256 {
			t.Fatalf("%s: part %d does not match the manifest", rf.Name, k)
		}
	}
	msg, r, err := readStream(values)
	if r.Pending() != 0 {
		t.Errorf("%s: %d transfers left under way", rf.Name, r.Pending())
	}
	if msg != nil {
		if err != nil {
			t.Fatalf("%s: a message and a refusal (%v)", rf.Name, err)
		}
		trust := map[string]ed25519.PublicKey{}
		for id, h := range rf.Trust {
			pub, _ := hex.DecodeString(h)
			trust[id] = pub
		}
		if _, err = VerifyStream(msg, trust); err == nil {
			return ""
		}
	}
	found := ""
	for id, sentinel := range StreamChecks {
		if errors.Is(err, sentinel) {
			if found != "" {
				t.Errorf("%s: %v is both %s and %s", rf.Name, err, found, id)
			}
			found = id
		}
	}
	t.Logf("%s: %v", rf.Name, err)
	return found
}

func TestStreamRefusals(t *testing.T) {
	checks := map[string]bool{}
	for _, rf := range loadStreamRefusals(t) {
		got := refusalCheck(t, rf)
		if got != rf.Check {
			t.Errorf("%s: refused for %q, the manifest says %q", rf.Name, got, rf.Check)
		}
		checks[got] = true
		fmt.Printf("STREAM-REFUSAL %s %s\n", rf.Name, got)
	}
	for id := range StreamChecks {
		if !checks[id] {
			t.Errorf("no stream refusal for %s", id)
		}
	}
}

// TestStreamRedelivery: every part twice in a row; the copies are skipped.
func TestStreamRedelivery(t *testing.T) {
	for _, e := range loadStreams(t) {
		r := NewStreamReader()
		got := 0
		for _, v := range streamParts(t, e) {
			for copy := 0; copy < 2; copy++ {
				m, err := r.Add(v)
				if copy == 1 && !errors.Is(err, ErrSkipped) || copy == 0 && err != nil {
					t.Fatalf("%s: copy %d: %v", e.Name, copy, err)
				}
				if m != nil {
					got++
				}
			}
		}
		if got != 1 {
			t.Errorf("%s: %d messages", e.Name, got)
		}
	}
}

// TestSignedStreamRefusesEveryChange: any byte of any part of the signed
// stream changed, the reader refuses it or the signature does not verify.
func TestSignedStreamRefusesEveryChange(t *testing.T) {
	for _, e := range loadStreams(t) {
		if !e.Signed {
			continue
		}
		values := streamParts(t, e)
		pub, _ := hex.DecodeString(e.Signature.PublicKeyHex)
		trust := map[string]ed25519.PublicKey{e.Signature.KeyID: pub}
		changed := 0
		for k := range values {
			for i := range values[k] {
				for _, mask := range []byte{0x01, 0x80, 0xff} {
					c := make([][]byte, len(values))
					copy(c, values)
					c[k] = bytes.Clone(values[k])
					c[k][i] ^= mask
					msg, _, _ := readStream(c)
					if msg != nil {
						if _, err := VerifyStream(msg, trust); err == nil {
							t.Errorf("part %d byte %d ^ %#x verified", k, i, mask)
						}
					}
					changed++
				}
			}
		}
		t.Logf("%s: %d changed streams, none verified", e.Name, changed)
	}
}
