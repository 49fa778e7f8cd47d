"""Function side of the ``docflow-host`` executor: stands in for LocalStack's Lambda init + Python runtime client.

Run as a script by the function's interpreter (the project venv, not LocalStack's), so it uses only
the standard library. Contract (localstack/lambda-runtime-init ``cmd/localstack/custom_interop.go``):

- import ``_HANDLER`` (``module.function``); on failure POST the error to
  ``{LOCALSTACK_RUNTIME_ENDPOINT}/status/{LOCALSTACK_RUNTIME_ID}/error`` and exit, else POST ``…/ready``;
- serve POST ``/invoke`` (``invoke-id``, ``invoked-function-arn``, ``payload``, ``trace-id``): answer 200
  at once, run the handler, POST ``{"logs": …}`` to ``…/invocations/{id}/logs``, then the JSON result to
  ``…/invocations/{id}/response`` or ``{errorMessage, errorType, requestId, stackTrace}`` to ``…/error``.
Error documents, the context object and the START/END/REPORT log lines follow awslambdaric and the RIE.
"""

import decimal
import http.server
import importlib
import io
import json
import os
import queue
import sys
import threading
import time
import traceback
import urllib.request

THIS_FILE = os.path.abspath(__file__)
# Running as a script put this package's folder first on sys.path; function code must come first.
if sys.path and os.path.abspath(sys.path[0] or os.curdir) == os.path.dirname(THIS_FILE):
    del sys.path[0]

# Layer packages behind the interpreter's own (the executor's default DOCFLOW_LAMBDA_LAYERS=after).
sys.path.extend(p for p in os.environ.pop("DOCFLOW_LAMBDA_LAYER_PYTHONPATH", "").split(os.pathsep) if p)

ENDPOINT = os.environ["LOCALSTACK_RUNTIME_ENDPOINT"]
RUNTIME_ID = os.environ["LOCALSTACK_RUNTIME_ID"]
PORT = int(os.environ.pop("DOCFLOW_LAMBDA_PORT"))
PARENT_PID = int(os.environ.pop("DOCFLOW_LAMBDA_PARENT_PID", "0"))
TIMEOUT_S = int(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT", "3"))
INVOCATIONS = queue.Queue()
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a user's proxy


def post(path, document):
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    request = urllib.request.Request(ENDPOINT + path, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    _OPENER.open(request, timeout=30).read()


_LOG_PARTS = []
_LOG_LOCK = threading.Lock()


class LogCollector(io.TextIOBase):
    """Tees a standard stream to the process log and to the current invocation's log buffer."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        self.stream.write(text)
        self.stream.flush()
        with _LOG_LOCK:
            _LOG_PARTS.append(text)
        return len(text)

    def flush(self):
        self.stream.flush()

    def fileno(self):
        return self.stream.fileno()

    @property
    def encoding(self):
        return self.stream.encoding

    @staticmethod
    def take():
        with _LOG_LOCK:
            text = "".join(_LOG_PARTS)
            _LOG_PARTS.clear()
        return text


class Fault(Exception):
    def __init__(self, error_type, message):
        super().__init__(message)
        self.error_type = error_type


def error_document(exc, request_id="", error_type=None):
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if f.filename != THIS_FILE and not f.filename.startswith("<frozen importlib") and f.name != "import_module"
    ]
    document = {
        "errorMessage": str(exc),
        "errorType": error_type or getattr(exc, "error_type", None) or type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_list(frames),
    }
    sys.stdout.write(
        "[ERROR] {errorType}: {errorMessage}\nTraceback (most recent call last):\n".format(**document)
        + "".join(document["stackTrace"])
    )
    return document


def load_handler(spec):
    try:
        module_name, function_name = spec.rsplit(".", 1)
    except ValueError:
        raise Fault("Runtime.MalformedHandlerName", f"Bad handler '{spec}'") from None
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as e:
        raise Fault("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {e}") from e
    except SyntaxError as e:
        raise Fault("Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {e}") from e
    try:
        return getattr(module, function_name)
    except AttributeError:
        raise Fault("Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'") from None


class LambdaContext:
    def __init__(self, request_id, function_arn, deadline_ms):
        self.aws_request_id = request_id
        self.invoked_function_arn = function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")  # a str, as in awslambdaric
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.identity = None
        self.client_context = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(int(self._deadline_ms - time.time() * 1000), 0)

    def log(self, message):
        sys.stdout.write(message)


def to_json(value):
    def default(o):
        if isinstance(o, decimal.Decimal):
            return int(o) if o == o.to_integral_value() else float(o)
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")

    return json.dumps(value, default=default).encode()


def invoke(handler, request):
    """Runs the handler on the main thread (as the real runtime does: signals work); a watchdog reports timeouts."""
    request_id = request["invoke-id"]
    if request.get("trace-id"):
        os.environ["_X_AMZN_TRACE_ID"] = request["trace-id"]
    sys.stdout.write(f"START RequestId: {request_id} Version: {os.environ.get('AWS_LAMBDA_FUNCTION_VERSION')}\n")
    started = time.monotonic()
    context = LambdaContext(request_id, request.get("invoked-function-arn"), time.time() * 1000 + TIMEOUT_S * 1000)
    reported = threading.Lock()

    def report(outcome):
        if not reported.acquire(blocking=False):
            return
        duration_ms = min(time.monotonic() - started, TIMEOUT_S) * 1000
        memory = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        sys.stdout.write(
            f"END RequestId: {request_id}\nREPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Billed Duration: {int(-(-duration_ms // 1))} ms\tMemory Size: {memory} MB\t"
            f"Max Memory Used: {memory} MB\t\n"
        )
        post(f"/invocations/{request_id}/logs", {"logs": LogCollector.take()})
        if "error" in outcome:
            post(f"/invocations/{request_id}/error", outcome["error"])
        else:
            post(f"/invocations/{request_id}/response", outcome["response"])

    finished = threading.Event()

    def watchdog():
        if not finished.wait(TIMEOUT_S):  # the host executor then kills this process, as AWS resets the sandbox
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            report({"error": {"errorMessage": f"{now} {request_id} Task timed out after {TIMEOUT_S}.00 seconds"}})

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        payload = request.get("payload") or ""
        result = handler(json.loads(payload) if payload else {}, context)
        try:
            outcome = {"response": to_json(result)}
        except (TypeError, ValueError) as e:
            fault = Fault("Runtime.MarshalError", f"Unable to marshal response: {e}")
            outcome = {"error": error_document(fault, request_id)}
    except SystemExit as e:
        message = f"RequestId: {request_id} Error: Runtime exited with error: exit status {e.code}"
        outcome = {"error": {"errorType": "Runtime.ExitError", "errorMessage": message}}
    except BaseException as e:
        outcome = {"error": error_document(e, request_id)}
    finished.set()
    report(outcome)


class InvokeHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/invoke":
            self.send_error(404)
            return
        # Answer at once, like the RIE; LocalStack waits for the result on its own endpoint.
        INVOCATIONS.put(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, format, *args):
        pass


def exit_when_orphaned():
    """LocalStack killed hard leaves us behind; do not outlive it."""
    while True:
        if PARENT_PID and os.getppid() != PARENT_PID:
            os._exit(0)
        time.sleep(1)


def main():
    sys.stdout, sys.stderr = LogCollector(sys.stdout), LogCollector(sys.stderr)
    threading.Thread(target=exit_when_orphaned, daemon=True).start()
    try:
        handler = load_handler(os.environ.get("_HANDLER", ""))
    except BaseException as e:
        post(f"/status/{RUNTIME_ID}/error", error_document(e))
        sys.exit(1)
    server = http.server.HTTPServer(("127.0.0.1", PORT), InvokeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    post(f"/status/{RUNTIME_ID}/ready", {})
    while True:
        invoke(handler, INVOCATIONS.get())


if __name__ == "__main__":
    main()
