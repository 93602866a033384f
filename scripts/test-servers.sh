#!/usr/bin/env bash
# Installs the object-store servers the artifact store tests run against
# (internal/artifact/blobtest), each into a cache directory outside the
# repository keyed by its version, skipping what is already there:
#
#   MinIO (S3), built from the Go module proxy (about 9 CPU-minutes cold):
#     ${XDG_CACHE_HOME:-$HOME/.cache}/plinth-test/minio-<version>/minio
#   Azurite (Azure Blob Storage), from npm (needs node and npm):
#     ${XDG_CACHE_HOME:-$HOME/.cache}/plinth-test/azurite-<version>/
#
# It prints the variables the tests read, for the shell to evaluate:
#
#   eval "$(scripts/test-servers.sh)"
#   go test ./internal/artifact/...
#
# PLINTH_TEST_CACHE overrides the cache root. Progress goes to stderr.
# Pass "minio" or "azurite" to install only one.
set -euo pipefail

MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
# 3.35.0 is the last Azurite that runs on Node 20 (3.36 wants Node 21, 3.37 Node 22).
AZURITE_VERSION=3.35.0

cache="${PLINTH_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/plinth-test}"
want="${1:-all}"

log() { printf '%s test-servers: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

minio() {
  local dir="$cache/minio-$MINIO_VERSION"
  if [ ! -x "$dir/minio" ]; then
    command -v go >/dev/null || { log "go is needed to build MinIO"; exit 1; }
    log "building MinIO $MINIO_VERSION into $dir (cold: about 9 CPU-minutes)"
    local start=$SECONDS tmp
    mkdir -p "$dir"
    tmp="$(mktemp -d "$dir/.build.XXXXXX")"
    # go install pkg@version builds with MinIO's own go.mod (it has no
    # replace directives); static, so it runs on any Linux.
    if ! GOBIN="$tmp" CGO_ENABLED=0 GOWORK=off GOFLAGS=-trimpath go install "github.com/minio/minio@$MINIO_VERSION" >&2; then
      rm -rf "$tmp"
      exit 1
    fi
    mv "$tmp/minio" "$dir/minio"
    rm -rf "$tmp"
    log "built MinIO in $((SECONDS - start))s"
  fi
  printf 'export PLINTH_TEST_MINIO=%q\n' "$dir/minio"
}

azurite() {
  local dir="$cache/azurite-$AZURITE_VERSION"
  if [ ! -f "$dir/node_modules/azurite/package.json" ] || [ ! -e "$dir/node_modules/.bin/azurite-blob" ]; then
    command -v npm >/dev/null || { log "npm is needed to install Azurite"; exit 1; }
    log "installing Azurite $AZURITE_VERSION into $dir"
    local start=$SECONDS
    npm install --prefix "$dir" --no-audit --no-fund --silent "azurite@$AZURITE_VERSION" >&2
    log "installed Azurite in $((SECONDS - start))s"
  fi
  printf 'export PLINTH_TEST_AZURITE=%q\n' "$dir"
}

case "$want" in
  all) minio; azurite ;;
  minio) minio ;;
  azurite) azurite ;;
  *) log "unknown server $want (want minio or azurite)"; exit 2 ;;
esac
