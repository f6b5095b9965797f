#!/usr/bin/env bash
# Debian packages some tests need, installed only when missing (idempotent). Usage: debian-packages.sh GROUP...
#   tex   pdflatex with booktabs (the report table test compiles table.tex) and pdftoppm/pdftotext
#   chromium  headless Chromium for the explorer page's browser tests (Playwright drives it; it downloads no browser)
set -euo pipefail

tex() {
  command -v pdflatex >/dev/null && command -v pdftoppm >/dev/null && return
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    texlive-latex-base texlive-latex-recommended poppler-utils
}

chromium() {
  [ -x /usr/bin/chromium ] && return
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
}

for group in "$@"; do
  case "$group" in
    tex) tex ;;
    chromium) chromium ;;
    *) echo "debian-packages.sh: unknown group '$group'; groups: tex, chromium" >&2; exit 2 ;;
  esac
done
