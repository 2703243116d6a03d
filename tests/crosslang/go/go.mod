module flwire.test/conformance

go 1.25

require (
	github.com/klauspost/compress v1.20.4
	github.com/pierrec/lz4/v4 v4.1.33
	google.golang.org/protobuf v1.36.12
	lukechampine.com/blake3 v1.5.1
)

require github.com/klauspost/cpuid/v2 v2.0.9 // indirect
