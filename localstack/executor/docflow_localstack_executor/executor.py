"""LocalStack side of the ``docflow-host`` executor: one host subprocess per execution environment.

LocalStack's community Lambda only ships a Docker executor, which starts a container with its Go init
(``/var/rapid/init``) and talks to it over HTTP. This executor keeps that wire contract
(``ExecutorEndpoint``: POST ``/invoke`` to the environment; the environment posts ``status/<id>/ready``,
``invocations/<id>/logs`` and ``invocations/<id>/response`` or ``/error`` back to LocalStack) but starts
``function_server.py`` with a host Python interpreter instead of a container. Mirrors
``localstack.services.lambda_.invocation.docker_runtime_executor`` of localstack-core 2026.3.0.

Differences from a container that matter to callers:
- one interpreter for every ``python3.*`` runtime: ``DOCFLOW_LAMBDA_PYTHON`` (the project venv), so the
  function sees that venv's packages in addition to its own code and layers;
- no filesystem isolation: ``LAMBDA_TASK_ROOT`` is the unzipped code folder, not ``/var/task``, and layer
  folders are added to the import path and ``PATH`` (see ``LAYER_MODE``) rather than merged under ``/opt``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import requests
from localstack.aws.api.lambda_ import PackageType
from localstack.services.lambda_.invocation.executor_endpoint import (
    ExecutorEndpoint,
    InvokeSendError,
    ShutdownDuringStartup,
    StatusErrorException,
)
from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.runtime_executor import LambdaRuntimeException, RuntimeExecutor
from localstack.utils.net import get_free_tcp_port

from localstack import config

LOG = logging.getLogger(__name__)

FUNCTION_SERVER = Path(__file__).with_name("function_server.py")
# What a function inherits from LocalStack's own environment; everything else comes from LocalStack's
# env_vars (the same set a container gets) so LocalStack's settings do not leak into functions.
HOST_ENV_PASSTHROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TESSDATA_PREFIX", "SSL_CERT_FILE")
LOG_TAIL_BYTES = 64 * 1024
# Same upper bound the Docker executor waits for a result: max Lambda timeout plus a buffer.
MAX_INVOKE_SECONDS = 900 + 5
# Where layer contents go (DOCFLOW_LAMBDA_LAYERS): "after" (default) puts layer folders behind the
# interpreter's own packages and PATH, so the host venv and host tools win and layers only fill gaps (a layer
# built for Lambda holds cp312 / Amazon Linux binaries that may not load here); "before" is Lambda's order
# (layers shadow the venv; LD_LIBRARY_PATH too); "off" ignores layers.
LAYER_MODE = os.environ.get("DOCFLOW_LAMBDA_LAYERS", "after").strip().lower()
if LAYER_MODE not in ("after", "before", "off"):
    raise ValueError(f"DOCFLOW_LAMBDA_LAYERS must be after, before or off, not {LAYER_MODE!r}")
# Results after which AWS throws the sandbox away; the next invoke gets a fresh process.
RESET_MARKERS = (b"Task timed out after", b'"Runtime.ExitError"')


def _lambda_python() -> str:
    return os.environ.get("DOCFLOW_LAMBDA_PYTHON", "")


def _state_dir(name: str, override: str) -> Path:
    base = os.environ.get(override) or os.path.join(config.dirs.tmp, name)
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _gateway_host() -> str:
    host = config.GATEWAY_LISTEN[0].host
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def _exit_error(message: str) -> bytes:
    return json.dumps({"errorType": "Runtime.ExitError", "errorMessage": message}).encode()


class HostRuntimeExecutor(RuntimeExecutor):
    executor_endpoint: ExecutorEndpoint
    process: subprocess.Popen[bytes] | None

    def __init__(self, id: str, function_version: FunctionVersion) -> None:
        super().__init__(id=id, function_version=function_version)
        self.executor_endpoint = ExecutorEndpoint(self.id, container_address="127.0.0.1")
        self.process = None
        self.env: dict[str, str] = {}
        name = function_version.id.function_name
        self.log_path = _state_dir("lambda-logs", "DOCFLOW_LAMBDA_LOG_DIR") / f"{name}-{self.id}.log"
        self.pid_dir = _state_dir("lambda-pids", "DOCFLOW_LAMBDA_PID_DIR")
        self.spawned_at = 0.0

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self, env_vars: dict[str, str]) -> None:
        runtime = self.function_version.config.runtime or ""
        if not runtime.startswith("python"):
            raise LambdaRuntimeException(
                f"docflow-host executor runs Python functions only; {self.function_version.qualified_arn} "
                f"has runtime {runtime or 'container image'}"
            )
        python = _lambda_python()
        if not (python and os.access(python, os.X_OK)):
            raise LambdaRuntimeException(f"DOCFLOW_LAMBDA_PYTHON={python!r} is not an executable Python interpreter")
        self.executor_endpoint.start()
        self.env = self._process_env(env_vars)
        self._spawn()

    def _code_dir(self) -> Path:
        return Path(self.function_version.config.code.get_unzipped_code_location())

    def _layer_dirs(self) -> list[Path]:
        return [
            Path(layer.code.get_unzipped_code_location())
            for layer in self.function_version.config.layers or []
            if layer.code
        ]

    def _process_env(self, env_vars: dict[str, str]) -> dict[str, str]:
        env = {k: os.environ[k] for k in HOST_ENV_PASSTHROUGH if k in os.environ}
        for name in os.environ.get("DOCFLOW_LAMBDA_PASSENV", "").replace(",", " ").split():
            if name in os.environ:
                env[name] = os.environ[name]
        # LocalStack hands some values over as ints (memory size, timeout).
        env.update({k: str(v) for k, v in env_vars.items() if v is not None})

        code_dir = str(self._code_dir())
        layers = self._layer_dirs() if LAYER_MODE != "off" else []
        # Lambda's order is /var/task, /opt/python, /opt/python/lib/pythonX.Y/site-packages, then the runtime's.
        layer_python = []
        for layer in layers:
            layer_python.append(str(layer / "python"))
            layer_python.extend(str(p) for p in sorted(layer.glob("python/lib/python3*/site-packages")))
        python_path = [code_dir]
        if LAYER_MODE == "before":
            python_path += layer_python
        elif layer_python:  # "after": function_server.py appends them behind the interpreter's site-packages
            env["DOCFLOW_LAMBDA_LAYER_PYTHONPATH"] = os.pathsep.join(layer_python)
        if env.get("PYTHONPATH"):
            python_path.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(python_path)
        if layers:
            layer_bin = [str(p / "bin") for p in layers]
            host_path = [env.get("PATH", os.defpath)]
            env["PATH"] = os.pathsep.join(layer_bin + host_path if LAYER_MODE == "before" else host_path + layer_bin)
            if LAYER_MODE == "before":
                # Any LD_LIBRARY_PATH entry beats the system's libraries, so only in Lambda's order.
                lib_path = [str(p / "lib") for p in layers]
                if env.get("LD_LIBRARY_PATH"):
                    lib_path.append(env["LD_LIBRARY_PATH"])
                env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_path)
            env["DOCFLOW_LAMBDA_LAYER_DIRS"] = os.pathsep.join(str(p) for p in layers)
        env["LAMBDA_TASK_ROOT"] = code_dir
        env.setdefault("AWS_ENDPOINT_URL", f"http://{_gateway_host()}:{config.GATEWAY_LISTEN[0].port}")
        env.setdefault("OMP_THREAD_LIMIT", "1")
        env["PYTHONUNBUFFERED"] = "1"
        # The code folder may be a hot-reload mount of the user's sources: keep __pycache__ out of it.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["DOCFLOW_LAMBDA_PARENT_PID"] = str(os.getpid())
        return env

    def _spawn(self) -> None:
        port = get_free_tcp_port()
        self.executor_endpoint.container_port = port
        env = {**self.env, "DOCFLOW_LAMBDA_PORT": str(port)}
        self.spawned_at = time.time()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [_lambda_python(), "-u", str(FUNCTION_SERVER)],
                cwd=str(self._code_dir()),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own process group: stop() and stop.sh can end it together with anything it spawned.
                start_new_session=True,
            )
        (self.pid_dir / str(self.process.pid)).write_text(f"{self.id}\n")
        LOG.debug("Started %s (pid %s) for %s", FUNCTION_SERVER.name, self.process.pid, self.id)
        self._wait_for_startup()

    def _wait_for_startup(self) -> None:
        future = self.executor_endpoint.startup_future
        try:
            while True:
                try:
                    future.result(timeout=0.1)
                    return
                except FutureTimeout:
                    code = self.process.poll() if self.process else -1
                    if code is None:
                        continue
                    # An init error is posted to status/<id>/error before the process exits.
                    try:
                        future.result(timeout=1)
                        return
                    except FutureTimeout:
                        payload = _exit_error(f"Runtime exited with error: exit status {code}")
                        raise StatusErrorException("Environment startup failed", payload=payload) from None
        except CancelledError as e:
            raise ShutdownDuringStartup("Executor environment shutdown during startup") from e

    def _kill(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        (self.pid_dir / str(process.pid)).unlink(missing_ok=True)

    def _respawn(self) -> None:
        LOG.debug("Resetting execution environment %s", self.id)
        self._kill()
        self.executor_endpoint.startup_future = Future()
        self._spawn()

    def stop(self) -> None:
        self._kill()
        try:
            self.executor_endpoint.shutdown()
        except Exception as e:  # already unregistered, or never started
            LOG.debug("Error while stopping executor endpoint %s: %s", self.id, e)

    # --- invocation --------------------------------------------------------------------------------

    def _code_mtime(self) -> float:
        latest = 0.0
        for root, dirs, files in os.walk(self._code_dir()):
            dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
            for name in files:
                try:
                    latest = max(latest, os.stat(os.path.join(root, name)).st_mtime)
                except OSError:
                    continue
        return latest

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        code = self.function_version.config.code
        # Hot reloading (code from the magic "hot-reload" bucket: a host folder): the Docker init restarts
        # the runtime when files change; here, a fresh process when anything in the folder is newer.
        reload = bool(code and code.is_hot_reloading() and self._code_mtime() > self.spawned_at)
        if reload or self.process is None or self.process.poll() is not None:
            self._respawn()
        endpoint = self.executor_endpoint
        endpoint.invocation_future = Future()
        endpoint.logs = None
        url = f"http://127.0.0.1:{endpoint.container_port}/invoke"
        response = requests.post(url, json=payload, proxies={"http": "", "https": ""}, timeout=30)
        if not response.ok:
            raise InvokeSendError(f"Error sending invocation to {url}: {response.status_code}")
        result = self._await_result(payload["invoke-id"])
        if result.is_error and any(marker in (result.payload or b"") for marker in RESET_MARKERS):
            self._respawn()
        return result

    def _await_result(self, request_id: str) -> InvocationResult:
        future = self.executor_endpoint.invocation_future
        deadline = time.monotonic() + MAX_INVOKE_SECONDS
        while True:
            try:
                return future.result(timeout=0.2)
            except FutureTimeout:
                process = self.process
                code = process.poll() if process else -1
                if code is not None:
                    try:
                        return future.result(timeout=1)
                    except FutureTimeout:
                        message = f"RequestId: {request_id} Error: Runtime exited with error: exit status {code}"
                        return InvocationResult(request_id, _exit_error(message), is_error=True, logs=self.get_logs())
                if time.monotonic() > deadline:
                    raise TimeoutError(f"No result for invocation {request_id} after {MAX_INVOKE_SECONDS} s") from None

    # --- addresses and logs ------------------------------------------------------------------------

    def get_address(self) -> str:
        return "127.0.0.1"

    def get_endpoint_from_executor(self) -> str:
        return _gateway_host()

    def get_runtime_endpoint(self) -> str:
        port = config.GATEWAY_LISTEN[0].port
        return f"http://{self.get_endpoint_from_executor()}:{port}{self.executor_endpoint.get_endpoint_prefix()}"

    def get_logs(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - LOG_TAIL_BYTES))
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return "Execution environment was not started"

    # --- version preparation -----------------------------------------------------------------------

    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        cfg = function_version.config
        if cfg.package_type != PackageType.Zip or not (cfg.runtime or "").startswith("python"):
            # Not fatal here: failing the version would fail whole CloudFormation stacks for a function
            # that may never be invoked (e.g. CDK's Node.js helpers); start() refuses it instead.
            LOG.warning(
                "docflow-host executor cannot run %s (runtime %s); invocations will fail",
                function_version.qualified_arn,
                cfg.runtime or "container image",
            )
            return
        if cfg.code:
            cfg.code.prepare_for_execution()
        for layer in cfg.layers or []:
            if layer.code:
                layer.code.prepare_for_execution()

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        pass

    @classmethod
    def validate_environment(cls) -> bool:
        python = _lambda_python()
        if not (python and os.access(python, os.X_OK)):
            LOG.warning("DOCFLOW_LAMBDA_PYTHON=%r is not executable: Lambda invocations will fail", python)
            return False
        return True
