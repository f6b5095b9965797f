#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by slurm/start_cluster.sh: cancel the jobs left,
# then stop slurmd, slurmctld, slurmdbd, MariaDB and munged (each by its pid file).
#
#   bash slurm/stop_cluster.sh           # stop; job state and accounting history are kept
#   bash slurm/stop_cluster.sh --purge   # also drop the accounting DB and the saved job state
#
# Safe to run when nothing (or only part of the cluster) is running.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=slurm/lib.sh
. "$HERE/lib.sh"

PURGE=0
for arg in "$@"; do
    case $arg in
        --purge) PURGE=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $arg (see --help)" ;;
    esac
done

need_root "$@"
take_lock
rm -f "$READY_MARKER"

# Cancel what is left while slurmd is still there to kill the job steps.
if pid_alive "$SLURM_RUN/slurmctld.pid" slurmctld && command -v squeue >/dev/null 2>&1; then
    jobs=$(q squeue -h -o %F 2>/dev/null | sort -u || true)
    if [ -n "$jobs" ]; then
        say "cancelling jobs: ${jobs//$'\n'/ }"
        # shellcheck disable=SC2086
        q scancel $jobs >/dev/null 2>&1 || true
        # KillWait is 5 s; give the steps a little longer to end.
        jobs_gone() { local out; out=$(q squeue -h -o %i 2>/dev/null) && [ -z "$out" ]; }
        wait_for "jobs to end" 15 jobs_gone \
            || say "some jobs are still listed; stopping anyway"
    fi
fi

# The slurm daemons, then MariaDB and munged, each group stopped in parallel.
up=()
for d in slurmd slurmctld slurmdbd; do
    pid_alive "$SLURM_RUN/$d.pid" "$d" && up+=("$SLURM_RUN/$d.pid:$d")
done
if [ ${#up[@]} -gt 0 ]; then
    say "stopping ${up[*]##*:}"
    stop_pidfiles 20 "${up[@]}"
fi

up=()
if pid_alive "$MYSQL_PIDFILE" mariadbd; then
    if [ $PURGE = 1 ]; then
        say "dropping the accounting database $DB_NAME"
        q mysql --batch -e "DROP DATABASE IF EXISTS $DB_NAME" || say "could not drop $DB_NAME"
    fi
    up+=("$MYSQL_PIDFILE:mariadbd")
fi
pid_alive "$MUNGE_PIDFILE" munged && up+=("$MUNGE_PIDFILE:munged")
if [ ${#up[@]} -gt 0 ]; then
    say "stopping ${up[*]##*:}"
    stop_pidfiles 30 "${up[@]}"
fi

if [ $PURGE = 1 ]; then
    say "removing saved job state"
    rm -rf "${SLURM_STATE:?}/slurmctld/"* "${SLURM_STATE:?}/slurmd/"*
fi

for d in slurmd slurmctld slurmdbd mariadbd munged; do
    if running "" "$d"; then
        say "warning: a $d not started by start_cluster.sh is still running (pid $(pgrep -x "$d" | tr '\n' ' '))"
    fi
done
say "cluster stopped in $(elapsed) s"
