"""The CLI's errors are one line each, name what to fix, and never show a secret (in-process, no network)."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from docflow.adapters.files import LocalBlobStore
from docflow.adapters.sqlite import SqliteRecordStore
from docflow.cli import app
from docflow.context import StepContext
from docflow.errors import PermanentError
from docflow.pipeline import runner
from docflow.pipeline.state import DocumentRef
from docflow.settings import Settings
from docflow.values import Status

pytestmark = pytest.mark.unit

PASSWORD = "S3cretPW"
URI = f"http://alice:{PASSWORD}@127.0.0.1:9/"


def invoke(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args), env=env)


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


# -- 1. the tracking server's password ---------------------------------------------------------------


class _Reachable:
    """A Registry whose tracking server answered (train checks it before training)."""

    def __init__(self, tracking: object, name: str = "docflow-classifier") -> None:
        self.tracking, self.name = tracking, name


def _corpus(tmp_path: Path) -> Path:
    """The smallest corpus `train` accepts: two classes of one .txt file each."""
    for label in ("memo", "letter"):
        (tmp_path / "corpus" / label).mkdir(parents=True)
        (tmp_path / "corpus" / label / "a.txt").write_text(f"a {label}")
    return tmp_path / "corpus"


def test_sagemaker_without_a_managed_tracking_server_hides_the_password(tmp_path: Path) -> None:
    result = invoke("train", "--data", "s3://bucket/corpus", "--sagemaker", env={"MLFLOW_TRACKING_URI": URI})
    assert result.exit_code == 2, result.output
    assert "alice:***@127.0.0.1:9" in one_error_line(result.output)
    assert PASSWORD not in result.output


def test_redact_uri_hides_only_the_password() -> None:
    from docflow_training.tracking import Tracking, redact_secrets, redact_uri

    assert redact_uri(URI) == "http://alice:***@127.0.0.1:9/"
    assert (
        redact_uri("https://alice:p%40ss@mlflow.example.com:5000/x?y=1")
        == "https://alice:***@mlflow.example.com:5000/x?y=1"
    )
    for unchanged in ("sqlite:////tmp/h/mlflow.db", "http://alice@host/", "http://host:5000", "arn:aws:sagemaker:x"):
        assert redact_uri(unchanged) == unchanged
    message = f"API request to {URI}api/2.0/x failed; p@ss and {PASSWORD} again"
    assert PASSWORD not in redact_secrets(message, URI)
    assert "p@ss" not in redact_secrets(message, "https://alice:p%40ss@h/")
    assert PASSWORD not in repr(Tracking(uri=URI))


def test_model_list_title_hides_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    from docflow_training import registry as registry_module
    from docflow_training.registry import VersionRow
    from docflow_training.tracking import Tracking

    class Listed:  # what `model list` reads from a reachable server
        def __init__(self, tracking: Tracking) -> None:
            self.tracking, self.name = tracking, "docflow-classifier"

        def versions(self) -> list[VersionRow]:
            created = datetime(2025, 1, 1, tzinfo=UTC)
            return [VersionRow(1, ["champion"], created, "r" * 32, "promoted", "-", 0.9, None)]

    monkeypatch.setattr(registry_module, "Registry", Listed)
    result = invoke("model", "list", env={"MLFLOW_TRACKING_URI": URI})
    assert result.exit_code == 0, result.output
    assert "alice:***@127.0.0.1:9" in result.output
    assert PASSWORD not in result.output


def test_train_hides_the_password_in_the_job_log_and_summary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from docflow_training import launch
    from docflow_training.launch import JobResult

    def job(*args: object, echo, **kwargs: object) -> JobResult:  # type: ignore[no-untyped-def]
        echo(f"logging to {URI} (password {PASSWORD})\n")
        return JobResult(run_id="r1", tracking_uri=URI, registered_model="docflow-classifier", version=1)

    monkeypatch.setattr(launch, "run_local_job", job)
    from docflow_training import registry

    monkeypatch.setattr(registry, "Registry", _Reachable)
    result = invoke("train", "--data", str(_corpus(tmp_path)), env={"MLFLOW_TRACKING_URI": URI})
    assert result.exit_code == 0, result.output
    assert "alice:***@127.0.0.1:9" in result.output
    assert PASSWORD not in result.output


def test_a_failed_training_job_hides_the_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from docflow_training import launch
    from docflow_training.launch import JobFailedError

    def job(*args: object, **kwargs: object) -> None:
        raise JobFailedError(f"training job failed: API request to {URI}api/2.0/x failed")

    monkeypatch.setattr(launch, "run_local_job", job)
    from docflow_training import registry

    monkeypatch.setattr(registry, "Registry", _Reachable)
    result = invoke("train", "--data", str(_corpus(tmp_path)), env={"MLFLOW_TRACKING_URI": URI})
    assert result.exit_code == 1
    assert "alice:***@127.0.0.1:9" in one_error_line(result.output)
    assert PASSWORD not in result.output


# -- 2. a state directory that cannot be a folder ----------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("process", "x.pdf"), ("drift",), ("model", "list"), ("serve",), ("train", "--data", ".")],
    ids=lambda a: " ".join(a),
)
def test_a_state_directory_below_a_file_is_one_line(args: tuple[str, ...], tmp_path: Path) -> None:
    afile = tmp_path / "somefile.txt"
    afile.write_text("not a folder")
    result = invoke(*args, env={"DOCFLOW_HOME": str(afile / "home")})
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert str(afile / "home") in line and "DOCFLOW_HOME" in line and "is a file, not a folder" in line


def test_home_option_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    afile = tmp_path / "somefile.txt"
    afile.write_text("not a folder")
    result = invoke("process", "--home", str(afile), "x.pdf")
    assert result.exit_code == 2
    assert "--home" in one_error_line(result.output)


def test_samples_into_a_path_below_a_file_is_one_line(tmp_path: Path) -> None:
    afile = tmp_path / "somefile.txt"
    afile.write_text("not a folder")
    result = invoke("samples", str(afile / "s"))
    assert result.exit_code == 2
    assert "is a file, not a folder" in one_error_line(result.output)


# -- 3. an empty DOCFLOW_HOME ------------------------------------------------------------------------


def test_an_empty_variable_is_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("DOCFLOW_HOME", "")
    monkeypatch.setenv("DOCFLOW_MODEL_DIR", "")
    settings = Settings()
    assert settings.home == tmp_path / "user" / ".docflow"
    assert settings.model_dir is None


def test_an_empty_api_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    from docflow.api.config import ApiSettings

    monkeypatch.setenv("DOCFLOW_API_MAX_QUEUE", "")
    assert ApiSettings().api_max_queue == ApiSettings.model_fields["api_max_queue"].default


def test_drift_with_an_empty_home_writes_nothing_into_the_current_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    result = invoke("drift", "--json", env={"DOCFLOW_HOME": "", "HOME": str(tmp_path / "user")})
    assert result.exit_code == 0, result.output
    assert list(cwd.iterdir()) == []
    assert (tmp_path / "user" / ".docflow" / "docflow.sqlite3").is_file()


# -- 5. a failed document is one log line --------------------------------------------------------------


def test_a_failed_document_is_logged_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(state, ctx):  # type: ignore[no-untyped-def]
        raise PermanentError("no classifier model at /nowhere")

    monkeypatch.setattr(runner, "validate_step", broken)
    ctx = StepContext(
        settings=Settings(home=tmp_path),
        blobs=LocalBlobStore(tmp_path / "blobs"),
        records=SqliteRecordStore(tmp_path / "records.sqlite3"),
    )
    with caplog.at_level(logging.INFO, logger=runner.__name__):
        state = runner.Runner(ctx, sleep=lambda s: None, rng=random.Random(0)).run(DocumentRef(key="k", source="a.pdf"))
    assert state.status == Status.FAILED
    failures = [r for r in caplog.records if "a.pdf" in r.getMessage()]
    assert [r.getMessage() for r in failures] == [
        "document a.pdf failed: PermanentError: no classifier model at /nowhere"
    ]
    assert failures[0].exc_info is None  # no traceback unless debugging
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=runner.__name__):
        runner.Runner(ctx, sleep=lambda s: None, rng=random.Random(0)).run(DocumentRef(key="k2", source="b.pdf"))
    assert any(r.exc_info and r.levelno == logging.DEBUG for r in caplog.records)


# -- 9. bad settings: one line per variable, with its value --------------------------------------------


def test_a_bad_setting_names_the_variable_and_keeps_its_value() -> None:
    result = invoke("process", "x.pdf", env={"DOCFLOW_REVIEW_THRESHOLD": "abc", "DOCFLOW_MAX_PAGES": "[type=x]"})
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 2, result.output
    assert any("DOCFLOW_REVIEW_THRESHOLD='abc'" in line and "valid number" in line for line in lines)
    assert any("DOCFLOW_MAX_PAGES='[type=x]'" in line for line in lines)  # not eaten as markup


def test_an_option_is_named_as_the_option() -> None:
    result = invoke("process", "--languages", "e n", "x.pdf")
    assert result.exit_code == 2
    assert "--languages='e n'" in one_error_line(result.output)


def test_a_secret_setting_is_not_echoed() -> None:
    from pydantic import ValidationError

    from docflow.settings import describe_errors

    with pytest.raises(ValidationError) as caught:
        Settings(max_pages="x")  # type: ignore[arg-type]
    assert describe_errors(caught.value) == [
        "DOCFLOW_MAX_PAGES='x': Input should be a valid integer, unable to parse string as an integer"
    ]

    from pydantic import BaseModel

    class Secretive(BaseModel):
        api_key: int

    with pytest.raises(ValidationError) as caught:
        Secretive(api_key="hunter2")  # type: ignore[arg-type]
    assert "hunter2" not in " ".join(describe_errors(caught.value))


# -- training's inputs, checked before any training ---------------------------------------------------


def test_out_never_deletes_a_folder_of_other_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from docflow_training import launch

    monkeypatch.setattr(launch, "run_local_job", lambda *a, **k: pytest.fail("training started"))
    precious = tmp_path / "mymodels"
    (precious / "important").mkdir(parents=True)
    (precious / "notes.txt").write_text("precious")
    corpus = _corpus(tmp_path)
    for args in (("--out", str(precious)), ("--out", str(precious), "--no-track")):
        result = invoke("train", "--data", str(corpus), *args)
        assert result.exit_code == 2, result.output
        assert "is not a model directory (important, notes.txt)" in result.output
    assert (precious / "notes.txt").read_text() == "precious" and (precious / "important").is_dir()


def test_a_corpus_that_cannot_train_is_one_line_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from docflow_training import launch

    monkeypatch.setattr(launch, "run_local_job", lambda *a, **k: pytest.fail("training started"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "one" / "memo").mkdir(parents=True)
    (tmp_path / "one" / "memo" / "a.txt").write_text("a memo")
    good = _corpus(tmp_path)
    cases = [
        (("--data", str(tmp_path / "empty")), "no <class>/*.txt files"),
        (("--data", str(tmp_path / "one"), "--no-feedback"), "need at least two classes"),  # users' labels may add one
        (("--data", str(good), "--validation", str(tmp_path / "one")), "need at least two classes"),
        (("--data", str(good), "--validation", str(tmp_path / "empty")), "--validation"),
    ]
    for args, expected in cases:
        result = invoke("train", *args)
        assert result.exit_code == 2, result.output
        assert expected in one_error_line(result.output)


@pytest.mark.parametrize("kind", ["below-a-file", "not-a-database"])
def test_a_broken_local_tracking_store_is_one_line(kind: str, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    db = tmp_path / "afile" / "mlflow.db" if kind == "below-a-file" else tmp_path / "junk.db"
    if kind == "not-a-database":
        db.write_bytes(bytes(range(256)) * 8)
    result = invoke("model", "list", "--home", str(tmp_path / "home"), env={"MLFLOW_TRACKING_URI": f"sqlite:///{db}"})
    assert result.exit_code == 1, result.output
    assert one_error_line(result.output).startswith("MLflow tracking store sqlite:///")


def test_sagemaker_without_aws_credentials_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_DEFAULT_REGION": "us-east-1",
        "DOCFLOW_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/docflow-training",
        "DOCFLOW_SAGEMAKER_MLFLOW_TRACKING_ARN": "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/t",
    }
    result = invoke("train", "--data", "s3://bucket/corpus", "--sagemaker", env=env)
    assert result.exit_code == 1, result.output
    assert "credentials" in one_error_line(result.output).lower()


def test_a_bad_sagemaker_setting_is_one_line_naming_the_variable() -> None:
    result = invoke("train", "--data", "s3://bucket/corpus", "--sagemaker", env={"DOCFLOW_SAGEMAKER_VOLUME_GB": "0"})
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert line.startswith("Invalid configuration: DOCFLOW_SAGEMAKER_VOLUME_GB='0': ") and "greater than" in line


def test_an_empty_sagemaker_variable_is_unset() -> None:
    from docflow_training.launch import SageMakerJobConfig

    env = {"DOCFLOW_SAGEMAKER_ROLE_ARN": "", "DOCFLOW_SAGEMAKER_VOLUME_GB": ""}
    with pytest.MonkeyPatch.context() as patched:
        for name, value in env.items():
            patched.setenv(name, value)
        config = SageMakerJobConfig()
    assert (config.role_arn, config.volume_gb) == (None, 30)


def test_a_bad_hyperparameter_is_one_line_naming_it(tmp_path: Path) -> None:
    result = invoke("train", "--data", str(_corpus(tmp_path)), "--hp", "max_iter=-1", "--hp", "c_grid=abc")
    assert result.exit_code == 2
    line = one_error_line(result.output)
    assert "--hp max_iter=-1: Input should be greater than 0" in line and "--hp c_grid.0='abc'" in line
    assert "pydantic.dev" not in line


def test_scans_that_cannot_fit_a_head_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from docflow_training import launch, train
    from docflow_training.scan_head import ScanHeadError

    monkeypatch.setattr(launch, "run_local_job", lambda *a, **k: pytest.fail("training started"))
    good = _corpus(tmp_path)
    result = invoke("train", "--data", str(good), "--scans", str(tmp_path / "nowhere"))
    assert result.exit_code == 2
    assert "with --no-track" in one_error_line(result.output)
    result = invoke("train", "--data", str(good), "--no-track", "--scans", str(tmp_path / "nowhere"))
    assert result.exit_code == 2
    assert one_error_line(result.output) == f"No such scans folder: {tmp_path / 'nowhere'}"
    (tmp_path / "noscans").mkdir()
    result = invoke("train", "--data", str(good), "--no-track", "--scans", str(tmp_path / "noscans"))
    assert result.exit_code == 2
    assert "no labelled files found" in one_error_line(result.output)

    # Scans that read but cannot fit a head: the training's own error, in one line (no OCR here).
    def too_few(*args: object, **kwargs: object) -> None:
        raise ScanHeadError("3 labelled scans; at least 20 are needed to fit a scan head")

    monkeypatch.setattr(train, "run_training", too_few)
    (tmp_path / "few" / "memo").mkdir(parents=True)
    (tmp_path / "few" / "memo" / "a.png").write_bytes(b"")
    monkeypatch.setattr("docflow_training.scans.read_scans", lambda *a, **k: [])
    out = str(tmp_path / "m")
    result = invoke("train", "--data", str(good), "--no-track", "--scans", str(tmp_path / "few"), "--out", out)
    assert result.exit_code == 2
    assert "at least 20 are needed" in one_error_line(result.output)
