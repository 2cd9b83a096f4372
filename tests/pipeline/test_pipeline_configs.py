"""Every shipped config option composes and validates (``kroncl/configs/<group>/<option>.yaml``).

One case per option: ``python -m kroncl.run <group>=<option>`` must get past Hydra and
``kroncl.config.load_settings`` — and the option must select what its file name says.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kroncl.config import load_settings
from kroncl.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "kroncl" / "configs"
OPTIONS = sorted(
    (group.name, option.stem)
    for group in CONFIG_DIR.iterdir() if group.is_dir()
    for option in group.glob("*.yaml")
)


def what_it_selects(settings, group: str) -> object:
    """The value an option of ``group`` is named after (None: groups with a single option)."""
    return {
        "adapter": lambda: settings.adapter["method"],
        "model": lambda: settings.model.name,
        "quant": lambda: settings.quant.scheme,
        "registry": lambda: "local" if settings.registry.enabled else "off",
        "strategy": lambda: settings.strategy.mode,
        "stream": lambda: settings.stream.name,
        "tracking": lambda: "local" if settings.tracking.enabled else "off",
    }.get(group, lambda: None)()


def test_every_group_has_options():
    groups = {g for g, _ in OPTIONS}
    assert groups >= {"adapter", "model", "quant", "registry", "strategy", "stream", "tracking", "train"}
    assert len(OPTIONS) >= 20


def test_the_default_config_composes(compose_config, tmp_path: Path):
    cfg = compose_config([f"paths.runs={tmp_path}"])
    settings = load_settings(OmegaConf.to_container(cfg, resolve=True))
    assert (settings.stream.name, settings.model.name, settings.strategy.mode) == ("toy", "minilm", "sequential")
    assert settings.cache_dir == tmp_path / ".cache" / "tokenized"  # ${paths.runs} interpolation


NEEDS = {("model", "custom"): ["model.kind=encoder", "model.name_or_path=/models/bert"]}
"""Options that are templates: the overrides a user must add (the option alone is an error)."""


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(compose_config, group: str, option: str):
    cfg = compose_config([f"{group}={option}", *NEEDS.get((group, option), [])])
    settings = load_settings(OmegaConf.to_container(cfg, resolve=True))
    selected = what_it_selects(settings, group)
    assert selected in (None, option), f"{group}={option} selects {selected!r}"
    assert settings.seed == 0 and settings.resolved[group] == OmegaConf.to_container(cfg[group], resolve=True)


def test_model_custom_alone_says_what_it_needs(compose_config):
    with pytest.raises(ConfigError, match=r"model=custom needs model.kind=encoder\|decoder and model.name_or_path="):
        load_settings(OmegaConf.to_container(compose_config(["model=custom"]), resolve=True))


def settings_error(compose_config, tmp_path: Path, overrides: list[str]) -> str:
    cfg = compose_config(["model=tiny", f"paths.runs={tmp_path / 'runs'}", *overrides])
    with pytest.raises(ConfigError) as info:
        load_settings(OmegaConf.to_container(cfg, resolve=True))
    return str(info.value)


@pytest.mark.parametrize(("override", "message"), [
    ("train.lr=abc", "train.lr='abc' must be a number, e.g. train.lr=0.003"),
    ("train.epochs=1.5", "train.epochs=1.5 must be a whole number, e.g. train.epochs=3"),
    ("train.batch_size=true", "train.batch_size=true must be a whole number, e.g. train.batch_size=16"),
    ("train.grad_accum=2.0", "train.grad_accum=2.0 must be a whole number, e.g. train.grad_accum=1"),
    ("train.eval_batch_size=x", "train.eval_batch_size='x' must be a whole number, e.g. train.eval_batch_size=64"),
    ("train.progress=1", "train.progress=1 must be true or false, e.g. train.progress=true"),
    ("train.warmup_ratio=[1]", "train.warmup_ratio=[1] must be a number, e.g. train.warmup_ratio=0.1"),
    ("strategy.replay_mem_size=2.5", "strategy.replay_mem_size=2.5 must be a whole number, e.g. strategy.replay_mem_size=200"),
    ("strategy.ewc_lambda=big", "strategy.ewc_lambda='big' must be a number, e.g. strategy.ewc_lambda=100.0"),
    ("quant.block_size=6.4", "quant.block_size=6.4 must be a whole number, e.g. quant.block_size=64"),
    ("tracking.enabled=yes", "tracking.enabled='yes' must be true or false, e.g. tracking.enabled=true"),
    ("tracking.uri=3", "tracking.uri=3 must be a string or null"),
    ("stream.max_train=1.5", "stream.max_train=1.5 must be a whole number or null"),
    ("stream.test_fraction=half", "stream.test_fraction='half' must be a number, e.g. stream.test_fraction=0.3"),
    ("stream.tasks=piqa", "stream.tasks='piqa' must be a list of names, e.g. stream.tasks=[piqa]"),
    ("model.max_length=1.5", "model.max_length=1.5 must be a whole number or null"),
    ("model.length_normalize=0", "model.length_normalize=0 must be true or false, e.g. model.length_normalize=false"),
    ("seed=1.5", "seed=1.5 must be a whole number, e.g. seed=0"),
], ids=lambda v: v if "=" in v and len(v) < 40 else None)
def test_a_value_of_the_wrong_type_is_one_line_naming_the_fix(compose_config, tmp_path, override, message):
    error = settings_error(compose_config, tmp_path, [override])
    assert "\n" not in error and error.endswith(message), error


def test_every_type_problem_is_listed_once(compose_config, tmp_path):
    error = settings_error(compose_config, tmp_path, ["train.lr=abc", "train.epochs=1.5", "seed=x"])
    lines = error.splitlines()
    assert lines[0] == "invalid configuration:"
    assert lines[1:] == ["  - train.epochs=1.5 must be a whole number, e.g. train.epochs=3",
                         "  - train.lr='abc' must be a number, e.g. train.lr=0.003",
                         "  - seed='x' must be a whole number, e.g. seed=0"]  # not again as stream/model.seed


def test_an_int_is_a_valid_float(compose_config, tmp_path):
    cfg = compose_config(["model=tiny", f"paths.runs={tmp_path}", "train.lr=1", "train.max_grad_norm=0"])
    settings = load_settings(OmegaConf.to_container(cfg, resolve=True))
    assert settings.train.lr == 1 and settings.train.max_grad_norm == 0


def test_paths_runs_under_a_file(compose_config, tmp_path):
    (tmp_path / "afile").write_text("x")
    error = settings_error(compose_config, tmp_path, [f"paths.runs={tmp_path / 'afile' / 'deep' / 'runs'}"])
    assert error == (f"invalid configuration: paths.runs='{tmp_path / 'afile' / 'deep' / 'runs'}' cannot hold "
                     f"runs: {tmp_path / 'afile'} is a file, so no folder can be made under it; set paths.runs "
                     "to a folder you can write, e.g. paths.runs=runs or paths.runs=$HOME/kroncl-runs")


def test_paths_runs_that_is_a_file(compose_config, tmp_path):
    (tmp_path / "afile").write_text("x")
    error = settings_error(compose_config, tmp_path, [f"paths.runs={tmp_path / 'afile'}"])
    assert f"paths.runs='{tmp_path / 'afile'}' cannot hold runs: {tmp_path / 'afile'} is a file, not a folder" in error


def test_paths_runs_where_nothing_can_be_written(compose_config, tmp_path):
    """/proc refuses new files even to root (permission bits do not), so this holds as root too."""
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc: the one folder that refuses writes to root, deterministically")
    error = settings_error(compose_config, tmp_path, ["paths.runs=/proc/kroncl-runs"])
    assert error.startswith("invalid configuration: paths.runs='/proc/kroncl-runs' cannot hold runs: "
                            "cannot create files in /proc (")


def test_read_only_folder_for_a_normal_user(tmp_path):
    """chmod stops writes only for a non-root user; the probe writes for real, so it agrees."""
    import os

    from kroncl.config import runs_root_problem

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        can_write = os.access(folder, os.W_OK)
        problem = runs_root_problem(folder / "runs")
    finally:
        folder.chmod(0o700)
    assert (problem is None) == can_write, problem
    if not can_write:
        assert problem.startswith(f"cannot create files in {folder} (Permission denied")
    assert list(folder.iterdir()) == []  # the probe file is gone


def test_a_writable_runs_root_leaves_nothing_behind(tmp_path):
    from kroncl.config import runs_root_problem

    assert runs_root_problem(tmp_path / "new" / "runs") is None
    assert list(tmp_path.iterdir()) == []


def test_unknown_group_values_are_checked_before_hydra():
    from kroncl.preflight import argv_problem, group_choices

    choices = group_choices()
    assert choices["quant"] == ["int4", "int8", "nf4", "none"]
    assert {"custom", "tiny-llama", "tiny-distilbert"} <= set(choices["model"])
    assert argv_problem(["quant=nf5"]) == "quant=nf5 is not a choice; choose one of: int4, int8, nf4, none"
    assert argv_problem(["++strategy=replay"]).startswith("strategy=replay is not a choice; choose one of: orthogonal,")
    assert argv_problem(["-m", "quant=int4,int9"]).startswith("quant=int9 is not a choice")
    # left to Hydra: keys inside a group, sweeps, interpolations, flags, good values
    for ok in (["quant.scheme=nf5"], ["quant=choice(int4,int8)"], ["quant=${oc.env:Q}"], ["--cfg", "job"],
               ["quant=nf4", "model='tiny-llama'", "+model=custom"], ["hydra/job_logging=stdout"]):
        assert argv_problem(ok) is None, ok


def test_group_values_from_the_users_config_dir_are_choices_too(tmp_path):
    # `kroncl-run --config-dir DIR model=mine`: DIR/model/mine.yaml is searched beside the shipped configs.
    from kroncl.preflight import argv_problem

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("name: tiny\n")
    for args in (["--config-dir", str(tmp_path), "model=mine"], [f"--config-dir={tmp_path}", "model=mine"],
                 ["-cd", str(tmp_path), "model=tiny"], ["--config-path", str(tmp_path), "model=other"],
                 ["hydra.searchpath=[file:///x]", "model=other"]):
        assert argv_problem(args) is None, args
    assert argv_problem(["model=mine"]).startswith("model=mine is not a choice")
    assert "mine, minilm" in argv_problem(["-cd", str(tmp_path), "model=minx"])


def test_train_threads_sets_torchs_thread_count_and_auto_takes_a_share_of_the_cpus(
        compose_config, monkeypatch, tmp_path):
    import os

    import torch

    from kroncl.strategy.template import resolve_threads
    from pipelines.continual import prepare

    before = torch.get_num_threads()
    try:
        for threads in (3, 1):
            cfg = compose_config(["stream=toy", "model=tiny", "stream.max_train=8", "stream.max_test=8",
                                  f"train.threads={threads}", f"paths.runs={tmp_path}"])
            prepare(load_settings(OmegaConf.to_container(cfg, resolve=True)))
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    cpus = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert resolve_threads(0) == cpus and resolve_threads(5) == 5
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * cpus))  # more processes than CPUs: still one
    assert resolve_threads(0) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert resolve_threads(0) == max(1, cpus // 2)


def test_negative_train_threads_is_refused_with_the_key_to_change(compose_config):
    cfg = compose_config(["train.threads=-2"])
    with pytest.raises(ConfigError, match=r"train.threads=-2 must be >= 0"):
        load_settings(OmegaConf.to_container(cfg, resolve=True))


@pytest.mark.parametrize(("override", "message"), [
    ("eval.task_labels=maybe", "eval.task_labels='maybe' is not one of known, unknown"),
    ("eval.router=oracle", "eval.router='oracle' is not one of centroid, entropy"),
])
def test_bad_eval_settings_name_the_key_and_the_choices(compose_config, override, message):
    cfg = compose_config([override])
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(OmegaConf.to_container(cfg, resolve=True))


@pytest.mark.parametrize(("override", "message"), [
    ("train.dropout=1.5", "train.dropout=1.5 must be in [0, 1), or null to keep the model's own"),
    ("train.collective_timeout_s=0", "train.collective_timeout_s=0"),
])
def test_bad_dropout_and_collective_timeout_name_the_key(compose_config, override, message):
    with pytest.raises(ConfigError) as err:
        load_settings(OmegaConf.to_container(compose_config([override]), resolve=True))
    assert message in str(err.value)


@pytest.mark.parametrize("method", ["kron", "lora"])
def test_train_lr_defaults_to_its_adapter_methods_own(compose_config, tmp_path, method):
    from kroncl.config import DEFAULT_LR

    base = ["model=tiny", f"paths.runs={tmp_path}", f"adapter={method}"]
    assert load_settings(OmegaConf.to_container(compose_config(base), resolve=True)).train.lr == DEFAULT_LR[method]
    given = load_settings(OmegaConf.to_container(compose_config([*base, "train.lr=0.0005"]), resolve=True))
    assert given.train.lr == 0.0005  # the command line wins
