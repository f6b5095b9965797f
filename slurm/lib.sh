# Shared settings and helpers for slurm/start_cluster.sh and slurm/stop_cluster.sh (sourced, not run).
# shellcheck shell=bash disable=SC2034

NANO4M_SLURM_CLUSTER=${NANO4M_SLURM_CLUSTER:-nano4m}
NANO4M_SLURM_ACCOUNT=${NANO4M_SLURM_ACCOUNT:-nano4m}
# Seconds any single wait may take before the script gives up.
NANO4M_SLURM_WAIT=${NANO4M_SLURM_WAIT:-60}

SLURM_ETC=/etc/slurm
SLURM_RUN=/run/slurm
SLURM_LOG=/var/log/slurm
SLURM_STATE=/var/lib/slurm
MUNGE_PIDFILE=/run/munge/munged.pid
MYSQL_PIDFILE=/run/mysqld/mysqld.pid
MYSQL_LOG=$SLURM_LOG/mariadb.log
READY_MARKER=$SLURM_RUN/nano4m-ready
LOCK_FILE=/run/nano4m-slurm.lock
DB_NAME=slurm_acct_db
DB_USER=slurm
CTLD_PORT=6817
SLURMD_PORT=6818
DBD_PORT=6819

_T0=$(date +%s%N)
elapsed() { local ms=$(( ($(date +%s%N) - _T0) / 1000000 )); printf '%d.%d' $(( ms / 1000 )) $(( ms % 1000 / 100 )); }
say() { printf '[slurm %5ss] %s\n' "$(elapsed)" "$*"; }
die() { printf '[slurm %5ss] ERROR: %s\n' "$(elapsed)" "$*" >&2; exit 1; }

# usage: print the calling script's header comment.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            exec sudo -n -E bash "$0" "$@"
        fi
        die "must run as root (or with passwordless sudo)"
    fi
}

# Serialize concurrent start/stop calls (e.g. several pytest workers). The lock fd (9) must not
# leak into the daemons, or they would hold the lock forever: spawn() closes it.
take_lock() {
    exec 9>"$LOCK_FILE"
    flock -w 900 9 || die "could not take $LOCK_FILE within 900 s"
}

# proc_live PID: PID is a process that has not exited (a zombie has exited; init here reaps
# daemons' zombies only after a second or two).
proc_live() {
    local state
    read -r _ _ state _ 2>/dev/null <"/proc/$1/stat" && [ "$state" != Z ]
}

# pid_alive PIDFILE NAME: the pid in PIDFILE is a live (not zombie) process named NAME.
pid_alive() {
    local pid comm state
    [ -r "$1" ] || return 1
    pid=$(tr -dc '0-9' <"$1")
    [ -n "$pid" ] || return 1
    # /proc/PID/stat: "PID (COMM) STATE ..."; our daemon names have no spaces.
    read -r _ comm state _ 2>/dev/null <"/proc/$pid/stat" || return 1
    [ "$comm" = "($2)" ] && [ "$state" != Z ]
}

# running PIDFILE NAME: the daemon NAME runs (by its pid file, or by exact name as a fallback).
running() {
    local pid
    pid_alive "$1" "$2" && return 0
    for pid in $(pgrep -x "$2" 2>/dev/null); do
        proc_live "$pid" && return 0
    done
    return 1
}

# spawn LOGFILE CMD...: start a daemon detached from our stdio and lock, so callers that capture
# our output (subprocess pipes) do not wait on the daemon.
spawn() {
    local log=$1; shift
    setsid "$@" </dev/null >>"$log" 2>&1 9>&- &
    disown $! 2>/dev/null || true
}

# wait_for DESC TIMEOUT CMD...: poll CMD every 0.2 s until it succeeds; fail after TIMEOUT seconds.
# (DESC only documents the call; the caller reports the failure.)
wait_for() {
    local timeout=$2; shift 2
    local deadline=$(( $(date +%s) + timeout ))
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            return 1
        fi
        sleep 0.2
    done
}

# stop_pidfiles TIMEOUT PIDFILE:NAME...: SIGTERM each daemon recorded in a pid file (only those
# processes are signalled), wait up to TIMEOUT seconds for all of them to exit, then SIGKILL.
stop_pidfiles() {
    local timeout=$1 spec pidfile name pid pids=() i alive; shift
    for spec in "$@"; do
        pidfile=${spec%%:*}; name=${spec#*:}
        if pid_alive "$pidfile" "$name"; then
            pid=$(tr -dc '0-9' <"$pidfile")
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for (( i = 0; i < timeout * 10; i++ )); do
        alive=0
        for pid in "${pids[@]}"; do proc_live "$pid" && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if proc_live "$pid"; then
            say "pid $pid ($(cat "/proc/$pid/comm" 2>/dev/null)) ignored SIGTERM for ${timeout} s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for spec in "$@"; do rm -f "${spec%%:*}"; done
}
stop_pidfile() { stop_pidfiles "${3:-20}" "$1:$2"; }

# Client commands never hang: each gets a timeout.
q() { timeout 10 "$@"; }
