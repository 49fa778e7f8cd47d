#!/usr/bin/env bash
# Starts LocalStack in host mode (no Docker) in the background and waits until it is healthy.
# Run install.sh first. Idempotent: a LocalStack this script started and that is healthy is left running.
# Env (all optional):
#   LOCALSTACK_PORT                 gateway port on 127.0.0.1 (default 4566)
#   DOCFLOW_LAMBDA_PYTHON           interpreter that runs Lambda functions (default <repo>/.venv/bin/python)
#   DOCFLOW_LAMBDA_PASSENV          extra host variables handed to functions (space/comma separated)
#   LOCALSTACK_START_TIMEOUT        seconds to wait for health (default 90)
#   LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT  seconds a function may take to import its handler (default 60)
#   LAMBDA_KEEPALIVE_MS             how long an idle function process is kept (LocalStack default 600000)
#   any other LocalStack setting (LS_LOG, DEBUG, LOCALSTACK_HOST, ...) is passed through.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

health_url="http://127.0.0.1:$LS_PORT/_localstack/health"
healthy() { "$LS_VENV/bin/python" - "$health_url" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
sys.exit(0 if opener.open(sys.argv[1], timeout=2).status == 200 else 1)
EOF
}

[ -x "$LS_VENV/bin/python" ] || die "LocalStack is not installed: run localstack/install.sh first"
"$LS_VENV/bin/python" -c "import docflow_localstack_executor" 2>/dev/null ||
    die "executor plugin missing from $LS_VENV: run localstack/install.sh"

if [ -f "$LS_PIDFILE" ] && kill -0 "$(cat "$LS_PIDFILE")" 2>/dev/null; then
    if healthy; then
        say "already running (pid $(cat "$LS_PIDFILE")) on port $LS_PORT"
        exit 0
    fi
    die "pid $(cat "$LS_PIDFILE") from $LS_PIDFILE is alive but $health_url does not answer; run stop.sh"
fi
if healthy; then
    die "something else already answers on $health_url (another LocalStack?); stop it or set LOCALSTACK_PORT"
fi

lambda_python="${DOCFLOW_LAMBDA_PYTHON:-$REPO_ROOT/.venv/bin/python}"
[ -x "$lambda_python" ] || say "WARNING: $lambda_python is not executable: Lambda invocations will fail (set DOCFLOW_LAMBDA_PYTHON)"

mkdir -p "$LS_RUN" "$LS_LAMBDA_LOGS" "$LS_LAMBDA_PIDS" "$LS_FS_ROOT"
# LocalStack unzips function code and layers under $TMPDIR/lambda; keep that inside LS_HOME too.
# State is in memory only, so what a previous run left there is garbage.
rm -rf "$LS_TMP"
mkdir -p "$LS_TMP"
: >"$LS_LOG"
say "starting LocalStack on 127.0.0.1:$LS_PORT (log: $LS_LOG)"
started=$SECONDS
# setsid: LocalStack and its helpers (DynamoDB Local, ...) share a process group stop.sh can signal.
env \
    TMPDIR="$LS_TMP" \
    GATEWAY_LISTEN="127.0.0.1:$LS_PORT" \
    OVERRIDE_IN_DOCKER=0 \
    FILESYSTEM_ROOT="$LS_FS_ROOT" \
    DISABLE_EVENTS=1 \
    DNS_ADDRESS=0 \
    SKIP_SSL_CERT_DOWNLOAD=1 \
    DYNAMODB_IN_MEMORY=1 \
    LAMBDA_RUNTIME_EXECUTOR="$LS_EXECUTOR_PLUGIN" \
    LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT="${LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT:-60}" \
    DOCFLOW_LAMBDA_PYTHON="$lambda_python" \
    DOCFLOW_LAMBDA_LOG_DIR="$LS_LAMBDA_LOGS" \
    DOCFLOW_LAMBDA_PID_DIR="$LS_LAMBDA_PIDS" \
    setsid "$LS_VENV/bin/python" -m localstack.runtime.main >>"$LS_LOG" 2>&1 </dev/null &
echo $! >"$LS_PIDFILE"

deadline=$((SECONDS + ${LOCALSTACK_START_TIMEOUT:-90}))
until healthy; do
    if ! kill -0 "$(cat "$LS_PIDFILE")" 2>/dev/null; then
        say "LocalStack exited during startup; last log lines:" >&2
        tail -n 40 "$LS_LOG" >&2
        rm -f "$LS_PIDFILE"
        exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
        say "LocalStack not healthy after ${LOCALSTACK_START_TIMEOUT:-90} s; last log lines:" >&2
        tail -n 40 "$LS_LOG" >&2
        "$LS_SCRIPTS/stop.sh" >&2 || true
        exit 1
    fi
    sleep 0.5
done
say "healthy after $((SECONDS - started)) s (pid $(cat "$LS_PIDFILE")): http://127.0.0.1:$LS_PORT"
