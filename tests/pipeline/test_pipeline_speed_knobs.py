"""The train.* knobs that only change speed (gradient checkpointing, pinned memory, DataLoader
workers) give the run the same numbers, and a run may resume with them changed."""

from __future__ import annotations

import pytest

from kroncl.config import load_settings
from kroncl.errors import ConfigError


def test_checkpointing_and_pinning_give_the_same_accuracy_matrix(tmp_path, pipeline_runner):
    common = ["tracking=off", "registry=off", "strategy=sequential"]
    plain = pipeline_runner(tmp_path / "runs", common, "plain")
    knobs = pipeline_runner(tmp_path / "runs", [*common, "train.gradient_checkpointing=true",
                                                "train.pin_memory=true"], "knobs")
    # Identical, not just close: the same batches, the same dropout masks.
    assert plain.result.matrix.to_dict() == knobs.result.matrix.to_dict()
    # A resume may switch them: they are not part of what the run must match.
    assert load_settings(plain.resolved).result_config == load_settings(knobs.resolved).result_config


def test_dataloader_workers_give_the_same_accuracy_matrix(tmp_path, pipeline_runner):
    # They once did not: tqdm.auto's bar opened a second iterator of the DataLoader per epoch,
    # whose worker prefetch drew the epoch's order from the order's generator.
    common = ["tracking=off", "registry=off", "strategy=sequential", "train.epochs=2"]
    plain = pipeline_runner(tmp_path / "runs", common, "plain")
    workers = pipeline_runner(tmp_path / "runs", [*common, "train.num_workers=1"], "workers")
    assert workers.result.matrix.to_dict() == plain.result.matrix.to_dict()
    assert load_settings(plain.resolved).result_config == load_settings(workers.resolved).result_config


def test_negative_workers_name_the_key(compose_config):
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(compose_config(["stream=toy", "model=tiny", "train.num_workers=-1"]),
                                      resolve=True)
    with pytest.raises(ConfigError, match=r"train.num_workers=-1 must be >= 0"):
        load_settings(resolved)


def test_a_run_from_before_quant_keep_below_still_matches(compose_config):
    """quant.keep_below=0 (its default) does what runs did before the key existed, so a run
    whose config has no such key resumes; any other value is a different run."""
    from omegaconf import OmegaConf

    def result(overrides):
        resolved = OmegaConf.to_container(compose_config(["stream=toy", "model=tiny", *overrides]), resolve=True)
        return load_settings(resolved).result_config

    assert result(["quant=int4"])["quant"] == {"scheme": "int4", "block_size": 64}  # what older runs recorded
    assert result(["quant=int4", "quant.keep_below=65"])["quant"]["keep_below"] == 65
