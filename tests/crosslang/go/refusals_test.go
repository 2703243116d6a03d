package conformance

// The refusal vectors of tests/vectors/refusals (manifest.json, "refusals"):
// invalid TensorMaps, each breaking one reader check of docs/wire-format.md,
// named by its id. The Go reader must refuse every one, for that check.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

type refusalEntry struct {
	Name        string            `json:"name"`
	Check       string            `json:"check"`
	Section     string            `json:"section"`
	Description string            `json:"description"`
	Message     string            `json:"message"`
	Limits      map[string]uint64 `json:"limits"`
	File        struct {
		Path   string `json:"path"`
		Size   int    `json:"size"`
		SHA256 string `json:"sha256"`
	} `json:"file"`
}

// checkErrors maps the spec's check ids to this reader's errors: the sentinel
// the error must wrap and, where one sentinel serves several checks, a
// substring its message must hold.
var checkErrors = map[string]struct {
	err    error
	reason string
}{
	"protobuf":          {ErrProtobuf, ""},
	"dtype":             {ErrDtype, ""},
	"shape":             {ErrShape, "dimension"},
	"raw_size":          {ErrRawSize, "needs"},
	"limits":            {ErrLimit, "limit"},
	"codec":             {ErrCodec, ""},
	"filter":            {ErrFilter, ""},
	"data_size":         {ErrDataSize, ""},
	"frames":            {ErrFrame, ""},
	"empty_crc32c":      {ErrEmptyChecksum, ""},
	"unique_names":      {ErrDuplicateName, ""},
	"decompress":        {ErrDecompress, ""},
	"crc32c":            {ErrChecksum, ""},
	"bool":              {ErrBool, ""},
	"lossy_method":      {ErrLossyMethod, ""},
	"lossy_dtype":       {ErrLossyDtype, ""},
	"lossy_params":      {ErrLossyParams, ""},
	"lossy_size":        {ErrRawSize, "payload"},
	"lossy_not_smaller": {ErrNotSmaller, ""},
	"lossy_filter":      {ErrLossyFilter, ""},
	"topk_indices":      {ErrTopKIndex, ""},
	"max_tensors":       {ErrLimit, "tensors"},
	"max_rank":          {ErrShape, "rank"},
	"max_unknown_bytes": {ErrUnknownBytes, ""},
	"max_expansion":     {ErrExpansion, ""},
}

func loadRefusals(t *testing.T) []refusalEntry {
	t.Helper()
	var m struct {
		Refusals []refusalEntry `json:"refusals"`
	}
	if err := json.Unmarshal(readFile(t, "manifest.json"), &m); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(m.Refusals) == 0 {
		t.Fatal("manifest.json lists no refusal vectors")
	}
	return m.Refusals
}

// refusalLimits is DefaultLimits with the vector's limits applied.
func refusalLimits(t *testing.T, r refusalEntry) Limits {
	t.Helper()
	lim := DefaultLimits
	for name, v := range r.Limits {
		switch name {
		case "max_tensor_bytes":
			lim.MaxTensorBytes = v
		case "max_total_bytes":
			lim.MaxTotalBytes = v
		case "max_tensors":
			lim.MaxTensors = int(v)
		case "max_rank":
			lim.MaxRank = int(v)
		case "max_unknown_bytes":
			lim.MaxUnknownBytes = int(v)
		default:
			t.Fatalf("%s: unknown limit %q", r.Name, name)
		}
	}
	return lim
}

func TestRefusalVectors(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range loadRefusals(t) {
		t.Run(r.Name, func(t *testing.T) {
			b := readFile(t, r.File.Path)
			sum := sha256.Sum256(b)
			if got := hex.EncodeToString(sum[:]); got != r.File.SHA256 || len(b) != r.File.Size {
				t.Fatalf("%s: sha256 %s, %d bytes; manifest says %s, %d bytes",
					r.File.Path, got, len(b), r.File.SHA256, r.File.Size)
			}
			if r.Message != "flwire.v1.TensorMap" {
				t.Fatalf("message %q", r.Message)
			}
			want, ok := checkErrors[r.Check]
			if !ok {
				t.Fatalf("check %q is not one this runner knows", r.Check)
			}
			seen[r.Check] = true
			m, err := Decode(b, refusalLimits(t, r))
			if m != nil {
				t.Fatalf("a refused map was returned: %+v", m)
			}
			if !errors.Is(err, want.err) || !strings.Contains(err.Error(), want.reason) {
				t.Fatalf("%s (%s)\nerr = %v\nwant %v (%q)", r.Description, r.Check, err,
					want.err, want.reason)
			}
			t.Logf("refused: %v", err)
		})
	}
	for check := range checkErrors {
		if !seen[check] {
			t.Errorf("no refusal vector for check %q", check)
		}
	}
}
