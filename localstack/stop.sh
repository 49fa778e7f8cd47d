#!/usr/bin/env bash
# Stops the LocalStack started by start.sh and every Lambda process it spawned. Idempotent.
# SIGTERM first (LocalStack stops its function processes itself), SIGKILL after LOCALSTACK_STOP_TIMEOUT (10 s).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

grace="${LOCALSTACK_STOP_TIMEOUT:-10}"

alive() { kill -0 "$1" 2>/dev/null; }

# Signal a process group (start.sh and the executor start their children in new sessions), else the pid.
signal_group() {
    kill "-$1" -- "-$2" 2>/dev/null || kill "-$1" "$2" 2>/dev/null || true
}

stop_group() {  # pid, what
    local pid=$1 what=$2 waited=0
    alive "$pid" || return 0
    say "stopping $what (pid $pid)"
    signal_group TERM "$pid"
    while alive "$pid" && [ $waited -lt $((grace * 10)) ]; do
        sleep 0.1
        waited=$((waited + 1))
    done
    if alive "$pid"; then
        say "$what did not stop within $grace s: SIGKILL"
        signal_group KILL "$pid"
    fi
    # Helpers (DynamoDB Local's java, ...) in the same group may outlive the leader by a moment.
    signal_group KILL "$pid"
}

if [ -f "$LS_PIDFILE" ]; then
    stop_group "$(cat "$LS_PIDFILE")" LocalStack
    rm -f "$LS_PIDFILE"
else
    say "LocalStack not running (no $LS_PIDFILE)"
fi

# Function processes left behind (LocalStack killed, or stopped before it could end them).
if [ -d "$LS_LAMBDA_PIDS" ]; then
    for file in "$LS_LAMBDA_PIDS"/*; do
        [ -e "$file" ] || continue
        pid=$(basename "$file")
        # Only our function server: the pid may have been reused since.
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q docflow_localstack_executor/function_server.py; then
            stop_group "$pid" "Lambda process"
        fi
        rm -f "$file"
    done
fi

# Anything else still running from this installation (e.g. a DynamoDB Local that left the group).
for pid in $(pgrep -f -- "$LS_FS_ROOT/" || true); do
    [ "$pid" = "$$" ] && continue
    say "stopping leftover process $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-120)"
    kill -KILL "$pid" 2>/dev/null || true
done
say "stopped"
