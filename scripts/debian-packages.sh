#!/usr/bin/env bash
# Debian packages some tests need, installed only when missing (idempotent). Usage: debian-packages.sh GROUP...
#   tex   pdflatex with booktabs (the report table test compiles table.tex) and pdftoppm/pdftotext
#   chromium  headless Chromium for the explorer page's browser tests (Playwright drives it; it downloads no browser)
# Only what each needs: no recommended packages (Chromium's would bring a desktop's daemons, avahi and a systemd
# upgrade among them, 118 packages in all), fonts-liberation named for the pages' text.
set -euo pipefail

install() {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

tex() {
  command -v pdflatex >/dev/null && command -v pdftoppm >/dev/null && return
  install texlive-latex-base texlive-latex-recommended poppler-utils
}

chromium() {
  [ -x /usr/bin/chromium ] && return
  install chromium fonts-liberation
}

for group in "$@"; do
  case "$group" in
    tex) tex ;;
    chromium) chromium ;;
    *) echo "debian-packages.sh: unknown group '$group'; groups: tex, chromium" >&2; exit 2 ;;
  esac
done
