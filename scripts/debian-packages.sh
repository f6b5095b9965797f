#!/usr/bin/env bash
# Debian packages that some tests need, one function per set: `bash scripts/debian-packages.sh chromium`.
# Each function is idempotent (quick when its package is there). Needs root, as CI runs.
set -euo pipefail

chromium() {
  # Headless Chromium for the explorer page's browser tests: Playwright drives Debian's build, it downloads none.
  [ -x /usr/bin/chromium ] && return
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
}

for set in "$@"; do
  if ! declare -F "$set" > /dev/null; then
    echo "debian-packages.sh: unknown package set '$set'" >&2
    exit 2
  fi
  "$set"
done
