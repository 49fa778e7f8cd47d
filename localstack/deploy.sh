#!/usr/bin/env bash
# Deploys the real CDK app (infra_cdk/) to the LocalStack at 127.0.0.1:$LOCALSTACK_PORT with cdklocal,
# stage "local" (functions run as host processes on the project venv: no layers, host Tesseract data),
# and writes the stack outputs to cdk-outputs.json at the repo root.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

CDK_BIN="$REPO_ROOT/infra_cdk/node_modules/.bin"
[ -x "$CDK_BIN/cdklocal" ] || die "cdklocal missing: run make install"

# Offline: cdklocal's default host name (localhost.localstack.cloud) does not resolve here.
export AWS_ENDPOINT_URL="http://localhost:$LS_PORT"
export AWS_ENDPOINT_URL_S3="http://localhost:$LS_PORT"
export AWS_S3_FORCE_PATH_STYLE=1
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" AWS_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export CDK_DEFAULT_ACCOUNT=000000000000 CDK_DEFAULT_REGION="$AWS_DEFAULT_REGION"
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION=1

started=$(date +%s)
say "bootstrapping CDK in LocalStack"
"$CDK_BIN/cdklocal" bootstrap --quiet -c stage=local "aws://000000000000/$AWS_DEFAULT_REGION" >/dev/null
say "deploying Docflow-local"
"$CDK_BIN/cdklocal" deploy Docflow-local -c stage=local --require-approval never --progress events \
    --outputs-file "$REPO_ROOT/cdk-outputs.json"
say "deployed in $(( $(date +%s) - started )) s; outputs in cdk-outputs.json"
