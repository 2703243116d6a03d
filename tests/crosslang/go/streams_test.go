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
	"encoding/binary"
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
		Index   int               `json:"index"`
		Kind    string            `json:"kind"`
		Path    string            `json:"path"`
		Headers map[string]string `json:"headers"`
		// A chunk: its first tensor, and those packed after it (section 14.5).
		chunkExpectation
		Packed []chunkExpectation `json:"packed"`
	} `json:"parts"`
	Signature *signatureExpectation `json:"signature"`
}

// chunkExpectation is what .json says of one tensor of a chunk.
type chunkExpectation struct {
	TensorIndex   uint32 `json:"tensor_index"`
	ElementOffset uint64 `json:"element_offset"`
	ElementCount  uint64 `json:"element_count"`
	Codec         string `json:"codec"`
	Filter        string `json:"filter"`
	RawSize       uint64 `json:"raw_size"` // a lossy chunk's: its payload's
	CRC32C        string `json:"crc32c"`
	// A lossy chunk (section 9.1): its Tensor.lossy fields, and the size of
	// the k elements it decodes to.
	Lossy *struct {
		Method    string `json:"method"`
		BlockSize uint32 `json:"block_size"`
		K         uint64 `json:"k"`
	} `json:"lossy"`
	DecodedSize uint64 `json:"decoded_size"`
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

// checkStreamChunks: what .json says of each chunk's tensors (a lossy one's
// method, parameters, payload size and decoded size included; a packed
// chunk's tensors after its first, from element 0 of the tensors that follow),
// and that one tensor takes several chunks and, in a stream without lossy
// chunks, the chunks more than one codec; in one with lossy chunks, some
// chunks are lossless; packed chunks in the packed stream only.
func checkStreamChunks(t *testing.T, values [][]byte, e streamExpectation) {
	t.Helper()
	perTensor, codecs := map[uint32]int{}, map[string]bool{}
	lossy, lossless, packed := 0, 0, 0
	for k, v := range values {
		p, err := parsePart(v)
		if err != nil {
			t.Fatal(err)
		}
		part := e.Parts[k]
		kind := map[bool]string{true: "head", false: "seal"}[p.head != nil]
		if p.chunk {
			kind = "chunk"
		}
		if kind != part.Kind || int(p.index) != part.Index {
			t.Errorf("part %d: %s, .json says %s", k, kind, part.Kind)
		}
		if !p.chunk {
			continue
		}
		m, err := DecodeChunk(p.elements, DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		wants := append([]chunkExpectation{part.chunkExpectation}, part.Packed...)
		if len(m.Tensors) != len(wants) {
			t.Fatalf("part %d: %d tensors, .json says %d", k, len(m.Tensors), len(wants))
		}
		if len(wants) > 1 {
			packed++
		}
		for i, want := range wants {
			c := m.Tensors[i]
			tensor, offset := p.tensor+uint32(i), p.offset
			if i > 0 {
				offset = 0
			}
			if tensor != want.TensorIndex || offset != want.ElementOffset || c.Name != "" ||
				uint64(c.Shape[0]) != want.ElementCount || c.Codec.String() != want.Codec ||
				c.Filter.String() != want.Filter || fmt.Sprintf("%08x", c.CRC32C) != want.CRC32C {
				t.Errorf("part %d tensor %d: %d@%d %v %s %s, .json %+v", k, i, tensor, offset, c.Shape,
					c.Codec, c.Filter, want)
			}
			if c.RawSize != want.RawSize {
				t.Errorf("part %d tensor %d: raw_size %d, .json says %d", k, i, c.RawSize, want.RawSize)
			}
			wantLossy := ""
			if want.Lossy != nil {
				wantLossy = fmt.Sprintf("%s/%d/%d", want.Lossy.Method, want.Lossy.BlockSize, want.Lossy.K)
			}
			if got := lossyFacts(c.Lossy); got != wantLossy {
				t.Errorf("part %d tensor %d: lossy (method/block_size/k) %q, .json says %q", k, i, got, wantLossy)
			}
			if c.Lossy != nil {
				lossy++
				if uint64(len(c.Raw)) != want.DecodedSize || uint64(len(c.Payload)) != c.RawSize {
					t.Errorf("part %d tensor %d: decodes to %d bytes from a payload of %d, .json says %d",
						k, i, len(c.Raw), len(c.Payload), want.DecodedSize)
				}
			} else {
				lossless++
				if want.DecodedSize != 0 {
					t.Errorf("part %d tensor %d: lossless, with decoded_size %d", k, i, want.DecodedSize)
				}
			}
			perTensor[tensor]++
			codecs[c.Codec.String()] = true
		}
	}
	most := 0
	for _, n := range perTensor {
		most = max(most, n)
	}
	if most < 2 || lossy == 0 && len(codecs) < 2 || lossy > 0 && lossless == 0 {
		t.Errorf("chunks per tensor at most %d, codecs %v, %d lossy and %d lossless chunks",
			most, codecs, lossy, lossless)
	}
	if strings.Contains(e.Name, "lossy") != (lossy > 0) {
		t.Errorf("%d lossy chunks in %s", lossy, e.Name)
	}
	if strings.Contains(e.Name, "packed") != (packed > 0) {
		t.Errorf("%d packed chunks in %s", packed, e.Name)
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
	t.Logf("%s: %v", rf.Name, err)
	return streamCheck(t, rf.Name, err)
}

// streamCheck names the check of section 14.5 that err wraps ("" for none).
func streamCheck(t *testing.T, name string, err error) string {
	t.Helper()
	found := ""
	for id, sentinel := range StreamChecks {
		if errors.Is(err, sentinel) {
			if found != "" {
				t.Errorf("%s: %v is both %s and %s", name, err, found, id)
			}
			found = id
		}
	}
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

// TestStreamLossyChunks: a lossy chunk (section 14.5) is checked as a lossy
// tensor of shape [k] (section 9.1), its failures counted as chunk_elements;
// a payload that does not check out, or top-k indices not strictly ascending
// and below the chunk's k, as chunk_decode. The limits count its logical size.
func TestStreamLossyChunks(t *testing.T) {
	streams := map[string][][]byte{}
	for _, e := range loadStreams(t) {
		streams[e.Name] = streamParts(t, e)
	}
	// mutated: the parts of a stream, part k's chunk tensor changed by change.
	mutated := func(name string, k int, change func(tn *flwirev1.Tensor)) [][]byte {
		values := streams[name]
		if values == nil {
			t.Fatalf("no stream vector %s", name)
		}
		var part flwirev1.StreamPart
		if err := proto.Unmarshal(values[k], &part); err != nil || part.GetChunk() == nil {
			t.Fatalf("%s part %d: not a chunk (%v)", name, k, err)
		}
		change(part.GetChunk().GetElements().GetTensors()[0])
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&part)
		if err != nil {
			t.Fatal(err)
		}
		out := append([][]byte{}, values...)
		out[k] = b
		return out
	}
	// indices sets a top-k chunk's indices (uint32 after its k float32
	// values) and the CRC-32C of its uncompressed payload.
	indices := func(at ...uint32) func(tn *flwirev1.Tensor) {
		return func(tn *flwirev1.Tensor) {
			data := bytes.Clone(tn.GetData())
			for j, i := range at {
				binary.LittleEndian.PutUint32(data[int(tn.GetLossy().GetK())*4+4*j:], i)
			}
			tn.Data, tn.Crc32C = data, CRC32C(data)
		}
	}
	for _, c := range []struct {
		name   string
		values [][]byte
		check  string
		cause  error
	}{
		{"unknown method", mutated("stream_lossy_topk", 1, func(tn *flwirev1.Tensor) {
			tn.Lossy.Method = 5
		}), "chunk_elements", ErrLossyMethod},
		{"k not the payload's", mutated("stream_lossy_topk", 1, func(tn *flwirev1.Tensor) {
			tn.Lossy.K = 3
		}), "chunk_elements", ErrRawSize},
		{"k denser than one in 8 of the chunk", mutated("stream_lossy_topk", 1, func(tn *flwirev1.Tensor) {
			tn.Lossy.K = 5 // of the chunk's 32 elements, though the tensor has 128
		}), "chunk_elements", ErrLossyParams},
		{"shuffle on top-k", mutated("stream_lossy_topk", 2, func(tn *flwirev1.Tensor) {
			tn.Filter = flwirev1.Filter_FILTER_BYTE_SHUFFLE
		}), "chunk_elements", ErrLossyFilter},
		{"block_size 7", mutated("stream_lossy_int8", 1, func(tn *flwirev1.Tensor) {
			tn.Lossy.BlockSize = 7
		}), "chunk_elements", ErrLossyParams},
		{"block_size not the payload's", mutated("stream_lossy_int8", 2, func(tn *flwirev1.Tensor) {
			tn.Lossy.BlockSize = 16
		}), "chunk_elements", ErrRawSize},
		{"raw_size of the chunk's elements", mutated("stream_lossy_float16", 1, func(tn *flwirev1.Tensor) {
			tn.RawSize = 4 * uint64(tn.GetShape()[0])
		}), "chunk_elements", ErrRawSize},
		{"cast of a lossless chunk's int64", mutated("stream_lossy_float16", 4, func(tn *flwirev1.Tensor) {
			tn.Lossy = &flwirev1.LossyEncoding{Method: flwirev1.Lossy_LOSSY_CAST_FLOAT16}
		}), "chunk_elements", ErrLossyDtype},
		{"payload CRC-32C", mutated("stream_lossy_int8", 1, func(tn *flwirev1.Tensor) {
			tn.Crc32C ^= 1
		}), "chunk_decode", ErrChecksum},
		{"payload changed", mutated("stream_lossy_topk", 3, func(tn *flwirev1.Tensor) {
			tn.Data = bytes.Clone(tn.GetData())
			tn.Data[0] ^= 0x40
		}), "chunk_decode", ErrChecksum},
		{"payload does not decompress", mutated("stream_lossy_float16", 3, func(tn *flwirev1.Tensor) {
			// A zstd frame of the payload's 40 bytes (single segment) whose one
			// compressed block, last, is 8 bytes of 0xff: its frame is well
			// formed (check 7), its block is not.
			if tn.GetCodec() != flwirev1.Codec_CODEC_UNSPECIFIED || tn.GetRawSize() != 40 {
				t.Fatalf("%s, raw_size %d", tn.GetCodec(), tn.GetRawSize())
			}
			frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x20, 40, 8<<3 | 2<<1 | 1, 0, 0}
			tn.Codec, tn.Data = flwirev1.Codec_CODEC_ZSTD, append(frame, bytes.Repeat([]byte{0xff}, 8)...)
		}), "chunk_decode", ErrDecompress},
		{"top-k indices descending", mutated("stream_lossy_topk", 1, indices(9, 3, 20, 30)),
			"chunk_decode", ErrTopKIndex},
		{"top-k index repeated", mutated("stream_lossy_topk", 2, indices(1, 3, 3, 30)),
			"chunk_decode", ErrTopKIndex},
		{"top-k index past the chunk's k", mutated("stream_lossy_topk", 1, indices(1, 2, 3, 32)),
			"chunk_decode", ErrTopKIndex},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg, r, err := readStream(c.values)
			if msg != nil || r.Pending() != 0 {
				t.Fatalf("message %v, %d pending, %v", msg != nil, r.Pending(), err)
			}
			if got := streamCheck(t, c.name, err); got != c.check || !errors.Is(err, c.cause) {
				t.Errorf("refused for %q (%v), want %s: %v", got, err, c.check, c.cause)
			}
		})
	}

	// A valid top-k chunk whose indices were changed (ascending, in range,
	// CRC-32C updated, and the seal's stream CRC-32C) decodes, to its values
	// at the new indices.
	values := mutated("stream_lossy_topk", 1, indices(0, 1, 2, 31))
	var seal flwirev1.StreamPart
	if err := proto.Unmarshal(values[len(values)-1], &seal); err != nil || seal.GetSeal() == nil {
		t.Fatalf("the last part is not a seal (%v)", err)
	}
	seal.GetSeal().StreamCrc32C = CRC32C(bytes.Join(values[:len(values)-1], nil))
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&seal)
	if err != nil {
		t.Fatal(err)
	}
	values[len(values)-1] = b
	msg, _, err := readStream(values)
	if msg == nil || err != nil {
		t.Fatalf("indices 0, 1, 2, 31: %v", err)
	}
	var part flwirev1.StreamPart
	if err := proto.Unmarshal(values[1], &part); err != nil {
		t.Fatal(err)
	}
	kept := part.GetChunk().GetElements().GetTensors()[0].GetData()[:16]
	raw := msg.Tensors[0].Raw
	for i, at := range []int{0, 1, 2, 31} {
		if !bytes.Equal(raw[4*at:4*at+4], kept[4*i:4*i+4]) {
			t.Errorf("element %d: %x, want %x", at, raw[4*at:4*at+4], kept[4*i:4*i+4])
		}
	}
	for at := 3; at < 31; at++ {
		if !bytes.Equal(raw[4*at:4*at+4], make([]byte, 4)) {
			t.Errorf("element %d: %x, want +0", at, raw[4*at:4*at+4])
		}
	}

	// The limits count a lossy chunk's logical size (32 float32 elements:
	// 128 bytes), not its payload's (32 bytes).
	for _, limit := range []uint64{127, 128} {
		r := NewStreamReader()
		r.Limits.MaxTensorBytes = limit
		var msg *StreamMessage
		var first error
		for _, v := range streams["stream_lossy_topk"] {
			m, err := r.Add(v)
			if m != nil {
				msg = m
			}
			if err != nil && first == nil {
				first = err
			}
		}
		if limit == 127 && (msg != nil || !errors.Is(first, ErrChunkElements) || !errors.Is(first, ErrLimit)) {
			t.Errorf("per-tensor limit 127: message %v, %v", msg != nil, first)
		}
		if limit == 128 && (msg == nil || first != nil) {
			t.Errorf("per-tensor limit 128: %v", first)
		}
	}
}

// TestStreamExpansion: section 14.5's bound on what a transfer's chunks decode
// to, max(ExpansionFloor, MaxExpansion x the bytes of its records so far, the
// head's included), checked before each chunk is decoded, a lossy chunk
// counted at its logical size (k x width). With lowered limits a valid stream
// is refused ([chunk_elements], wrapping ErrExpansion) at the chunk that
// passes the bound; that chunk's CRC-32C is made wrong, so a reader that
// decoded it first would refuse it for chunk_decode instead. With the bound
// off (MaxExpansion 0) the same stream decodes; with the defaults every
// stream vector does.
func TestStreamExpansion(t *testing.T) {
	const floor, ratio = 256, 0.5
	streams := map[string]streamExpectation{}
	for _, e := range loadStreams(t) {
		streams[e.Name] = e
		if msg, _, err := readStream(streamParts(t, e)); msg == nil || err != nil {
			t.Errorf("%s, default limits: %v", e.Name, err)
		}
	}
	// tripsAt: the first part whose chunk takes the decoded bytes past the
	// bound (-1: none), counting each chunk's logical size, or its payload's
	// (of all its tensors, in a packed chunk).
	tripsAt := func(e streamExpectation, values [][]byte, payload bool) int {
		var arrived, decoded uint64
		for k, v := range values {
			arrived += uint64(len(v))
			p := e.Parts[k]
			if p.Kind != "chunk" {
				continue
			}
			for _, c := range append([]chunkExpectation{p.chunkExpectation}, p.Packed...) {
				if payload {
					decoded += c.RawSize
				} else {
					dtype := flwirev1.Dtype(flwirev1.Dtype_value[e.Tensors[c.TensorIndex].Dtype])
					decoded += c.ElementCount * Width(dtype)
				}
			}
			if float64(decoded) > max(float64(floor), ratio*float64(arrived)) {
				return k
			}
		}
		return -1
	}
	reader := func(maxExpansion float64) *StreamReader {
		r := NewStreamReader()
		r.Limits.ExpansionFloor, r.Limits.MaxExpansion = floor, maxExpansion
		return r
	}
	for _, name := range []string{"stream", "stream_lossy_topk"} {
		t.Run(name, func(t *testing.T) {
			e, ok := streams[name]
			if !ok {
				t.Fatalf("no stream vector %s", name)
			}
			values := streamParts(t, e)
			trip := tripsAt(e, values, false)
			if trip < 2 || trip >= len(values)-1 {
				t.Fatalf("the bound trips at part %d of %d: no chunk before it, or none", trip, len(values))
			}
			if name == "stream_lossy_topk" && tripsAt(e, values, true) != -1 {
				t.Fatal("its payloads alone pass the bound: the logical size is not what trips it")
			}
			// The chunk that passes the bound, with a CRC-32C that does not check out.
			var part flwirev1.StreamPart
			if err := proto.Unmarshal(values[trip], &part); err != nil || part.GetChunk() == nil {
				t.Fatalf("part %d: not a chunk (%v)", trip, err)
			}
			part.GetChunk().GetElements().GetTensors()[0].Crc32C ^= 1
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&part)
			if err != nil {
				t.Fatal(err)
			}
			bad := append([][]byte{}, values...)
			bad[trip] = b
			if tripsAt(e, bad, false) != trip {
				t.Fatalf("the changed part %d moved the bound", trip)
			}

			r := reader(ratio)
			for k, v := range bad {
				msg, err := r.Add(v)
				switch {
				case k < trip:
					if msg != nil || err != nil {
						t.Fatalf("part %d: message %v, %v", k, msg != nil, err)
					}
				case k == trip:
					if msg != nil || streamCheck(t, name, err) != "chunk_elements" ||
						!errors.Is(err, ErrExpansion) || errors.Is(err, ErrChecksum) || r.Pending() != 0 {
						t.Fatalf("part %d: message %v, %d pending, %v; want chunk_elements (%v) before decoding",
							k, msg != nil, r.Pending(), err, ErrExpansion)
					}
					t.Logf("part %d: %v", k, err)
				default:
					if msg != nil || !errors.Is(err, ErrSkipped) {
						t.Fatalf("part %d of a transfer given up on: message %v, %v", k, msg != nil, err)
					}
				}
			}

			// The bound off: the changed chunk is decoded, and refused for it;
			// the valid stream decodes to its tensors.
			r = reader(0)
			var first error
			for _, v := range bad {
				if _, err := r.Add(v); err != nil && first == nil {
					first = err
				}
			}
			if streamCheck(t, name, first) != "chunk_decode" || !errors.Is(first, ErrChecksum) {
				t.Errorf("bound off, chunk %d changed: %v, want chunk_decode", trip, first)
			}
			r = reader(0)
			var msg *StreamMessage
			for k, v := range values {
				m, err := r.Add(v)
				if err != nil {
					t.Fatalf("bound off: part %d: %v", k, err)
				}
				msg = m
			}
			if msg == nil || len(msg.Tensors) != len(e.Tensors) {
				t.Fatalf("bound off: no message")
			}
			for i, want := range e.Tensors {
				if hex.EncodeToString(msg.Tensors[i].Raw) != want.RawHex {
					t.Errorf("bound off: tensor %q differs", want.Name)
				}
			}
		})
	}
}

// TestStreamPackedChunks: a packed chunk (section 14.5) is checked tensor by
// tensor against the tensors it fills, every one of its tensors before any of
// them is decoded (a chunk with a wrong CRC-32C and a wrong dtype further on
// is refused for the dtype); its tensors may be compressed or lossy like any
// chunk's and decode into the tensors that follow; the expansion bound counts
// every tensor of the chunk. The changed streams are resealed (and
// renumbered), so that what refuses them is the chunk.
func TestStreamPackedChunks(t *testing.T) {
	var e streamExpectation
	for _, s := range loadStreams(t) {
		if s.Name == "stream_packed" {
			e = s
		}
	}
	if e.Name == "" {
		t.Fatal("no stream vector stream_packed")
	}
	values := streamParts(t, e)
	parse := func(v []byte) *flwirev1.StreamPart {
		var part flwirev1.StreamPart
		if err := proto.Unmarshal(v, &part); err != nil {
			t.Fatal(err)
		}
		return &part
	}
	marshal := func(part *flwirev1.StreamPart) []byte {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(part)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// resealed numbers the parts in order and makes the seal count them and
	// their CRC-32C.
	resealed := func(values [][]byte) [][]byte {
		out := make([][]byte, len(values))
		for k, v := range values {
			part := parse(v)
			part.PartIndex = uint32(k)
			if seal := part.GetSeal(); seal != nil {
				seal.PartCount, seal.StreamCrc32C = uint32(len(values)), CRC32C(bytes.Join(out[:k], nil))
			}
			out[k] = marshal(part)
		}
		return out
	}
	// Part 2 packs enc.weight's last 22 float32 elements (zstd), enc.bias
	// (float16 of 4) and step (an int64), both raw.
	const packedPart = 2
	changed := func(change func(ts []*flwirev1.Tensor)) [][]byte {
		part := parse(values[packedPart])
		ts := part.GetChunk().GetElements().GetTensors()
		if len(ts) != 3 {
			t.Fatalf("part %d holds %d tensors", packedPart, len(ts))
		}
		change(ts)
		out := append([][]byte{}, values...)
		out[packedPart] = marshal(part)
		return resealed(out)
	}
	if msg, _, err := readStream(changed(func([]*flwirev1.Tensor) {})); msg == nil || err != nil {
		t.Fatalf("stream_packed resealed: %v", err)
	}
	for _, c := range []struct {
		name   string
		values [][]byte
		check  string
		cause  error
	}{
		{"first tensor's CRC-32C and the last's dtype", changed(func(ts []*flwirev1.Tensor) {
			ts[0].Crc32C ^= 1
			ts[2].Dtype = flwirev1.Dtype_DTYPE_UINT64
		}), "chunk_elements", nil},
		{"packed tensor named", changed(func(ts []*flwirev1.Tensor) {
			ts[1].Name = "enc.bias"
		}), "chunk_elements", nil},
		{"packed tensor 2-D", changed(func(ts []*flwirev1.Tensor) {
			ts[1].Shape = []int64{2, 2}
		}), "chunk_elements", nil},
		{"packed tensor short of its end", changed(func(ts []*flwirev1.Tensor) {
			ts[1].Shape, ts[1].RawSize, ts[1].Data = []int64{3}, 6, ts[1].Data[:6]
			ts[1].Crc32C = CRC32C(ts[1].Data)
		}), "chunk_packed", nil},
		{"last packed tensor past its end", changed(func(ts []*flwirev1.Tensor) {
			ts[2].Shape, ts[2].RawSize, ts[2].Data = []int64{2}, 16, append(bytes.Clone(ts[2].Data), ts[2].Data...)
			ts[2].Crc32C = CRC32C(ts[2].Data)
		}), "chunk_overrun", nil},
		{"packed tensor's CRC-32C", changed(func(ts []*flwirev1.Tensor) {
			ts[1].Crc32C ^= 1
		}), "chunk_decode", ErrChecksum},
		{"packed tensors named alike", changed(func(ts []*flwirev1.Tensor) {
			ts[1].Name, ts[2].Name = "x", "x"
		}), "chunk_elements", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg, r, err := readStream(c.values)
			if msg != nil || r.Pending() != 0 {
				t.Fatalf("message %v, %d pending, %v", msg != nil, r.Pending(), err)
			}
			got := streamCheck(t, c.name, err)
			if got != c.check || c.cause != nil && !errors.Is(err, c.cause) || errors.Is(err, ErrChecksum) != (c.cause == ErrChecksum) {
				t.Errorf("refused for %q (%v), want %s (%v)", got, err, c.check, c.cause)
			}
			t.Logf("%v", err)
		})
	}

	wantTensors := func(name string, values [][]byte) {
		t.Helper()
		msg, _, err := readStream(values)
		if msg == nil || err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for i, want := range e.Tensors {
			if hex.EncodeToString(msg.Tensors[i].Raw) != want.RawHex {
				t.Errorf("%s: tensor %q: %x, want %s", name, want.Name, msg.Tensors[i].Raw, want.RawHex)
			}
		}
	}
	// The packed tensors compressed: enc.bias byte-shuffled under zstd, step
	// under zstd.
	wantTensors("compressed", changed(func(ts []*flwirev1.Tensor) {
		raw := ts[1].Data
		shuffled := make([]byte, len(raw))
		for i := range raw {
			shuffled[i%2*(len(raw)/2)+i/2] = raw[i]
		}
		ts[1].Codec, ts[1].Filter = flwirev1.Codec_CODEC_ZSTD, flwirev1.Filter_FILTER_BYTE_SHUFFLE
		ts[1].Data = encodeZstd(t, shuffled)
		ts[2].Codec, ts[2].Data = flwirev1.Codec_CODEC_ZSTD, encodeZstd(t, ts[2].Data)
	}))
	// dec.weight (ten float32 -2.0, tensor 3) packed after step, cast to
	// float16 (exact), in place of part 3.
	part := parse(values[packedPart])
	elements := part.GetChunk().GetElements()
	payload := bytes.Repeat([]byte{0x00, 0xc0}, 10)
	elements.Tensors = append(elements.Tensors, &flwirev1.Tensor{Dtype: flwirev1.Dtype_DTYPE_FLOAT32,
		Shape: []int64{10}, RawSize: 20, Crc32C: CRC32C(payload), Data: payload,
		Lossy: &flwirev1.LossyEncoding{Method: flwirev1.Lossy_LOSSY_CAST_FLOAT16}})
	if p := e.Parts[3]; p.Kind != "chunk" || p.TensorIndex != 3 || p.ElementCount != 10 {
		t.Fatalf("part 3 is not dec.weight whole: %+v", p)
	}
	wantTensors("lossy", resealed([][]byte{values[0], values[1], marshal(part), values[4], values[5]}))

	// The expansion bound counts all of part 2's tensors: 512 bytes decoded
	// after part 1, 600 with enc.weight's last 22 elements, 616 with those
	// packed after them; 525 bytes of records by then (ratio 0.5: under the
	// floor). A floor of 608 trips at part 2, before it is decoded; one of
	// 616 at part 3 (656 bytes).
	for _, c := range []struct {
		floor uint64
		trip  int
	}{{608, 2}, {616, 3}} {
		r := NewStreamReader()
		r.Limits.ExpansionFloor, r.Limits.MaxExpansion = c.floor, 0.5
		for k, v := range values {
			_, err := r.Add(v)
			if k < c.trip && err != nil {
				t.Fatalf("floor %d: part %d: %v", c.floor, k, err)
			}
			if k == c.trip {
				if streamCheck(t, "expansion", err) != "chunk_elements" || !errors.Is(err, ErrExpansion) {
					t.Errorf("floor %d: part %d: %v, want chunk_elements (%v)", c.floor, k, err, ErrExpansion)
				}
				break
			}
		}
	}
}
