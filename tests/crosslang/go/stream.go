package conformance

// A reader of streamed transfers (docs/wire-format.md section 14.5), written
// from the spec alone: StreamReader.Add takes the record values of the
// transfers' parts in the order they arrive, checks each part against its
// transfer, decodes each chunk into its tensor as it arrives (with Decode of
// decode.go), and returns the message once its seal checks out. Every
// refusal wraps one of the Err* sentinels below, named after the check ids of
// section 14.5. A chunk may be packed, holding after its tensor's last
// elements the next tensors' first ones, each checked against its own tensor
// before any of the chunk is decoded. A chunk's tensors may be lossy (section
// 9.1): DecodeChunk checks each as any lossy tensor and reconstructs its
// elements. What the chunks decode to is
// bounded by the bytes of the records that arrived (Limits.MaxExpansion and
// ExpansionFloor, as Decode bounds a whole map's), checked before each chunk
// is decoded. VerifyStream checks a seal's signature as section 14.3 does an
// envelope's.

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"math"
	"math/bits"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"lukechampine.com/blake3"

	"flwire.test/conformance/flwirev1"
)

// The checks of section 14.5, by id. ErrSkipped is no refusal: a copy of a
// part already taken, or a part of a transfer that ended.
var (
	ErrStreamPart       = errors.New("stream_part: not a valid StreamPart")
	ErrStreamGap        = errors.New("stream_gap: parts lost")
	ErrStreamNoHead     = errors.New("stream_no_head: a part of a transfer whose head was not seen")
	ErrStreamHead       = errors.New("stream_head: head refused")
	ErrChunkTensorIndex = errors.New("chunk_tensor_index: no such tensor")
	ErrChunkOffset      = errors.New("chunk_offset: chunk not where the tensor's next element is")
	ErrChunkElements    = errors.New("chunk_elements: not valid unnamed 1-D tensors of the tensors' dtypes")
	ErrChunkOverrun     = errors.New("chunk_overrun: chunk past the tensor's end")
	ErrChunkPacked      = errors.New("chunk_packed: a chunk's tensor followed by another does not end its tensor")
	ErrChunkDecode      = errors.New("chunk_decode: chunk does not decode")
	ErrStreamPartCount  = errors.New("stream_part_count: seal counts other parts")
	ErrStreamCRC32C     = errors.New("stream_crc32c: CRC-32C of the parts differs")
	ErrStreamIncomplete = errors.New("stream_incomplete: a tensor lacks elements")
	ErrStreamSigned     = errors.New("stream_signed: signature and head.signed disagree")
	ErrSkipped          = errors.New("skipped")

	// Section 14.3's reasons, for VerifyStream.
	ErrUnsigned       = errors.New("unsigned")
	ErrBadSignature   = errors.New("bad_signature")
	ErrUnknownKey     = errors.New("unknown_key")
	ErrSenderMismatch = errors.New("sender_mismatch")
)

// StreamChecks maps each check id of section 14.5 to its sentinel.
var StreamChecks = map[string]error{
	"stream_part": ErrStreamPart, "stream_gap": ErrStreamGap, "stream_no_head": ErrStreamNoHead,
	"stream_head": ErrStreamHead, "chunk_tensor_index": ErrChunkTensorIndex,
	"chunk_offset": ErrChunkOffset, "chunk_elements": ErrChunkElements,
	"chunk_overrun": ErrChunkOverrun, "chunk_packed": ErrChunkPacked, "chunk_decode": ErrChunkDecode,
	"stream_part_count": ErrStreamPartCount, "stream_crc32c": ErrStreamCRC32C,
	"stream_incomplete": ErrStreamIncomplete, "stream_signed": ErrStreamSigned,
	"unsigned": ErrUnsigned, "bad_signature": ErrBadSignature, "unknown_key": ErrUnknownKey,
	"sender_mismatch": ErrSenderMismatch,
}

// StreamDomain is the prefix of what a seal's signature signs (section 14.5).
const StreamDomain = "flwire.v1 stream signature\x00"

const (
	maxTransferIDBytes = 128
	maxIDBytes         = 128
	// flwire-python's default max_stream_bytes (section 14.5).
	defaultMaxStreamBytes = 16 << 30
)

// StreamTensor is one tensor of a streamed message, decoded.
type StreamTensor struct {
	Name  string
	Dtype flwirev1.Dtype
	Shape []uint64
	Raw   []byte
}

// StreamMessage is a streamed transfer that checked out: the head's envelope,
// the tensors, and the seal's signature with BLAKE3 of the parts it covers.
type StreamMessage struct {
	TransferID string
	Envelope   *flwirev1.Envelope
	Tensors    []StreamTensor
	Signature  *flwirev1.Signature // nil: unsigned
	Digest     []byte              // BLAKE3-256 of R, for a signed stream
	CRC32C     uint32              // of R
	Parts      int
}

type streamState struct {
	id      string
	env     *flwirev1.Envelope
	tensors []StreamTensor
	filled  []uint64 // per tensor, the next element expected
	next    uint32   // the next part index expected
	crc     uint32
	digest  hash.Hash // BLAKE3 of every part, for a signed head
	arrived uint64    // bytes of the transfer's records taken, the head's included
	decoded uint64    // what its chunks taken decode to (a lossy one's logical size)
}

// StreamReader reassembles streamed transfers. The zero value is not ready:
// use NewStreamReader.
type StreamReader struct {
	Limits         Limits
	MaxStreamBytes uint64
	streams        map[string]*streamState
	ended          map[string]bool
}

// NewStreamReader returns a reader with flwire-python's default bounds.
func NewStreamReader() *StreamReader {
	return &StreamReader{
		Limits:         DefaultLimits,
		MaxStreamBytes: defaultMaxStreamBytes,
		streams:        map[string]*streamState{},
		ended:          map[string]bool{},
	}
}

// Pending is the number of transfers under way.
func (r *StreamReader) Pending() int { return len(r.streams) }

type parsedPart struct {
	transferID string
	index      uint32
	head       *flwirev1.StreamHead
	seal       *flwirev1.StreamSeal
	chunk      bool
	tensor     uint32
	offset     uint64
	elements   []byte
}

// parsePart walks the record value's fields itself: the item fields must
// occur exactly once in all, a chunk's elements field at most once (protobuf
// would merge repeated message fields).
func parsePart(b []byte) (*parsedPart, error) {
	p := &parsedPart{}
	var id []byte
	haveID, items := false, 0
	var item []byte
	var itemNum protowire.Number
	for pos := 0; pos < len(b); {
		num, typ, n := protowire.ConsumeTag(b[pos:])
		if n < 0 {
			return nil, fmt.Errorf("%w: %v", ErrStreamPart, protowire.ParseError(n))
		}
		pos += n
		m := protowire.ConsumeFieldValue(num, typ, b[pos:])
		if m < 0 {
			return nil, fmt.Errorf("%w: %v", ErrStreamPart, protowire.ParseError(m))
		}
		switch num {
		case 1, 3, 4, 5:
			if typ != protowire.BytesType {
				return nil, fmt.Errorf("%w: field %d is not length-delimited", ErrStreamPart, num)
			}
			v, _ := protowire.ConsumeBytes(b[pos:])
			if num == 1 {
				id, haveID = v, true
			} else {
				items++
				item, itemNum = v, num
			}
		case 2:
			if typ != protowire.VarintType {
				return nil, fmt.Errorf("%w: part_index is not a varint", ErrStreamPart)
			}
			v, _ := protowire.ConsumeVarint(b[pos:])
			if v > math.MaxUint32 {
				return nil, fmt.Errorf("%w: part_index %d does not fit 32 bits", ErrStreamPart, v)
			}
			p.index = uint32(v)
		}
		pos += m
	}
	if !haveID || len(id) == 0 || len(id) > maxTransferIDBytes || !utf8.Valid(id) {
		return nil, fmt.Errorf("%w: transfer_id absent, empty, over %d bytes or not UTF-8",
			ErrStreamPart, maxTransferIDBytes)
	}
	p.transferID = string(id)
	if items != 1 {
		return nil, fmt.Errorf("%w: %d items, not exactly one of head, chunk, seal", ErrStreamPart, items)
	}
	switch itemNum {
	case 3:
		p.head = &flwirev1.StreamHead{}
		if err := proto.Unmarshal(item, p.head); err != nil {
			return nil, fmt.Errorf("%w: head: %v", ErrStreamPart, err)
		}
	case 5:
		p.seal = &flwirev1.StreamSeal{}
		if err := proto.Unmarshal(item, p.seal); err != nil {
			return nil, fmt.Errorf("%w: seal: %v", ErrStreamPart, err)
		}
	case 4:
		p.chunk = true
		if err := p.parseChunk(item); err != nil {
			return nil, err
		}
	}
	if (p.index == 0) != (p.head != nil) {
		return nil, fmt.Errorf("%w: part %d: the head is part 0, and only it", ErrStreamPart, p.index)
	}
	return p, nil
}

func (p *parsedPart) parseChunk(b []byte) error {
	seen := false
	for pos := 0; pos < len(b); {
		num, typ, n := protowire.ConsumeTag(b[pos:])
		if n < 0 {
			return fmt.Errorf("%w: chunk: %v", ErrStreamPart, protowire.ParseError(n))
		}
		pos += n
		m := protowire.ConsumeFieldValue(num, typ, b[pos:])
		if m < 0 {
			return fmt.Errorf("%w: chunk: %v", ErrStreamPart, protowire.ParseError(m))
		}
		switch num {
		case 1, 2:
			if typ != protowire.VarintType {
				return fmt.Errorf("%w: chunk field %d is not a varint", ErrStreamPart, num)
			}
			v, _ := protowire.ConsumeVarint(b[pos:])
			if num == 1 {
				if v > math.MaxUint32 {
					return fmt.Errorf("%w: tensor_index %d does not fit 32 bits", ErrStreamPart, v)
				}
				p.tensor = uint32(v)
			} else {
				p.offset = v
			}
		case 3:
			if typ != protowire.BytesType {
				return fmt.Errorf("%w: elements is not length-delimited", ErrStreamPart)
			}
			if seen {
				return fmt.Errorf("%w: elements given twice", ErrStreamPart)
			}
			p.elements, _ = protowire.ConsumeBytes(b[pos:])
			seen = true
		}
		pos += m
	}
	if !seen {
		return fmt.Errorf("%w: chunk without elements", ErrStreamPart)
	}
	return nil
}

// Add takes one record value. It returns the message when this part was a
// seal that checked out; ErrSkipped for a copy or a part of an ended
// transfer; otherwise a refusal (the transfer, if any, is given up on).
func (r *StreamReader) Add(value []byte) (*StreamMessage, error) {
	p, err := parsePart(value)
	if err != nil {
		return nil, err // no transfer ends: its id cannot be trusted
	}
	if r.ended[p.transferID] {
		return nil, ErrSkipped
	}
	s := r.streams[p.transferID]
	if s == nil {
		if p.head == nil {
			r.ended[p.transferID] = true
			return nil, fmt.Errorf("%w: part %d of %s", ErrStreamNoHead, p.index, p.transferID)
		}
		if err := r.start(p, value); err != nil {
			r.ended[p.transferID] = true
			return nil, err
		}
		return nil, nil
	}
	if p.index < s.next {
		return nil, ErrSkipped
	}
	if p.index > s.next {
		return nil, r.giveUp(s, fmt.Errorf("%w: part %d where %d was expected", ErrStreamGap, p.index, s.next))
	}
	s.next++
	s.arrived += uint64(len(value))
	if p.chunk {
		s.crc = crc32Update(s.crc, value)
		if s.digest != nil {
			s.digest.Write(value)
		}
		if err := r.chunk(s, p); err != nil {
			return nil, r.giveUp(s, fmt.Errorf("part %d: %w", p.index, err))
		}
		return nil, nil
	}
	return r.seal(s, p.seal)
}

// crc32Update extends a running CRC-32C (0 for no bytes) by b.
func crc32Update(crc uint32, b []byte) uint32 { return crc32.Update(crc, castagnoli, b) }

func (r *StreamReader) giveUp(s *streamState, err error) error {
	delete(r.streams, s.id)
	r.ended[s.id] = true
	return err
}

// start checks a head (section 14.5, [stream_head]) and opens its transfer.
func (r *StreamReader) start(p *parsedPart, value []byte) error {
	h := p.head
	if err := checkHeadEnvelope(h.GetEnvelope(), p.transferID); err != nil {
		return fmt.Errorf("%w: %v", ErrStreamHead, err)
	}
	if len(h.GetTensors()) > r.Limits.MaxTensors {
		return fmt.Errorf("%w: %d tensors, above %d", ErrStreamHead, len(h.GetTensors()), r.Limits.MaxTensors)
	}
	names := map[string]bool{}
	var declared uint64
	tensors := make([]StreamTensor, len(h.GetTensors()))
	for i, info := range h.GetTensors() {
		width := Width(info.GetDtype())
		if width == 0 {
			return fmt.Errorf("%w: tensor %q: dtype %d", ErrStreamHead, info.GetName(), info.GetDtype())
		}
		if names[info.GetName()] {
			return fmt.Errorf("%w: two tensors named %q", ErrStreamHead, info.GetName())
		}
		names[info.GetName()] = true
		if len(info.GetShape()) > r.Limits.MaxRank {
			return fmt.Errorf("%w: tensor %q: rank %d", ErrStreamHead, info.GetName(), len(info.GetShape()))
		}
		span, size := width, width // product(max(d, 1)) * width, product(d) * width
		for _, d := range info.GetShape() {
			hi, lo := bits.Mul64(span, max(d, 1))
			if hi != 0 || lo > math.MaxInt64 {
				return fmt.Errorf("%w: tensor %q: shape %v overflows", ErrStreamHead, info.GetName(), info.GetShape())
			}
			span, size = lo, size*d // size <= span: no overflow
		}
		if declared += size; declared > r.MaxStreamBytes {
			return fmt.Errorf("%w: above max_stream_bytes %d", ErrStreamHead, r.MaxStreamBytes)
		}
		tensors[i] = StreamTensor{info.GetName(), info.GetDtype(), info.GetShape(), make([]byte, size)}
	}
	s := &streamState{
		id: p.transferID, env: h.GetEnvelope(), tensors: tensors,
		filled: make([]uint64, len(tensors)), next: 1, crc: crc32Update(0, value),
		arrived: uint64(len(value)),
	}
	if h.GetSigned() {
		s.digest = blake3.New(32, nil)
		s.digest.Write(value)
	}
	r.streams[s.id] = s
	return nil
}

// checkHeadEnvelope: sections 14 and 14.2 for the head's envelope (weights
// counted as present), and what 14.5 adds.
func checkHeadEnvelope(env *flwirev1.Envelope, transferID string) error {
	if env == nil {
		return errors.New("no envelope")
	}
	if env.GetSchemaVersion() == nil || env.GetSchemaVersion().GetMajor() != 1 {
		return fmt.Errorf("schema major version %d", env.GetSchemaVersion().GetMajor())
	}
	if env.GetMessageId() == "" || len(env.GetMessageId()) > maxIDBytes || len(env.GetSenderId()) > maxIDBytes {
		return errors.New("message_id empty or an id over 128 bytes")
	}
	if env.GetMessageId() != transferID {
		return fmt.Errorf("message_id %q is not the transfer_id %q", env.GetMessageId(), transferID)
	}
	if ts := env.GetTimestamp(); ts != nil && (ts.GetSeconds() < -62135596800 ||
		ts.GetSeconds() > 253402300799 || ts.GetNanos() < 0 || ts.GetNanos() > 999999999) {
		return errors.New("timestamp out of range")
	}
	if env.GetSignature() != nil {
		return errors.New("the envelope is signed; a stream is signed in its seal")
	}
	m := env.ProtoReflect()
	which := m.WhichOneof(m.Descriptor().Oneofs().ByName("body"))
	if which == nil {
		return errors.New("no body")
	}
	body := m.Get(which).Message()
	var weights protoreflect.FieldDescriptor
	fields := body.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		if f := fields.Get(i); f.Message() != nil && f.Message().FullName() == "flwire.v1.TensorMap" {
			weights = f
		}
	}
	if weights == nil {
		return fmt.Errorf("a %s carries no weights", which.Name())
	}
	if body.Has(weights) {
		return fmt.Errorf("the head's %s has its %s field", which.Name(), weights.Name())
	}
	for key := range env.GetExtensions() {
		if key == "weights" || fields.ByName(protoreflect.Name(key)) != nil {
			return fmt.Errorf("extension %q names a body field", key)
		}
	}
	if c := env.GetCustom(); c != nil {
		if f := m.Descriptor().Fields().ByName(protoreflect.Name(c.GetType())); f != nil && f.ContainingOneof() != nil {
			return fmt.Errorf("custom type %q is a body type", c.GetType())
		}
	}
	for i := 0; i < fields.Len(); i++ {
		f := fields.Get(i)
		rules := proto.GetExtension(f.Options(), flwirev1.E_Field).(*flwirev1.FieldRules)
		if rules.GetRequired() && f != weights {
			if f.Kind() == protoreflect.StringKind && body.Get(f).String() == "" ||
				f.Kind() == protoreflect.MessageKind && !body.Has(f) {
				return fmt.Errorf("%s.%s is required", which.Name(), f.Name())
			}
		}
		if rules.GetNonNegative() && body.Get(f).Int() < 0 {
			return fmt.Errorf("%s.%s is negative", which.Name(), f.Name())
		}
	}
	return nil
}

// chunk checks a chunk against its transfer and decodes it into its tensors.
// The chunk's i-th tensor holds elements of tensor tensor_index + i, the
// first from element_offset, the others (a packed chunk) from element 0; each
// is checked against its tensor (index, next element, dtype, room, and for
// all but the last that it ends its tensor, [chunk_packed]) before any of the
// chunk is decoded. A tensor may be lossless or lossy (section 9.1):
// DecodeChunk makes the lossy checks (counted here as [chunk_elements]) and
// reconstructs the k elements of the tensor's dtype, which go in at their
// offset; a payload that does not decompress, a CRC-32C of the payload that
// differs, and top-k indices not strictly ascending or out of range are
// [chunk_decode].
func (r *StreamReader) chunk(s *streamState, p *parsedPart) error {
	if int(p.tensor) >= len(s.tensors) {
		return fmt.Errorf("%w: tensor_index %d of %d tensors", ErrChunkTensorIndex, p.tensor, len(s.tensors))
	}
	if p.offset != s.filled[p.tensor] {
		return fmt.Errorf("%w: %q at element %d, where %d was expected",
			ErrChunkOffset, s.tensors[p.tensor].Name, p.offset, s.filled[p.tensor])
	}
	var m flwirev1.TensorMap
	if err := proto.Unmarshal(p.elements, &m); err != nil {
		return fmt.Errorf("%w: %v", ErrChunkElements, err)
	}
	if len(m.GetTensors()) == 0 {
		return fmt.Errorf("%w: no tensors", ErrChunkElements)
	}
	counts := make([]uint64, len(m.GetTensors())) // k of each of the chunk's tensors
	var size uint64                               // what they decode to
	for i, e := range m.GetTensors() {
		j, offset := int(p.tensor)+i, p.offset // no overflow: i < len(p.elements)
		if i > 0 {
			if j >= len(s.tensors) {
				return fmt.Errorf("%w: tensor_index %d of %d tensors (the chunk's tensor %d of %d, packed)",
					ErrChunkTensorIndex, j, len(s.tensors), i+1, len(m.GetTensors()))
			}
			if s.filled[j] != 0 {
				return fmt.Errorf("%w: %q packed from element 0, where %d was expected",
					ErrChunkOffset, s.tensors[j].Name, s.filled[j])
			}
			offset = 0
		}
		t := &s.tensors[j]
		if e.GetName() != "" || e.GetDtype() != t.Dtype || len(e.GetShape()) != 1 || e.GetShape()[0] < 1 {
			return fmt.Errorf("%w: tensor %d of %d of the chunk: %q %s %v for %q, %s", ErrChunkElements,
				i+1, len(m.GetTensors()), e.GetName(), e.GetDtype(), e.GetShape(), t.Name, t.Dtype)
		}
		width := Width(t.Dtype)
		k := uint64(e.GetShape()[0])
		numel := uint64(len(t.Raw)) / width
		if k > numel-offset {
			return fmt.Errorf("%w: %d elements of %q at %d of %d", ErrChunkOverrun, k, t.Name, offset, numel)
		}
		if i < len(m.GetTensors())-1 && k != numel-offset {
			return fmt.Errorf("%w: tensor %d of %d of the chunk holds %d of the %d elements left of %q",
				ErrChunkPacked, i+1, len(m.GetTensors()), k, numel-offset, t.Name)
		}
		counts[i] = k
		size += k * width // k <= numel, tensors distinct: at most the declared total
	}
	if err := r.checkExpansion(s, size); err != nil {
		return err
	}
	d, err := DecodeChunk(p.elements, r.Limits)
	if err != nil {
		if errors.Is(err, ErrDecompress) || errors.Is(err, ErrChecksum) || errors.Is(err, ErrBool) ||
			errors.Is(err, ErrTopKIndex) {
			return fmt.Errorf("%w: %w", ErrChunkDecode, err)
		}
		return fmt.Errorf("%w: %w", ErrChunkElements, err)
	}
	for i, k := range counts {
		j, offset := int(p.tensor)+i, p.offset
		if i > 0 {
			offset = 0
		}
		t := &s.tensors[j]
		copy(t.Raw[offset*Width(t.Dtype):], d.Tensors[i].Raw) // a lossy tensor's: its reconstruction
		s.filled[j] += k
	}
	return nil
}

// checkExpansion counts what a chunk decodes to (k x width over its tensors,
// for a lossy one its logical size, not its payload's) before it is decoded,
// and refuses it
// when the transfer's chunks would decode to more than max(ExpansionFloor,
// MaxExpansion x the bytes of its records taken so far, the head's and this
// chunk's included): section 14.5 bounds a stream's expansion as section 11
// bounds a whole TensorMap's, so that a few compressed records cannot fill
// gigabytes of tensor memory. MaxExpansion 0 turns the bound off. The refusal
// is [chunk_elements] (section 11's limits on a chunk count as that check)
// and wraps ErrExpansion, Decode's sentinel for max_expansion.
func (r *StreamReader) checkExpansion(s *streamState, size uint64) error {
	decoded := s.decoded + size // each below the declared total: no overflow
	if lim := r.Limits; lim.MaxExpansion > 0 {
		allowed := max(float64(lim.ExpansionFloor), lim.MaxExpansion*float64(s.arrived))
		if float64(decoded) > allowed {
			return fmt.Errorf("%w: %w: the stream's chunks decode to %d bytes from %d bytes of "+
				"records, over %g times their size (and over the floor of %d bytes)",
				ErrChunkElements, ErrExpansion, decoded, s.arrived, lim.MaxExpansion, lim.ExpansionFloor)
		}
	}
	s.decoded = decoded
	return nil
}

// seal checks the seal against what arrived and hands the message out.
func (r *StreamReader) seal(s *streamState, seal *flwirev1.StreamSeal) (*StreamMessage, error) {
	if seal.GetPartCount() != s.next {
		return nil, r.giveUp(s, fmt.Errorf("%w: the seal counts %d, %d arrived",
			ErrStreamPartCount, seal.GetPartCount(), s.next))
	}
	if seal.GetStreamCrc32C() != s.crc {
		return nil, r.giveUp(s, fmt.Errorf("%w: %08x, the seal says %08x",
			ErrStreamCRC32C, s.crc, seal.GetStreamCrc32C()))
	}
	for i, t := range s.tensors {
		if s.filled[i]*Width(t.Dtype) != uint64(len(t.Raw)) {
			return nil, r.giveUp(s, fmt.Errorf("%w: %q got %d elements", ErrStreamIncomplete, t.Name, s.filled[i]))
		}
	}
	if (seal.GetSignature() != nil) != (s.digest != nil) {
		return nil, r.giveUp(s, fmt.Errorf("%w: signature %v, head.signed %v",
			ErrStreamSigned, seal.GetSignature() != nil, s.digest != nil))
	}
	delete(r.streams, s.id)
	r.ended[s.id] = true
	out := &StreamMessage{TransferID: s.id, Envelope: s.env, Tensors: s.tensors,
		Signature: seal.GetSignature(), CRC32C: s.crc, Parts: int(s.next)}
	if s.digest != nil {
		out.Digest = s.digest.Sum(nil)
	}
	return out, nil
}

// StreamPayload is M of section 14.5: what Ed25519 signs for a seal.
func StreamPayload(algorithm flwirev1.SignatureAlgorithm, keyID string, digest []byte) []byte {
	var m bytes.Buffer
	m.WriteString(StreamDomain)
	var a [4]byte
	binary.LittleEndian.PutUint32(a[:], uint32(algorithm))
	m.Write(a[:])
	m.WriteByte(byte(len(keyID)))
	m.WriteString(keyID)
	m.Write(digest)
	return m.Bytes()
}

// VerifyStream verifies a streamed message's seal signature as section 14.3
// verifies an envelope's (steps 1 to 5); it returns the key id.
func VerifyStream(msg *StreamMessage, trust map[string]ed25519.PublicKey) (string, error) {
	sig := msg.Signature
	if sig == nil || msg.Digest == nil {
		return "", ErrUnsigned
	}
	if sig.GetAlgorithm() != flwirev1.SignatureAlgorithm_SIGNATURE_ALGORITHM_ED25519 ||
		len(sig.GetSignature()) != ed25519.SignatureSize || len(sig.GetKeyId()) > maxIDBytes ||
		len(sig.GetKeyId()) == 0 {
		return "", fmt.Errorf("%w: algorithm, length or key id", ErrBadSignature)
	}
	pub, ok := trust[sig.GetKeyId()]
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrUnknownKey, sig.GetKeyId())
	}
	if !ed25519.Verify(pub, StreamPayload(sig.GetAlgorithm(), sig.GetKeyId(), msg.Digest), sig.GetSignature()) {
		return "", fmt.Errorf("%w: does not verify under %q", ErrBadSignature, sig.GetKeyId())
	}
	env := msg.Envelope
	if env.GetSenderId() != sig.GetKeyId() {
		return "", fmt.Errorf("%w: sender_id %q", ErrSenderMismatch, env.GetSenderId())
	}
	m := env.ProtoReflect()
	if which := m.WhichOneof(m.Descriptor().Oneofs().ByName("body")); which != nil {
		b := m.Get(which).Message()
		if f := b.Descriptor().Fields().ByName("client_id"); f != nil && b.Get(f).String() != sig.GetKeyId() {
			return "", fmt.Errorf("%w: %s.client_id %q", ErrSenderMismatch, which.Name(), b.Get(f).String())
		}
	}
	return sig.GetKeyId(), nil
}
