"""The combined family's hyperparameters (issue #17): the linear model's and the transformer's fields both
accepted, a name both configs have routed deliberately (one meaning: both; two meanings: refused unless named
for one member), partner_weight's bounds, partner_dir and where it cannot run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from docflow_training.entry import (
    _AMBIGUOUS_FIELDS,
    _SHARED_FIELDS,
    _SPLIT_FIELDS,
    check_job_environment,
    job_config,
    main,
    parse_hyperparameters,
)
from docflow_training.families import FAMILIES, CombinedConfig, TransformerConfig
from docflow_training.launch import hyperparameter_args
from docflow_training.train import TrainConfig

pytestmark = pytest.mark.unit


def test_every_field_both_members_have_is_routed_deliberately() -> None:
    # A field added to both configs must be placed in one of the two sets: one meaning (set both) or two (refused).
    assert set(TrainConfig.model_fields) & set(TransformerConfig.model_fields) == _SHARED_FIELDS | set(
        _AMBIGUOUS_FIELDS
    )
    assert not _SHARED_FIELDS & set(_AMBIGUOUS_FIELDS)
    assert _SPLIT_FIELDS <= _SHARED_FIELDS
    assert "combined" in FAMILIES


def test_fields_go_to_their_member_shared_ones_to_both() -> None:
    hp = {
        "family": "combined",
        "seed": 4,
        "holdout_fraction": 0.3,
        "c_grid": "1,10",  # linear only
        "epochs": 2,  # transformer only
        "max_train_docs": 9,
        "max_chars": 5000,  # both
        "review_target_precision": 0.9,  # both: the combination is calibrated as its linear member says
        "linear.max_length": 1000,
        "transformer.max_length": 32,
        "transformer.eval_batch_size": 8,  # one member's wins over nothing
        "partner_weight": 0.3,
        "min_eval_docs": 1,
        "run_name": "both",
    }
    config = job_config(hp)
    assert config.family == "combined"
    assert config.train.seed == config.transformer.seed == 4
    assert config.train.holdout_fraction == config.transformer.holdout_fraction == 0.3
    assert config.train.c_grid == (1.0, 10.0) and config.transformer.epochs == 2
    assert config.transformer.max_train_docs == 9
    assert config.train.max_chars == config.transformer.max_chars == 5000
    assert config.train.review_target_precision == config.transformer.review_target_precision == 0.9
    assert config.train.max_length == 1000 and config.transformer.max_length == 32
    assert config.transformer.eval_batch_size == 8 and config.train.eval_batch_size == TrainConfig().eval_batch_size
    assert config.combined == CombinedConfig(partner_weight=0.3)
    assert config.gate.min_eval_docs == 1 and config.run_name == "both"
    # As SageMaker passes them (--name value strings), dotted names included.
    assert job_config(parse_hyperparameters(hyperparameter_args(hp))) == config
    # A member's own name wins over the plain one, whatever the order.
    both = job_config({"family": "combined", "transformer.max_chars": 100, "max_chars": 5000})
    assert both.transformer.max_chars == 100 and both.train.max_chars == 5000


def test_defaults() -> None:
    config = job_config({"family": "combined"})
    assert config.combined.partner_weight == 0.5 and config.combined.partner_dir is None
    assert config.train == TrainConfig() and config.transformer == TransformerConfig()


@pytest.mark.parametrize("name", sorted(_AMBIGUOUS_FIELDS))
def test_a_field_with_two_meanings_must_name_its_member(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} is .*: give linear.{name} or transformer.{name}"):
        job_config({"family": "combined", name: 64})


@pytest.mark.parametrize("name", ["linear.seed", "transformer.seed", "transformer.holdout_fraction"])
def test_the_split_is_never_per_member(name: str) -> None:
    with pytest.raises(ValueError, match="both members hold out the same documents"):
        job_config({"family": "combined", name: 1 if name.endswith("seed") else 0.3})


@pytest.mark.parametrize("weight", [0, 1, -0.1, 1.5, math.nan, math.inf, "heavy"])
def test_partner_weight_is_strictly_between_0_and_1(weight: object) -> None:
    with pytest.raises(ValidationError, match="partner_weight"):
        job_config({"family": "combined", "partner_weight": weight})
    assert job_config({"family": "combined", "partner_weight": "0.25"}).combined.partner_weight == 0.25


def test_unknown_fields_are_refused_in_one_line() -> None:
    for hp, unknown in (
        ({"nonsense": 1}, "['nonsense']"),
        ({"linear.epochs": 2}, "['linear.epochs']"),
        ({"transformer.c_grid": "1,10"}, "['transformer.c_grid']"),
    ):
        with pytest.raises(ValueError, match=f"unknown hyperparameters for the combined family \\{unknown[:-1]}\\]"):
            job_config({"family": "combined", **hp})
    # The combined family's own fields belong to no other family.
    with pytest.raises(ValueError, match="for the linear family \\['partner_weight'\\]"):
        job_config({"partner_weight": 0.3})
    with pytest.raises(ValueError, match="for the transformer family \\['partner_dir'\\]"):
        job_config({"family": "transformer", "partner_dir": "/models/t"})
    with pytest.raises(ValidationError):
        job_config({"family": "combined", "epochs": 0})  # a member's own bounds still hold


def test_partner_dir_refuses_the_transformers_training_fields() -> None:
    config = job_config({"family": "combined", "partner_dir": "/models/t", "seed": 3, "max_chars": 900})
    assert config.combined.partner_dir == "/models/t" and config.train.seed == 3
    refused = r"partner_dir combines a transformer trained earlier.*\['epochs', 'transformer.max_length'\]"
    with pytest.raises(ValueError, match=refused):
        job_config({"family": "combined", "partner_dir": "/models/t", "epochs": 2, "transformer.max_length": 32})


def test_partner_dir_is_refused_on_sagemaker(tmp_path: Path) -> None:
    config = job_config({"family": "combined", "partner_dir": "/models/t"})
    check_job_environment(config, {})  # a local run
    check_job_environment(job_config({"family": "combined"}), {"TRAINING_JOB_NAME": "j"})
    with pytest.raises(ValueError, match="a SageMaker job cannot read a model folder"):
        check_job_environment(config, {"TRAINING_JOB_NAME": "docflow-1"})
    # The job stops as a bad configuration, before anything is read, with SageMaker's failure reason.
    (tmp_path / "train").mkdir()
    env = {
        "TRAINING_JOB_NAME": "docflow-1",
        "SM_CHANNEL_TRAIN": str(tmp_path / "train"),
        "SM_OUTPUT_DATA_DIR": str(tmp_path / "output" / "data"),
        "SM_MODEL_DIR": str(tmp_path / "model"),
    }
    assert main(["--family", "combined", "--partner_dir", "/models/t"], env) == 2
    failure = (tmp_path / "output" / "failure").read_text()
    assert failure.startswith("bad job configuration: partner_dir=/models/t: a SageMaker job cannot read")
