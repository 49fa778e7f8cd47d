"""`docflow train`'s decision, without typer: what plan_training runs for a set of options, or the one line
it refuses them with (nothing is trained here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from docflow.cli.train_plan import TrainingRefused, TrainOptions, plan_training
from docflow.settings import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.unit


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """The smallest corpus `train` accepts: two classes of one .txt file each."""
    for label in ("memo", "letter"):
        (tmp_path / "corpus" / label).mkdir(parents=True)
        (tmp_path / "corpus" / label / "a.txt").write_text(f"a {label}")
    return tmp_path / "corpus"


def test_no_track_with_scans_plans_a_local_fit_with_a_scan_head(corpus: Path, tmp_path: Path) -> None:
    plan = plan_training(TrainOptions(data=str(corpus), track=False, scans=tmp_path / "scans"))
    assert plan.where == "local"
    assert plan.scans == tmp_path / "scans"
    assert plan.out == DEFAULT_MODEL_DIR  # no --out: the set-up default model
    assert plan.job.family == "linear"


def test_a_tracked_run_refuses_scans(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingRefused) as refused:
        plan_training(TrainOptions(data=str(corpus), scans=tmp_path / "scans"))
    assert str(refused.value) == (
        "--scans fits the scan head of a model trained with --no-track (tracked runs: not yet)"
    )


def test_a_tracked_run_writes_to_out_only_when_given(corpus: Path, tmp_path: Path) -> None:
    plan = plan_training(TrainOptions(data=str(corpus)))
    assert (plan.where, plan.out, plan.scans) == ("tracked", None, None)
    plan = plan_training(TrainOptions(data=str(corpus), out=tmp_path / "m", validation=str(corpus), feedback=False))
    assert (plan.where, plan.out, plan.validation, plan.feedback) == ("tracked", tmp_path / "m", str(corpus), False)


def test_family_transformer_routes_hyperparameters_to_the_transformer(corpus: Path) -> None:
    plan = plan_training(TrainOptions(data=str(corpus), family="transformer", hp=("epochs=2",), seed=7))
    assert plan.hyperparameters == {"family": "transformer", "seed": 7, "epochs": 2}
    assert plan.job.family == "transformer"
    assert (plan.job.transformer.epochs, plan.job.transformer.seed) == (2, 7)
    # The linear family has no epochs: named in one line, before any training
    with pytest.raises(TrainingRefused, match=r"^Invalid hyperparameters: unknown hyperparameters for the linear"):
        plan_training(TrainOptions(data=str(corpus), hp=("epochs=2",)))


def test_hp_family_wins_over_the_family_option(corpus: Path) -> None:
    plan = plan_training(TrainOptions(data=str(corpus), track=False, hp=("family=transformer",)))
    assert plan.job.family == "transformer"


def test_an_unknown_family_or_a_bare_hp_is_refused(corpus: Path) -> None:
    with pytest.raises(TrainingRefused) as refused:
        plan_training(TrainOptions(data=str(corpus), family="cnn"))
    assert str(refused.value) == "--family 'cnn': choose linear, transformer or combined"
    with pytest.raises(TrainingRefused) as refused:
        plan_training(TrainOptions(data=str(corpus), hp=("c_grid",)))
    assert str(refused.value) == "--hp takes NAME=VALUE"


def test_the_cli_knows_the_jobs_families() -> None:
    from docflow.cli.train_plan import FAMILIES
    from docflow_training.families import FAMILIES as JOB_FAMILIES

    assert FAMILIES == JOB_FAMILIES


def test_family_combined_is_a_tracked_job(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_training(
        TrainOptions(data=str(corpus), family="combined", hp=("epochs=1", "transformer.max_length=32"), seed=3)
    )
    assert plan.where == "tracked" and plan.job.family == "combined"
    assert plan.hyperparameters == {"family": "combined", "seed": 3, "epochs": 1, "transformer.max_length": 32}
    assert (plan.job.train.seed, plan.job.transformer.seed, plan.job.transformer.max_length) == (3, 3, 32)
    assert plan_training(TrainOptions(data="s3://b/c", family="combined", sagemaker=True)).where == "sagemaker"
    with pytest.raises(TrainingRefused, match=r"^--family combined runs as a tracked job .*docflow model combine"):
        plan_training(TrainOptions(data=str(corpus), family="combined", track=False))
    with pytest.raises(TrainingRefused, match=r"^--family combined runs as a tracked job"):
        plan_training(TrainOptions(data=str(corpus), track=False, hp=("family=combined",)))
    with pytest.raises(TrainingRefused, match=r"^Invalid hyperparameters: max_length is .*transformer.max_length"):
        plan_training(TrainOptions(data=str(corpus), family="combined", hp=("max_length=32",)))


def test_partner_dir_is_a_local_folder_passed_on_whole(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "transformer").mkdir()
    monkeypatch.chdir(tmp_path)
    plan = plan_training(TrainOptions(data=str(corpus), family="combined", hp=("partner_dir=transformer",)))
    # The job runs in a folder of its own: the partner's path goes to it absolute.
    assert plan.hyperparameters["partner_dir"] == str(tmp_path / "transformer")
    assert plan.job.combined.partner_dir == str(tmp_path / "transformer")
    with pytest.raises(TrainingRefused, match=r"^--hp partner_dir=elsewhere: no such model folder"):
        plan_training(TrainOptions(data=str(corpus), family="combined", hp=("partner_dir=elsewhere",)))
    with pytest.raises(TrainingRefused, match=r"^--hp partner_dir=transformer: a SageMaker job cannot read"):
        plan_training(TrainOptions(data="s3://b/c", family="combined", sagemaker=True, hp=("partner_dir=transformer",)))


def test_sagemaker_leaves_the_corpus_to_the_job(tmp_path: Path) -> None:
    plan = plan_training(
        TrainOptions(data="s3://bucket/corpus", sagemaker=True, spot=True, wait=True, scans=tmp_path / "x")
    )
    assert plan.where == "sagemaker"
    assert plan.sagemaker_job == {"spot": True}  # only the SageMaker settings given
    assert plan.wait and plan.out is None and plan.scans is None
    plan = plan_training(TrainOptions(data="s3://bucket/corpus", sagemaker=True, instance_type="ml.m5.xlarge"))
    assert plan.sagemaker_job == {"instance_type": "ml.m5.xlarge"}


def test_a_one_class_corpus_trains_only_with_feedback(tmp_path: Path) -> None:
    (tmp_path / "one" / "memo").mkdir(parents=True)
    (tmp_path / "one" / "memo" / "a.txt").write_text("a memo")
    assert plan_training(TrainOptions(data=str(tmp_path / "one"))).where == "tracked"  # users' labels may add one
    with pytest.raises(TrainingRefused, match="need at least two classes, found"):
        plan_training(TrainOptions(data=str(tmp_path / "one"), feedback=False))
    with pytest.raises(TrainingRefused) as refused:
        plan_training(TrainOptions(data=str(tmp_path / "nowhere")))
    assert str(refused.value) == f"No such corpus folder: {tmp_path / 'nowhere'}"


def _scans(root: Path, labels: dict[str, int]) -> Path:
    """A folder of labelled scans (nothing is read at plan time): ``labels`` class -> how many."""
    for label, n in labels.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            (root / label / f"{i}.tif").write_bytes(b"II*\0")
    return root


def test_validation_takes_real_scans_of_the_corpus_classes(corpus: Path, tmp_path: Path) -> None:
    scans = _scans(tmp_path / "scans", {"memo": 2, "letter": 1, "invoice": 3})
    plan = plan_training(TrainOptions(data=str(corpus), validation=str(scans)))
    assert plan.where == "tracked"
    assert plan.validation is None  # the job's channel is the scans' text, written before the run
    assert plan.validation_scans is not None
    found = plan.validation_scans
    assert (found.folder, found.classes, found.n_scans, found.n_kept) == (scans, ("letter", "memo"), 6, 3)
    assert found.left_out == {"invoice": 3}
    # A labels.csv names them as well as class folders do
    (tmp_path / "flat").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "flat" / name).write_bytes(b"\x89PNG")
    (tmp_path / "flat" / "labels.csv").write_text("path,label\na.png,Memo\nb.png,letter\n")
    plan = plan_training(TrainOptions(data=str(corpus), validation=str(tmp_path / "flat")))
    assert plan.validation_scans is not None and plan.validation_scans.classes == ("letter", "memo")


def test_a_text_corpus_validation_is_as_before(corpus: Path) -> None:
    plan = plan_training(TrainOptions(data=str(corpus), validation=str(corpus)))
    assert (plan.validation, plan.validation_scans) == (str(corpus), None)


def test_validation_that_is_neither_corpus_nor_scans_is_refused(corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "junk" / "memo").mkdir(parents=True)
    (tmp_path / "junk" / "memo" / "a.docx").write_bytes(b"PK")
    (tmp_path / "junk" / "notes.md").write_text("x")
    with pytest.raises(TrainingRefused) as refused:
        plan_training(TrainOptions(data=str(corpus), validation=str(tmp_path / "junk")))
    assert str(refused.value) == (
        f"--validation {tmp_path / 'junk'}: neither a text corpus (<class>/*.txt) nor labelled scans "
        "(class folders of images or PDFs, or a labels.csv)"
    )
    scans = _scans(tmp_path / "scans", {"memo": 2, "invoice": 3})
    with pytest.raises(TrainingRefused) as refused:
        plan_training(TrainOptions(data=str(corpus), validation=str(scans)))
    assert str(refused.value) == (
        f"--validation {scans}: need scans of at least two of the training data's classes, found ['memo'] "
        "(the training data has ['letter', 'memo'])"
    )
