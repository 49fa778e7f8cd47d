"""Names, sizes and limits of the stack in one place."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FUNCTIONS_DIR = REPO / "functions"
LAYERS_BUILD_DIR = REPO / "layers" / "build"

SERVICE = "docflow"
INCOMING_PREFIX = "incoming/"
RESULTS_PREFIX = "results/"
TEXT_PREFIX = "text/"
STATUS_INDEX = "by-status"

# Incoming uploads are kept for re-drives, then moved to cheaper storage and finally expired.
INCOMING_TO_IA_DAYS = 30
INCOMING_EXPIRE_DAYS = 365

# PDFs longer than this are split into page ranges processed by a Map, so no single Lambda invocation
# OCRs more than PAGES_PER_CHUNK pages (a 300-page scan stays far inside the 15-minute limit).
LARGE_PDF_PAGES = 20
PAGES_PER_CHUNK = 10
MAP_MAX_CONCURRENCY = 10

PYTHON_RUNTIME = "python3.12"


class FunctionSpec:
    """Memory and timeout per function: OCR is CPU-bound (memory buys vCPU), the rest is light."""

    def __init__(self, handler: str, memory_mb: int, timeout_s: int, layers: tuple[str, ...]) -> None:
        self.handler = handler
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self.layers = layers


FUNCTIONS: dict[str, FunctionSpec] = {
    "Validate": FunctionSpec("docflow.handlers.validate.handler", 1024, 60, ("base", "numpy", "ocr")),
    "RecordOutcome": FunctionSpec("docflow.handlers.record_outcome.handler", 256, 30, ("base",)),
    "ExtractText": FunctionSpec("docflow.handlers.extract_text.handler", 2048, 900, ("base", "numpy", "ocr")),
    "ExtractPages": FunctionSpec("docflow.handlers.extract_pages.handler", 2048, 900, ("base", "numpy", "ocr")),
    "MergeText": FunctionSpec("docflow.handlers.merge_text.handler", 512, 60, ("base",)),
    "Classify": FunctionSpec("docflow.handlers.classify.handler", 1024, 60, ("base", "numpy", "ml")),
    "RecordFailure": FunctionSpec("docflow.handlers.record_failure.handler", 256, 30, ("base",)),
    # Not a pipeline step: the scheduled drift job (reads records and the champion's baseline, emits DriftScore).
    "Drift": FunctionSpec("docflow.handlers.drift.handler", 512, 300, ("base",)),
}

# The REST API: every endpoint in one function (synchronous upload-and-predict OCRs and classifies, so it
# carries both engines); API Gateway gives a request at most 29 s.
API_FUNCTION = FunctionSpec("docflow.handlers.api.handler", 2048, 29, ("base", "numpy", "ml", "ocr", "web"))
API_STAGE = "v1"
API_BINARY_MEDIA_TYPES = ("multipart/form-data", "application/pdf", "image/*", "application/octet-stream")
# Reached without a key: liveness and the API's own documentation.
API_KEYLESS_PATHS = ("health", "docs", "openapi.json")
# The review page and its script and stylesheet hold no data: keyless. What they show (review/queue and the
# documents' endpoints) needs the key.
API_REVIEW_PAGE = "review"
API_THROTTLE_RATE = 50  # requests/s, steady
API_THROTTLE_BURST = 100
API_DAILY_QUOTA = 100_000

# The training loop (constructs/training.py): its functions, where its data lives in the model bucket, when it
# runs. The training job's defaults are launch.py's (SageMakerJobConfig): one GPU instance, one hour at most.
TRAINING_FUNCTIONS: dict[str, FunctionSpec] = {
    "PrepareTrainingData": FunctionSpec(
        "docflow.handlers.training_prepare.handler", 1024, 900, ("base", "numpy", "training")
    ),
    # Scores candidate and champion through onnxruntime on the held-out set; memory buys the vCPU.
    "EvaluateAndGate": FunctionSpec(
        "docflow.handlers.training_gate.handler", 3008, 900, ("base", "numpy", "ml", "training")
    ),
    "PublishModel": FunctionSpec("docflow.handlers.training_publish.handler", 1024, 300, ("base", "numpy", "training")),
    # After Publish: the review queue scored again by the new champion (docflow.pipeline.rescore), Classify's
    # engine on Classify's layers; it stops between documents before its timeout and the machine calls it again.
    "RescoreQueue": FunctionSpec("docflow.handlers.rescore_queue.handler", 1024, 900, ("base", "numpy", "ml")),
}
TRAINING_PREFIX = "training/"
TRAINING_CORPUS_PREFIX = "training/corpus/"
TRAINING_VALIDATION_PREFIX = "training/validation/"
TRAINING_JOBS_PREFIX = "training/jobs/"
MODELS_PREFIX = "models/"
# Daily, like the seed's Airflow DAG; the gate keeps a run that learnt nothing new from changing anything.
TRAINING_SCHEDULE = "cron(0 3 * * ? *)"
# Every this many new labels (docflow/retrain.py), the API sends the event that starts a training run.
RETRAIN_LABEL_THRESHOLD = 100
TRAINING_TIMEOUT_HOURS = 4  # the whole execution: data preparation, a queued and run training job, the gate
# At most this many RescoreQueue invocations (each under its 15-minute timeout) per execution: the loop ends
# within TRAINING_TIMEOUT_HOURS even after an hour-long job; what is left stays queued with its old suggestion.
RESCORE_MAX_INVOCATIONS = 6
# The AWS Deep Learning Container the job runs in (launch.py picks the same with the SDK): PyTorch 2.5, Python 3.11.
TRAINING_IMAGE_ACCOUNT = "763104351884"
TRAINING_IMAGE_REPOSITORY = "pytorch-training"
TRAINING_IMAGE_TAG = "2.5-{device}-py311"

# Monitoring: the CloudWatch dashboard, the alarms (to one SNS topic) and the drift job's schedule.
METRICS_NAMESPACE = "Docflow"
ALARM_EMAIL_CONTEXT = "alarmEmail"  # cdk deploy -c alarmEmail=ops@example.com subscribes that address
DRIFT_SCHEDULE_MINUTES = 60
ALARM_PERIOD_MINUTES = 5
# Any failed, timed-out or aborted execution or any message in the dead-letter queue is worth a look.
FAILED_EXECUTIONS_THRESHOLD = 1
# A timed-out or aborted execution runs no Catch: its document stays PROCESSING, with no FAILED record.
TIMED_OUT_EXECUTIONS_THRESHOLD = 1
ABORTED_EXECUTIONS_THRESHOLD = 1
DLQ_MESSAGES_THRESHOLD = 1
# Shares of the documents processed in one period (metric math over DocumentsProcessed by status), judged
# only when at least RATE_MIN_DOCUMENTS were processed in it, so one failure out of two is not an outage.
ERROR_RATE_THRESHOLD = 0.05  # FAILED / processed
REVIEW_RATE_THRESHOLD = 0.30  # NEEDS_REVIEW / processed
RATE_MIN_DOCUMENTS = 20
RATE_EVALUATION_PERIODS = 3  # periods in a row (15 minutes) before the rate alarms fire
# PSI above which a signal has drifted: the alarm's threshold, and DOCFLOW_DRIFT_THRESHOLD of the drift job.
DRIFT_PSI_THRESHOLD = 0.2
DRIFT_WINDOW_HOURS = 24  # DOCFLOW_DRIFT_WINDOW_HOURS of the drift job: the predictions each run compares
DRIFT_SIGNALS = ("class_distribution", "prediction_confidence")
TERMINAL_STATUSES = ("CLASSIFIED", "NEEDS_REVIEW", "REJECTED", "DUPLICATE", "FAILED")
