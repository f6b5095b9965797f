# Shared settings and helpers for scripts/start_postgres.sh and scripts/stop_postgres.sh (sourced, not run).
# shellcheck shell=bash disable=SC2034

PG_BIN=/usr/lib/postgresql/15/bin
PG_PORT=${NANO4M_PG_PORT:-5433}
PG_DATA=${NANO4M_PG_DATA:-/var/lib/nano4m-postgres}
PG_USER=${NANO4M_PG_USER:-nano4m}
PG_PASSWORD=${NANO4M_PG_PASSWORD:-nano4m}
PG_WAIT=${NANO4M_PG_WAIT:-60}
PG_SOCKET=/tmp/nano4m-postgres-$PG_PORT
# PostgreSQL refuses to run as root: as root, the cluster belongs to Debian's postgres user.
if [ "$(id -u)" -eq 0 ]; then PG_OWNER=postgres; else PG_OWNER=$(id -un); fi

_T0=$(date +%s%N)
elapsed() { local ms=$(( ($(date +%s%N) - _T0) / 1000000 )); printf '%d.%d' $(( ms / 1000 )) $(( ms % 1000 / 100 )); }
say() { printf '[postgres %5ss] %s\n' "$(elapsed)" "$*"; }
die() { printf '[postgres %5ss] ERROR: %s\n' "$(elapsed)" "$*" >&2; exit 1; }

# usage: print the calling script's header comment.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

# as_owner CMD...: run CMD as the cluster's owner (runuser when root).
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u "$PG_OWNER" -- "$@"; else "$@"; fi
}

# fail_log MSG LOG: print the end of LOG to stderr and fail.
fail_log() {
    if [ -r "$2" ]; then
        printf -- '--- last lines of %s ---\n' "$2" >&2
        tail -n 25 "$2" >&2 || true
    fi
    die "$1"
}
