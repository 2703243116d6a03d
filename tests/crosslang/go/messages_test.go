package conformance

// The Envelope and TransferPart golden vectors of tests/vectors/messages
// (manifest.json, "messages"; spec sections 14 and 14.1): decode each
// envelope with the stock generated Envelope and its weights with the reader
// of decode.go, and reassemble the transfer parts.

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"flwire.test/conformance/flwirev1"
)

type messageEntry struct {
	Name    string `json:"name"`
	Message string `json:"message"`
	Files   map[string]struct {
		Path   string `json:"path"`
		Size   int    `json:"size"`
		SHA256 string `json:"sha256"`
	} `json:"files"`
}

type envelopeExpectation struct {
	Type      string `json:"type"`
	MessageID string `json:"message_id"`
	SenderID  string `json:"sender_id"`
	Timestamp struct {
		Seconds int64 `json:"seconds"`
		Nanos   int32 `json:"nanos"`
	} `json:"timestamp"`
	SchemaVersion struct {
		Major uint32 `json:"major"`
		Minor uint32 `json:"minor"`
	} `json:"schema_version"`
	Headers map[string]string `json:"headers"`
	Body    json.RawMessage   `json:"body"`
	Weights *struct {
		Offset  int                 `json:"offset"`
		Tensors []expectationTensor `json:"tensors"`
	} `json:"weights"`
}

type transferExpectation struct {
	Whole         string `json:"whole"`
	TransferID    string `json:"transfer_id"`
	PartCount     uint32 `json:"part_count"`
	TotalSize     uint64 `json:"total_size"`
	PayloadCRC32C string `json:"payload_crc32c"`
	PartDataBytes int    `json:"part_data_bytes"`
	Parts         []struct {
		Index    uint32            `json:"index"`
		Offset   uint64            `json:"offset"`
		DataSize int               `json:"data_size"`
		Headers  map[string]string `json:"headers"`
		Path     string            `json:"path"`
	} `json:"parts"`
}

func loadMessages(t *testing.T) []messageEntry {
	t.Helper()
	var m struct {
		Messages []messageEntry `json:"messages"`
	}
	if err := json.Unmarshal(readFile(t, "manifest.json"), &m); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(m.Messages) == 0 {
		t.Fatal("manifest.json lists no message vectors")
	}
	return m.Messages
}

// fieldPayload returns where the payload of the (last) LEN field number num
// lies in b[start:end], or -1.
func fieldPayload(t *testing.T, b []byte, start, end int, num protowire.Number) (int, int) {
	t.Helper()
	from, to := -1, -1
	for pos := start; pos < end; {
		n, typ, k := protowire.ConsumeTag(b[pos:end])
		if k < 0 {
			t.Fatalf("offset %d: %v", pos, protowire.ParseError(k))
		}
		m := protowire.ConsumeFieldValue(n, typ, b[pos+k:end])
		if m < 0 {
			t.Fatalf("offset %d: %v", pos, protowire.ParseError(m))
		}
		if n == num && typ == protowire.BytesType {
			payload, l := protowire.ConsumeBytes(b[pos+k : end])
			from = pos + k + l - len(payload)
			to = from + len(payload)
		}
		pos += k + m
	}
	return from, to
}

func TestEnvelopeVectors(t *testing.T) {
	types := map[string]bool{}
	for _, entry := range loadMessages(t) {
		if entry.Message != "flwire.v1.Envelope" {
			continue
		}
		t.Run(entry.Name, func(t *testing.T) {
			b := readFile(t, entry.Files["bin"].Path)
			var e envelopeExpectation
			if err := json.Unmarshal(readFile(t, entry.Files["json"].Path), &e); err != nil {
				t.Fatal(err)
			}
			var env flwirev1.Envelope
			if err := proto.Unmarshal(b, &env); err != nil {
				t.Fatalf("proto.Unmarshal: %v", err)
			}
			var fromText flwirev1.Envelope
			if err := prototext.Unmarshal(readFile(t, entry.Files["txtpb"].Path), &fromText); err != nil {
				t.Fatalf("prototext: %v", err)
			}
			if !proto.Equal(&env, &fromText) {
				t.Error(".txtpb and .bin differ")
			}
			got := [4]string{env.GetMessageId(), env.GetSenderId(),
				fmt.Sprint(env.GetTimestamp().GetSeconds(), env.GetTimestamp().GetNanos()),
				fmt.Sprintf("%d.%d", env.GetSchemaVersion().GetMajor(), env.GetSchemaVersion().GetMinor())}
			want := [4]string{e.MessageID, e.SenderID,
				fmt.Sprint(e.Timestamp.Seconds, e.Timestamp.Nanos),
				fmt.Sprintf("%d.%d", e.SchemaVersion.Major, e.SchemaVersion.Minor)}
			if got != want {
				t.Errorf("(id, sender, time, version) = %v, want %v", got, want)
			}
			// Section 14.1: the headers, the version as "<major>.<minor>".
			if e.Headers["flwire-schema-version"] != want[3] || e.Headers["flwire-type"] != e.Type ||
				e.Headers["flwire-message-id"] != e.MessageID ||
				e.Headers["flwire-sender-id"] != e.SenderID {
				t.Errorf("headers %v", e.Headers)
			}

			// The body: its type, and its fields but the weights, against .json.
			r := env.ProtoReflect()
			which := r.WhichOneof(r.Descriptor().Oneofs().ByName("body"))
			if which == nil || string(which.Name()) != e.Type {
				t.Fatalf("body %v, want %s", which, e.Type)
			}
			types[e.Type] = true
			body := proto.Clone(r.Get(which).Message().Interface())
			weightsField := body.ProtoReflect().Descriptor().Fields().ByName("weights")
			if weightsField != nil {
				body.ProtoReflect().Clear(weightsField)
			}
			wantBody := body.ProtoReflect().New().Interface()
			if err := protojson.Unmarshal(e.Body, wantBody); err != nil {
				t.Fatalf("protojson body: %v", err)
			}
			if !proto.Equal(body, wantBody) {
				t.Errorf("body\n got %v\nwant %v", body, wantBody)
			}

			if e.Weights == nil {
				if len(env.GetPadding()) != 0 {
					t.Error("an envelope without weights has padding")
				}
				return
			}
			checkEnvelopeWeights(t, b, which, weightsField, e)
		})
	}
	for _, want := range []string{"client_update", "global_update", "client_registration", "custom"} {
		if !types[want] {
			t.Errorf("no envelope vector of type %s", want)
		}
	}
}

// checkEnvelopeWeights finds the weights' TensorMap in the envelope's bytes,
// checks its alignment and decodes it with the reader of decode.go.
func checkEnvelopeWeights(t *testing.T, b []byte, body, weights protoreflect.FieldDescriptor,
	e envelopeExpectation) {
	t.Helper()
	bodyStart, bodyEnd := fieldPayload(t, b, 0, len(b), body.Number())
	start, end := fieldPayload(t, b, bodyStart, bodyEnd, weights.Number())
	if start != e.Weights.Offset || start%alignment != 0 {
		t.Fatalf("TensorMap at offset %d, .json says %d; must be a multiple of %d",
			start, e.Weights.Offset, alignment)
	}
	m, err := Decode(b[start:end], DefaultLimits)
	if err != nil {
		t.Fatalf("Decode(weights): %v", err)
	}
	if len(m.Tensors) != len(e.Weights.Tensors) {
		t.Fatalf("%d tensors, want %d", len(m.Tensors), len(e.Weights.Tensors))
	}
	for i, loc := range locateTensors(t, b[start:end]) {
		got, want := m.Tensors[i], e.Weights.Tensors[i]
		raw, _ := hex.DecodeString(want.RawHex)
		if got.Name != want.Name || got.Dtype.String() != want.Dtype ||
			!reflect.DeepEqual(got.Shape, want.Shape) || got.Codec.String() != want.Codec ||
			got.Filter.String() != want.Filter || fmt.Sprintf("%08x", got.CRC32C) != want.CRC32C ||
			!bytes.Equal(got.Raw, raw) {
			t.Errorf("tensor %d: got %s %s %v %s %s %08x, want %+v", i, got.Name, got.Dtype,
				got.Shape, got.Codec, got.Filter, got.CRC32C, want)
		}
		// Uncompressed data is 64-aligned from the start of the envelope (section 13).
		if want.Codec == "CODEC_UNSPECIFIED" && (start+loc.data.start)%alignment != 0 {
			t.Errorf("tensor %d: data at envelope offset %d", i, start+loc.data.start)
		}
	}
}

func TestTransferPartsVector(t *testing.T) {
	var entry *messageEntry
	for _, m := range loadMessages(t) {
		if m.Name == "transfer_parts" {
			entry = &m
		}
	}
	if entry == nil {
		t.Fatal("no transfer_parts vector")
	}
	var e transferExpectation
	if err := json.Unmarshal(readFile(t, entry.Files["json"].Path), &e); err != nil {
		t.Fatal(err)
	}
	whole := readFile(t, e.Whole)
	if len(e.Parts) < 2 || uint32(len(e.Parts)) != e.PartCount {
		t.Fatalf("%d parts, part_count %d", len(e.Parts), e.PartCount)
	}
	// Reassemble as a reader does: each part's data at its offset, then the CRC.
	var out []byte
	for k, p := range e.Parts {
		var part flwirev1.TransferPart
		if err := proto.Unmarshal(readFile(t, p.Path), &part); err != nil {
			t.Fatalf("part %d: %v", k, err)
		}
		// Section 14.1: 0-based indices, "<index>/<count>" in the header.
		if part.GetPartIndex() != uint32(k) || p.Index != uint32(k) ||
			p.Headers["flwire-part"] != fmt.Sprintf("%d/%d", k, e.PartCount) {
			t.Errorf("part %d: part_index %d, header %q", k, part.GetPartIndex(), p.Headers["flwire-part"])
		}
		if part.GetTransferId() != e.TransferID || part.GetPartCount() != e.PartCount ||
			part.GetTotalSize() != e.TotalSize ||
			fmt.Sprintf("%08x", part.GetPayloadCrc32C()) != e.PayloadCRC32C ||
			part.GetOffset() != p.Offset || len(part.GetData()) != p.DataSize {
			t.Errorf("part %d: %v", k, &part)
		}
		if part.GetPartIndex() >= part.GetPartCount() ||
			part.GetOffset()+uint64(len(part.GetData())) > part.GetTotalSize() {
			t.Fatalf("part %d is invalid", k)
		}
		if out == nil {
			out = make([]byte, part.GetTotalSize())
		}
		copy(out[part.GetOffset():], part.GetData())
	}
	if fmt.Sprintf("%08x", CRC32C(out)) != e.PayloadCRC32C || !bytes.Equal(out, whole) {
		t.Fatal("the reassembled payload is not the message")
	}
	// The reassembled message is an envelope whose weights decode.
	var env flwirev1.Envelope
	if err := proto.Unmarshal(out, &env); err != nil {
		t.Fatal(err)
	}
	weights, err := proto.Marshal(env.GetGlobalUpdate().GetWeights())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeTensorMap(weights); err != nil {
		t.Fatalf("weights of the reassembled message: %v", err)
	}
}

// TestLossyFieldMerges: section 2.4, an embedded message field that appears
// more than once (Tensor.lossy) is merged as protobuf merges it.
func TestLossyFieldMerges(t *testing.T) {
	want, err := Decode(readFile(t, "lossy_topk.bin"), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	for _, parts := range [][]*flwirev1.LossyEncoding{
		{{Method: flwirev1.Lossy_LOSSY_TOP_K}, {K: 8}},
		{{Method: flwirev1.Lossy_LOSSY_TOP_K, K: 7}, {K: 8}},
		{{K: 8}, {Method: flwirev1.Lossy_LOSSY_CAST_FLOAT16}, {Method: flwirev1.Lossy_LOSSY_TOP_K}},
	} {
		m := base(t, "lossy_topk")
		m.Tensors[0].Lossy = nil
		tb, err := proto.Marshal(m.Tensors[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range parts {
			lb, err := proto.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			tb = protowire.AppendTag(tb, tensorLossyField, protowire.BytesType)
			tb = protowire.AppendBytes(tb, lb)
		}
		var b []byte
		b = protowire.AppendTag(b, mapTensorsField, protowire.BytesType)
		b = protowire.AppendBytes(b, tb)
		for _, rest := range m.Tensors[1:] {
			rb, err := proto.Marshal(rest)
			if err != nil {
				t.Fatal(err)
			}
			b = protowire.AppendTag(b, mapTensorsField, protowire.BytesType)
			b = protowire.AppendBytes(b, rb)
		}
		got, err := Decode(b, DefaultLimits)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("lossy fields %v: err %v, same result %v", parts, err, reflect.DeepEqual(got, want))
		}
	}
}
