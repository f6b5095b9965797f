#!/usr/bin/env bash
# Bring up a real PostgreSQL 15 (Debian's package) on this machine for an MLflow tracking server and Optuna:
# its own data folder, started with initdb and pg_ctl directly (no systemd), as the postgres user when run
# as root (PostgreSQL refuses to run as root). Idempotent: when it is already up it only checks it.
#
#   bash scripts/start_postgres.sh           # start (installs postgresql-15 if missing); prints the URI
#   bash scripts/stop_postgres.sh            # stop it again (--purge also wipes its data folder)
#
# It makes a login role and a database of the same name, both NANO4M_PG_USER, with password NANO4M_PG_PASSWORD
# (for tests on this machine: a lab's server has its own). TCP connections need the password (scram-sha-256);
# libpq clients take it from PGPASSWORD or PGPASSFILE, never from a study file.
#
# Environment: NANO4M_PG_PORT (default 5433, beside a system cluster on 5432), NANO4M_PG_DATA (data folder,
# default /var/lib/nano4m-postgres), NANO4M_PG_USER (default nano4m), NANO4M_PG_PASSWORD (default nano4m),
# NANO4M_PG_WAIT (seconds to wait for it, default 60). Its log is NANO4M_PG_DATA/server.log.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/postgres_lib.sh
. "$HERE/postgres_lib.sh"

for arg in "$@"; do
    case $arg in
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $arg (see --help)" ;;
    esac
done

install_packages() {
    [ -x "$PG_BIN/initdb" ] && return 0
    [ "$(id -u)" -eq 0 ] || die "$PG_BIN/initdb is missing and only root can install postgresql-15"
    say "installing postgresql-15 (apt-get)"
    local policy_created=0 apt_log
    # Keep the package from starting its own cluster (there is no systemd; this script starts ours).
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
    apt_log=$(mktemp /tmp/nano4m-postgres-apt.XXXXXX)
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends postgresql-15 postgresql-client-15; } >"$apt_log" 2>&1; then
        tail -n 20 "$apt_log" >&2
        die "apt-get could not install postgresql-15 (full log: $apt_log)"
    fi
    [ $policy_created -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    rm -f "$apt_log"
}

init_cluster() {
    [ -s "$PG_DATA/PG_VERSION" ] && return 0
    say "initdb $PG_DATA"
    mkdir -p "$PG_DATA"
    [ "$(id -u)" -eq 0 ] && chown "$PG_OWNER" "$PG_DATA"
    chmod 700 "$PG_DATA"
    # The superuser is the data folder's owner on the socket (peer); every TCP login needs its password.
    as_owner "$PG_BIN/initdb" -D "$PG_DATA" -U "$PG_OWNER" --auth-local=peer --auth-host=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >"$PG_DATA.initdb.log" 2>&1 || fail_log "initdb failed" "$PG_DATA.initdb.log"
    # Loopback only, room for a server's pool and many direct clients, fsync as usual.
    cat >>"$PG_DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKET'
max_connections = 300
EOF
}

start_server() {
    if as_owner "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
        return 0
    fi
    mkdir -p "$PG_SOCKET"
    [ "$(id -u)" -eq 0 ] && chown "$PG_OWNER" "$PG_SOCKET"
    say "pg_ctl start (port $PG_PORT, log $PG_DATA/server.log)"
    as_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t "$PG_WAIT" start >/dev/null \
        || fail_log "PostgreSQL did not start on port $PG_PORT" "$PG_DATA/server.log"
    local waited=0
    until as_owner "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; do
        waited=$((waited + 1))
        [ "$waited" -le "$PG_WAIT" ] || fail_log "PostgreSQL does not answer on port $PG_PORT" "$PG_DATA/server.log"
        sleep 1
    done
}

make_role() {
    # Idempotent: a role and a database are made only where missing; the password and the grant are (re)set each time.
    as_owner "$PG_BIN/psql" -h "$PG_SOCKET" -p "$PG_PORT" -U "$PG_OWNER" -d postgres -v ON_ERROR_STOP=1 -q \
        -v user="$PG_USER" -v password="$PG_PASSWORD" >/dev/null <<'EOF' || die "could not create the role and database"
SELECT format('CREATE ROLE %I LOGIN CREATEDB', :'user') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user')
\gexec
ALTER ROLE :"user" PASSWORD :'password';
-- DROP DATABASE ... WITH (FORCE) of a database autovacuum is working on must end that worker (run by the owner)
GRANT pg_signal_backend TO :"user";
SELECT format('CREATE DATABASE %I OWNER %I', :'user', :'user') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'user')
\gexec
EOF
}

install_packages
init_cluster
start_server
make_role
say "ready: postgresql://$PG_USER@127.0.0.1:$PG_PORT/$PG_USER (password from PGPASSWORD or PGPASSFILE)"
