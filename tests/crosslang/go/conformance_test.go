package conformance

// Conformance of the Go reader (decode.go) with the golden vectors in
// tests/vectors, following "Writing a conformance runner" in
// tests/vectors/README.md, plus targeted corruptions for every reader check
// of section 10 of docs/wire-format.md.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"flwire.test/conformance/flwirev1"
)

var vectorsDir = filepath.Join("..", "..", "vectors")

const alignment = 64 // docs/wire-format.md, section 2.3 rule 7

// manifest.json
type manifest struct {
	Vectors []struct {
		Name  string `json:"name"`
		Files map[string]struct {
			Path   string `json:"path"`
			Size   int    `json:"size"`
			SHA256 string `json:"sha256"`
		} `json:"files"`
	} `json:"vectors"`
}

// <name>.json
type expectation struct {
	Name     string              `json:"name"`
	Message  string              `json:"message"`
	Metadata map[string]string   `json:"metadata"`
	Tensors  []expectationTensor `json:"tensors"`
}

type expectationTensor struct {
	Name    string  `json:"name"`
	Dtype   string  `json:"dtype"`
	Shape   []int64 `json:"shape"`
	Codec   string  `json:"codec"`
	Filter  string  `json:"filter"`
	RawSize uint64  `json:"raw_size"`
	CRC32C  string  `json:"crc32c"`
	RawHex  string  `json:"raw_hex"` // a lossy tensor's payload
	// A lossy tensor (section 9.1): its Tensor.lossy fields, the logical tensor
	// a reader reconstructs, and the tensor before the lossy encoding.
	Lossy *struct {
		Method      string `json:"method"`
		BlockSize   uint32 `json:"block_size"`
		K           uint64 `json:"k"`
		DecodedHex  string `json:"decoded_hex"`
		OriginalHex string `json:"original_hex"`
	} `json:"lossy"`
}

// lossyFacts is what .json says of a tensor's lossy field: "" when lossless.
func (e expectationTensor) lossyFacts() string {
	if e.Lossy == nil {
		return ""
	}
	return fmt.Sprintf("%s/%d/%d", e.Lossy.Method, e.Lossy.BlockSize, e.Lossy.K)
}

// lossyFacts formats a decoded tensor's lossy encoding like expectationTensor's.
func lossyFacts(l *Lossy) string {
	if l == nil {
		return ""
	}
	return fmt.Sprintf("%s/%d/%d", l.Method, l.BlockSize, l.K)
}

type vector struct {
	name   string
	bin    []byte
	txtpb  []byte
	expect expectation
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorsDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// loadVectors reads the manifest and every vector, checking each file's size
// and SHA-256 against the manifest (README step 1).
func loadVectors(t *testing.T) []vector {
	t.Helper()
	var m manifest
	if err := json.Unmarshal(readFile(t, "manifest.json"), &m); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(m.Vectors) == 0 {
		t.Fatal("manifest.json lists no vectors")
	}
	var out []vector
	for _, v := range m.Vectors {
		files := map[string][]byte{}
		for _, kind := range []string{"bin", "txtpb", "json"} {
			f, ok := v.Files[kind]
			if !ok {
				t.Fatalf("%s: manifest has no %s file", v.Name, kind)
			}
			b := readFile(t, f.Path)
			sum := sha256.Sum256(b)
			if got := hex.EncodeToString(sum[:]); got != f.SHA256 || len(b) != f.Size {
				t.Fatalf("%s: sha256 %s, %d bytes; manifest says %s, %d bytes",
					f.Path, got, len(b), f.SHA256, f.Size)
			}
			files[kind] = b
		}
		vec := vector{name: v.Name, bin: files["bin"], txtpb: files["txtpb"]}
		if err := json.Unmarshal(files["json"], &vec.expect); err != nil {
			t.Fatalf("%s.json: %v", v.Name, err)
		}
		if vec.expect.Name != v.Name || vec.expect.Message != "flwire.v1.TensorMap" {
			t.Fatalf("%s.json: name %q, message %q", v.Name, vec.expect.Name, vec.expect.Message)
		}
		out = append(out, vec)
	}
	return out
}

// TestVectors decodes every vector and compares it with its expectations
// (README steps 2 and 3).
func TestVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			// Step 3: the stock generated TensorMap.
			var pb flwirev1.TensorMap
			if err := proto.Unmarshal(v.bin, &pb); err != nil {
				t.Fatalf("proto.Unmarshal: %v", err)
			}
			if len(pb.ProtoReflect().GetUnknown()) != 0 {
				t.Errorf("TensorMap has unknown fields")
			}
			if len(pb.Tensors) != len(v.expect.Tensors) {
				t.Fatalf("%d tensors on the wire, %d expected", len(pb.Tensors), len(v.expect.Tensors))
			}
			for i, tp := range pb.Tensors {
				e := v.expect.Tensors[i]
				if len(tp.ProtoReflect().GetUnknown()) != 0 {
					t.Errorf("tensor %d has unknown fields", i)
				}
				got := [4]string{tp.GetCodec().String(), tp.GetFilter().String(),
					fmt.Sprint(tp.GetRawSize()), fmt.Sprintf("%08x", tp.GetCrc32C())}
				want := [4]string{e.Codec, e.Filter, fmt.Sprint(e.RawSize), e.CRC32C}
				if got != want {
					t.Errorf("tensor %d (codec, filter, raw_size, crc32c) = %v, want %v", i, got, want)
				}
				var pbLossy string // the generated LossyEncoding, as .json writes it
				if l := tp.GetLossy(); l != nil {
					pbLossy = fmt.Sprintf("%s/%d/%d", l.GetMethod(), l.GetBlockSize(), l.GetK())
					if len(l.ProtoReflect().GetUnknown()) != 0 {
						t.Errorf("tensor %d: lossy has unknown fields", i)
					}
				}
				if pbLossy != e.lossyFacts() {
					t.Errorf("tensor %d: lossy (method/block_size/k) = %q, want %q",
						i, pbLossy, e.lossyFacts())
				}
			}
			if !reflect.DeepEqual(nonNil(pb.GetMetadata()), nonNil(v.expect.Metadata)) {
				t.Errorf("metadata %v, want %v", pb.GetMetadata(), v.expect.Metadata)
			}

			// The text form parses to the same message.
			var fromText flwirev1.TensorMap
			if err := prototext.Unmarshal(v.txtpb, &fromText); err != nil {
				t.Fatalf("prototext.Unmarshal(%s.txtpb): %v", v.name, err)
			}
			if !proto.Equal(&pb, &fromText) {
				t.Errorf("%s.txtpb and %s.bin differ", v.name, v.name)
			}

			// Step 2: the decoder.
			m, err := Decode(v.bin, DefaultLimits)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			checkExpected(t, v, m)
		})
	}
}

// checkExpected compares a decoded map with the vector's .json.
func checkExpected(t *testing.T, v vector, m *Map) {
	t.Helper()
	if len(m.Tensors) != len(v.expect.Tensors) {
		t.Fatalf("%d tensors decoded, %d expected", len(m.Tensors), len(v.expect.Tensors))
	}
	for i, got := range m.Tensors {
		e := v.expect.Tensors[i]
		raw, err := hex.DecodeString(e.RawHex)
		if err != nil {
			t.Fatalf("tensor %d: raw_hex: %v", i, err)
		}
		// The generator computed crc32c with a bitwise reference implementation;
		// Go's hash/crc32 must agree with it.
		if c := fmt.Sprintf("%08x", CRC32C(raw)); c != e.CRC32C {
			t.Errorf("tensor %d: hash/crc32 Castagnoli of raw_hex is %s, .json says %s",
				i, c, e.CRC32C)
		}
		// A lossy tensor: raw_hex is the payload (what the CRC covers), and the
		// decoder returns the reconstructed logical tensor of decoded_hex.
		payload, logical := raw, raw
		gotPayload := got.Raw
		if e.Lossy != nil {
			if logical, err = hex.DecodeString(e.Lossy.DecodedHex); err != nil {
				t.Fatalf("tensor %d: decoded_hex: %v", i, err)
			}
			gotPayload = got.Payload
		}
		shape := got.Shape
		if shape == nil {
			shape = []int64{}
		}
		eShape := e.Shape
		if eShape == nil {
			eShape = []int64{}
		}
		checks := []struct {
			what      string
			got, want any
		}{
			{"name", got.Name, e.Name},
			{"dtype", got.Dtype.String(), e.Dtype},
			{"shape", shape, eShape},
			{"codec", got.Codec.String(), e.Codec},
			{"filter", got.Filter.String(), e.Filter},
			{"raw_size", got.RawSize, e.RawSize},
			{"crc32c", fmt.Sprintf("%08x", got.CRC32C), e.CRC32C},
			{"len(payload)", uint64(len(gotPayload)), e.RawSize},
			{"lossy", lossyFacts(got.Lossy), e.lossyFacts()},
			{"len(raw)", uint64(len(got.Raw)), numel(e.Shape) * Width(got.Dtype)},
		}
		for _, c := range checks {
			if !reflect.DeepEqual(c.got, c.want) {
				t.Errorf("tensor %d (%q): %s = %v, want %v", i, e.Name, c.what, c.got, c.want)
			}
		}
		if e.Lossy != nil && !bytes.Equal(got.Payload, payload) {
			t.Errorf("tensor %d (%q): payload\n got %x\nwant %x", i, e.Name, got.Payload, payload)
		}
		if !bytes.Equal(got.Raw, logical) {
			t.Errorf("tensor %d (%q): raw bytes\n got %x\nwant %x", i, e.Name, got.Raw, logical)
		}
	}
	if !reflect.DeepEqual(nonNil(m.Metadata), nonNil(v.expect.Metadata)) {
		t.Errorf("metadata %v, want %v", m.Metadata, v.expect.Metadata)
	}
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// TestDecodeTensorMap checks the convenience entry point on one vector.
func TestDecodeTensorMap(t *testing.T) {
	ts, err := DecodeTensorMap(readFile(t, "float32_small.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[0].Name != "weight" || ts[0].Dtype != flwirev1.Dtype_DTYPE_FLOAT32 ||
		!reflect.DeepEqual(ts[0].Shape, []int64{2, 3}) || len(ts[0].Raw) != 24 {
		t.Fatalf("got %+v", ts)
	}
	if _, err := DecodeTensorMap([]byte{0x0a, 0x05, 0x10}); !errors.Is(err, ErrProtobuf) {
		t.Fatalf("truncated message: err = %v, want ErrProtobuf", err)
	}
}

// TestCanonicalEncoding checks the writer-side properties of the .bin files
// that a reader can see (README step 4): uncompressed data is 64-aligned,
// compressed tensors have no padding, and Go's deterministic serialization of
// the parsed message gives the same bytes (section 2.3 says the canonical form
// is what protobuf's deterministic serialization gives).
func TestCanonicalEncoding(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			for i, loc := range locateTensors(t, v.bin) {
				e := v.expect.Tensors[i]
				if e.Codec != "CODEC_UNSPECIFIED" {
					if loc.padding != nil {
						t.Errorf("tensor %d: compressed, but has a padding field", i)
					}
				} else if e.RawSize > 0 && loc.data.start%alignment != 0 {
					t.Errorf("tensor %d: data at offset %d, not a multiple of %d",
						i, loc.data.start, alignment)
				}
				if loc.padding != nil && loc.data != nil {
					withoutField := loc.data.start - loc.padding.fieldLen
					if loc.padding.fieldLen > 0 && withoutField%alignment == 0 {
						t.Errorf("tensor %d: padding although data was already aligned", i)
					}
				}
			}
			var pb flwirev1.TensorMap
			if err := proto.Unmarshal(v.bin, &pb); err != nil {
				t.Fatal(err)
			}
			again, err := proto.MarshalOptions{Deterministic: true}.Marshal(&pb)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, v.bin) {
				t.Errorf("Go's deterministic serialization differs from %s.bin:\n got %x\nwant %x",
					v.name, again, v.bin)
			}
		})
	}
}

// span is a byte range of a field's payload in the message.
type span struct {
	start, end int
	fieldLen   int // bytes of the whole field: key, length and payload
}

// tensorFields is where one tensor's padding and data payloads and its
// lossy field lie.
type tensorFields struct {
	padding, data, lossy *span
}

const (
	mapTensorsField    = 1
	tensorPaddingField = 8
	tensorDataField    = 9
	tensorLossyField   = 10
)

// locateTensors walks the wire bytes with protowire (no generated code) and
// returns, per tensor in order, the offsets of its padding and data payloads.
func locateTensors(t *testing.T, b []byte) []tensorFields {
	t.Helper()
	var out []tensorFields
	for pos := 0; pos < len(b); {
		num, typ, n := protowire.ConsumeTag(b[pos:])
		if n < 0 {
			t.Fatalf("offset %d: %v", pos, protowire.ParseError(n))
		}
		valLen := protowire.ConsumeFieldValue(num, typ, b[pos+n:])
		if valLen < 0 {
			t.Fatalf("offset %d: %v", pos, protowire.ParseError(valLen))
		}
		if num == mapTensorsField && typ == protowire.BytesType {
			payload, m := protowire.ConsumeBytes(b[pos+n:])
			start := pos + n + m - len(payload)
			out = append(out, locateFields(t, b, start, start+len(payload)))
		}
		pos += n + valLen
	}
	return out
}

func locateFields(t *testing.T, b []byte, start, end int) tensorFields {
	t.Helper()
	var tf tensorFields
	for pos := start; pos < end; {
		num, typ, n := protowire.ConsumeTag(b[pos:end])
		if n < 0 {
			t.Fatalf("offset %d: %v", pos, protowire.ParseError(n))
		}
		valLen := protowire.ConsumeFieldValue(num, typ, b[pos+n:end])
		if valLen < 0 {
			t.Fatalf("offset %d: %v", pos, protowire.ParseError(valLen))
		}
		if typ == protowire.BytesType &&
			(num == tensorPaddingField || num == tensorDataField || num == tensorLossyField) {
			payload, m := protowire.ConsumeBytes(b[pos+n : end])
			s := &span{start: pos + n + m - len(payload), fieldLen: n + valLen}
			s.end = s.start + len(payload)
			switch num {
			case tensorPaddingField:
				tf.padding = s
			case tensorDataField:
				tf.data = s
			default:
				tf.lossy = s
			}
		}
		pos += n + valLen
	}
	return tf
}

// TestTampering flips bytes and truncates the messages (README step 5).
func TestTampering(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			want, err := Decode(v.bin, DefaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			for i, loc := range locateTensors(t, v.bin) {
				e := v.expect.Tensors[i]
				if loc.data != nil {
					flipData(t, v, i, e.Codec != "CODEC_UNSPECIFIED", *loc.data, want)
				}
				if loc.lossy != nil {
					// Every byte of the lossy field, its key and length included:
					// refused, or a different result (the CRC-32C covers the
					// payload, not the method, block_size and k).
					for k := loc.lossy.end - loc.lossy.fieldLen; k < loc.lossy.end; k++ {
						for _, mask := range []byte{0x01, 0xff} {
							b := bytes.Clone(v.bin)
							b[k] ^= mask
							if got, err := Decode(b, DefaultLimits); err == nil &&
								reflect.DeepEqual(got, want) {
								t.Fatalf("tensor %d: lossy byte at offset %d ^ %#02x: same result",
									i, k, mask)
							}
						}
					}
				}
				if loc.padding != nil {
					// The content of padding carries no meaning (section 2.4).
					for k := loc.padding.start; k < loc.padding.end; k++ {
						b := bytes.Clone(v.bin)
						b[k] ^= 0xa5
						got, err := Decode(b, DefaultLimits)
						if err != nil || !reflect.DeepEqual(got, want) {
							t.Fatalf("tensor %d: padding byte at offset %d changed: err %v, "+
								"result changed: %v", i, k, err, !reflect.DeepEqual(got, want))
						}
					}
				}
			}
			// Every truncation is refused or decodes to something else.
			for n := 0; n < len(v.bin); n++ {
				got, err := Decode(v.bin[:n], DefaultLimits)
				if err == nil && reflect.DeepEqual(got, want) {
					t.Fatalf("truncated to %d of %d bytes: same result", n, len(v.bin))
				}
			}
		})
	}
}

// Compressed data longer than flipAllBytes has its first and last 512 bytes
// (frame headers, end marks) and every flipStride-th byte between flipped, so
// that the 500 KiB lz4_frames vector stays quick (as in the Python runner).
const (
	flipAllBytes = 16384
	flipStride   = 13
)

// flipData flips every byte of one tensor's data, one at a time. For
// uncompressed data the CRC-32C must catch it. Inside a zstd or LZ4 frame some
// bits do not affect the output: the result must be an error or exact.
func flipData(t *testing.T, v vector, i int, compressed bool, data span, want *Map) {
	t.Helper()
	refused := map[string]int{} // by the check that refused
	exact := 0
	for k := data.start; k < data.end; k++ {
		inner := k - (data.start + 512)
		if compressed && data.end-data.start > flipAllBytes && k < data.end-512 && inner >= 0 &&
			inner%flipStride != 0 {
			continue
		}
		b := bytes.Clone(v.bin)
		b[k] ^= 0xff
		got, err := Decode(b, DefaultLimits)
		switch {
		case !compressed && !errors.Is(err, ErrChecksum):
			t.Fatalf("tensor %d: data byte at offset %d flipped: err = %v, want ErrChecksum",
				i, k, err)
		case err != nil:
			refused[kind(err)]++
		case reflect.DeepEqual(got, want):
			exact++
		default:
			t.Fatalf("tensor %d: data byte at offset %d flipped: decoded to a different result",
				i, k)
		}
	}
	if compressed {
		t.Logf("tensor %d: %d compressed data bytes, flipped one at a time: refused %v; "+
			"decoded exactly: %d", i, data.end-data.start, refused, exact)
	}
}

// kind names the sentinel error that err wraps.
func kind(err error) string {
	for _, e := range []error{ErrProtobuf, ErrDtype, ErrShape, ErrRawSize, ErrLimit, ErrCodec,
		ErrFilter, ErrDataSize, ErrFrame, ErrEmptyChecksum, ErrDuplicateName, ErrDecompress,
		ErrChecksum, ErrBool, ErrLossyMethod, ErrLossyDtype, ErrLossyParams, ErrLossyFilter,
		ErrTopKIndex, ErrUnknownBytes, ErrExpansion} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return "other: " + err.Error()
}

// --- Targeted corruptions, one per reader check ---------------------------

// base returns the parsed TensorMap of a vector, to be mutated.
func base(t *testing.T, name string) *flwirev1.TensorMap {
	t.Helper()
	var pb flwirev1.TensorMap
	if err := proto.Unmarshal(readFile(t, name+".bin"), &pb); err != nil {
		t.Fatal(err)
	}
	return &pb
}

func marshal(t *testing.T, m *flwirev1.TensorMap) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawTensor makes an uncompressed tensor of the given bytes.
func rawTensor(name string, d flwirev1.Dtype, shape []int64, raw []byte) *flwirev1.Tensor {
	return &flwirev1.Tensor{Name: name, Dtype: d, Shape: shape, RawSize: uint64(len(raw)),
		Crc32C: CRC32C(raw), Data: raw}
}

// zstdTensor makes a compressed tensor whose data is the given frame.
func zstdTensor(raw, frame []byte) *flwirev1.Tensor {
	t := rawTensor("z", flwirev1.Dtype_DTYPE_UINT8, []int64{int64(len(raw))}, raw)
	t.Codec, t.Data = flwirev1.Codec_CODEC_ZSTD, frame
	return t
}

// frameOpts describe a hand-made zstd frame of raw blocks (RFC 8878).
type frameOpts struct {
	noFCS      bool   // no Frame_Content_Size (implies a window descriptor)
	setFCS     bool   // use fcs as Frame_Content_Size instead of len(content)
	fcs        uint64 //
	dictID     byte   // non-zero: a 1-byte Dictionary_ID
	multiSeg   bool   // not single-segment: write windowByte
	windowByte byte   // Window_Descriptor, with noFCS or multiSeg
}

func handFrame(content []byte, o frameOpts) []byte {
	fcs := uint64(len(content))
	if o.setFCS {
		fcs = o.fcs
	}
	var fhd byte
	var fields []byte
	if !o.noFCS && !o.multiSeg {
		fhd |= 0x20 // single segment
	} else {
		fields = append(fields, o.windowByte)
	}
	if o.dictID != 0 {
		fhd |= 0x01
		fields = append(fields, o.dictID)
	}
	if !o.noFCS {
		fhd |= 3 << 6
		fields = binary.LittleEndian.AppendUint64(fields, fcs)
	}
	out := binary.LittleEndian.AppendUint32(nil, 0xFD2FB528)
	out = append(out, fhd)
	out = append(out, fields...)
	bh := uint32(len(content))<<3 | 1 // raw block, last
	out = append(out, byte(bh), byte(bh>>8), byte(bh>>16))
	return append(out, content...)
}

// encodeZstd makes one zstd frame with klauspost's encoder. Single-segment
// mode makes it record Frame_Content_Size even for inputs under 256 bytes
// (by default it omits it for them, which flwire forbids), and like flwire
// writers it omits the content checksum unless opts ask for it.
func encodeZstd(t *testing.T, raw []byte, opts ...zstd.EOption) []byte {
	t.Helper()
	opts = append([]zstd.EOption{zstd.WithSingleSegment(true), zstd.WithEncoderCRC(false)}, opts...)
	enc, err := zstd.NewWriter(nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	frame := enc.EncodeAll(raw, nil)
	if err := checkFrames(frame, uint64(len(raw)), checkFrame); err != nil {
		t.Fatalf("klauspost frame of %d bytes: %v", len(raw), err)
	}
	return frame
}

func limits(tensorBytes, totalBytes uint64, tensors int) *Limits {
	return &Limits{MaxTensorBytes: tensorBytes, MaxTotalBytes: totalBytes, MaxTensors: tensors,
		MaxRank: 8}
}

func TestRefusals(t *testing.T) {
	// float32_small: one 2x3 float32; mixed_dtypes: tensor 2 is a 2x2 bool,
	// tensor 5 an empty uint8; zstd: one compressed 64x64 float32.
	raw := []byte("0123456789abcdef0123456789abcdef")
	frame := encodeZstd(t, raw)
	cases := []struct {
		name   string
		mutate func(t *testing.T) []byte
		limits *Limits
		want   error
		reason string // a substring of the message, where several causes share want
	}{
		{"dtype unspecified", func(t *testing.T) []byte {
			m := base(t, "float32_small")
			m.Tensors[0].Dtype = flwirev1.Dtype_DTYPE_UNSPECIFIED
			return marshal(t, m)
		}, nil, ErrDtype, ""},
		{"dtype unknown", func(t *testing.T) []byte {
			m := base(t, "float32_small")
			m.Tensors[0].Dtype = 22
			return marshal(t, m)
		}, nil, ErrDtype, ""},
		{"negative dimension", func(t *testing.T) []byte {
			m := base(t, "float32_small")
			m.Tensors[0].Shape = []int64{-2, -3}
			return marshal(t, m)
		}, nil, ErrShape, "dimension 0 is -2"},
		{"empty tensor with huge dimensions", func(t *testing.T) []byte {
			m := base(t, "float32_small")
			m.Tensors[0] = rawTensor("e", flwirev1.Dtype_DTYPE_FLOAT32,
				[]int64{0, 1 << 31, 1 << 31}, nil)
			return marshal(t, m)
		}, nil, ErrShape, "2^63 or more"},
		{"rank above the limit", func(t *testing.T) []byte {
			m := base(t, "float32_small")
			m.Tensors[0].Shape = make([]int64, 65)
			for k := range m.Tensors[0].Shape {
				m.Tensors[0].Shape[k] = 1
			}
			m.Tensors[0].Shape[0] = 6
			return marshal(t, m)
		}, nil, ErrShape, "rank 65"},
		{"raw_size does not match the shape", func(t *testing.T) []byte {
			m := base(t, "float32_small")
			m.Tensors[0].Shape = []int64{3, 3}
			return marshal(t, m)
		}, nil, ErrRawSize, ""},
		{"raw_size wraps around 2^64", func(t *testing.T) []byte {
			m := base(t, "float32_small")
			// 2^62 * 4 = 2^64 wraps to 0 in uint64 arithmetic; check 2 refuses it.
			m.Tensors[0] = rawTensor("w", flwirev1.Dtype_DTYPE_FLOAT32, []int64{1 << 62}, nil)
			return marshal(t, m)
		}, nil, ErrShape, "2^63 or more"},
		{"tensor above the per-tensor limit", func(t *testing.T) []byte {
			return readFile(t, "float32_small.bin")
		}, limits(23, 1<<20, 10), ErrLimit, "per-tensor limit"},
		{"map above the per-map limit", func(t *testing.T) []byte {
			return readFile(t, "mixed_dtypes.bin")
		}, limits(8, 20, 10), ErrLimit, "total raw size"},
		{"too many tensors", func(t *testing.T) []byte {
			return readFile(t, "mixed_dtypes.bin")
		}, limits(8, 1<<20, 5), ErrLimit, "6 tensors"},
		{"codec unknown", func(t *testing.T) []byte {
			m := base(t, "float32_small")
			m.Tensors[0].Codec = 3
			return marshal(t, m)
		}, nil, ErrCodec, ""},
		{"filter unknown", func(t *testing.T) []byte {
			m := base(t, "float32_small")
			m.Tensors[0].Filter = 2
			return marshal(t, m)
		}, nil, ErrFilter, ""},
		{"uncompressed data too short", func(t *testing.T) []byte {
			m := base(t, "float32_small")
			m.Tensors[0].Data = m.Tensors[0].Data[:20]
			return marshal(t, m)
		}, nil, ErrDataSize, ""},
		{"uncompressed data missing", func(t *testing.T) []byte {
			m := base(t, "float32_small")
			m.Tensors[0].Data = nil
			return marshal(t, m)
		}, nil, ErrDataSize, ""},
		{"empty tensor with a crc32c", func(t *testing.T) []byte {
			m := base(t, "mixed_dtypes")
			m.Tensors[5].Crc32C = 1
			return marshal(t, m)
		}, nil, ErrEmptyChecksum, ""},
		{"duplicate name", func(t *testing.T) []byte {
			m := base(t, "mixed_dtypes")
			m.Tensors[1].Name = m.Tensors[0].Name
			return marshal(t, m)
		}, nil, ErrDuplicateName, ""},
		{"crc32c changed", func(t *testing.T) []byte {
			m := base(t, "float32_small")
			m.Tensors[0].Crc32C ^= 1
			return marshal(t, m)
		}, nil, ErrChecksum, ""},
		{"crc32c absent", func(t *testing.T) []byte {
			m := base(t, "float32_small")
			m.Tensors[0].Crc32C = 0
			return marshal(t, m)
		}, nil, ErrChecksum, ""},
		{"bool byte 0x02 with a matching crc32c", func(t *testing.T) []byte {
			m := base(t, "mixed_dtypes")
			b := m.Tensors[2]
			b.Data = []byte{1, 0, 2, 1}
			b.Crc32C = CRC32C(b.Data)
			return marshal(t, m)
		}, nil, ErrBool, ""},
		{"invalid UTF-8 in a name", func(t *testing.T) []byte {
			b := readFile(t, "float32_small.bin")
			b = bytes.Clone(b)
			b[4] = 0xff // first byte of "weight"
			return b
		}, nil, ErrProtobuf, ""},
		{"field number 0", func(t *testing.T) []byte {
			return append(readFile(t, "float32_small.bin"), 0x00, 0x00)
		}, nil, ErrProtobuf, ""},
		{"zstd: not a frame", func(t *testing.T) []byte {
			return mapOf(t, zstdTensor(raw, raw))
		}, nil, ErrFrame, "magic number"},
		{"zstd: skippable frame first", func(t *testing.T) []byte {
			skip := []byte{0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0}
			return mapOf(t, zstdTensor(raw, append(skip, frame...)))
		}, nil, ErrFrame, "magic number"},
		{"zstd: a second frame", func(t *testing.T) []byte {
			two := append(bytes.Clone(frame), encodeZstd(t, nil)...)
			return mapOf(t, zstdTensor(raw, two))
		}, nil, ErrFrame, "frame 0 holds 32 bytes and is not the last"},
		{"zstd: trailing byte", func(t *testing.T) []byte {
			return mapOf(t, zstdTensor(raw, append(bytes.Clone(frame), 0)))
		}, nil, ErrFrame, "does not start with the zstd magic number"},
		{"zstd: a short frame before the last", func(t *testing.T) []byte {
			two := append(encodeZstd(t, raw[:16]), encodeZstd(t, raw[16:])...)
			return mapOf(t, zstdTensor(raw, two))
		}, nil, ErrFrame, "frame 0 holds 16 bytes and is not the last"},
		{"zstd: truncated", func(t *testing.T) []byte {
			return mapOf(t, zstdTensor(raw, frame[:len(frame)-1]))
		}, nil, ErrFrame, "runs past the end"},
		{"zstd: no Frame_Content_Size", func(t *testing.T) []byte {
			return mapOf(t, zstdTensor(raw, handFrame(raw, frameOpts{noFCS: true})))
		}, nil, ErrFrame, "does not record Frame_Content_Size"},
		{"zstd: Frame_Content_Size is not raw_size", func(t *testing.T) []byte {
			f := handFrame(raw, frameOpts{setFCS: true, fcs: uint64(len(raw)) - 1})
			return mapOf(t, zstdTensor(raw, f))
		}, nil, ErrFrame, "content sizes add up to 31, raw_size is 32"},
		{"zstd: dictionary", func(t *testing.T) []byte {
			return mapOf(t, zstdTensor(raw, handFrame(raw, frameOpts{dictID: 7})))
		}, nil, ErrFrame, "dictionary 7"},
		{"zstd: window above 2^27", func(t *testing.T) []byte {
			f := handFrame(raw, frameOpts{multiSeg: true, windowByte: 18 << 3}) // 2^28
			return mapOf(t, zstdTensor(raw, f))
		}, nil, ErrFrame, "above 2^27"},
		{"zstd: blocks shorter than Frame_Content_Size", func(t *testing.T) []byte {
			// Frame_Content_Size says 32 bytes, the raw block holds 31: walking
			// the blocks finds it, before anything is decompressed.
			f := handFrame(raw[:31], frameOpts{setFCS: true, fcs: 32})
			return mapOf(t, zstdTensor(raw, f))
		}, nil, ErrFrame, "more than its blocks can hold"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lim := DefaultLimits
			if c.limits != nil {
				lim = *c.limits
			}
			m, err := Decode(c.mutate(t), lim)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.reason) {
				t.Fatalf("err = %v, want %v (%q)", err, c.want, c.reason)
			}
			if m != nil {
				t.Fatalf("a refused map was returned: %+v", m)
			}
			t.Logf("refused: %v", err)
		})
	}
}

func mapOf(t *testing.T, ts ...*flwirev1.Tensor) []byte {
	t.Helper()
	return marshal(t, &flwirev1.TensorMap{Tensors: ts})
}

// TestAccepted covers inputs a reader must (or may) accept although flwire
// writers do not produce them.
func TestAccepted(t *testing.T) {
	raw := []byte{0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38} // float16 1.0, -2.0, 0.5
	shuffled := []byte{0x00, 0x00, 0x00, 0x3c, 0xc0, 0x38}

	decodeOne := func(t *testing.T, b []byte) Tensor {
		t.Helper()
		ts, err := DecodeTensorMap(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(ts) != 1 {
			t.Fatalf("%d tensors", len(ts))
		}
		return ts[0]
	}

	t.Run("shuffle without codec", func(t *testing.T) {
		// Section 6: a reader undoes the filter whatever the codec.
		tn := rawTensor("h", flwirev1.Dtype_DTYPE_FLOAT16, []int64{3}, raw)
		tn.Filter, tn.Data = flwirev1.Filter_FILTER_BYTE_SHUFFLE, shuffled
		if got := decodeOne(t, mapOf(t, tn)).Raw; !bytes.Equal(got, raw) {
			t.Fatalf("raw %x, want %x", got, raw)
		}
	})
	t.Run("shuffle with zstd, section 6 example", func(t *testing.T) {
		tn := rawTensor("h", flwirev1.Dtype_DTYPE_FLOAT16, []int64{3}, raw)
		tn.Codec, tn.Filter = flwirev1.Codec_CODEC_ZSTD, flwirev1.Filter_FILTER_BYTE_SHUFFLE
		tn.Data = encodeZstd(t, shuffled)
		if got := decodeOne(t, mapOf(t, tn)).Raw; !bytes.Equal(got, raw) {
			t.Fatalf("raw %x, want %x", got, raw)
		}
	})
	t.Run("shuffle of a width-1 dtype is the identity", func(t *testing.T) {
		tn := rawTensor("u", flwirev1.Dtype_DTYPE_UINT8, []int64{6}, raw)
		tn.Filter = flwirev1.Filter_FILTER_BYTE_SHUFFLE
		if got := decodeOne(t, mapOf(t, tn)).Raw; !bytes.Equal(got, raw) {
			t.Fatalf("raw %x, want %x", got, raw)
		}
	})
	t.Run("zstd frame with a content checksum", func(t *testing.T) {
		big := bytes.Repeat([]byte("flwire"), 100)
		f := encodeZstd(t, big, zstd.WithEncoderCRC(true))
		if f[4]&0x04 == 0 {
			t.Fatal("the encoder wrote no content checksum")
		}
		if got := decodeOne(t, mapOf(t, zstdTensor(big, f))).Raw; !bytes.Equal(got, big) {
			t.Fatal("wrong bytes")
		}
		// A wrong content checksum is refused by the zstd decoder.
		f = bytes.Clone(f)
		f[len(f)-1] ^= 0xff
		if _, err := DecodeTensorMap(mapOf(t, zstdTensor(big, f))); !errors.Is(err, ErrDecompress) {
			t.Fatalf("err = %v, want ErrDecompress", err)
		}
	})
	t.Run("zstd data of several frames", func(t *testing.T) {
		// As flwire writes large tensors: frames of a fixed size, the last shorter.
		big := make([]byte, 5*minFrameBytes/2)
		for k := range big {
			big[k] = byte(k % 251)
		}
		var frames []byte
		for a := 0; a < len(big); a += minFrameBytes {
			frames = append(frames, encodeZstd(t, big[a:min(a+minFrameBytes, len(big))])...)
		}
		if got := decodeOne(t, mapOf(t, zstdTensor(big, frames))).Raw; !bytes.Equal(got, big) {
			t.Fatal("wrong bytes")
		}
	})
	t.Run("zstd frame of raw blocks, multi-segment", func(t *testing.T) {
		f := handFrame(raw, frameOpts{multiSeg: true, windowByte: 0})
		got := decodeOne(t, mapOf(t, zstdTensor(raw, f)))
		if !bytes.Equal(got.Raw, raw) {
			t.Fatal("wrong bytes")
		}
	})
	t.Run("empty tensor with a zero-size zstd frame", func(t *testing.T) {
		tn := zstdTensor(nil, handFrame(nil, frameOpts{}))
		tn.Shape = []int64{0}
		if got := decodeOne(t, mapOf(t, tn)); len(got.Raw) != 0 {
			t.Fatal("not empty")
		}
	})
	t.Run("non-canonical protobuf", func(t *testing.T) {
		// Fields in reverse order, shape unpacked, a non-repeated field twice
		// (the last value wins), an unknown field of every wire type, and no
		// padding: the same tensor as float32_small.
		want := base(t, "float32_small").Tensors[0]
		var tb []byte
		tb = protowire.AppendTag(tb, 9, protowire.BytesType)
		tb = protowire.AppendBytes(tb, want.Data)
		tb = protowire.AppendTag(tb, 7, protowire.Fixed32Type)
		tb = protowire.AppendFixed32(tb, want.Crc32C)
		tb = protowire.AppendTag(tb, 6, protowire.VarintType)
		tb = protowire.AppendVarint(tb, 99)
		tb = protowire.AppendTag(tb, 6, protowire.VarintType)
		tb = protowire.AppendVarint(tb, want.RawSize)
		for _, d := range want.Shape {
			tb = protowire.AppendTag(tb, 3, protowire.VarintType)
			tb = protowire.AppendVarint(tb, uint64(d))
		}
		tb = protowire.AppendTag(tb, 100, protowire.VarintType)
		tb = protowire.AppendVarint(tb, 1)
		tb = protowire.AppendTag(tb, 101, protowire.Fixed64Type)
		tb = protowire.AppendFixed64(tb, 1)
		tb = protowire.AppendTag(tb, 102, protowire.BytesType)
		tb = protowire.AppendBytes(tb, []byte("x"))
		tb = protowire.AppendTag(tb, 103, protowire.StartGroupType)
		tb = protowire.AppendTag(tb, 103, protowire.EndGroupType)
		tb = protowire.AppendTag(tb, 104, protowire.Fixed32Type)
		tb = protowire.AppendFixed32(tb, 1)
		tb = protowire.AppendTag(tb, 2, protowire.VarintType)
		tb = protowire.AppendVarint(tb, uint64(want.Dtype))
		tb = protowire.AppendTag(tb, 1, protowire.BytesType)
		tb = protowire.AppendString(tb, want.Name)
		var mb []byte
		mb = protowire.AppendTag(mb, 9, protowire.BytesType) // unknown TensorMap field
		mb = protowire.AppendBytes(mb, nil)
		mb = protowire.AppendTag(mb, 1, protowire.BytesType)
		mb = protowire.AppendBytes(mb, tb)

		got := decodeOne(t, mb)
		if got.Name != want.Name || !reflect.DeepEqual(got.Shape, want.Shape) ||
			got.RawSize != want.RawSize || !bytes.Equal(got.Raw, want.Data) {
			t.Fatalf("got %+v", got)
		}
	})
}

// --- Lossy tensors (section 9.1) --------------------------------------------

// setPayload replaces a tensor's (uncompressed) payload, with a matching
// raw_size and crc32c.
func setPayload(tn *flwirev1.Tensor, payload []byte) {
	tn.Data, tn.RawSize, tn.Crc32C = payload, uint64(len(payload)), CRC32C(payload)
}

// topKIndexAt is the offset in a float32 top-k payload of index j.
func topKIndexAt(tn *flwirev1.Tensor, j int) int {
	return int(tn.GetLossy().GetK())*int(Width(tn.GetDtype())) + 4*j
}

// TestLossyRefusals: one case per reader check of section 9.1, on the golden
// lossy vectors. They mirror test_malformed_lossy_tensors_are_refused in
// tests/conformance/test_golden_vectors.py. lossy_topk: tensor 0 is a 16x16
// float32 with k = 8; lossy_int8: tensor 3 a 128-element bfloat16 with
// block_size 64, uncompressed; lossy_float16: tensor 0 a 16x16 float32.
func TestLossyRefusals(t *testing.T) {
	mutated := func(vector string, i int, mutate func(*flwirev1.Tensor)) func(*testing.T) []byte {
		return func(t *testing.T) []byte {
			m := base(t, vector)
			mutate(m.Tensors[i])
			return marshal(t, m)
		}
	}
	cases := []struct {
		name   string
		mutate func(t *testing.T) []byte
		limits *Limits
		want   error
		reason string
	}{
		{"unknown method", mutated("lossy_topk", 0, func(tn *flwirev1.Tensor) {
			tn.Lossy.Method = 5
		}), nil, ErrLossyMethod, "method 5"},
		{"k above n", mutated("lossy_topk", 0, func(tn *flwirev1.Tensor) {
			tn.Lossy.K = 257
		}), nil, ErrLossyParams, "k=257"},
		{"k not the payload's", mutated("lossy_topk", 0, func(tn *flwirev1.Tensor) {
			tn.Lossy.K = 7
		}), nil, ErrRawSize, "takes 56 bytes, raw_size is 64"},
		{"k denser than one in 8", mutated("lossy_topk", 0, func(tn *flwirev1.Tensor) {
			tn.Lossy.K = 33 // of 256 elements
		}), nil, ErrLossyParams, "at most one in 8"},
		{"k of a huge tensor, within one in 8", mutated("lossy_topk", 1, func(tn *flwirev1.Tensor) {
			// bfloat16: (2^59 - 1) * (2 + 8) bytes, above the payload's raw_size
			tn.Shape, tn.Lossy.K = []int64{1<<62 - 1}, (1<<62-1)/8
		}), limits(math.MaxUint64, math.MaxUint64, 10), ErrRawSize, "takes 5764607523034234870 bytes"},
		{"block_size 7", mutated("lossy_int8", 3, func(tn *flwirev1.Tensor) {
			tn.Lossy.BlockSize = 7
		}), nil, ErrLossyParams, "block_size 7 (must be >= 8)"},
		{"block_size 0", mutated("lossy_int8", 3, func(tn *flwirev1.Tensor) {
			tn.Lossy.BlockSize = 0
		}), nil, ErrLossyParams, "block_size 0 (must be >= 8)"},
		{"block_size not the payload's", mutated("lossy_int8", 3, func(tn *flwirev1.Tensor) {
			tn.Lossy.BlockSize = 16
		}), nil, ErrRawSize, "takes 160 bytes, raw_size is 136"},
		{"shuffle on int8", mutated("lossy_int8", 3, func(tn *flwirev1.Tensor) {
			tn.Filter = flwirev1.Filter_FILTER_BYTE_SHUFFLE
		}), nil, ErrLossyFilter, "must not be filtered"},
		{"shuffle on top-k", mutated("lossy_topk", 0, func(tn *flwirev1.Tensor) {
			tn.Filter = flwirev1.Filter_FILTER_BYTE_SHUFFLE
		}), nil, ErrLossyFilter, "must not be filtered"},
		{"cast of a float16 tensor", mutated("lossy_float16", 0, func(tn *flwirev1.Tensor) {
			tn.Dtype = flwirev1.Dtype_DTYPE_FLOAT16
		}), nil, ErrLossyDtype, "casts apply to float32 and float64"},
		{"cast of a bfloat16 tensor", mutated("lossy_float16", 0, func(tn *flwirev1.Tensor) {
			tn.Dtype = flwirev1.Dtype_DTYPE_BFLOAT16
		}), nil, ErrLossyDtype, "casts apply to float32 and float64"},
		{"top-k of an int32 tensor", mutated("lossy_topk", 0, func(tn *flwirev1.Tensor) {
			tn.Dtype = flwirev1.Dtype_DTYPE_INT32
		}), nil, ErrLossyDtype, "floating tensors only"},
		{"int8 of a float8 tensor", mutated("lossy_int8", 3, func(tn *flwirev1.Tensor) {
			tn.Dtype = flwirev1.Dtype_DTYPE_FLOAT8_E4M3FN
		}), nil, ErrLossyDtype, "floating tensors only"},
		{"cast payload too short", mutated("lossy_float16", 0, func(tn *flwirev1.Tensor) {
			setPayload(tn, tn.Data[:len(tn.Data)-2])
		}), nil, ErrRawSize, "takes 512 bytes, raw_size is 510"},
		{"raw_size of the logical tensor", mutated("lossy_float16", 0, func(tn *flwirev1.Tensor) {
			tn.RawSize = 1024
		}), nil, ErrRawSize, "takes 512 bytes, raw_size is 1024"},
		{"payload changed", mutated("lossy_topk", 0, func(tn *flwirev1.Tensor) {
			tn.Data = bytes.Clone(tn.Data)
			tn.Data[0] ^= 1
		}), nil, ErrChecksum, ""},
		{"top-k indices not ascending", mutated("lossy_topk", 0, func(tn *flwirev1.Tensor) {
			p, at := bytes.Clone(tn.Data), topKIndexAt(tn, 0)
			copy(p[at:], append(bytes.Clone(tn.Data[at+4:at+8]), tn.Data[at:at+4]...))
			setPayload(tn, p)
		}), nil, ErrTopKIndex, "not strictly ascending (index 0 at position 1 follows 17)"},
		{"top-k index repeated", mutated("lossy_topk", 0, func(tn *flwirev1.Tensor) {
			p, at := bytes.Clone(tn.Data), topKIndexAt(tn, 1)
			copy(p[at:], tn.Data[at-4:at])
			setPayload(tn, p)
		}), nil, ErrTopKIndex, "not strictly ascending"},
		{"top-k index out of range", mutated("lossy_topk", 0, func(tn *flwirev1.Tensor) {
			p := bytes.Clone(tn.Data)
			binary.LittleEndian.PutUint32(p[len(p)-4:], 256)
			setPayload(tn, p)
		}), nil, ErrTopKIndex, "index 256 is out of range for 256 elements"},
		{"logical size above the per-tensor limit", func(t *testing.T) []byte {
			return readFile(t, "lossy_topk.bin") // delta: a payload of 64 bytes, 1024 decoded
		}, limits(1023, 1<<20, 10), ErrLimit, "decodes to 1024 bytes"},
		{"logical sizes above the per-map limit", func(t *testing.T) []byte {
			return readFile(t, "lossy_topk.bin") // 1024 + 256 bytes decoded, 112 of payload
		}, limits(1024, 1279, 10), ErrLimit, "total raw size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lim := DefaultLimits
			if c.limits != nil {
				lim = *c.limits
			}
			m, err := Decode(c.mutate(t), lim)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.reason) {
				t.Fatalf("err = %v, want %v (%q)", err, c.want, c.reason)
			}
			if m != nil {
				t.Fatalf("a refused map was returned: %+v", m)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestLossyAccepted covers lossy inputs a reader must accept although flwire
// writers do not produce them.
func TestLossyAccepted(t *testing.T) {
	t.Run("method 0 is lossless, whatever block_size and k say", func(t *testing.T) {
		m := base(t, "float32_small")
		m.Tensors[0].Lossy = &flwirev1.LossyEncoding{BlockSize: 7, K: 3}
		got, err := Decode(marshal(t, m), DefaultLimits)
		if err != nil || got.Tensors[0].Lossy != nil || !bytes.Equal(got.Tensors[0].Raw, m.Tensors[0].Data) {
			t.Fatalf("err = %v, got %+v", err, got)
		}
	})
	t.Run("the logical size at the per-tensor limit", func(t *testing.T) {
		if _, err := Decode(readFile(t, "lossy_topk.bin"), *limits(1024, 1280, 10)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("block_size varint beyond 32 bits keeps its low 32 bits", func(t *testing.T) {
		m := base(t, "lossy_int8")
		want, err := Decode(marshal(t, m), DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		// Tensor 3 again, with block_size 2^32 + 64 written by hand after its fields.
		tn := proto.Clone(m.Tensors[3]).(*flwirev1.Tensor)
		tn.Lossy = nil
		tb, err := proto.Marshal(tn)
		if err != nil {
			t.Fatal(err)
		}
		var lb []byte
		lb = protowire.AppendTag(lb, 1, protowire.VarintType)
		lb = protowire.AppendVarint(lb, uint64(flwirev1.Lossy_LOSSY_BLOCK_INT8))
		lb = protowire.AppendTag(lb, 2, protowire.VarintType)
		lb = protowire.AppendVarint(lb, 1<<32+64)
		tb = protowire.AppendTag(tb, tensorLossyField, protowire.BytesType)
		tb = protowire.AppendBytes(tb, lb)
		var mb []byte
		mb = protowire.AppendTag(mb, mapTensorsField, protowire.BytesType)
		mb = protowire.AppendBytes(mb, tb)
		got, err := Decode(mb, DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		if got.Tensors[0].Lossy.BlockSize != 64 || !bytes.Equal(got.Tensors[0].Raw, want.Tensors[3].Raw) {
			t.Fatalf("got %+v", got.Tensors[0])
		}
	})
	t.Run("a shuffled cast payload without a codec", func(t *testing.T) {
		// float32 [1.0, -2.0, 0.5] as float16 0x3c00, 0xc000, 0x3800, shuffled
		// with 2-byte elements (section 6's example).
		payload := []byte{0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38}
		tn := rawTensor("h", flwirev1.Dtype_DTYPE_FLOAT32, []int64{3}, payload)
		tn.Filter, tn.Data = flwirev1.Filter_FILTER_BYTE_SHUFFLE, []byte{0, 0, 0, 0x3c, 0xc0, 0x38}
		tn.Lossy = &flwirev1.LossyEncoding{Method: flwirev1.Lossy_LOSSY_CAST_FLOAT16}
		got, err := DecodeTensorMap(mapOf(t, tn))
		if err != nil {
			t.Fatal(err)
		}
		want := binary.LittleEndian.AppendUint32(nil, math.Float32bits(1))
		want = binary.LittleEndian.AppendUint32(want, math.Float32bits(-2))
		want = binary.LittleEndian.AppendUint32(want, math.Float32bits(0.5))
		if !bytes.Equal(got[0].Raw, want) || !bytes.Equal(got[0].Payload, payload) {
			t.Fatalf("raw %x, payload %x", got[0].Raw, got[0].Payload)
		}
	})
	t.Run("an empty top-k tensor", func(t *testing.T) {
		tn := rawTensor("e", flwirev1.Dtype_DTYPE_FLOAT32, []int64{0, 5}, nil)
		tn.Lossy = &flwirev1.LossyEncoding{Method: flwirev1.Lossy_LOSSY_TOP_K}
		got, err := DecodeTensorMap(mapOf(t, tn))
		if err != nil || len(got[0].Raw) != 0 {
			t.Fatalf("err = %v, got %+v", err, got)
		}
	})
}

// TestFloatConversions checks the hand-written IEEE conversions of decode.go
// against Go's own float32/float64 arithmetic and spot values of the spec.
func TestFloatConversions(t *testing.T) {
	f32 := func(x float32) uint32 { return math.Float32bits(x) }
	// Every float16 and bfloat16 widens exactly and rounds back to itself.
	for h := 0; h < 1<<16; h++ {
		w := float16ToFloat32(uint16(h))
		if x := math.Float32frombits(w); x != x {
			if h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
				t.Fatalf("float16 %#04x widened to NaN", h)
			}
			continue
		}
		if back := float32ToFloat16(w); back != uint16(h) {
			t.Fatalf("float16 %#04x -> %#08x -> %#04x", h, w, back)
		}
		if back := float32ToBfloat16(bfloat16ToFloat32(uint16(h))); back != uint16(h) &&
			h&0x7f80 != 0x7f80 {
			t.Fatalf("bfloat16 %#04x round trip gives %#04x", h, back)
		}
	}
	// The subnormal float16 1 * 2^-24 and the largest finite one.
	if got := math.Float32frombits(float16ToFloat32(0x0001)); got != 0x1p-24 {
		t.Fatalf("float16 0x0001 = %g", got)
	}
	if got := math.Float32frombits(float16ToFloat32(0x7bff)); got != 65504 {
		t.Fatalf("float16 0x7bff = %g", got)
	}
	// Round to nearest, ties to even (the cases of the lossy_float16 vector).
	for _, c := range []struct {
		x    float32
		want uint16
	}{
		{1 + 0x1p-11, 0x3c00}, {1 + 3*0x1p-11, 0x3c02}, {-(1 + 0x1p-11 + 0x1p-23), 0xbc01},
		{65519, 0x7bff}, {65520, 0x7c00}, {1e30, 0x7c00}, {0x1p-25, 0x0000},
		{3 * 0x1p-26, 0x0001}, {0x1p-14, 0x0400}, {0x1p-14 - 0x1p-25, 0x0400},
		{0x1p-149, 0x0000}, {-0x1p-126, 0x8000}, {-1000.0625, 0xe3d0}, {-1000.5, 0xe3d1},
	} {
		if got := float32ToFloat16(f32(c.x)); got != c.want {
			t.Errorf("float16(%g) = %#04x, want %#04x", c.x, got, c.want)
		}
	}
	for _, c := range []struct {
		x    float32
		want uint16
	}{
		{1 + 0x1p-8, 0x3f80}, {1 + 3*0x1p-8, 0x3f82}, {1 + 0x1p-8 + 0x1p-23, 0x3f81},
		{math.MaxFloat32, 0x7f80}, {-0x1p-149, 0x8000}, {0x1p-133, 0x0001},
	} {
		if got := float32ToBfloat16(f32(c.x)); got != c.want {
			t.Errorf("bfloat16(%g) = %#04x, want %#04x", c.x, got, c.want)
		}
	}
	// float32 -> float64 agrees with Go's conversion (exact) on a spread of
	// bit patterns, subnormals and infinities included.
	for b := uint64(0); b < 1<<32; b += 65521 {
		for _, w := range []uint32{uint32(b), uint32(b) | 0x80000000, uint32(b) & 0x807fffff} {
			x := math.Float32frombits(w)
			if x != x {
				continue
			}
			if got, want := float32ToFloat64(w), math.Float64bits(float64(x)); got != want {
				t.Fatalf("float64(%#08x) = %#016x, want %#016x", w, got, want)
			}
		}
	}
	if got := float32ToFloat64(0x7fc00000); got != 0x7ff8000000000000 {
		t.Fatalf("float64 of the quiet NaN = %#016x", got)
	}
}
