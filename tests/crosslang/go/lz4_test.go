package conformance

// LZ4 tensors (CODEC_LZ4, section 7 of docs/wire-format.md): one case per
// reader check, mirroring test_malformed_lz4_data_is_refused in
// tests/conformance/test_golden_vectors.py, and frames of other writers that
// a reader must accept. Hand-made frames are built here from the LZ4 frame
// format, with their header checksums, so that only the field under test is
// wrong.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/bits"
	"strings"
	"testing"

	"github.com/pierrec/lz4/v4"

	"flwire.test/conformance/flwirev1"
)

// --- XXH32, the checksum of the LZ4 frame format -----------------------------

const (
	xxhP1 uint32 = 2654435761
	xxhP2 uint32 = 2246822519
	xxhP3 uint32 = 3266489917
	xxhP4 uint32 = 668265263
	xxhP5 uint32 = 374761393
)

func xxh32(b []byte, seed uint32) uint32 {
	n := len(b)
	var h uint32
	if n >= 16 {
		v := [4]uint32{seed + xxhP1 + xxhP2, seed + xxhP2, seed, seed - xxhP1}
		for len(b) >= 16 {
			for k := range v {
				v[k] = bits.RotateLeft32(v[k]+binary.LittleEndian.Uint32(b[4*k:])*xxhP2, 13) * xxhP1
			}
			b = b[16:]
		}
		h = bits.RotateLeft32(v[0], 1) + bits.RotateLeft32(v[1], 7) +
			bits.RotateLeft32(v[2], 12) + bits.RotateLeft32(v[3], 18)
	} else {
		h = seed + xxhP5
	}
	h += uint32(n)
	for ; len(b) >= 4; b = b[4:] {
		h = bits.RotateLeft32(h+binary.LittleEndian.Uint32(b)*xxhP3, 17) * xxhP4
	}
	for _, c := range b {
		h = bits.RotateLeft32(h+uint32(c)*xxhP5, 11) * xxhP1
	}
	h ^= h >> 15
	h *= xxhP2
	h ^= h >> 13
	h *= xxhP3
	h ^= h >> 16
	return h
}

// lz4HC is the header checksum byte of a frame descriptor (FLG .. Dict-ID).
func lz4HC(descriptor []byte) byte { return byte(xxh32(descriptor, 0) >> 8) }

// --- frames ------------------------------------------------------------------

// lz4Opts describe a hand-made LZ4 frame.
type lz4Opts struct {
	blockMaxID      byte  // 4 to 7 (0: 6); anything else is written as it is
	blockSizes      []int // content bytes per block; nil: pieces of the block maximum (half, compressed)
	compressed      bool  // blocks as literal-only LZ4 sequences, else stored
	noSize          bool  // no Content Size field
	setSize         bool  // record size instead of len(content)
	size            uint64
	dictID          uint32 // non-zero: a Dict-ID field
	blockChecksum   bool
	contentChecksum bool
}

// literalBlock is content as one compressed block of a single literal-only
// sequence (valid LZ4: a block's last sequence holds literals only).
func literalBlock(content []byte) []byte {
	n := len(content)
	if n < 15 {
		return append([]byte{byte(n << 4)}, content...)
	}
	out := []byte{0xF0}
	for rest := n - 15; ; rest -= 255 {
		if rest < 255 {
			out = append(out, byte(rest))
			break
		}
		out = append(out, 255)
	}
	return append(out, content...)
}

func handLZ4Frame(content []byte, o lz4Opts) []byte {
	id := o.blockMaxID
	if id == 0 {
		id = 6
	}
	flg := byte(0x60) // version 01, independent blocks
	if o.blockChecksum {
		flg |= 0x10
	}
	if !o.noSize {
		flg |= 0x08
	}
	if o.contentChecksum {
		flg |= 0x04
	}
	if o.dictID != 0 {
		flg |= 0x01
	}
	desc := []byte{flg, id << 4}
	if !o.noSize {
		size := uint64(len(content))
		if o.setSize {
			size = o.size
		}
		desc = binary.LittleEndian.AppendUint64(desc, size)
	}
	if o.dictID != 0 {
		desc = binary.LittleEndian.AppendUint32(desc, o.dictID)
	}
	out := binary.LittleEndian.AppendUint32(nil, lz4Magic)
	out = append(append(out, desc...), lz4HC(desc))
	sizes := o.blockSizes
	if sizes == nil {
		step := 64 << 10
		if blockMax, ok := lz4BlockMax[id]; ok {
			step = int(blockMax)
		}
		if o.compressed {
			step /= 2
		}
		for a := 0; a < len(content); a += step {
			sizes = append(sizes, min(step, len(content)-a))
		}
	}
	at := 0
	for _, n := range sizes {
		piece := content[at : at+n]
		at += n
		wire, flag := piece, uint32(lz4Stored)
		if o.compressed {
			wire, flag = literalBlock(piece), 0
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(len(wire))|flag)
		out = append(out, wire...)
		if o.blockChecksum {
			out = binary.LittleEndian.AppendUint32(out, xxh32(wire, 0))
		}
	}
	out = append(out, 0, 0, 0, 0) // end mark
	if o.contentChecksum {
		out = binary.LittleEndian.AppendUint32(out, xxh32(content, 0))
	}
	return out
}

// lz4WithHeader is frame (one with a content size) with FLG, BD or the content
// size replaced (negative: kept) and the header checksum recomputed, then
// XORed with hcXor.
func lz4WithHeader(frame []byte, flg, bd int, size int64, hcXor byte) []byte {
	b := bytes.Clone(frame)
	if flg >= 0 {
		b[4] = byte(flg)
	}
	if bd >= 0 {
		b[5] = byte(bd)
	}
	if size >= 0 {
		binary.LittleEndian.PutUint64(b[6:], uint64(size))
	}
	b[14] = lz4HC(b[4:14]) ^ hcXor
	return b
}

// encodeLZ4 makes one frame with pierrec/lz4's writer as flwire writes them:
// the content size recorded (pierrec writes it only with SizeOption), a 1 MiB
// block maximum and no content checksum, unless opts say otherwise.
func encodeLZ4(t *testing.T, raw []byte, opts ...lz4.Option) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := lz4.NewWriter(&buf)
	opts = append([]lz4.Option{lz4.SizeOption(uint64(len(raw))), lz4.BlockSizeOption(lz4.Block1Mb),
		lz4.ChecksumOption(false)}, opts...)
	if err := w.Apply(opts...); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := checkFrames(buf.Bytes(), uint64(len(raw)), checkLZ4Frame); err != nil {
		t.Fatalf("pierrec frame of %d bytes: %v", len(raw), err)
	}
	return buf.Bytes()
}

// lz4Content decompresses LZ4 frames with pierrec/lz4 (for mutations).
func lz4Content(t *testing.T, data []byte) []byte {
	t.Helper()
	out, err := io.ReadAll(lz4.NewReader(bytes.NewReader(data)))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// lz4Tensor makes a uint8 tensor of raw whose data is the given LZ4 frames.
func lz4Tensor(raw, data []byte) *flwirev1.Tensor {
	t := rawTensor("z", flwirev1.Dtype_DTYPE_UINT8, []int64{int64(len(raw))}, raw)
	t.Codec, t.Data = flwirev1.Codec_CODEC_LZ4, data
	return t
}

func TestXXH32(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint32
	}{
		{"", 0x02CC5D05}, {"abc", 0x32D153FF},
		{"Nobody inspects the spammish repetition", 0xE2293B2F},
	} {
		if got := xxh32([]byte(c.in), 0); got != c.want {
			t.Errorf("xxh32(%q) = %#08x, want %#08x", c.in, got, c.want)
		}
	}
	// pierrec's header checksum and content checksum agree.
	raw := bytes.Repeat([]byte("flwire lz4 "), 1000)
	f := encodeLZ4(t, raw, lz4.ChecksumOption(true))
	if f[14] != lz4HC(f[4:14]) {
		t.Errorf("header checksum %#02x, xxh32 gives %#02x", f[14], lz4HC(f[4:14]))
	}
	if got := binary.LittleEndian.Uint32(f[len(f)-4:]); got != xxh32(raw, 0) {
		t.Errorf("content checksum %#08x, xxh32 gives %#08x", got, xxh32(raw, 0))
	}
	// And pierrec reads the hand-made frames.
	for _, o := range []lz4Opts{{}, {compressed: true, blockChecksum: true, contentChecksum: true},
		{blockMaxID: 4, compressed: true}} {
		if got := lz4Content(t, handLZ4Frame(raw, o)); !bytes.Equal(got, raw) {
			t.Errorf("hand-made frame %+v: pierrec reads other bytes", o)
		}
	}
}

// TestLZ4Refusals: one case per reader check of an LZ4 tensor, on the golden
// vectors. lz4: tensor 0 is a 64x64 float32 (16,384 bytes, unshuffled) in one
// frame; lz4_frames: tensor 0 a shuffled 513x256 float32 in two frames of
// 524,288 and 1,024 bytes.
func TestLZ4Refusals(t *testing.T) {
	mutated := func(vector string, mutate func(t *testing.T, tn *flwirev1.Tensor)) func(*testing.T) []byte {
		return func(t *testing.T) []byte {
			m := base(t, vector)
			if m.Tensors[0].Codec != flwirev1.Codec_CODEC_LZ4 {
				t.Fatalf("%s: tensor 0 is not LZ4", vector)
			}
			mutate(t, m.Tensors[0])
			return marshal(t, m)
		}
	}
	data := func(vector string, frames func(t *testing.T, d []byte) []byte) func(*testing.T) []byte {
		return mutated(vector, func(t *testing.T, tn *flwirev1.Tensor) { tn.Data = frames(t, tn.Data) })
	}
	skippable := []byte{0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 's', 'k', 'i', 'p'}
	cases := []struct {
		name   string
		mutate func(t *testing.T) []byte
		want   error
		reason string
	}{
		{"not a frame", data("lz4", func(t *testing.T, d []byte) []byte {
			return lz4Content(t, d)
		}), ErrFrame, "does not start with the LZ4 magic number"},
		{"skippable frame first", data("lz4", func(t *testing.T, d []byte) []byte {
			return append(bytes.Clone(skippable), d...)
		}), ErrFrame, "does not start with the LZ4 magic number"},
		{"legacy frame", data("lz4", func(t *testing.T, d []byte) []byte {
			return append([]byte{0x02, 0x21, 0x4c, 0x18}, d[4:]...)
		}), ErrFrame, "does not start with the LZ4 magic number"},
		{"version 00", data("lz4", func(t *testing.T, d []byte) []byte {
			return lz4WithHeader(d, int(d[4]&0x3F), -1, -1, 0)
		}), ErrFrame, "version 00"},
		{"reserved FLG bit", data("lz4", func(t *testing.T, d []byte) []byte {
			return lz4WithHeader(d, int(d[4]|0x02), -1, -1, 0)
		}), ErrFrame, "reserved bits"},
		{"reserved BD bit", data("lz4", func(t *testing.T, d []byte) []byte {
			return lz4WithHeader(d, -1, int(d[5]|0x01), -1, 0)
		}), ErrFrame, "reserved bits"},
		{"block maximum size id 3", data("lz4", func(t *testing.T, d []byte) []byte {
			return lz4WithHeader(d, -1, 3<<4, -1, 0)
		}), ErrFrame, "block maximum size id 3"},
		{"dictionary id", data("lz4", func(t *testing.T, d []byte) []byte {
			return handLZ4Frame(lz4Content(t, d), lz4Opts{blockMaxID: 4, dictID: 7})
		}), ErrFrame, "dictionary id"},
		{"no content size", data("lz4", func(t *testing.T, d []byte) []byte {
			return handLZ4Frame(lz4Content(t, d), lz4Opts{blockMaxID: 4, noSize: true})
		}), ErrFrame, "does not record its content size"},
		{"content size one more than raw_size", data("lz4", func(t *testing.T, d []byte) []byte {
			return lz4WithHeader(d, -1, -1, 16385, 0)
		}), ErrFrame, "add up to 16385, raw_size is 16384"},
		{"content size one less than raw_size", data("lz4", func(t *testing.T, d []byte) []byte {
			return lz4WithHeader(d, -1, -1, 16383, 0)
		}), ErrFrame, "add up to 16383, raw_size is 16384"},
		{"a frame after the last", data("lz4_frames", func(t *testing.T, d []byte) []byte {
			return append(bytes.Clone(d), handLZ4Frame([]byte("x"), lz4Opts{})...)
		}), ErrFrame, "frame 1 holds 1024 bytes and is not the last"},
		{"frames add up to one more than raw_size", data("lz4_frames", func(t *testing.T, d []byte) []byte {
			first, _, err := checkLZ4Frame(d, 0)
			if err != nil {
				t.Fatal(err)
			}
			last := append(lz4Content(t, d)[524288:], 'x')
			return append(bytes.Clone(d[:first]), handLZ4Frame(last, lz4Opts{blockMaxID: 4})...)
		}), ErrFrame, "add up to 525313, raw_size is 525312"},
		{"a missing last frame", data("lz4_frames", func(t *testing.T, d []byte) []byte {
			first, _, err := checkLZ4Frame(d, 0)
			if err != nil {
				t.Fatal(err)
			}
			return d[:first]
		}), ErrFrame, "add up to 524288, raw_size is 525312"},
		{"a short frame before the last", data("lz4", func(t *testing.T, d []byte) []byte {
			c := lz4Content(t, d)
			return append(handLZ4Frame(c[:16], lz4Opts{blockMaxID: 4}),
				handLZ4Frame(c[16:], lz4Opts{blockMaxID: 4})...)
		}), ErrFrame, "frame 0 holds 16 bytes and is not the last"},
		{"a trailing byte", data("lz4", func(t *testing.T, d []byte) []byte {
			return append(bytes.Clone(d), 0)
		}), ErrFrame, "does not start with the LZ4 magic number"},
		{"truncated header", data("lz4", func(t *testing.T, d []byte) []byte {
			return d[:10]
		}), ErrFrame, "truncated LZ4 frame header"},
		{"no end mark", data("lz4", func(t *testing.T, d []byte) []byte {
			return d[:len(d)-4]
		}), ErrFrame, "no end mark"},
		{"block runs past the data", data("lz4", func(t *testing.T, d []byte) []byte {
			return d[:100]
		}), ErrFrame, "runs past the end of data"},
		{"block above the block maximum size", data("lz4", func(t *testing.T, d []byte) []byte {
			// A block maximum of 64 KiB, and one stored block of 80 KiB.
			c := bytes.Repeat(lz4Content(t, d), 5)
			return handLZ4Frame(c, lz4Opts{blockMaxID: 4, blockSizes: []int{81920}})
		}), ErrFrame, "above the frame's block maximum size 65536"},
		{"content size beyond what the blocks hold", mutated("lz4", func(t *testing.T, tn *flwirev1.Tensor) {
			// 1 GiB declared (within the default limits) for one block of 17
			// bytes: refused before 1 GiB is allocated.
			*tn = *lz4Tensor(nil, handLZ4Frame(make([]byte, 16),
				lz4Opts{compressed: true, setSize: true, size: 1 << 30}))
			tn.Shape, tn.RawSize = []int64{1 << 30}, 1<<30
		}), ErrFrame, "more than its blocks can hold"},
		{"content size 0 with content", mutated("lz4", func(t *testing.T, tn *flwirev1.Tensor) {
			// A 64 KiB frame, then a last frame that declares 0 bytes and holds
			// one: the sizes add up. liblz4 does not check a Content Size of 0
			// (pierrec does, at the end mark); the reader checks sizes itself.
			frames := append(handLZ4Frame(make([]byte, 65536), lz4Opts{blockMaxID: 5}),
				handLZ4Frame([]byte("x"), lz4Opts{setSize: true, size: 0})...)
			*tn = *lz4Tensor(make([]byte, 65536), frames)
		}), ErrDecompress, "does not end after its 0 bytes of content"},
		{"header checksum", data("lz4", func(t *testing.T, d []byte) []byte {
			return lz4WithHeader(d, -1, -1, -1, 0x01)
		}), ErrDecompress, "LZ4 frame at offset 0"},
		{"blocks shorter than the content size", data("lz4", func(t *testing.T, d []byte) []byte {
			// One literal-only block of 16,383 bytes in a frame that declares
			// 16,384: the block could hold more, so only decompressing finds it.
			c := lz4Content(t, d)
			return handLZ4Frame(c[:len(c)-1], lz4Opts{blockMaxID: 4, compressed: true,
				setSize: true, size: 16384})
		}), ErrDecompress, "LZ4 frame at offset 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := Decode(c.mutate(t), DefaultLimits)
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

// TestLZ4Accepted covers LZ4 data a reader must (or may) accept although
// flwire writers do not produce it.
func TestLZ4Accepted(t *testing.T) {
	m := base(t, "lz4")
	raw := lz4Content(t, m.Tensors[0].Data) // unshuffled: the raw bytes
	want, err := Decode(readFile(t, "lz4.bin"), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want.Tensors[0].Raw, raw) {
		t.Fatal("the lz4 vector's frame does not hold its raw bytes")
	}
	cases := []struct {
		name  string
		frame func(t *testing.T) []byte
	}{
		{"pierrec, content and block checksums", func(t *testing.T) []byte {
			return encodeLZ4(t, raw, lz4.ChecksumOption(true), lz4.BlockChecksumOption(true))
		}},
		{"pierrec, 4 MiB block maximum", func(t *testing.T) []byte {
			return encodeLZ4(t, raw, lz4.BlockSizeOption(lz4.Block4Mb))
		}},
		{"pierrec, 64 KiB block maximum", func(t *testing.T) []byte {
			return encodeLZ4(t, raw, lz4.BlockSizeOption(lz4.Block64Kb))
		}},
		{"stored blocks, one of 0 bytes", func(t *testing.T) []byte {
			return handLZ4Frame(raw, lz4Opts{blockMaxID: 7, blockSizes: []int{100, 0, 16284}})
		}},
		{"literal-only blocks with checksums", func(t *testing.T) []byte {
			return handLZ4Frame(raw, lz4Opts{blockMaxID: 4, compressed: true, blockChecksum: true,
				contentChecksum: true})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m.Tensors[0].Data = c.frame(t)
			got, err := Decode(marshal(t, m), DefaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Tensors[0].Raw, raw) {
				t.Fatal("wrong bytes")
			}
		})
	}
	t.Run("several frames of 64 KiB", func(t *testing.T) {
		big := make([]byte, 5*minFrameBytes/2)
		for k := range big {
			big[k] = byte(k % 251)
		}
		var frames []byte
		for a := 0; a < len(big); a += minFrameBytes {
			frames = append(frames, encodeLZ4(t, big[a:min(a+minFrameBytes, len(big))])...)
		}
		ts, err := DecodeTensorMap(mapOf(t, lz4Tensor(big, frames)))
		if err != nil || !bytes.Equal(ts[0].Raw, big) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("empty tensor with a zero-size frame", func(t *testing.T) {
		tn := lz4Tensor(nil, handLZ4Frame(nil, lz4Opts{}))
		tn.Shape = []int64{0}
		ts, err := DecodeTensorMap(mapOf(t, tn))
		if err != nil || len(ts[0].Raw) != 0 {
			t.Fatalf("err = %v", err)
		}
	})
}
