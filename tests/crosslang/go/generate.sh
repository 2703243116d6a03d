#!/usr/bin/env bash
# Regenerate flwirev1/*.pb.go from proto/flwire/v1/*.proto.
#
#   bash tests/crosslang/go/generate.sh          # rewrite flwirev1/
#   bash tests/crosslang/go/generate.sh --check  # exit 1 if flwirev1/ is stale
#
# Uses the protoc bundled with grpcio-tools in the project's .venv (the same
# compiler as codegen/generate.py) and protoc-gen-go at the version pinned
# below, which must match google.golang.org/protobuf in go.mod. The .proto files
# have no go_package option; the M mappings below supply the Go import path.
set -euo pipefail

check=0
case "${1:-}" in
    "") ;;
    --check) check=1 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

PROTOC_GEN_GO_VERSION=v1.36.12

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
module=flwire.test/conformance
gopkg="$module/flwirev1;flwirev1"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

GOBIN="$tmp/bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
wkt="$("$python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"

protos=()
mappings=()
for path in "$root"/proto/flwire/v1/*.proto; do
    rel="flwire/v1/$(basename "$path")"
    protos+=("$rel")
    mappings+=("--go_opt=M$rel=$gopkg")
done

mkdir -p "$tmp/out"
"$python" -m grpc_tools.protoc \
    -I"$root/proto" -I"$wkt" \
    --plugin=protoc-gen-go="$tmp/bin/protoc-gen-go" \
    --go_out="$tmp/out" --go_opt=module="$module" "${mappings[@]}" \
    "${protos[@]}"

if [ "$check" = 1 ]; then
    if ! diff -ru "$here/flwirev1" "$tmp/out/flwirev1"; then
        echo "tests/crosslang/go/flwirev1 is stale: run bash tests/crosslang/go/generate.sh" >&2
        exit 1
    fi
    echo "flwirev1 is up to date"
    exit 0
fi
rm -rf "$here/flwirev1"
mv "$tmp/out/flwirev1" "$here/flwirev1"
echo "wrote $(ls "$here"/flwirev1/*.pb.go | wc -l) files to ${here#"$root"/}/flwirev1"
