#!/usr/bin/env bash
# Bring up a real single-node SLURM cluster on this machine (Debian 12, root, no systemd):
# munged, MariaDB, slurmdbd (accounting, which submitit needs for sacct), slurmctld and slurmd,
# with one partition `debug` (Default=YES). Idempotent: when the cluster is already up it only
# checks it and returns in well under a second.
#
#   bash slurm/start_cluster.sh           # start (installs the Debian packages if missing)
#   bash slurm/start_cluster.sh --check   # also run the smoke job when the cluster is already up
#   bash slurm/stop_cluster.sh            # stop it again (--purge also wipes jobs and accounting)
#
# Environment: NANO4M_SLURM_CLUSTER (cluster name, default nano4m), NANO4M_SLURM_ACCOUNT
# (account root is added to, default nano4m), NANO4M_SLURM_WAIT (seconds per wait, default 60).
# Daemon logs are in /var/log/slurm/.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=slurm/lib.sh
. "$HERE/lib.sh"

FORCE_CHECK=0
for arg in "$@"; do
    case $arg in
        --check) FORCE_CHECK=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $arg (see --help)" ;;
    esac
done

need_root "$@"
take_lock

PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server mariadb-client)
STARTED=0   # set when any daemon was (re)started: then the smoke job runs

# Print the end of a log to stderr and fail.
fail_log() {
    local msg=$1 log=$2
    if [ -r "$log" ]; then
        printf -- '--- last lines of %s ---\n' "$log" >&2
        tail -n 25 "$log" >&2 || true
    fi
    die "$msg"
}

# ---------------------------------------------------------------------------------- packages
install_packages() {
    local missing=() p apt_log policy_created=0
    for p in "${PACKAGES[@]}"; do
        [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]} (apt-get)"
    # Keep the packages from starting their services (there is no systemd; we start them).
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
    apt_log=$(mktemp /tmp/nano4m-slurm-apt.XXXXXX)
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get -y -q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300
               -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >"$apt_log" 2>&1; then
        say "apt-get install failed; running apt-get update and retrying"
        "${apt[@]}" update >>"$apt_log" 2>&1 || true
        if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$apt_log" 2>&1; then
            [ $policy_created = 1 ] && rm -f /usr/sbin/policy-rc.d
            fail_log "apt-get install ${missing[*]} failed" "$apt_log"
        fi
    fi
    [ $policy_created = 1 ] && rm -f /usr/sbin/policy-rc.d
    rm -f "$apt_log"
    say "packages installed"
}

# ---------------------------------------------------------------------------------- configs
# render TEMPLATE DEST MODE: write DEST from TEMPLATE; returns 0 when DEST changed.
render() {
    local template=$1 dest=$2 mode=$3 tmp
    tmp=$(mktemp "$dest.XXXXXX")
    sed -e "s|@CLUSTER@|$NANO4M_SLURM_CLUSTER|g" -e "s|@HOST@|$HOST|g" \
        -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$MEM_MB|g" \
        -e "s|@RUN@|$SLURM_RUN|g" -e "s|@LOG@|$SLURM_LOG|g" -e "s|@STATE@|$SLURM_STATE|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
        -e "s|@DBD_PORT@|$DBD_PORT|g" -e "s|@DB_NAME@|$DB_NAME|g" -e "s|@DB_USER@|$DB_USER|g" \
        -e "s|@DB_PASS@|$DB_PASS|g" "$template" >"$tmp"
    chmod "$mode" "$tmp"
    if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
        return 1
    fi
    mv -f "$tmp" "$dest"
    return 0
}

write_configs() {
    mkdir -p "$SLURM_ETC" "$SLURM_RUN" "$SLURM_LOG" "$SLURM_STATE/slurmctld" "$SLURM_STATE/slurmd"
    HOST=$(hostname -s)
    local hw
    hw=$(slurmd -C 2>/dev/null | head -n 1 || true)
    CPUS=$(sed -n 's/.*[[:space:]]CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
    MEM_MB=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    [ -n "$CPUS" ] || CPUS=$(nproc)
    [ -n "$MEM_MB" ] || MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    # Keep the generated database password across runs; only this machine can reach the DB.
    DB_PASS=$(sed -n 's/^StoragePass=//p' "$SLURM_ETC/slurmdbd.conf" 2>/dev/null || true)
    [ -n "$DB_PASS" ] || DB_PASS=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')

    # slurmctld refuses to start when its saved state belongs to another cluster name.
    local saved=$SLURM_STATE/slurmctld/clustername
    if [ -f "$saved" ] && [ "$(cat "$saved")" != "$NANO4M_SLURM_CLUSTER" ]; then
        say "saved job state is for cluster $(cat "$saved"); starting $NANO4M_SLURM_CLUSTER afresh"
        stop_pidfile "$SLURM_RUN/slurmd.pid" slurmd
        stop_pidfile "$SLURM_RUN/slurmctld.pid" slurmctld
        rm -rf "${SLURM_STATE:?}/slurmctld/"*
    fi
    if render "$HERE/conf/slurm.conf.in" "$SLURM_ETC/slurm.conf" 644; then
        say "wrote $SLURM_ETC/slurm.conf (node $HOST: CPUs=$CPUS RealMemory=$MEM_MB)"
        rm -f "$READY_MARKER"
        # A changed node or partition definition needs a restart of both slurm daemons.
        if pid_alive "$SLURM_RUN/slurmd.pid" slurmd || pid_alive "$SLURM_RUN/slurmctld.pid" slurmctld; then
            say "config changed: restarting slurmctld and slurmd"
            stop_pidfile "$SLURM_RUN/slurmd.pid" slurmd
            stop_pidfile "$SLURM_RUN/slurmctld.pid" slurmctld
        fi
    fi
    if render "$HERE/conf/slurmdbd.conf.in" "$SLURM_ETC/slurmdbd.conf" 600; then
        say "wrote $SLURM_ETC/slurmdbd.conf"
        rm -f "$READY_MARKER"
        if pid_alive "$SLURM_RUN/slurmdbd.pid" slurmdbd; then
            say "config changed: restarting slurmdbd"
            stop_pidfile "$SLURM_RUN/slurmdbd.pid" slurmdbd
        fi
    fi
}

# ---------------------------------------------------------------------------------- munge
munge_ok() { q munge -n 2>/dev/null | q unmunge >/dev/null 2>&1; }

start_munge() {
    # (munge -n takes seconds to fail when munged is gone: look for the process first.)
    if running "$MUNGE_PIDFILE" munged && munge_ok; then return 0; fi
    if [ ! -s /etc/munge/munge.key ]; then
        say "creating /etc/munge/munge.key"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile=/etc/munge/munge.key --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    if ! pid_alive "$MUNGE_PIDFILE" munged; then
        say "starting munged"
        # --force: start even when a stale socket from a killed munged is left behind.
        spawn /var/log/munge/munged.out runuser -u munge -- /usr/sbin/munged --force
        STARTED=1
    fi
    wait_for munge "$NANO4M_SLURM_WAIT" munge_ok || fail_log "munged did not come up" /var/log/munge/munged.log
}

# ---------------------------------------------------------------------------------- MariaDB
mysql_ok() { mysqladmin --connect-timeout=2 ping >/dev/null 2>&1; }

start_mariadb() {
    if ! mysql_ok; then
        mkdir -p /run/mysqld
        chown mysql:mysql /run/mysqld
        if [ ! -d /var/lib/mysql/mysql ]; then
            say "initializing the MariaDB data directory"
            mariadb-install-db --user=mysql --datadir=/var/lib/mysql >>"$MYSQL_LOG" 2>&1 \
                || fail_log "mariadb-install-db failed" "$MYSQL_LOG"
        fi
        if ! pid_alive "$MYSQL_PIDFILE" mariadbd; then
            say "starting mariadbd"
            spawn "$MYSQL_LOG" /usr/sbin/mariadbd --user=mysql --pid-file="$MYSQL_PIDFILE" \
                --bind-address=127.0.0.1 --innodb-lock-wait-timeout=900
            STARTED=1
        fi
        wait_for mariadb "$NANO4M_SLURM_WAIT" mysql_ok || fail_log "mariadbd did not come up" "$MYSQL_LOG"
    fi
    # Accounting database and user (idempotent; the password is the one in slurmdbd.conf).
    mysql --batch <<SQL || die "could not create the accounting database in MariaDB"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'localhost';
SQL
}

# ---------------------------------------------------------------------------------- slurmdbd
# One sacctmgr call (about 0.2 s each) both proves slurmdbd answers and lists what is registered.
ASSOC=""
dbd_ok() { ASSOC=$(q sacctmgr -n -P show assoc format=cluster,account,user 2>/dev/null); }

start_slurmdbd() {
    if ! pid_alive "$SLURM_RUN/slurmdbd.pid" slurmdbd; then
        say "starting slurmdbd"
        spawn "$SLURM_LOG/slurmdbd.out" slurmdbd
        STARTED=1
    fi
    wait_for slurmdbd "$NANO4M_SLURM_WAIT" dbd_ok || fail_log "slurmdbd did not come up" "$SLURM_LOG/slurmdbd.log"
    # Register the cluster before slurmctld starts, then an account that holds root (and the
    # sudo caller, if any), so jobs can name --account.
    local c=$NANO4M_SLURM_CLUSTER a=$NANO4M_SLURM_ACCOUNT user
    if ! grep -q "^$c|" <<<"$ASSOC"; then
        say "registering cluster $c"
        q sacctmgr -i add cluster "$c" >/dev/null || die "sacctmgr add cluster $c failed"
    fi
    if ! grep -qx "$c|$a|" <<<"$ASSOC"; then
        say "adding account $a"
        q sacctmgr -i add account "$a" cluster="$c" description="nano4M test account" \
            organization=nano4m >/dev/null || die "sacctmgr add account $a failed"
    fi
    for user in root ${SUDO_USER:-}; do
        if ! grep -qx "$c|$a|$user" <<<"$ASSOC"; then
            q sacctmgr -i add user "$user" account="$a" cluster="$c" >/dev/null \
                || die "sacctmgr add user $user failed"
        fi
    done
}

# ---------------------------------------------------------------------------------- slurmctld
ctld_ok() { local out; out=$(q scontrol ping 2>/dev/null) && [[ $out == *"is UP"* ]]; }

start_slurmctld() {
    if ! pid_alive "$SLURM_RUN/slurmctld.pid" slurmctld; then
        say "starting slurmctld"
        spawn "$SLURM_LOG/slurmctld.out" slurmctld
        STARTED=1
    fi
    wait_for slurmctld "$NANO4M_SLURM_WAIT" ctld_ok || fail_log "slurmctld did not come up" "$SLURM_LOG/slurmctld.log"
}

# ---------------------------------------------------------------------------------- slurmd
node_state() { q sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n 1; }

node_ok() {
    local st
    st=$(node_state) || return 1
    case $st in
        idle|mixed|allocated|completing) return 0 ;;
        *'*'*|unknown*) return 1 ;;   # not responding yet
        down*|drain*|fail*)
            q scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
            return 1 ;;
    esac
    return 1
}

start_slurmd() {
    if ! pid_alive "$SLURM_RUN/slurmd.pid" slurmd; then
        say "starting slurmd"
        spawn "$SLURM_LOG/slurmd.out" slurmd
        STARTED=1
    fi
    if ! wait_for "node $HOST" "$NANO4M_SLURM_WAIT" node_ok; then
        q sinfo -N -l >&2 || true
        q scontrol show node "$HOST" 2>/dev/null | grep -i reason >&2 || true
        fail_log "node $HOST did not become idle (state: $(node_state))" "$SLURM_LOG/slurmd.log"
    fi
    [ $STARTED = 1 ] && say "node $HOST $(node_state)"
    return 0
}

# ---------------------------------------------------------------------------------- smoke job
# The job goes through every daemon: slurmctld schedules it, slurmd runs it, slurmdbd records it in sacct.
# On a node busy with other jobs it waits for room (reason Resources or Priority): the daemons have all
# answered by then (sbatch, squeue, sacct), so the job is cancelled and the cluster counts as up.
smoke_job() {
    local jid st="" reason deadline
    jid=$(q sbatch --parsable -p debug -N 1 -n 1 -t 1 -J nano4m-smoke -D /tmp \
              -o /dev/null -e /dev/null --wrap true) || die "sbatch of the smoke job failed"
    jid=${jid%%;*}
    deadline=$(( $(date +%s) + NANO4M_SLURM_WAIT ))
    while :; do
        st=$(q sacct -n -X -P -j "$jid" -o State 2>/dev/null | head -n 1 || true)
        case $st in
            COMPLETED) break ;;
            FAILED*|CANCELLED*|TIMEOUT*|NODE_FAIL*|OUT_OF_ME*|BOOT_FAIL*|DEADLINE*|PREEMPTED*)
                fail_log "smoke job $jid ended $st" "$SLURM_LOG/slurmctld.log" ;;
            PENDING)
                reason=$(q squeue -h -j "$jid" -o %r 2>/dev/null || true)
                if [ "$reason" = Resources ] || [ "$reason" = Priority ]; then
                    q scancel "$jid" >/dev/null 2>&1 || true
                    say "smoke job $jid PENDING ($reason: the node is busy with other jobs); every daemon answered"
                    return 0
                fi ;;
        esac
        if [ "$(date +%s)" -ge "$deadline" ]; then
            q squeue >&2 || true
            fail_log "smoke job $jid not COMPLETED in sacct after ${NANO4M_SLURM_WAIT} s (state: ${st:-none})" \
                "$SLURM_LOG/slurmctld.log"
        fi
        sleep 0.3
    done
    say "smoke job $jid COMPLETED in sacct"
}

# ---------------------------------------------------------------------------------- main
install_packages
write_configs
start_munge
start_mariadb
start_slurmdbd
start_slurmctld
start_slurmd
if [ $STARTED = 1 ] || [ $FORCE_CHECK = 1 ] || [ ! -e "$READY_MARKER" ]; then
    rm -f "$READY_MARKER"
    smoke_job
    touch "$READY_MARKER"
    say "cluster $NANO4M_SLURM_CLUSTER up (partition debug, node $HOST) in $(elapsed) s"
else
    say "cluster $NANO4M_SLURM_CLUSTER already up (partition debug, node $HOST) in $(elapsed) s"
fi
