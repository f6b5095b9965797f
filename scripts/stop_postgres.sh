#!/usr/bin/env bash
# Stop the PostgreSQL that scripts/start_postgres.sh started (fast shutdown: open transactions are rolled back).
#
#   bash scripts/stop_postgres.sh            # stop it; its data stays for the next start
#   bash scripts/stop_postgres.sh --purge    # stop it and delete its data folder
#
# Environment: as scripts/start_postgres.sh (NANO4M_PG_PORT, NANO4M_PG_DATA).
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/postgres_lib.sh
. "$HERE/postgres_lib.sh"

PURGE=0
for arg in "$@"; do
    case $arg in
        --purge) PURGE=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $arg (see --help)" ;;
    esac
done

if [ -s "$PG_DATA/postmaster.pid" ]; then
    as_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null || die "pg_ctl stop failed"
    say "stopped"
else
    say "not running"
fi
if [ $PURGE -eq 1 ]; then
    rm -rf "$PG_DATA" "$PG_DATA.initdb.log"
    say "removed $PG_DATA"
fi
