"""The MLOps loop's pure parts: the gate's rule, the job's contract (hyperparameters, device, corpus
assembly), and users' labels turned into training examples. No MLflow, no network."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from docflow.adapters.files import LocalBlobStore
from docflow.adapters.sqlite import SqliteRecordStore
from docflow.records import DocumentRecord
from docflow.values import ExtractionResult, PageText, Status
from docflow_training.data import load_corpus
from docflow_training.entry import (
    JobPaths,
    assemble_corpus,
    detect_device,
    job_config,
    parse_hyperparameters,
)
from docflow_training.feedback import (
    TEXT_KEY,
    FeedbackExample,
    FeedbackSet,
    collect_feedback,
    write_feedback_corpus,
)
from docflow_training.launch import hyperparameter_args
from docflow_training.registry import GatePolicy, Scores, decide

pytestmark = pytest.mark.unit

FIXTURE_CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"


def _scores(macro_f1: float, **recall: float) -> Scores:
    return Scores(n_docs=10, accuracy=macro_f1, macro_f1=macro_f1, recall=recall, support=dict.fromkeys(recall, 5))


# -- the gate --------------------------------------------------------------------------------------


def test_gate_promotes_a_better_model_that_loses_no_class() -> None:
    promote, reasons = decide(_scores(0.90, a=0.9, b=0.9), _scores(0.85, a=0.9, b=0.88), GatePolicy())
    assert promote and reasons == []


def test_gate_refuses_a_model_that_is_not_better_by_the_margin() -> None:
    policy = GatePolicy(min_macro_f1_gain=0.02)
    promote, reasons = decide(_scores(0.86, a=0.9), _scores(0.85, a=0.9), policy)
    assert not promote
    assert len(reasons) == 1 and "macro-F1 0.8600" in reasons[0] and "+0.0200" in reasons[0]


def test_gate_refuses_an_equal_model_by_default() -> None:
    # "beats" means strictly better: retraining on the same data must not churn the champion.
    promote, _ = decide(_scores(0.85, a=0.9), _scores(0.85, a=0.9), GatePolicy())
    assert not promote


def test_gate_refuses_a_better_average_that_sacrifices_one_class() -> None:
    policy = GatePolicy(max_recall_drop=0.05)
    promote, reasons = decide(_scores(0.95, a=1.0, b=0.80), _scores(0.90, a=0.80, b=0.90), policy)
    assert not promote
    assert reasons == ["recall of b drops 0.100 (0.900 -> 0.800; allowed 0.050)"]
    # The same numbers pass when the policy allows that drop.
    assert decide(_scores(0.95, a=1.0, b=0.80), _scores(0.90, a=0.80, b=0.90), GatePolicy(max_recall_drop=0.1))[0]


def test_gate_counts_a_class_the_challenger_lost_as_zero_recall() -> None:
    promote, reasons = decide(_scores(0.99, a=1.0), _scores(0.90, a=0.9, b=0.7), GatePolicy())
    assert not promote and "recall of b drops 0.700" in reasons[0]


def test_gate_refuses_a_challenger_that_cannot_predict_a_class_the_champion_can() -> None:
    # The held-out documents hold no resume: recall cannot see the class is gone, the model's labels can
    better = dataclasses.replace(_scores(1.0, a=1.0, b=1.0), classes=["a", "b"])
    champion = dataclasses.replace(_scores(0.67, a=0.9, b=0.5), classes=["a", "b", "resume"])
    promote, reasons = decide(better, champion, GatePolicy())
    assert not promote and reasons == ["it cannot predict resume, which the champion can (its corpus lacks them)"]
    assert decide(dataclasses.replace(better, classes=["a", "b", "resume", "new"]), champion, GatePolicy())[0]


def test_gate_refuses_a_challenger_whose_review_calibration_fell_short() -> None:
    better = _scores(0.95, a=1.0)
    short = dataclasses.replace(better, review_calibrated=False)
    calibrated = dataclasses.replace(_scores(0.90, a=0.9), review_calibrated=True)
    promote, reasons = decide(short, calibrated, GatePolicy())
    assert not promote and reasons == [
        "its review threshold does not reach its precision target on its held-out split (the champion's "
        "does): it would be served with the strictest threshold, most documents to review"
    ]
    # a champion that did not reach it either, or models that do not say, are compared as before
    assert decide(short, dataclasses.replace(calibrated, review_calibrated=False), GatePolicy())[0]
    assert decide(better, _scores(0.90, a=0.9), GatePolicy())[0]


def test_review_calibration_is_read_from_the_model(tmp_path: Path) -> None:
    from docflow_training.registry import review_calibrated

    assert review_calibrated(tmp_path) is None  # no metrics.json
    (tmp_path / "metrics.json").write_text(json.dumps({"review_threshold": {"reached": True}}))
    assert review_calibrated(tmp_path) is True
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.9}))  # an older model
    assert review_calibrated(tmp_path) is None
    (tmp_path / "metrics.json").write_text("{not json")
    assert review_calibrated(tmp_path) is None


def test_gate_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        GatePolicy(max_recall_drop=1.5)


# -- the job's contract ----------------------------------------------------------------------------


def test_hyperparameters_as_sagemaker_passes_them() -> None:
    hp = parse_hyperparameters(
        [
            "--seed",
            "7",
            "--c_grid",
            "1,10,30",
            "--features",
            "bpe",
            "--max-recall-drop=0.1",
            "--register_version",
            "false",
        ]
    )
    assert hp == {"seed": 7, "c_grid": "1,10,30", "features": "bpe", "max_recall_drop": 0.1, "register_version": False}
    config = job_config(hp)
    assert config.train.seed == 7 and config.train.c_grid == (1.0, 10.0, 30.0) and config.train.features == "bpe"
    assert config.gate.max_recall_drop == 0.1 and config.register_version is False


def test_hyperparameters_round_trip_through_the_launcher() -> None:
    sent = {"seed": 3, "c_grid": (1.0, 10.0), "publish_to": "s3://models/models", "min_macro_f1_gain": 0.01}
    config = job_config(parse_hyperparameters(hyperparameter_args(sent)))
    assert config.train.seed == 3 and config.train.c_grid == (1.0, 10.0)
    assert config.publish_to == "s3://models/models" and config.gate.min_macro_f1_gain == 0.01
    # A JSON list (what ModelTrainer serializes a list to) and a single value work too.
    assert job_config({"c_grid": [3, 30]}).train.c_grid == (3.0, 30.0)
    assert job_config({"c_grid": 30}).train.c_grid == (30.0,)


def test_unknown_hyperparameters_fail_loudly() -> None:
    with pytest.raises(ValueError, match="unknown hyperparameters for the linear family \\['epochs'\\]"):
        job_config({"epochs": 10})
    with pytest.raises(ValueError, match="unknown family 'svm'"):
        job_config({"family": "svm"})
    with pytest.raises(ValueError, match="for the transformer family \\['c_grid'\\]"):
        job_config({"family": "transformer", "c_grid": "1,10"})
    transformer = job_config({"family": "transformer", "epochs": "2", "seed": 4, "min_eval_docs": 5})
    assert transformer.family == "transformer"
    assert transformer.transformer.epochs == 2 and transformer.transformer.seed == 4
    assert transformer.gate.min_eval_docs == 5
    assert job_config({}).family == "linear"
    with pytest.raises(ValueError):
        job_config({"holdout_fraction": 1.5})
    with pytest.raises(ValueError, match="has no value"):
        parse_hyperparameters(["--seed"])


def test_job_paths_follow_the_container_contract(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "fb" / "memo").mkdir(parents=True)  # a channel is a data set when it has <class>/*.txt
    (tmp_path / "fb" / "memo" / "1.txt").write_text("MEMORANDUM")
    env = {
        "SM_CHANNEL_TRAIN": str(tmp_path / "train"),
        "SM_CHANNEL_FEEDBACK": str(tmp_path / "fb"),
        "SM_MODEL_DIR": str(tmp_path / "model"),
        "SM_OUTPUT_DATA_DIR": str(tmp_path / "out"),
    }
    paths = JobPaths.from_env(env)
    assert paths.train == tmp_path / "train" and paths.feedback == tmp_path / "fb"
    assert paths.model == tmp_path / "model" and paths.output == tmp_path / "out"
    assert paths.validation is None or paths.validation == Path("/opt/ml/input/data/validation")
    # A channel named explicitly but missing is an error, not a silent "no validation set".
    with pytest.raises(ValueError, match="SM_CHANNEL_VALIDATION"):
        JobPaths.from_env({**env, "SM_CHANNEL_VALIDATION": str(tmp_path / "nope")})
    defaults = JobPaths.from_env({})
    assert defaults.train == Path("/opt/ml/input/data/train") and defaults.model == Path("/opt/ml/model")
    assert defaults.output == Path("/opt/ml/output/data")


def _fake_nvidia_smi(folder: Path, output: str, status: int = 0) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '{output}'\nexit {status}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_device_detection(tmp_path: Path) -> None:
    a10g = _fake_nvidia_smi(tmp_path / "ok", "NVIDIA A10G\\n")
    assert detect_device({}, nvidia_smi=a10g) == detect_device({"SM_NUM_GPUS": "0"}, nvidia_smi=a10g)
    device = detect_device({}, nvidia_smi=a10g)
    assert (device.kind, device.count, device.names, device.detected_by) == ("cuda", 1, ("NVIDIA A10G",), "nvidia-smi")
    # GPUs hidden on purpose win over what is installed.
    assert detect_device({"CUDA_VISIBLE_DEVICES": ""}, nvidia_smi=a10g).kind == "cpu"
    # nvidia-smi present but failing (no driver): fall back to SageMaker's count, else CPU.
    broken = _fake_nvidia_smi(tmp_path / "broken", "", status=9)
    assert detect_device({"SM_NUM_GPUS": "4"}, nvidia_smi=broken).count == 4
    assert detect_device({}, nvidia_smi=broken).kind == "cpu"
    assert detect_device({}, nvidia_smi="").kind == "cpu"


def test_feedback_joins_the_class_folder_it_belongs_to(tmp_path: Path) -> None:
    # Given users' labels in canonical class names, one of them a class the corpus lacks
    feedback = tmp_path / "feedback"
    examples = [FeedbackExample(f"doc{i}", "news_article", f"AP news report {i}") for i in range(2)]
    none = FeedbackExample("doc7", "out_of_scope", "a handwritten note that is none of the classes")
    write_feedback_corpus(
        FeedbackSet(examples=[*examples, FeedbackExample("doc9", "invoice", "Invoice total due")], out_of_scope=[none]),
        feedback,
    )
    # When the corpus is assembled
    corpus, added = assemble_corpus(CORPUS, feedback, tmp_path / "work")
    docs = load_corpus(corpus)
    # Then news feedback sits in the corpus's own "News" folder (two folders for one class are refused), and a
    # document a person called none of the classes is kept in the job's data but is no class of its own
    assert (feedback / ".out_of_scope" / "doc7.txt").is_file()
    assert added == 3
    assert sorted(p.name for p in corpus.iterdir()) == ["Email", "News", "Resume", "invoice"]
    assert {d.path for d in docs if d.path.startswith("News/feedback-")} == {
        "News/feedback-doc0.txt",
        "News/feedback-doc1.txt",
    }
    assert len(docs) == len(load_corpus(CORPUS)) + 3
    assert {d.label for d in docs} == {"email", "news_article", "resume", "invoice"}
    # And without feedback the train channel is used as it is
    assert assemble_corpus(CORPUS, None, tmp_path / "other") == (CORPUS, 0)


def _extraction(text: str) -> bytes:
    page = PageText(page=1, text=text, source="ocr", confidence=90.0, words=len(text.split()), seconds=0.1)
    return ExtractionResult(pages=[page]).model_dump_json().encode()


def test_collect_feedback_reads_labelled_records_and_their_text(tmp_path: Path) -> None:
    blobs, records = LocalBlobStore(tmp_path / "blobs"), SqliteRecordStore(tmp_path / "records.sqlite3")
    for i in range(250):  # more than one page of the listing
        records.put_document(DocumentRecord(document_id=f"plain{i:03d}", status=Status.CLASSIFIED, source="x"))
    cases = {
        "labelled": ("memo", _extraction("MEMORANDUM To: all staff")),
        "no-text": ("letter", None),
        "empty": ("letter", _extraction("   ")),
        "bad-label": ("../../etc", _extraction("x")),
        "none-of-these": ("out_of_scope", _extraction("Dear diary")),
    }
    for doc_id, (label, text) in cases.items():
        records.put_document(DocumentRecord(document_id=doc_id, status=Status.NEEDS_REVIEW, source="y", label=label))
        if text is not None:
            blobs.put(TEXT_KEY.format(document_id=doc_id), text)

    found = collect_feedback(records, blobs)

    assert [(e.document_id, e.label, e.text) for e in found.examples] == [
        ("labelled", "memo", "MEMORANDUM To: all staff")
    ]
    assert [(e.document_id, e.label) for e in found.out_of_scope] == [("none-of-these", "out_of_scope")]
    assert dict(found.skipped) == {"no extracted text": 1, "empty text": 1, "invalid label": 1}
    written = tmp_path / "fb"
    assert write_feedback_corpus(found, written) == 1
    assert (written / "memo" / "labelled.txt").read_text() == "MEMORANDUM To: all staff"
    assert (written / ".out_of_scope" / "none-of-these.txt").read_text() == "Dear diary"
    assert sorted(p.name for p in written.iterdir()) == [".out_of_scope", "memo"]


def test_feedback_reads_text_where_the_pipeline_writes_it() -> None:
    from docflow.pipeline.steps import text_key

    assert TEXT_KEY.format(document_id="abc") == text_key("abc")


def test_the_lambda_runtime_never_imports_mlflow() -> None:
    # Given the modules Classify and the CLI load (the CLI imports MLflow only inside its commands)
    code = (
        "import sys, docflow.model_source, docflow.context, docflow.cli;"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'sagemaker', 'sklearn'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", "import json;" + code], capture_output=True, text=True, env={**os.environ}, check=True
    )
    assert json.loads(done.stdout) == []


def _fake_python(folder: Path, body: str) -> str:
    """Stands in for the interpreter run_local_job starts (it is given `-m docflow_training.entry …`)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "python"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_local_job_lays_out_the_container_contract(tmp_path: Path, docflow_home: Path) -> None:
    from docflow.settings import Settings
    from docflow_training.launch import run_local_job

    # Given a stand-in job that records what it was given and answers like the entry point
    record = tmp_path / "seen.json"
    job = tmp_path / "bin" / "python"
    job.parent.mkdir()
    job.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith(('SM_', 'MLFLOW_', 'DOCFLOW_'))}\n"
        "env['train_resolved'] = os.path.realpath(env['SM_CHANNEL_TRAIN'])\n"
        f"json.dump({{'argv': sys.argv[1:], 'env': env}}, open({str(record)!r}, 'w'))\n"
        "out = os.environ['SM_OUTPUT_DATA_DIR']\n"
        "os.makedirs(out, exist_ok=True)\n"
        "json.dump({'run_id': 'r1', 'version': 3}, open(os.path.join(out, 'result.json'), 'w'))\n"
    )
    job.chmod(job.stat().st_mode | stat.S_IEXEC)

    result = run_local_job(CORPUS, Settings(home=docflow_home), hyperparameters={"seed": 5}, python=str(job))

    seen = json.loads(record.read_text())
    assert result.run_id == "r1" and result.version == 3 and not result.promoted
    assert seen["argv"][:2] == ["-m", "docflow_training.entry"]
    hp = parse_hyperparameters(seen["argv"][2:])
    assert hp["seed"] == 5 and hp["corpus_uri"] == str(CORPUS.resolve())
    assert hp["publish_to"] == str((docflow_home / "models").resolve())
    env = seen["env"]
    assert env["train_resolved"] == str(CORPUS.resolve())
    assert "SM_CHANNEL_FEEDBACK" not in env and json.loads(env["SM_CHANNELS"]) == ["train"]
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{docflow_home.resolve() / 'mlflow.db'}"
    assert {"SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR", "DOCFLOW_CHECKPOINT_DIR"} <= set(env)


def test_local_job_failures_carry_the_jobs_reason(tmp_path: Path, docflow_home: Path) -> None:
    from docflow.settings import Settings
    from docflow_training.launch import JobFailedError, run_local_job

    failing = _fake_python(
        tmp_path / "fail",
        'echo "training..."; printf "CorpusError: no files" > "$SM_OUTPUT_DATA_DIR/../failure"; exit 1\n',
    )
    with pytest.raises(JobFailedError, match="CorpusError: no files") as info:
        run_local_job(CORPUS, Settings(home=docflow_home), python=failing, include_feedback=False)
    assert "training..." in str(info.value)

    hanging = _fake_python(tmp_path / "hang", "sleep 30\n")
    with pytest.raises(JobFailedError, match="ran past 1s"):
        run_local_job(CORPUS, Settings(home=docflow_home), python=hanging, include_feedback=False, timeout=1)


def test_ctrl_c_is_passed_on_to_the_job_so_it_can_end_its_run(tmp_path: Path, docflow_home: Path) -> None:
    from docflow.settings import Settings
    from docflow_training.launch import run_local_job

    ended = tmp_path / "ended"
    job = _fake_python(
        tmp_path / "job",
        f'trap \'echo ended > "{ended}"; exit 130\' INT\necho "fitting..."\nsleep 30 & wait\n',
    )

    def ctrl_c(line: str) -> None:  # the terminal's Ctrl-C reaches the CLI while the job runs
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_local_job(CORPUS, Settings(home=docflow_home), python=job, include_feedback=False, echo=ctrl_c)
    assert ended.read_text().strip() == "ended"  # the job got SIGINT (and time to clean up), not SIGKILL


def test_class_names_mlflow_refuses_become_valid_metric_and_param_names(tmp_path: Path) -> None:
    import mlflow

    from docflow_training.tracking import flat_params, holdout_metrics

    metrics = {"accuracy": 0.9, "per_class": {"email & fax": {"precision": 1.0, "recall": 0.5, "f1": 0.6}}}
    names = holdout_metrics(metrics)
    assert names["holdout_recall.email _ fax"] == 0.5
    params = flat_params("support.", {"resume (cv)": 3, "news[1]": 2})
    assert params == {"support.resume _cv_": "3", "support.news_1_": "2"}
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run():  # "Invalid value ... for parameter 'metrics[..].name'" before
            mlflow.log_metrics(names)
            mlflow.log_params(params)
    finally:
        mlflow.set_tracking_uri(previous)


def test_by_default_the_gate_will_not_decide_on_a_handful_of_documents() -> None:
    from docflow_training.registry import HeldOutDoc, compare_on_holdout, text_sha256

    docs = [HeldOutDoc(f"{i}.txt", "memo", text_sha256(f"memo {i}"), f"memo {i}") for i in range(29)]
    never = lambda: pytest.fail("a model was scored")  # noqa: E731
    decision = compare_on_holdout(2, never, 1, never, docs, None, GatePolicy())
    assert not decision.promoted
    assert "29 held-out documents the champion did not train on (of 29; at least 30 needed)" in decision.summary


def test_the_gate_leaves_out_what_the_champion_trained_on_but_never_a_blank_page() -> None:
    from docflow_training.registry import HeldOutDoc, compare_on_holdout, text_sha256

    docs = [HeldOutDoc(f"{i}.txt", "memo", text_sha256(f"memo {i}"), f"memo {i}") for i in range(3)]
    docs += [HeldOutDoc("blank.txt", "memo", text_sha256(" \n"), " \n")]
    trained_on = {text_sha256("memo 0"), text_sha256(" \n")}
    never = lambda: pytest.fail("a model was scored")  # noqa: E731
    decision = compare_on_holdout(2, never, 1, never, docs, trained_on, GatePolicy())
    assert decision.n_excluded == 1  # "memo 0"; the blank page stays
    assert "3 held-out documents the champion did not train on (of 4;" in decision.summary


def test_a_model_is_scored_on_its_classes_as_the_held_out_labels_name_them(tiny_model: Path, tmp_path: Path) -> None:
    """A champion trained on folders spelled otherwise ("News Article" kept as "news article") is scored on what
    it predicts, not zero on that class: both sides of the gate read labels through canonical_class."""
    import shutil

    from docflow_training.registry import HeldOutDoc, score_model

    docs = [
        HeldOutDoc(path.as_posix(), canonical, "0" * 64, path.read_text())
        for folder, canonical in (("News", "news_article"), ("Email", "email"), ("Resume", "resume"))
        for path in sorted((FIXTURE_CORPUS / folder).glob("*.txt"))
    ]
    spelled = tmp_path / "spelled"
    shutil.copytree(tiny_model, spelled)
    labels = json.loads((tiny_model / "labels.json").read_text())
    (spelled / "labels.json").write_text(json.dumps([label.replace("_", " ") for label in labels]))
    assert "news article" in json.loads((spelled / "labels.json").read_text())
    assert score_model(spelled, docs) == score_model(tiny_model, docs)
