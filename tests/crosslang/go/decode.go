// Package conformance is a Go reader of flwire tensor maps, written from
// docs/wire-format.md alone, and a conformance runner (conformance_test.go)
// that checks it against the golden vectors in tests/vectors.
//
// The protobuf layer is stock: the generated flwirev1.TensorMap and
// proto.Unmarshal. Everything the schema cannot say (dtype widths, sizes,
// the byte shuffle, the zstd and LZ4 frame rules, CRC-32C, bool bytes, unique
// names, limits) is checked here, in the order of section 10 of the spec, and
// so are lossy tensors (section 9.1), which are then reconstructed
// (dequantized).
package conformance

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/bits"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"google.golang.org/protobuf/proto"

	"flwire.test/conformance/flwirev1"
)

// Tensor is one decoded tensor: its header fields as they were on the wire,
// and its raw little-endian bytes (after undoing the codec and the filter).
//
// For a lossy tensor (section 9.1) RawSize and CRC32C are, as on the wire,
// the payload's; Payload holds the decoded payload and Raw the reconstructed
// logical tensor (Dtype and Shape). For a lossless one Lossy and Payload are nil.
type Tensor struct {
	Name    string
	Dtype   flwirev1.Dtype
	Shape   []int64 // empty for a 0-d tensor
	Codec   flwirev1.Codec
	Filter  flwirev1.Filter
	RawSize uint64
	CRC32C  uint32
	Raw     []byte
	Lossy   *Lossy
	Payload []byte
}

// Map is a decoded TensorMap.
type Map struct {
	Tensors  []Tensor // in wire (state-dict) order
	Metadata map[string]string
}

// Limits bound what a reader agrees to allocate (spec section 11). Sizes are
// decoded sizes: raw_size, or the logical size of a lossy tensor.
type Limits struct {
	MaxTensorBytes uint64 // per tensor
	MaxTotalBytes  uint64 // per map
	MaxTensors     int
	// Tensors and metadata entries per MiB of the map (at least this many in
	// any map); 0: no limit.
	MaxTensorsPerMiB int
	MaxRank          int
	// Bytes of unknown fields in the TensorMap and its Tensors; 0: no limit.
	MaxUnknownBytes int
	// Decoded bytes of the whole map per byte of the map, above a floor of
	// ExpansionFloor bytes; 0: no limit.
	MaxExpansion   float64
	ExpansionFloor uint64
}

// DefaultLimits are flwire-python's DecodeLimits defaults.
var DefaultLimits = Limits{
	MaxTensorBytes:   1 << 32,
	MaxTotalBytes:    1 << 32,
	MaxTensors:       100_000,
	MaxTensorsPerMiB: 1024,
	MaxRank:          64,
	MaxUnknownBytes:  64 << 10,
	MaxExpansion:     100,
	ExpansionFloor:   16 << 20,
}

// The kinds of refusal. Every error returned by Decode wraps exactly one of
// them, so callers (and the tests) can tell the checks apart with errors.Is.
var (
	ErrProtobuf      = errors.New("invalid protobuf")                    // section 2.4
	ErrDtype         = errors.New("unknown or unspecified dtype")        // check 1
	ErrShape         = errors.New("invalid shape")                       // check 2
	ErrRawSize       = errors.New("raw_size does not match shape")       // check 3
	ErrLimit         = errors.New("limit exceeded")                      // check 4
	ErrCodec         = errors.New("unknown codec")                       // check 5
	ErrFilter        = errors.New("unknown filter")                      // check 5
	ErrDataSize      = errors.New("data length does not match raw_size") // check 6
	ErrFrame         = errors.New("invalid zstd or LZ4 frame")           // check 7
	ErrEmptyChecksum = errors.New("empty tensor with non-zero crc32c")   // check 8
	ErrDuplicateName = errors.New("duplicate tensor name")               // check 9
	ErrDecompress    = errors.New("decompression failed")                // check 10
	ErrChecksum      = errors.New("crc32c mismatch")                     // check 12
	ErrBool          = errors.New("bool byte other than 0x00 or 0x01")   // check 13
	ErrUnknownBytes  = errors.New("too many bytes of unknown fields")    // section 11
	ErrExpansion     = errors.New("declares too much for its size")      // section 11

	// Section 9.1, lossy tensors. A payload whose size is not raw_size is an
	// ErrRawSize (the check replaces check 3).
	ErrLossyMethod = errors.New("unknown lossy method")                      // the reader must upgrade
	ErrLossyDtype  = errors.New("lossy method not allowed for the dtype")    // casts: float32, float64
	ErrLossyParams = errors.New("invalid lossy parameters")                  // block_size < 8, 8k > n
	ErrNotSmaller  = errors.New("lossy payload not smaller than the tensor") // block int8
	ErrLossyFilter = errors.New("filter not allowed on the lossy payload")   // methods 3 and 4
	ErrTopKIndex   = errors.New("invalid top-k index")                       // after decoding
)

// Widths of section 4, by Dtype value. A dtype not in this table is refused.
var widths = map[flwirev1.Dtype]uint64{
	flwirev1.Dtype_DTYPE_FLOAT32:         4,
	flwirev1.Dtype_DTYPE_FLOAT64:         8,
	flwirev1.Dtype_DTYPE_FLOAT16:         2,
	flwirev1.Dtype_DTYPE_BFLOAT16:        2,
	flwirev1.Dtype_DTYPE_FLOAT8_E4M3FN:   1,
	flwirev1.Dtype_DTYPE_FLOAT8_E5M2:     1,
	flwirev1.Dtype_DTYPE_INT8:            1,
	flwirev1.Dtype_DTYPE_INT16:           2,
	flwirev1.Dtype_DTYPE_INT32:           4,
	flwirev1.Dtype_DTYPE_INT64:           8,
	flwirev1.Dtype_DTYPE_UINT8:           1,
	flwirev1.Dtype_DTYPE_UINT16:          2,
	flwirev1.Dtype_DTYPE_UINT32:          4,
	flwirev1.Dtype_DTYPE_UINT64:          8,
	flwirev1.Dtype_DTYPE_BOOL:            1,
	flwirev1.Dtype_DTYPE_COMPLEX64:       8,
	flwirev1.Dtype_DTYPE_COMPLEX128:      16,
	flwirev1.Dtype_DTYPE_COMPLEX32:       4,
	flwirev1.Dtype_DTYPE_FLOAT8_E4M3FNUZ: 1,
	flwirev1.Dtype_DTYPE_FLOAT8_E5M2FNUZ: 1,
	flwirev1.Dtype_DTYPE_FLOAT8_E8M0FNU:  1,
}

// Width returns the size in bytes of one element of d, or 0 if d is not a
// valid dtype.
func Width(d flwirev1.Dtype) uint64 { return widths[d] }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32C is the CRC-32C (Castagnoli) of b (spec section 8).
func CRC32C(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// DecodeTensorMap decodes an encoded flwire.v1.TensorMap with DefaultLimits.
func DecodeTensorMap(b []byte) ([]Tensor, error) {
	m, err := Decode(b, DefaultLimits)
	if err != nil {
		return nil, err
	}
	return m.Tensors, nil
}

// Decode decodes an encoded flwire.v1.TensorMap, refusing anything that
// section 10 of the spec says a reader must refuse. It never returns a
// partial result: on error the map is nil.
func Decode(b []byte, lim Limits) (*Map, error) { return decode(b, lim, false) }

// DecodeChunk decodes a streamed chunk's elements (section 14.5) as Decode
// does a map, but for check 9: a chunk's tensors are all unnamed (a packed
// chunk holds several), so names need not be unique. The stream reader checks
// that they are empty.
func DecodeChunk(b []byte, lim Limits) (*Map, error) { return decode(b, lim, true) }

func decode(b []byte, lim Limits, chunk bool) (*Map, error) {
	var pb flwirev1.TensorMap
	if err := proto.Unmarshal(b, &pb); err != nil {
		return nil, fmt.Errorf("flwire: %w: %v", ErrProtobuf, err)
	}
	if len(pb.Tensors) > lim.MaxTensors {
		return nil, fmt.Errorf("flwire: %w: %d tensors, the limit is %d",
			ErrLimit, len(pb.Tensors), lim.MaxTensors)
	}
	if lim.MaxTensorsPerMiB > 0 {
		size := uint64(len(b))
		if size < 1<<20 {
			size = 1 << 20
		}
		limit := size * uint64(lim.MaxTensorsPerMiB) >> 20
		if count := uint64(len(pb.Tensors) + len(pb.Metadata)); count > limit {
			return nil, fmt.Errorf("flwire: %w: %d tensors and metadata entries in %d bytes, "+
				"the limit is %d (%d per MiB)", ErrLimit, count, len(b), limit, lim.MaxTensorsPerMiB)
		}
	}
	if lim.MaxUnknownBytes > 0 {
		unknown := len(pb.ProtoReflect().GetUnknown())
		for _, t := range pb.Tensors {
			unknown += len(t.ProtoReflect().GetUnknown())
		}
		if unknown > lim.MaxUnknownBytes {
			return nil, fmt.Errorf("flwire: %w: %d bytes, the limit is %d",
				ErrUnknownBytes, unknown, lim.MaxUnknownBytes)
		}
	}

	// Checks 1-9 for every tensor (1-8 for a chunk's), before anything is
	// allocated for data.
	seen := make(map[string]int, len(pb.Tensors))
	var total uint64
	for i, t := range pb.Tensors {
		if err := checkHeader(t, lim, &total); err != nil {
			return nil, tensorError(i, t.GetName(), err)
		}
		if j, dup := seen[t.GetName()]; dup && !chunk {
			return nil, tensorError(i, t.GetName(),
				fmt.Errorf("%w: also tensor %d", ErrDuplicateName, j))
		}
		seen[t.GetName()] = i
	}
	// Section 11: what the map declares is bounded by what arrived.
	if lim.MaxExpansion > 0 {
		allowed := max(float64(lim.ExpansionFloor), lim.MaxExpansion*float64(len(b)))
		if float64(total) > allowed {
			return nil, fmt.Errorf("flwire: %w: a map of %d bytes declares %d decoded bytes, "+
				"more than max(%d, %g x its size)", ErrExpansion, len(b), total,
				lim.ExpansionFloor, lim.MaxExpansion)
		}
	}

	// Checks 10-13: decode the data.
	out := &Map{Tensors: make([]Tensor, len(pb.Tensors)), Metadata: pb.GetMetadata()}
	if out.Metadata == nil {
		out.Metadata = map[string]string{}
	}
	for i, t := range pb.Tensors {
		raw, err := decodeData(t, lim)
		if err != nil {
			return nil, tensorError(i, t.GetName(), err)
		}
		out.Tensors[i] = Tensor{
			Name:    t.GetName(),
			Dtype:   t.GetDtype(),
			Shape:   append([]int64{}, t.GetShape()...),
			Codec:   t.GetCodec(),
			Filter:  t.GetFilter(),
			RawSize: t.GetRawSize(),
			CRC32C:  t.GetCrc32C(),
			Raw:     raw,
		}
		if l := lossyOf(t); l != nil {
			payload := raw
			if raw, err = reconstruct(t.GetDtype(), numel(t.GetShape()), l, payload); err != nil {
				return nil, tensorError(i, t.GetName(), err)
			}
			out.Tensors[i].Raw, out.Tensors[i].Lossy, out.Tensors[i].Payload = raw, l, payload
		}
	}
	return out, nil
}

func tensorError(i int, name string, err error) error {
	return fmt.Errorf("flwire: tensor %d (%q): %w", i, name, err)
}

// checkHeader makes checks 1 to 8 of section 10; total accumulates raw_size
// over the map for the per-map limit.
func checkHeader(t *flwirev1.Tensor, lim Limits, total *uint64) error {
	// 1. dtype
	width := Width(t.GetDtype())
	if width == 0 {
		return fmt.Errorf("%w: %d", ErrDtype, int32(t.GetDtype()))
	}

	// 2. dimensions >= 0, rank cap, product(max(d, 1)) * width < 2^63
	shape := t.GetShape()
	if len(shape) > lim.MaxRank {
		return fmt.Errorf("%w: rank %d above the limit %d", ErrShape, len(shape), lim.MaxRank)
	}
	bound := width // product(max(d, 1)) * width so far
	for k, d := range shape {
		if d < 0 {
			return fmt.Errorf("%w: dimension %d is %d", ErrShape, k, d)
		}
		hi, lo := bits.Mul64(bound, uint64(max(d, 1)))
		if hi != 0 || lo > math.MaxInt64 {
			return fmt.Errorf("%w: product of dimensions %v times width %d is 2^63 or more",
				ErrShape, shape, width)
		}
		bound = lo
	}

	// 3. product(shape) * width == raw_size. After check 2 it cannot
	// overflow: it is at most product(max(d, 1)) * width < 2^63.
	// A lossy tensor replaces this check with those of section 9.1, and its
	// logical size, not its payload's, counts towards the limits.
	raw := t.GetRawSize()
	want := numel(shape) * width
	if l := lossyOf(t); l != nil {
		if err := checkLossy(t, l, lim); err != nil {
			return err
		}
	} else if want != raw {
		return fmt.Errorf("%w: shape %v of %s (width %d) needs %d bytes, raw_size is %d",
			ErrRawSize, shape, t.GetDtype(), width, want, raw)
	}

	// 4. limits
	if raw > lim.MaxTensorBytes {
		return fmt.Errorf("%w: raw_size %d above the per-tensor limit %d",
			ErrLimit, raw, lim.MaxTensorBytes)
	}
	if *total += want; *total > lim.MaxTotalBytes || *total < want {
		return fmt.Errorf("%w: total raw size of the map above the limit %d",
			ErrLimit, lim.MaxTotalBytes)
	}

	// 5. codec and filter
	switch t.GetCodec() {
	case flwirev1.Codec_CODEC_UNSPECIFIED, flwirev1.Codec_CODEC_ZSTD, flwirev1.Codec_CODEC_LZ4:
	default:
		return fmt.Errorf("%w: %d", ErrCodec, int32(t.GetCodec()))
	}
	switch t.GetFilter() {
	case flwirev1.Filter_FILTER_UNSPECIFIED, flwirev1.Filter_FILTER_BYTE_SHUFFLE:
	default:
		return fmt.Errorf("%w: %d", ErrFilter, int32(t.GetFilter()))
	}

	// 6. and 7. the data's length, or the frames' structure
	data := t.GetData()
	switch t.GetCodec() {
	case flwirev1.Codec_CODEC_UNSPECIFIED:
		if uint64(len(data)) != raw {
			return fmt.Errorf("%w: %d bytes of data, raw_size is %d", ErrDataSize, len(data), raw)
		}
	case flwirev1.Codec_CODEC_ZSTD:
		if err := checkFrames(data, raw, checkFrame); err != nil {
			return err
		}
	default:
		if err := checkFrames(data, raw, checkLZ4Frame); err != nil {
			return err
		}
	}

	// 8. the CRC-32C of no bytes is 0
	if raw == 0 && t.GetCrc32C() != 0 {
		return fmt.Errorf("%w: 0x%08x", ErrEmptyChecksum, t.GetCrc32C())
	}
	return nil
}

// zstd frame layout (RFC 8878, section 3.1.1).
const (
	zstdMagic        = 0xFD2FB528
	maxWindowLog     = 27 // spec section 7: readers may refuse windows above 2^27
	blockTypeRaw     = 0
	blockTypeRLE     = 1
	blockTypeZstd    = 2
	blockHeaderBytes = 3
	maxBlockSize     = 128 << 10 // Block_Maximum_Size
	minFrameBytes    = 64 << 10  // spec section 7: every frame but the last holds at least this
)

// frameWalker walks the frame that starts at data[start:] without
// decompressing it and returns where it ends and its content size: checkFrame
// for zstd, checkLZ4Frame for LZ4.
type frameWalker func(data []byte, start int) (int, uint64, error)

// checkFrames makes check 7 without decompressing anything: data is one or
// more frames (walked by walk), each without a dictionary and recording its
// content size; the content sizes add up to rawSize; every frame but the last
// holds at least minFrameBytes; nothing follows the last frame. The rules are
// the same for zstd and LZ4.
func checkFrames(data []byte, rawSize uint64, walk frameWalker) error {
	var total, previous uint64
	for pos, count := 0, 0; pos < len(data) || count == 0; count++ {
		end, fcs, err := walk(data, pos)
		if err != nil {
			return err
		}
		if count > 0 && previous < minFrameBytes {
			return fmt.Errorf("%w: frame %d holds %d bytes and is not the last; every frame "+
				"but the last holds at least %d", ErrFrame, count-1, previous, minFrameBytes)
		}
		total += fcs
		if total > rawSize {
			break
		}
		pos, previous = end, fcs
	}
	if total != rawSize {
		return fmt.Errorf("%w: the frames' content sizes add up to %d, raw_size is %d",
			ErrFrame, total, rawSize)
	}
	return nil
}

// checkFrame walks the zstd frame that starts at data[start:] without
// decompressing it: a frame header without a dictionary that records the
// content size, then blocks up to the one flagged as last (and the optional
// checksum), all within data. It returns where the frame ends and its
// content size.
func checkFrame(data []byte, start int) (int, uint64, error) {
	if len(data)-start < 4 || binary.LittleEndian.Uint32(data[start:]) != zstdMagic {
		return 0, 0, fmt.Errorf("%w: data at offset %d does not start with the zstd magic "+
			"number 28 b5 2f fd", ErrFrame, start)
	}
	pos := start + 4
	if pos >= len(data) {
		return 0, 0, fmt.Errorf("%w: truncated frame header", ErrFrame)
	}
	fhd := data[pos]
	pos++
	fcsFlag := fhd >> 6
	singleSegment := fhd&0x20 != 0
	reserved := fhd&0x08 != 0
	hasChecksum := fhd&0x04 != 0
	dictIDSize := [4]int{0, 1, 2, 4}[fhd&0x03]
	fcsSize := [4]int{0, 2, 4, 8}[fcsFlag]
	if fcsFlag == 0 && singleSegment {
		fcsSize = 1
	}
	if reserved {
		return 0, 0, fmt.Errorf("%w: reserved bit of the frame header descriptor is set", ErrFrame)
	}
	if fcsSize == 0 {
		return 0, 0, fmt.Errorf("%w: the frame header does not record Frame_Content_Size", ErrFrame)
	}
	if !singleSegment {
		if pos >= len(data) {
			return 0, 0, fmt.Errorf("%w: truncated frame header", ErrFrame)
		}
		wd := data[pos]
		pos++
		windowLog := uint(wd>>3) + 10
		window := uint64(1)<<windowLog + (uint64(1)<<windowLog)/8*uint64(wd&7)
		if window > 1<<maxWindowLog {
			return 0, 0, fmt.Errorf("%w: window of %d bytes, above 2^%d", ErrFrame, window, maxWindowLog)
		}
	}
	if pos+dictIDSize+fcsSize > len(data) {
		return 0, 0, fmt.Errorf("%w: truncated frame header", ErrFrame)
	}
	var dictID uint64
	for k := dictIDSize - 1; k >= 0; k-- {
		dictID = dictID<<8 | uint64(data[pos+k])
	}
	pos += dictIDSize
	if dictID != 0 {
		return 0, 0, fmt.Errorf("%w: the frame needs dictionary %d", ErrFrame, dictID)
	}
	var fcs uint64
	for k := fcsSize - 1; k >= 0; k-- {
		fcs = fcs<<8 | uint64(data[pos+k])
	}
	if fcsSize == 2 {
		fcs += 256
	}
	pos += fcsSize

	// Walk the blocks up to the one flagged as last. A raw or RLE block
	// regenerates its Block_Size, a compressed one at most Block_Maximum_Size:
	// a Frame_Content_Size above their sum is refused before anything is allocated.
	var capacity uint64
	for {
		if pos+blockHeaderBytes > len(data) {
			return 0, 0, fmt.Errorf("%w: truncated block header at offset %d", ErrFrame, pos)
		}
		bh := uint32(data[pos]) | uint32(data[pos+1])<<8 | uint32(data[pos+2])<<16
		pos += blockHeaderBytes
		last := bh&1 != 0
		size := int(bh >> 3)
		if size > maxBlockSize {
			return 0, 0, fmt.Errorf("%w: block of %d bytes at offset %d", ErrFrame, size, pos-3)
		}
		switch (bh >> 1) & 3 {
		case blockTypeRaw:
			capacity += uint64(size)
		case blockTypeZstd:
			capacity += maxBlockSize
		case blockTypeRLE:
			capacity += uint64(size)
			size = 1 // one byte on the wire, repeated Block_Size times
		default:
			return 0, 0, fmt.Errorf("%w: reserved block type at offset %d", ErrFrame, pos-3)
		}
		if pos+size > len(data) {
			return 0, 0, fmt.Errorf("%w: block at offset %d runs past the end of data", ErrFrame, pos-3)
		}
		pos += size
		if last {
			break
		}
	}
	if hasChecksum {
		pos += 4
	}
	if pos > len(data) {
		return 0, 0, fmt.Errorf("%w: truncated content checksum", ErrFrame)
	}
	if fcs > capacity {
		return 0, 0, fmt.Errorf("%w: Frame_Content_Size %d is more than its blocks can hold (%d)",
			ErrFrame, fcs, capacity)
	}
	return pos, fcs, nil
}

// LZ4 frame layout (LZ4 Frame Format 1.6.x).
const (
	lz4Magic       = 0x184D2204
	lz4HeaderBytes = 4 + 1 + 1 + 8 + 1 // magic, FLG, BD, Content Size, HC
	lz4FlgVersion  = 0x40              // bits 7-6: 01
	lz4FlgBlockSum = 0x10
	lz4FlgSize     = 0x08
	lz4FlgSum      = 0x04
	lz4FlgReserved = 0x02
	lz4FlgDictID   = 0x01
	lz4BdReserved  = 0x8F
	lz4Stored      = 1 << 31 // block size field: the block is stored uncompressed
	// A compressed block of c bytes decodes to at most 255*c bytes (every
	// length byte adds at most 255); readers bound it by min(block maximum,
	// 255*c + 64), as flwire-python does.
	lz4MaxExpansion = 255
	lz4Slack        = 64
)

// lz4BlockMax is the Block Maximum Size by its id in the BD byte.
var lz4BlockMax = map[byte]uint64{4: 64 << 10, 5: 256 << 10, 6: 1 << 20, 7: 4 << 20}

// checkLZ4Frame walks the LZ4 frame that starts at data[start:] without
// decompressing it: the magic number (no skippable or legacy frames), version
// 01 and no reserved bits, a block maximum size id of 4 to 7, no dictionary
// id, a recorded content size, then blocks no larger than the block maximum up
// to the end mark (and the optional content checksum), all within data; the
// declared content size must not exceed what the blocks can hold. It returns
// where the frame ends and its content size. The header checksum is left to
// the decoder (pierrec/lz4 checks it).
func checkLZ4Frame(data []byte, start int) (int, uint64, error) {
	if len(data)-start < 4 || binary.LittleEndian.Uint32(data[start:]) != lz4Magic {
		return 0, 0, fmt.Errorf("%w: data at offset %d does not start with the LZ4 magic "+
			"number 04 22 4d 18", ErrFrame, start)
	}
	if len(data)-start < lz4HeaderBytes-8 {
		return 0, 0, fmt.Errorf("%w: truncated LZ4 frame header", ErrFrame)
	}
	flg, bd := data[start+4], data[start+5]
	if flg&0xC0 != lz4FlgVersion {
		return 0, 0, fmt.Errorf("%w: LZ4 frame version %02b, not 01", ErrFrame, flg>>6)
	}
	if flg&lz4FlgReserved != 0 || bd&lz4BdReserved != 0 {
		return 0, 0, fmt.Errorf("%w: reserved bits of the LZ4 frame descriptor are set", ErrFrame)
	}
	blockMax, ok := lz4BlockMax[bd>>4]
	if !ok {
		return 0, 0, fmt.Errorf("%w: LZ4 block maximum size id %d (must be 4 to 7)", ErrFrame, bd>>4)
	}
	if flg&lz4FlgDictID != 0 {
		return 0, 0, fmt.Errorf("%w: the LZ4 frame has a dictionary id", ErrFrame)
	}
	if flg&lz4FlgSize == 0 {
		return 0, 0, fmt.Errorf("%w: the LZ4 frame header does not record its content size", ErrFrame)
	}
	if len(data)-start < lz4HeaderBytes {
		return 0, 0, fmt.Errorf("%w: truncated LZ4 frame header", ErrFrame)
	}
	size := binary.LittleEndian.Uint64(data[start+6:])
	pos := start + lz4HeaderBytes
	var capacity uint64 // the most content the blocks so far can hold
	for {
		if len(data)-pos < 4 {
			return 0, 0, fmt.Errorf("%w: truncated LZ4 frame (no end mark)", ErrFrame)
		}
		field := binary.LittleEndian.Uint32(data[pos:])
		pos += 4
		if field == 0 {
			break // the end mark
		}
		n := uint64(field &^ lz4Stored)
		if n > blockMax {
			return 0, 0, fmt.Errorf("%w: LZ4 block of %d bytes at offset %d, above the frame's "+
				"block maximum size %d", ErrFrame, n, pos-4, blockMax)
		}
		if field&lz4Stored != 0 {
			capacity += n
		} else {
			capacity += min(blockMax, n*lz4MaxExpansion+lz4Slack)
		}
		step := int(n)
		if flg&lz4FlgBlockSum != 0 {
			step += 4
		}
		if step > len(data)-pos {
			return 0, 0, fmt.Errorf("%w: LZ4 block at offset %d runs past the end of data",
				ErrFrame, pos-4)
		}
		pos += step
	}
	if flg&lz4FlgSum != 0 {
		if len(data)-pos < 4 {
			return 0, 0, fmt.Errorf("%w: truncated LZ4 content checksum", ErrFrame)
		}
		pos += 4
	}
	if size > capacity {
		return 0, 0, fmt.Errorf("%w: the LZ4 frame declares %d bytes of content, more than its "+
			"blocks can hold (%d)", ErrFrame, size, capacity)
	}
	return pos, size, nil
}

// decodeData makes checks 10 to 13 and returns the raw bytes (for a lossy
// tensor, its payload).
func decodeData(t *flwirev1.Tensor, lim Limits) ([]byte, error) {
	raw := t.GetData()
	var err error
	switch t.GetCodec() {
	case flwirev1.Codec_CODEC_ZSTD:
		raw, err = decompress(raw, t.GetRawSize(), lim)
	case flwirev1.Codec_CODEC_LZ4:
		raw, err = decompressLZ4(raw, t.GetRawSize())
	}
	if err != nil {
		return nil, err
	}
	if t.GetFilter() == flwirev1.Filter_FILTER_BYTE_SHUFFLE {
		width := Width(t.GetDtype())
		if l := lossyOf(t); l != nil {
			width = payloadElementWidth(l.Method)
		}
		raw = unshuffle(raw, int(width))
	}
	if got, want := CRC32C(raw), t.GetCrc32C(); got != want {
		return nil, fmt.Errorf("%w: the raw bytes have 0x%08x, crc32c is 0x%08x",
			ErrChecksum, got, want)
	}
	if t.GetDtype() == flwirev1.Dtype_DTYPE_BOOL {
		for k, b := range raw {
			if b > 1 {
				return nil, fmt.Errorf("%w: byte %d is 0x%02x", ErrBool, k, b)
			}
		}
	}
	return raw, nil
}

// decompress decodes the zstd frames (already checked by checkFrames) into a
// buffer of exactly rawSize bytes.
func decompress(frame []byte, rawSize uint64, lim Limits) ([]byte, error) {
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(max(lim.MaxTensorBytes, 1)),
		zstd.WithDecoderMaxWindow(1<<maxWindowLog),
		zstd.WithDecodeAllCapLimit(true), // never grow past raw_size
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecompress, err)
	}
	defer dec.Close()
	out, err := dec.DecodeAll(frame, make([]byte, 0, rawSize))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecompress, err)
	}
	if uint64(len(out)) != rawSize {
		return nil, fmt.Errorf("%w: %d bytes out, raw_size is %d", ErrDecompress, len(out), rawSize)
	}
	return out, nil
}

// decompressLZ4 decodes the LZ4 frames (already checked by checkFrames) into
// a buffer of exactly rawSize bytes: each frame with pierrec/lz4's frame
// reader (which checks the header checksum, and block and content checksums
// when present) into its own slice, which it must fill exactly.
func decompressLZ4(data []byte, rawSize uint64) ([]byte, error) {
	out := make([]byte, rawSize)
	var offset uint64
	for pos := 0; pos < len(data); {
		end, size, err := checkLZ4Frame(data, pos)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDecompress, err)
		}
		r := lz4.NewReader(bytes.NewReader(data[pos:end]))
		if _, err := io.ReadFull(r, out[offset:offset+size]); err != nil {
			return nil, fmt.Errorf("%w: LZ4 frame at offset %d: %v", ErrDecompress, pos, err)
		}
		var extra [1]byte
		if n, err := r.Read(extra[:]); n != 0 || err != io.EOF {
			return nil, fmt.Errorf("%w: LZ4 frame at offset %d does not end after its %d bytes "+
				"of content (%d more, %v)", ErrDecompress, pos, size, n, err)
		}
		offset, pos = offset+size, end
	}
	return out, nil
}

// unshuffle undoes the byte shuffle of section 6: byte j*n+i of the input is
// byte j of element i. For width 1 it is the identity.
func unshuffle(in []byte, width int) []byte {
	if width <= 1 {
		return in
	}
	n := len(in) / width
	out := make([]byte, len(in))
	for j := 0; j < width; j++ {
		for i := 0; i < n; i++ {
			out[i*width+j] = in[j*n+i]
		}
	}
	return out
}

// --- Lossy tensors (spec section 9.1) ---------------------------------------

// Lossy is a tensor's LossyEncoding: Method is never LOSSY_UNSPECIFIED.
type Lossy struct {
	Method    flwirev1.Lossy
	BlockSize uint32 // LOSSY_BLOCK_INT8 only
	K         uint64 // LOSSY_TOP_K only
}

// lossyOf returns t's lossy encoding, or nil when t is lossless (no lossy
// field, or method 0, whatever block_size and k say).
func lossyOf(t *flwirev1.Tensor) *Lossy {
	l := t.GetLossy()
	if l.GetMethod() == flwirev1.Lossy_LOSSY_UNSPECIFIED {
		return nil
	}
	return &Lossy{Method: l.GetMethod(), BlockSize: l.GetBlockSize(), K: l.GetK()}
}

// numel is the product of the dimensions (checked by check 2 not to overflow).
func numel(shape []int64) uint64 {
	n := uint64(1)
	for _, d := range shape {
		n *= uint64(d)
	}
	return n
}

func isCast(m flwirev1.Lossy) bool {
	return m == flwirev1.Lossy_LOSSY_CAST_FLOAT16 || m == flwirev1.Lossy_LOSSY_CAST_BFLOAT16
}

// payloadElementWidth is the element width the filter works on in a payload:
// the 2-byte float of a cast, bytes otherwise (so a shuffle is the identity).
func payloadElementWidth(m flwirev1.Lossy) uint64 {
	if isCast(m) {
		return 2
	}
	return 1
}

// topKIndexWidth is the width of a top-k index: uint32 below 2^32 elements.
func topKIndexWidth(n uint64) uint64 {
	if n < 1<<32 {
		return 4
	}
	return 8
}

// Section 9.1: the smallest int8 block, and top-k keeps at most one element in
// maxTopKDensity, so that a lossy payload never outweighs its tensor.
const (
	minBlockSize   = 8
	maxTopKDensity = 8
)

// checkLossy makes the reader checks of section 9.1 that come before any
// allocation, in its order: the method and the dtype, the logical size
// against the per-tensor limit, block_size and k, raw_size == the payload
// size, no filter for methods 3 and 4.
func checkLossy(t *flwirev1.Tensor, l *Lossy, lim Limits) error {
	d := t.GetDtype()
	switch l.Method {
	case flwirev1.Lossy_LOSSY_CAST_FLOAT16, flwirev1.Lossy_LOSSY_CAST_BFLOAT16:
		if d != flwirev1.Dtype_DTYPE_FLOAT32 && d != flwirev1.Dtype_DTYPE_FLOAT64 {
			return fmt.Errorf("%w: %s of a %s tensor (casts apply to float32 and float64)",
				ErrLossyDtype, l.Method, d)
		}
	case flwirev1.Lossy_LOSSY_BLOCK_INT8, flwirev1.Lossy_LOSSY_TOP_K:
		switch d {
		case flwirev1.Dtype_DTYPE_FLOAT32, flwirev1.Dtype_DTYPE_FLOAT64,
			flwirev1.Dtype_DTYPE_FLOAT16, flwirev1.Dtype_DTYPE_BFLOAT16:
		default:
			return fmt.Errorf("%w: %s of a %s tensor (floating tensors only)",
				ErrLossyDtype, l.Method, d)
		}
	default:
		return fmt.Errorf("%w: method %d; upgrade", ErrLossyMethod, int32(l.Method))
	}

	n, width := numel(t.GetShape()), Width(d)
	if logical := n * width; logical > lim.MaxTensorBytes {
		return fmt.Errorf("%w: decodes to %d bytes, above the per-tensor limit %d",
			ErrLimit, logical, lim.MaxTensorBytes)
	}

	// The payload size, in 128 bits so that no k or block_size can wrap it.
	var hi, size uint64
	switch l.Method {
	case flwirev1.Lossy_LOSSY_BLOCK_INT8:
		if l.BlockSize < minBlockSize {
			return fmt.Errorf("%w: block_size %d (must be >= %d)", ErrLossyParams, l.BlockSize,
				minBlockSize)
		}
		blocks := (n + uint64(l.BlockSize) - 1) / uint64(l.BlockSize) // n < 2^62: no overflow
		var carry uint64
		hi, size = bits.Mul64(blocks, 4)
		size, carry = bits.Add64(size, n, 0)
		hi += carry
		if logical := n * width; logical > 0 && (hi != 0 || size >= logical) {
			return fmt.Errorf("%w: its payload of %s bytes is not smaller than the tensor's "+
				"%d raw bytes", ErrNotSmaller, bigUint(hi, size), logical)
		}
	case flwirev1.Lossy_LOSSY_TOP_K:
		if l.K > n/maxTopKDensity {
			return fmt.Errorf("%w: top-k keeps k=%d elements of a tensor of %d elements "+
				"(at most one in %d)", ErrLossyParams, l.K, n, maxTopKDensity)
		}
		hi, size = bits.Mul64(l.K, width+topKIndexWidth(n))
	default: // a cast
		size = 2 * n
	}
	if hi != 0 || size != t.GetRawSize() {
		return fmt.Errorf("%w: the %s payload of shape %v of %s takes %s bytes, raw_size is %d",
			ErrRawSize, l.Method, t.GetShape(), d, bigUint(hi, size), t.GetRawSize())
	}
	if t.GetFilter() != flwirev1.Filter_FILTER_UNSPECIFIED && !isCast(l.Method) {
		return fmt.Errorf("%w: a %s payload must not be filtered (filter is %s)",
			ErrLossyFilter, l.Method, t.GetFilter())
	}
	return nil
}

// bigUint formats hi*2^64 + lo.
func bigUint(hi, lo uint64) string {
	if hi == 0 {
		return fmt.Sprint(lo)
	}
	return fmt.Sprintf("%d*2^64+%d", hi, lo)
}

// reconstruct turns a lossy tensor's decoded payload (already checked for size
// and CRC-32C) into the logical tensor's raw bytes: n elements of dtype d.
func reconstruct(d flwirev1.Dtype, n uint64, l *Lossy, payload []byte) ([]byte, error) {
	switch l.Method {
	case flwirev1.Lossy_LOSSY_CAST_FLOAT16:
		return castBack(d, n, payload, float16ToFloat32), nil
	case flwirev1.Lossy_LOSSY_CAST_BFLOAT16:
		return castBack(d, n, payload, bfloat16ToFloat32), nil
	case flwirev1.Lossy_LOSSY_BLOCK_INT8:
		return dequantizeInt8(d, n, uint64(l.BlockSize), payload), nil
	default:
		return scatterTopK(d, n, l.K, payload)
	}
}

// castBack converts n 16-bit floats to d (float32 or float64), exactly.
func castBack(d flwirev1.Dtype, n uint64, payload []byte, toFloat32 func(uint16) uint32) []byte {
	out := make([]byte, n*Width(d))
	for i := uint64(0); i < n; i++ {
		putFromFloat32(d, out, i, toFloat32(binary.LittleEndian.Uint16(payload[2*i:])))
	}
	return out
}

// dequantizeInt8: element i is float32(q[i] * scale[i / blockSize]), one
// float32 multiplication, then converted to d (nearest-even).
func dequantizeInt8(d flwirev1.Dtype, n, blockSize uint64, payload []byte) []byte {
	blocks := (n + blockSize - 1) / blockSize
	scales, q := payload[:4*blocks], payload[4*blocks:]
	out := make([]byte, n*Width(d))
	for i := uint64(0); i < n; i++ {
		scale := math.Float32frombits(binary.LittleEndian.Uint32(scales[4*(i/blockSize):]))
		x := float32(float32(int8(q[i])) * scale) // the conversion forbids fusing or extra precision
		putFromFloat32(d, out, i, math.Float32bits(x))
	}
	return out
}

// scatterTopK checks that the k indices are strictly ascending and below n
// (before allocating the output), then puts the k values at their indices
// and +0 everywhere else.
func scatterTopK(d flwirev1.Dtype, n, k uint64, payload []byte) ([]byte, error) {
	w, iw := Width(d), topKIndexWidth(n)
	values, index := payload[:k*w], payload[k*w:]
	at := func(j uint64) uint64 {
		if iw == 4 {
			return uint64(binary.LittleEndian.Uint32(index[4*j:]))
		}
		return binary.LittleEndian.Uint64(index[8*j:])
	}
	for j := uint64(0); j < k; j++ {
		if j > 0 && at(j) <= at(j-1) {
			return nil, fmt.Errorf("%w: indices are not strictly ascending (index %d at "+
				"position %d follows %d)", ErrTopKIndex, at(j), j, at(j-1))
		}
		if at(j) >= n {
			return nil, fmt.Errorf("%w: index %d is out of range for %d elements",
				ErrTopKIndex, at(j), n)
		}
	}
	out := make([]byte, n*w) // zeros: +0 in every float dtype
	for j := uint64(0); j < k; j++ {
		copy(out[at(j)*w:(at(j)+1)*w], values[j*w:(j+1)*w])
	}
	return out, nil
}

// putFromFloat32 stores the float32 with bits f as element i of out, converted
// to d: exactly for float32 and float64, nearest-even for float16 and bfloat16.
func putFromFloat32(d flwirev1.Dtype, out []byte, i uint64, f uint32) {
	switch d {
	case flwirev1.Dtype_DTYPE_FLOAT32:
		binary.LittleEndian.PutUint32(out[4*i:], f)
	case flwirev1.Dtype_DTYPE_FLOAT64:
		binary.LittleEndian.PutUint64(out[8*i:], float32ToFloat64(f))
	case flwirev1.Dtype_DTYPE_FLOAT16:
		binary.LittleEndian.PutUint16(out[2*i:], float32ToFloat16(f))
	case flwirev1.Dtype_DTYPE_BFLOAT16:
		binary.LittleEndian.PutUint16(out[2*i:], float32ToBfloat16(f))
	default:
		panic("putFromFloat32: not a floating dtype: " + d.String()) // checkLossy refused it
	}
}

// --- IEEE 754 conversions, on bit patterns -----------------------------------
//
// NaN stays NaN (quiet, sign and leading payload bits kept); the spec does not
// guarantee NaN payloads, but the golden vectors hold only the quiet NaN.

// float16ToFloat32 widens an IEEE binary16 to binary32 (exact).
func float16ToFloat32(h uint16) uint32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f: // inf, NaN
		return sign | 0x7f800000 | mant<<13
	case exp == 0 && mant == 0:
		return sign
	case exp == 0: // subnormal, mant * 2^-24: normalize
		e := uint32(127 - 14)
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		return sign | e<<23 | (mant&0x3ff)<<13
	default:
		return sign | (exp+127-15)<<23 | mant<<13
	}
}

// bfloat16ToFloat32 widens a bfloat16: it is the upper half of a binary32.
func bfloat16ToFloat32(b uint16) uint32 { return uint32(b) << 16 }

// float32ToFloat64 widens an IEEE binary32 to binary64 (exact).
func float32ToFloat64(f uint32) uint64 {
	sign := uint64(f>>31) << 63
	exp := (f >> 23) & 0xff
	mant := uint64(f & 0x7fffff)
	switch {
	case exp == 0xff: // inf, NaN
		return sign | 0x7ff<<52 | mant<<29
	case exp == 0 && mant == 0:
		return sign
	case exp == 0: // subnormal, mant * 2^-149: normalize
		e := uint64(1023 - 126)
		for mant&(1<<23) == 0 {
			mant <<= 1
			e--
		}
		return sign | e<<52 | (mant&0x7fffff)<<29
	default:
		return sign | uint64(exp+1023-127)<<52 | mant<<29
	}
}

// float32ToFloat16 rounds a binary32 to the nearest binary16, ties to even;
// beyond float16's range it gives infinity.
func float32ToFloat16(f uint32) uint16 {
	sign := uint16(f>>16) & 0x8000
	exp := int32(f>>23) & 0xff
	mant := f & 0x7fffff
	if exp == 0xff { // inf, NaN
		if mant == 0 {
			return sign | 0x7c00
		}
		return sign | 0x7e00 | uint16(mant>>13)
	}
	// |x| = sig * 2^(e-23), with the implicit bit in sig for a normal number.
	sig, e := mant|1<<23, exp-127
	if exp == 0 {
		sig, e = mant, -126
	}
	// float16 keeps 11 significant bits down to 2^-14 and a quantum of 2^-24
	// below: drop 13 bits of sig, and one more per binade under 2^-14.
	shift := int32(13)
	if e < -14 {
		shift = min(13-14-e, 25) // from 25 on, everything rounds to 0
	}
	q := sig >> shift
	rest, half := sig&(1<<shift-1), uint32(1)<<(shift-1)
	if rest > half || rest == half && q&1 == 1 {
		q++
	}
	// q counts units of the result's quantum. For a normal result it holds the
	// implicit bit (1<<10), so adding it to the exponent field minus one gives
	// the encoding, and a carry out of the mantissa rounds up the exponent. For
	// a subnormal result q is the encoding (1<<10: the smallest normal).
	h := q
	if e >= -14 {
		h = uint32(e+14)<<10 + q
	}
	if h >= 0x7c00 {
		h = 0x7c00 // overflow: infinity
	}
	return sign | uint16(h)
}

// float32ToBfloat16 rounds a binary32 to the nearest bfloat16, ties to even
// (its upper 16 bits, rounded on the lower 16).
func float32ToBfloat16(f uint32) uint16 {
	if f&0x7fffffff > 0x7f800000 { // NaN
		return uint16(f>>16) | 0x40
	}
	return uint16((f + 0x7fff + (f>>16)&1) >> 16)
}
