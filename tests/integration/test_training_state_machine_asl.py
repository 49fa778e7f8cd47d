"""The synthesized training state machine, executed by moto's ASL engine: PrepareData, EvaluateAndGate,
Publish and RescoreQueue are the real handlers against moto S3/DynamoDB; only the SageMaker step is stood in for.

moto's engine forwards ``sagemaker:createTrainingJob`` to moto's SageMaker (which records the job and calls
it Completed at once) and refuses the ``.sync`` pattern. The stand-in does what SageMaker would: it lays the
channels out from S3 as /opt/ml/input/data/<channel>, runs the job's code tarball (the very asset the stack
deploys) with the hyperparameters as arguments, uploads model.tar.gz and output.tar.gz under the output
path, and reports the job Completed, or Failed with the reason the entry point wrote.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.awslambda.models import LambdaFunction
from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import StatesErrorNameType
from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_factory
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import ResourceCondition
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_unsupported import (
    StateTaskServiceUnsupported,
)
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

from docflow.adapters.dynamodb import DynamoRecordStore
from docflow.records import DocumentRecord
from docflow.values import ExtractionResult, PageText, Status
from infra_cdk import constants as c
from infra_cdk.constructs.training import build_code_tarball
from tests.aws_fixtures import BUCKET, TABLE, create_resources
from tests.infra.synth import synth_stack
from tests.integration.test_handlers import FakeLambdaContext

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("sklearn", reason="the training extra is not installed")

REGION = "us-east-1"
MODELS = "docflow-models-test"
ASSETS = "docflow-cdk-assets-test"
CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
ROTATED = {"Email": "News", "News": "Resume", "Resume": "Email"}
# Small and quick, as in test_mlops_loop; the state machine's own hyperparameters come on top.
FIXTURE_HYPERPARAMETERS = {"seed": "7", "vocab_size": "400", "c_grid": "1,10", "cv_folds": "3", "augment_copies": "0"}
FEEDBACK_TEXT = "From: kim@example.com To: lee@example.com Subject: Re: meeting. Please reply to this email."


# -- the SageMaker stand-in ------------------------------------------------------------------------------

_finished: dict[str, dict[str, Any]] = {}  # job name -> {"status", "reason"}
_runs: dict[str, tuple[int, bytes, bytes, str]] = {}  # inputs digest -> (exit code, model tar, output tar, reason)


def _tar_gz(folder: Path) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    return raw.getvalue()


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def run_training_container(request: dict[str, Any]) -> None:
    """What SageMaker does with a CreateTrainingJob request, on this machine."""
    s3 = boto3.client("s3", region_name=REGION)
    job = request["TrainingJobName"]
    hyperparameters = dict(request["HyperParameters"])
    code_uri = hyperparameters.pop("sagemaker_submit_directory")
    program = hyperparameters.pop("sagemaker_program")
    hyperparameters = {k: v for k, v in hyperparameters.items() if not k.startswith("sagemaker_")}
    hyperparameters.update(FIXTURE_HYPERPARAMETERS)
    with tempfile.TemporaryDirectory(prefix="fake-sagemaker-") as tmp:
        root = Path(tmp)
        digest = hashlib.sha256(json.dumps(sorted(hyperparameters.items())).encode())
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(root),
            "DOCFLOW_HOME": str(root / "home"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "OMP_THREAD_LIMIT": "1",
            "TRAINING_JOB_NAME": job,
            "SM_MODEL_DIR": str(root / "model"),
            "SM_OUTPUT_DATA_DIR": str(root / "output" / "data"),
            "SM_CHANNELS": json.dumps([ch["ChannelName"] for ch in request["InputDataConfig"]]),
            **request.get("Environment", {}),
        }
        for channel in request["InputDataConfig"]:
            name = channel["ChannelName"]
            bucket, prefix = _split(channel["DataSource"]["S3DataSource"]["S3Uri"])
            target = root / "input" / "data" / name
            target.mkdir(parents=True)
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
            assert keys, f"SageMaker refuses an empty channel: {name} at s3://{bucket}/{prefix}"
            for key in keys:
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                (target / key[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)
                (target / key[len(prefix) :]).write_bytes(body)
                digest.update(f"{name}/{key[len(prefix) :]}".encode() + hashlib.sha256(body).digest())
            env[f"SM_CHANNEL_{name.upper()}"] = str(target)
        code = root / "code"
        bucket, key = _split(code_uri)
        with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()), mode="r:gz") as t:
            t.extractall(code, filter="data")
        digest.update(hashlib.sha256(_tar_gz(code)).digest())
        # The same code on the same data with the same seed trains the same model: run each input once.
        if digest.hexdigest() not in _runs:
            for folder in (root / "model", root / "output" / "data"):
                folder.mkdir(parents=True, exist_ok=True)
            args = [arg for name, value in hyperparameters.items() for arg in (f"--{name}", value)]
            done = subprocess.run(
                [sys.executable, program, *args],
                cwd=code,
                env={**env, "PYTHONPATH": str(code)},
                capture_output=True,
                text=True,
                timeout=300,
            )
            failure = root / "output" / "failure"
            reason = failure.read_text() if failure.is_file() else done.stderr[-500:]
            _runs[digest.hexdigest()] = (
                done.returncode,
                _tar_gz(root / "model") if done.returncode == 0 else b"",
                _tar_gz(root / "output" / "data") if done.returncode == 0 else b"",
                reason,
            )
    returncode, model_tar, output_tar, reason = _runs[digest.hexdigest()]
    if returncode != 0:
        _finished[job] = {"status": "Failed", "reason": reason}
        return
    bucket, prefix = _split(request["OutputDataConfig"]["S3OutputPath"])
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{job}/output/model.tar.gz", Body=model_tar)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{job}/output/output.tar.gz", Body=output_tar)
    _finished[job] = {"status": "Completed", "reason": None}


class SageMakerTrainingSync(StateTaskServiceUnsupported):
    """``arn:aws:states:::sagemaker:createTrainingJob.sync``: create the job (moto records it), run it with
    run_training_container, and end as Step Functions does: the DescribeTrainingJob output, or TaskFailed
    with it as the cause."""

    def __init__(self) -> None:
        super(StateTaskServiceUnsupported, self).__init__(
            supported_integration_patterns={ResourceCondition.Sync, ResourceCondition.WaitForTaskToken}
        )

    def _validate_service_integration_is_supported(self) -> None:
        assert self.resource.api_action == "createTrainingJob", self.resource.resource_arn

    def _eval_service_task(
        self, env: Any, resource_runtime_part: Any, normalised_parameters: dict, state_credentials: Any
    ) -> None:  # type: ignore[override]
        super()._eval_service_task(env, resource_runtime_part, normalised_parameters, state_credentials)
        run_training_container(normalised_parameters)

    def _build_sync_resolver(
        self, env: Any, resource_runtime_part: Any, normalised_parameters: dict, state_credentials: Any
    ) -> Callable[[], Any]:  # type: ignore[override]
        job = normalised_parameters["TrainingJobName"]

        def resolve() -> Any:
            described = boto3.client("sagemaker", region_name=REGION).describe_training_job(TrainingJobName=job)
            described.pop("ResponseMetadata", None)
            finished = _finished[job]
            described.update(TrainingJobStatus=finished["status"])
            described = json.loads(json.dumps(described, default=str))
            if finished["status"] == "Failed":
                described["FailureReason"] = finished["reason"]
                raise FailureEventException(
                    FailureEvent(
                        env=env,
                        error_name=StatesErrorName(typ=StatesErrorNameType.StatesTaskFailed),
                        event_type=HistoryEventType.TaskFailed,
                        event_details=EventDetails(
                            taskFailedEventDetails=TaskFailedEventDetails(
                                resource=self._get_sfn_resource(),
                                resourceType=self._get_sfn_resource_type(),
                                error="States.TaskFailed",
                                cause=json.dumps(described),
                            )
                        ),
                    )
                )
            return described

        return resolve


# -- the machine -------------------------------------------------------------------------------------------


class LambdaContext(FakeLambdaContext):
    """A fresh invocation's: the function's whole timeout ahead (RescoreQueue budgets its time by it)."""

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def _serve_with_real_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    def invoke(self: LambdaFunction, event: Any) -> tuple[str, bool, str]:
        try:
            module, func = self.handler.rsplit(".", 1)
            result = getattr(importlib.import_module(module), func)(event, LambdaContext())
            return json.dumps(result), False, ""
        except Exception as exc:  # what the Lambda runtime reports for an unhandled exception
            error = {
                "errorMessage": str(exc),
                "errorType": type(exc).__name__,
                "stackTrace": traceback.format_tb(exc.__traceback__),
            }
            return json.dumps(error), True, ""

    monkeypatch.setattr(LambdaFunction, "_invoke_lambda", invoke)
    original = state_task_factory.state_task_service_for
    monkeypatch.setattr(
        state_task_factory,
        "state_task_service_for",
        lambda service_name: SageMakerTrainingSync() if service_name == "sagemaker" else original(service_name),
    )


def _definition(function_arns: dict[str, str], role_arn: str, code_key: str) -> str:
    _stack, template = synth_stack()
    resources = template.to_json()["Resources"]
    by_handler = {spec.handler: name for name, spec in c.TRAINING_FUNCTIONS.items()}
    logical = next(
        k for k, r in resources.items() if r["Type"] == "AWS::StepFunctions::StateMachine" and k.startswith("Training")
    )
    out = []
    for part in resources[logical]["Properties"]["DefinitionString"]["Fn::Join"][1]:
        if isinstance(part, str):
            out.append(part)
        elif "Ref" in part:
            out.append({"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::URLSuffix": "amazonaws.com"}[part["Ref"]])
        elif "Fn::Sub" in part:  # the code asset's S3 URL
            assert part["Fn::Sub"].startswith("s3://cdk-") and part["Fn::Sub"].endswith(".gz")
            out.append(f"s3://{ASSETS}/{code_key}")
        else:
            target = resources[part["Fn::GetAtt"][0]]
            out.append(
                role_arn
                if target["Type"] == "AWS::IAM::Role"
                else function_arns[by_handler[target["Properties"]["Handler"]]]
            )
    return "".join(out)


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    from docflow.handlers._training import loop_settings

    monkeypatch.setenv("DOCFLOW_BACKEND", "aws")
    monkeypatch.setenv("DOCFLOW_DOCUMENTS_BUCKET", BUCKET)
    monkeypatch.setenv("DOCFLOW_TABLE_NAME", TABLE)
    monkeypatch.setenv("DOCFLOW_MODEL_BUCKET", MODELS)
    monkeypatch.setenv("DOCFLOW_TRAINING_MIN_EVAL_DOCS", "1")  # the fixture corpus holds out a handful
    loop_settings.cache_clear()
    _serve_with_real_handlers(monkeypatch)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        create_resources()
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in (MODELS, ASSETS):
            s3.create_bucket(Bucket=bucket)
        code_key = "training-code.tar.gz"
        s3.put_object(Bucket=ASSETS, Key=code_key, Body=build_code_tarball().read_bytes())
        role = boto3.client("iam", region_name=REGION).create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"][
            "Arn"
        ]
        lam = boto3.client("lambda", region_name=REGION)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("placeholder.py", "")
        arns = {
            name: lam.create_function(
                FunctionName=f"docflow-{name}",
                Runtime="python3.12",
                Role=role,
                Handler=spec.handler,
                Code={"ZipFile": buf.getvalue()},
            )["FunctionArn"]
            for name, spec in c.TRAINING_FUNCTIONS.items()
        }
        sfn = boto3.client("stepfunctions", region_name=REGION)
        arn = sfn.create_state_machine(name="training", definition=_definition(arns, role, code_key), roleArn=role)[
            "stateMachineArn"
        ]
        yield {"sfn": sfn, "arn": arn, "s3": s3}
    loop_settings.cache_clear()


def _upload_corpus(s3: Any, rename: dict[str, str] | None = None) -> None:
    """The fixture corpus under training/corpus/ (labels renamed by ``rename``: a deliberately worse model),
    minus the first two documents of each class, which are the external validation set."""
    for obj in s3.list_objects_v2(Bucket=MODELS, Prefix=c.TRAINING_CORPUS_PREFIX).get("Contents", []):
        s3.delete_object(Bucket=MODELS, Key=obj["Key"])
    for folder in sorted(CORPUS.iterdir()):
        for i, path in enumerate(sorted(folder.glob("*.txt"))):
            if i < 2:
                key = f"{c.TRAINING_VALIDATION_PREFIX}{folder.name}/{path.name}"
            else:
                key = f"{c.TRAINING_CORPUS_PREFIX}{(rename or {}).get(folder.name, folder.name)}/{path.name}"
            s3.put_object(Bucket=MODELS, Key=key, Body=path.read_bytes())


def _label_a_document(s3: Any) -> str:
    document_id = "f" * 64
    record = DocumentRecord(
        document_id=document_id, status=Status.NEEDS_REVIEW, source="s3://up/doc.png", label="email"
    )
    DynamoRecordStore(TABLE).put_document(record)  # as the pipeline writes it (with its by-status index keys)
    page = PageText(page=1, text=FEEDBACK_TEXT, source="ocr", confidence=88.0, words=14, seconds=0.1)
    s3.put_object(
        Bucket=BUCKET, Key=f"text/{document_id}.json", Body=ExtractionResult(pages=[page]).model_dump_json().encode()
    )
    return document_id


def _execute(machine: dict[str, Any], name: str, timeout: float = 240) -> tuple[str, dict[str, Any]]:
    execution = machine["sfn"].start_execution(
        stateMachineArn=machine["arn"], name=name, input=json.dumps({"trigger": "test"})
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        desc = machine["sfn"].describe_execution(executionArn=execution["executionArn"])
        if desc["status"] != "RUNNING":
            history = machine["sfn"].get_execution_history(executionArn=execution["executionArn"])["events"]
            entered = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
            return desc["status"], {
                "desc": desc,
                "output": json.loads(desc.get("output") or "null"),
                "entered": entered,
                "history": history,
            }
        time.sleep(0.3)
    raise AssertionError(f"execution {name} still running after {timeout}s")


def _json(s3: Any, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=MODELS, Key=key)["Body"].read())


def _keys(s3: Any, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=MODELS, Prefix=prefix).get("Contents", []))


def test_better_model_is_published_and_worse_one_refused_with_reasons(machine: dict[str, Any]) -> None:
    s3 = machine["s3"]
    document_id = _label_a_document(s3)
    champion_key = f"{c.MODELS_PREFIX}champion.json"

    # Given no champion, a model trained on the corpus with every label rotated is promoted (the first one is)
    _upload_corpus(s3, rename=ROTATED)
    status, run = _execute(machine, "first")
    assert status == "SUCCEEDED", run["desc"]
    assert run["entered"] == [
        "Prepare data",
        "Train model",
        "Evaluate and gate",
        "Decision",
        "Promoted?",
        "Publish model",
        "Rescore review queue",
        "Queue rescored?",
        "Published",
    ]
    prepared = run["output"]["prepared"]
    assert prepared["external_validation"] is True and prepared["n_feedback"] == 1
    assert prepared["corpus"] == {"Email": 7, "News": 6, "Resume": 6}  # rotated: Resume's 7 are "Email"
    # the users' label went to the job as a feedback channel document
    assert f"{c.TRAINING_JOBS_PREFIX}{prepared['job_name']}/feedback/email/{document_id}.txt" in _keys(
        s3, c.TRAINING_JOBS_PREFIX
    )
    first = _json(s3, champion_key)
    assert first["version"] == 1 and first["model_dir"] == "docflow-classifier/v1"
    assert set(first["files"]) >= {"model.onnx", "tokenizer.json", "labels.json", "config.json"}
    assert _json(s3, f"{c.MODELS_PREFIX}docflow-classifier/v1/config.json")["version"] == "1"
    # the new champion scored the review queue (the labelled document) again, in one invocation
    rescored = run["output"]["rescore"]
    assert rescored["done"] is True and rescored["cursor"] is None and rescored["invocations"] == 1
    assert rescored["scanned"] == 1 and rescored["model_version"] == "1"
    assert "rescore_error" not in run["output"]
    record = DynamoRecordStore(TABLE).get_document(document_id)
    assert record is not None and record.model_version == "1" and record.label == "email"
    assert [p.model_version for p in DynamoRecordStore(TABLE).list_predictions(document_id)] == ["1"]

    # When a model trained on the right labels comes, it beats the champion on the same validation set
    _upload_corpus(s3)
    status, run = _execute(machine, "better")
    assert status == "SUCCEEDED", run["desc"]
    assert run["entered"][-4:] == ["Publish model", "Rescore review queue", "Queue rescored?", "Published"]
    assert run["output"]["rescore"]["done"] is True and run["output"]["rescore"]["model_version"] == "2"
    decision = _json(s3, f"{c.MODELS_PREFIX}docflow-classifier/v2/decision.json")
    assert decision["promoted"] is True and decision["champion_version"] == 1
    assert decision["n_eval"] == 6  # the 6 validation documents, none of which v1 trained on
    assert decision["challenger_scores"]["macro_f1"] > decision["champion_scores"]["macro_f1"]
    second = _json(s3, champion_key)
    assert second["version"] == 2 and second["files"] != first["files"]
    # its training manifest is published beside it: the next gate leaves out what it trained on
    assert f"{c.MODELS_PREFIX}docflow-classifier/v2/train_manifest.json" in _keys(s3, c.MODELS_PREFIX)

    # And a worse one again is refused with its reasons, the champion untouched
    _upload_corpus(s3, rename=ROTATED)
    status, run = _execute(machine, "worse")
    assert status == "SUCCEEDED", run["desc"]
    assert run["entered"][-2:] == ["Promoted?", "Refused by the gate"]
    refusal = run["output"]["decision"]
    assert refusal["promoted"] is False and refusal["version"] == 3 and refusal["champion_version"] == 2
    assert any("macro-F1" in reason for reason in refusal["reasons"]), refusal
    assert _json(s3, champion_key) == second
    assert _keys(s3, f"{c.MODELS_PREFIX}docflow-classifier/v3/") == [
        f"{c.MODELS_PREFIX}docflow-classifier/v3/decision.json"
    ]
    assert _json(s3, f"{c.MODELS_PREFIX}docflow-classifier/v3/decision.json")["reasons"] == refusal["reasons"]


def test_a_failed_rescore_is_recorded_and_the_published_run_still_succeeds(
    machine: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = machine["s3"]
    document_id = _label_a_document(s3)

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the review queue cannot be read")

    monkeypatch.setattr("docflow.handlers.rescore_queue.rescore_queue", unavailable)
    _upload_corpus(s3)
    status, run = _execute(machine, "rescore-fails")
    # The model is published and the run succeeds, the rescore's failure on record in its output
    assert status == "SUCCEEDED", run["desc"]
    assert run["entered"][-4:] == ["Publish model", "Rescore review queue", "Rescore failed", "Published"]
    assert _json(s3, f"{c.MODELS_PREFIX}champion.json")["version"] == 1
    error = run["output"]["rescore_error"]
    assert error["Error"] == "RuntimeError" and "the review queue cannot be read" in error["Cause"]
    assert "rescore" not in run["output"]
    # The queued document is as it was
    record = DynamoRecordStore(TABLE).get_document(document_id)
    assert record is not None and record.status is Status.NEEDS_REVIEW and record.model_version is None
    assert DynamoRecordStore(TABLE).list_predictions(document_id) == []


def test_the_rescore_loops_while_the_queue_is_not_done_and_no_more_than_its_bound(
    machine: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from docflow.pipeline.rescore import rescore_queue

    s3 = machine["s3"]
    document_id = _label_a_document(s3)
    out_of_time = {"calls": 0, "first": 0}  # invocations that find their time already spent

    def budgeted(ctx: Any, *, cursor: str | None = None, deadline: float | None = None) -> Any:
        out_of_time["calls"] += 1
        spent = out_of_time["calls"] <= out_of_time["first"]
        return rescore_queue(ctx, cursor=cursor, deadline=float("-inf") if spent else deadline)

    monkeypatch.setattr("docflow.handlers.rescore_queue.rescore_queue", budgeted)
    rescore_states = ["Rescore review queue", "Queue rescored?"]

    # Given a queue no invocation has the time for, the loop stops after RESCORE_MAX_INVOCATIONS, the run succeeds
    out_of_time.update(calls=0, first=10 * c.RESCORE_MAX_INVOCATIONS)
    _upload_corpus(s3, rename=ROTATED)
    status, run = _execute(machine, "never-done")
    assert status == "SUCCEEDED", run["desc"]
    assert out_of_time["calls"] == c.RESCORE_MAX_INVOCATIONS
    tail = ["Publish model", *rescore_states * c.RESCORE_MAX_INVOCATIONS, "Rescore stopped", "Published"]
    assert run["entered"][-len(tail) :] == tail
    rescore = run["output"]["rescore"]
    assert rescore["done"] is False and rescore["cursor"] == "" and rescore["invocations"] == c.RESCORE_MAX_INVOCATIONS
    record = DynamoRecordStore(TABLE).get_document(document_id)
    assert record is not None and record.model_version is None  # untouched

    # When the first invocation runs out of time, the next goes on from its cursor and finishes
    out_of_time.update(calls=0, first=1)
    _upload_corpus(s3)
    status, run = _execute(machine, "done-in-two")
    assert status == "SUCCEEDED", run["desc"]
    assert run["entered"][-6:] == ["Publish model", *rescore_states * 2, "Published"]
    rescore = run["output"]["rescore"]
    assert rescore["done"] is True and rescore["invocations"] == 2 and rescore["model_version"] == "2"
    assert rescore["scanned"] == 1
    record = DynamoRecordStore(TABLE).get_document(document_id)
    assert record is not None and record.model_version == "2"


def test_training_failure_fails_the_execution_with_its_cause(machine: dict[str, Any]) -> None:
    s3 = machine["s3"]
    _upload_corpus(s3)
    # Two folders for one class: the job refuses the corpus (PrepareData only counts folders)
    s3.put_object(Bucket=MODELS, Key=f"{c.TRAINING_CORPUS_PREFIX}email/extra.txt", Body=FEEDBACK_TEXT.encode())
    status, run = _execute(machine, "failing")
    assert status == "FAILED"
    assert run["entered"][-2:] == ["Train model", "Training loop failed"]
    assert run["desc"]["error"] == "TrainingLoopFailed"
    failed_task = next(e for e in run["history"] if e["type"] == "TaskFailed")["taskFailedEventDetails"]
    assert failed_task["error"] == "States.TaskFailed" and failed_task["resourceType"] == "sagemaker"
    cause = json.loads(run["desc"]["cause"])
    assert cause["TrainingJobStatus"] == "Failed"
    assert "several folders map to the same class" in cause["FailureReason"]
    assert not _keys(s3, c.MODELS_PREFIX)  # nothing decided, nothing published


def test_no_corpus_fails_before_any_training_job(machine: dict[str, Any]) -> None:
    status, run = _execute(machine, "empty")
    assert status == "FAILED"
    assert run["entered"] == ["Prepare data", "Training loop failed"]
    assert run["desc"]["error"] == "TrainingLoopFailed"
    cause = json.loads(run["desc"]["cause"])
    assert cause["errorType"] == "PermanentError"
    assert "training/corpus/" in cause["errorMessage"] and "at least two classes" in cause["errorMessage"]
    assert not boto3.client("sagemaker", region_name=REGION).list_training_jobs()["TrainingJobSummaries"]
