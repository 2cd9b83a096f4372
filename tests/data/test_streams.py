"""Streams, the toy tasks, the shipped stream configs, and failing fast without the hub."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kroncl.data import DataError, StreamConfig, TaskUnavailableError, build_stream, load_task
from kroncl.data.hub import hub_unreachable_reason
from kroncl.data.toy import toy_examples

CONFIGS = Path(__file__).resolve().parents[2] / "kroncl" / "configs" / "stream"


# ---- failing fast without the hub -------------------------------------------------------

def test_unreachable_hub_is_one_clear_error_fast(closed_hub):
    start = time.monotonic()
    with pytest.raises(TaskUnavailableError) as info:
        load_task("piqa")
    assert time.monotonic() - start < 5
    msg = str(info.value)
    assert info.value.task == "piqa"
    assert "ybisk/piqa" in msg and closed_hub in msg
    assert "connect to the internet" in msg
    assert "data.dir=" in msg and "piqa/train.jsonl" in msg


def test_hanging_hub_times_out_fast(hanging_hub):
    start = time.monotonic()
    with pytest.raises(TaskUnavailableError, match="timeout 1s"):
        load_task("winogrande")
    assert time.monotonic() - start < 4


def test_probe_answers_none_when_hub_answers(answering_hub):
    assert hub_unreachable_reason() is None
    assert hub_unreachable_reason(endpoint="http://127.0.0.1:9", timeout=0.5) is not None


def test_commonsense_stream_names_hellaswag_before_loading(shared_data, closed_hub):
    cfg = StreamConfig(name="commonsense", tasks=["piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge"])
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        build_stream(cfg, shared_data)
    assert time.monotonic() - start < 5
    msg = str(info.value)
    assert "1 of 5 task(s) have no reachable source: hellaswag." in msg
    assert "connect to the internet" in msg
    assert "hellaswag/train.jsonl" in msg
    assert "stream.tasks=[piqa,winogrande,arc_easy,arc_challenge]" in msg


def test_stream_reports_every_missing_task(closed_hub, tmp_path):
    cfg = StreamConfig(name="s", tasks=["hellaswag", "piqa", "toy_larger"])
    with pytest.raises(DataError) as info:
        build_stream(cfg, tmp_path)
    msg = str(info.value)
    assert "2 of 3 task(s) have no reachable source: hellaswag, piqa." in msg
    assert "stream.tasks=[toy_larger]" in msg


def test_custom_stream_from_task_list(shared_data):
    tasks = build_stream(StreamConfig(tasks=["piqa", "arc_easy"], max_train=30, max_test=10, seed=4), shared_data)
    assert [t.name for t in tasks] == ["piqa", "arc_easy"]
    assert [t.sizes() for t in tasks] == [{"train": 30, "validation": 129, "test": 10}, {"train": 30, "validation": 225, "test": 10}]
    again = build_stream({"tasks": ["piqa", "arc_easy"], "max_train": 30, "max_test": 10, "seed": 4}, shared_data)
    assert [t.train for t in again] == [t.train for t in tasks]


def test_stream_collects_load_failures(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "train.jsonl").write_text("{oops\n")
    with pytest.raises(DataError, match=r"1 task\(s\) failed to load:\n  - broken: .*not valid JSON"):
        build_stream(StreamConfig(tasks=["toy_larger", "broken"]), tmp_path)


@pytest.mark.parametrize(
    ("node", "match"),
    [
        ({"tasks": []}, "stream.tasks"),
        ({"tasks": "piqa"}, "stream.tasks"),
        ({"tasks": ["piqa", "piqa"]}, "names a task twice"),
        ({"tasks": ["piqa"], "max_train": 0}, "stream.max_train=0"),
        ({"tasks": ["piqa"], "validation_fraction": 1.0}, "stream.validation_fraction"),
        ({"tasks": ["piqa"], "test_fraction": 0}, "stream.test_fraction"),
        ({"tasks": ["piqa"], "max_tran": 5}, "unknown key.*stream.max_tran"),
    ],
)
def test_stream_config_errors_name_the_key(node, match):
    with pytest.raises(DataError, match=match):
        StreamConfig.from_mapping(node)


# ---- shipped configs --------------------------------------------------------------------

def _compose(name: str) -> StreamConfig:
    root = OmegaConf.create({"seed": 5, "data": {"strict": True}, "stream": OmegaConf.load(CONFIGS / f"{name}.yaml")})
    return StreamConfig.from_mapping(OmegaConf.to_container(root.stream, resolve=True))


@pytest.mark.parametrize(
    ("name", "tasks"),
    [
        ("arc", ["arc_challenge", "arc_easy"]),
        ("commonsense", ["piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge"]),
        ("toy", ["toy_larger", "toy_smaller"]),
    ],
)
def test_every_stream_yaml_is_a_valid_stream_config(name, tasks):
    cfg = _compose(name)
    assert cfg.name == name and cfg.tasks == tasks
    assert cfg.seed == 5 and cfg.strict is True


def test_arc_stream_yaml_builds_offline(shared_data):
    tasks = build_stream(_compose("arc"), shared_data)
    assert [t.name for t in tasks] == ["arc_challenge", "arc_easy"]
    assert len(tasks[0].test) == 1172 and len(tasks[1].test) == 2376


# ---- toy tasks --------------------------------------------------------------------------

def test_toy_stream_is_deterministic_and_needs_no_data():
    a = build_stream(_compose("toy"))
    b = build_stream(_compose("toy"))
    assert [t.sizes() for t in a] == [{"train": 360, "validation": 40, "test": 200}] * 2
    assert [t.train for t in a] == [t.train for t in b]
    assert a[0].source == "generated:toy_larger"
    other_seed = load_task("toy_larger", seed=6)
    assert other_seed.train != a[0].train


def test_toy_rules_conflict_on_identical_questions():
    larger = toy_examples("larger", 300, seed=11, id_prefix="l")
    smaller = toy_examples("smaller", 300, seed=11, id_prefix="s")
    for lo, sm in zip(larger, smaller, strict=True):
        assert lo.question == sm.question and lo.choices == sm.choices  # same surface form
        assert lo.label != sm.label  # opposite answers
        a, b = (int(c) for c in lo.choices)
        assert int(lo.choices[lo.label]) == max(a, b) and int(sm.choices[sm.label]) == min(a, b)
        assert lo.question == f"Pick one: {a} or {b}"
    # both answer positions occur, so position alone does not solve a task
    assert 0.35 < sum(e.label for e in larger) / len(larger) < 0.65
    with pytest.raises(ValueError, match="unknown toy rule"):
        toy_examples("middle", 3, seed=0, id_prefix="m")


def test_offline_mode_hub_task_fails_fast(monkeypatch, tmp_path):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)  # empty caches
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        load_task("arc_easy")
    assert time.monotonic() - start < 10
    msg = str(info.value)
    assert "allenai/ai2_arc" in msg and "data.dir" in msg and "HF_HUB_OFFLINE" in msg


def test_offline_mode_without_a_cached_copy_names_the_task_and_the_fixes(monkeypatch, tmp_path):
    import datasets.config
    import huggingface_hub.constants

    from kroncl.data import DataError, StreamConfig, build_stream

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    with pytest.raises(DataError) as info:
        build_stream(StreamConfig(name="s", tasks=["toy_larger", "hellaswag"]))
    msg = str(info.value)
    assert "hellaswag" in msg and "not in the local Hugging Face cache" in msg
    assert "stream.tasks=[toy_larger]" in msg
