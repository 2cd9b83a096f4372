"""Tasks from JSONL folders: the real offline copies and "bring your own task" folders."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from kroncl.data import DataError, MCExample, load_task, read_jsonl, write_jsonl
from kroncl.data.splits import carve, derive_seed, resolve_splits, subsample


def test_real_arc_rows_with_three_and_five_choices(shared_data):
    rows = {e.id: e for e in read_jsonl(shared_data / "arc_challenge" / "test.jsonl", "arc_challenge", "test")}
    assert len(rows) == 1172
    three = rows["arc_challenge-test-00121"]
    assert three.choices == ("slower", "faster", "at the same speed") and three.label == 0
    five = rows["arc_challenge-test-00836"]
    assert len(five.choices) == 5 and five.label == 3
    assert five.choices[3].startswith("Warm-blooded animals normally maintain")
    assert {len(e.choices) for e in rows.values()} == {3, 4, 5}


@pytest.mark.parametrize(
    ("task", "sizes"),
    [
        # ARC / OpenBookQA: real train and test, validation carved (10% of train).
        ("arc_challenge", {"train": 1007, "validation": 112, "test": 1172}),
        ("arc_easy", {"train": 2026, "validation": 225, "test": 2376}),
        ("openbookqa", {"train": 4461, "validation": 496, "test": 500}),
        # PIQA / WinoGrande: only their dev split; 30% carved as test, then 10% of the rest.
        ("piqa", {"train": 1158, "validation": 129, "test": 551}),
        ("winogrande", {"train": 798, "validation": 89, "test": 380}),
    ],
)
def test_offline_tasks_load_with_carved_splits(shared_data, task, sizes):
    t = load_task(task, shared_data, seed=0)
    assert t.sizes() == sizes
    assert t.source == str(shared_data / task)
    ids = [e.id for s in ("train", "validation", "test") for e in t.split(s)]
    assert len(ids) == len(set(ids)), "carved splits overlap"
    assert all(not d for d in t.dropped.values())


def test_carving_is_deterministic_by_seed_and_logged(shared_data, caplog):
    with caplog.at_level(logging.INFO, logger="kroncl.data"):
        a = load_task("piqa", shared_data, seed=1)
    assert "piqa: no test split; carved 551 test rows (30%) from the validation split (seed 1)" in caplog.text
    assert "carved 129 validation rows" in caplog.text
    b = load_task("piqa", shared_data, seed=1)
    c = load_task("piqa", shared_data, seed=2)
    assert [e.id for e in a.test] == [e.id for e in b.test]
    assert [e.id for e in a.test] != [e.id for e in c.test]
    # carved rows keep file order
    assert [e.id for e in a.test] == sorted(e.id for e in a.test)


def test_limits_subsample_deterministically(shared_data):
    a = load_task("arc_easy", shared_data, seed=0, max_train=50, max_validation=10, max_test=20)
    b = load_task("arc_easy", shared_data, seed=0, max_train=50, max_validation=10, max_test=20)
    c = load_task("arc_easy", shared_data, seed=1, max_train=50, max_validation=10, max_test=20)
    assert a.sizes() == {"train": 50, "validation": 10, "test": 20}
    assert a.train == b.train and a.test == b.test
    assert a.train != c.train
    assert any("subsampled train to 50" in n for n in a.notes)


def test_carve_and_subsample_pure():
    items = list(range(100))
    held, rest = carve(items, 0.25, seed=7)
    assert len(held) == 25 and len(rest) == 75 and sorted(held + rest) == items
    assert carve(items, 0.25, seed=7) == (held, rest)
    assert carve([1, 2], 0.01, seed=0)[0] != []  # at least one held out
    assert carve(items, 0.0, seed=0) == ([], items)
    assert subsample(items, 10, seed=3) == subsample(items, 10, seed=3)
    assert subsample(items, None, seed=3) == items and subsample(items, 500, seed=3) == items
    assert derive_seed(0, "a", "b") != derive_seed(0, "ab")


def test_resolve_splits_only_test_is_an_error():
    with pytest.raises(DataError, match="only a test split"):
        resolve_splits({"test": [1, 2, 3]}, "t", seed=0)


def _rows(prefix: str, n: int, n_choices: int = 3) -> list[MCExample]:
    return [MCExample(f"{prefix}-{i}", f"question {i}?", [f"c{j}" for j in range(n_choices)], i % n_choices) for i in range(n)]


def test_bring_your_own_task_folder(tmp_path):
    write_jsonl(tmp_path / "mytask" / "train.jsonl", _rows("tr", 40))
    write_jsonl(tmp_path / "mytask" / "test.jsonl", _rows("te", 10, n_choices=2))
    t = load_task("mytask", tmp_path, seed=0)
    assert t.name == "mytask" and t.sizes() == {"train": 36, "validation": 4, "test": 10}
    assert t.test[0] == MCExample("te-0", "question 0?", ["c0", "c1"], 0)
    # the same folder given as a path, no data_dir
    by_path = load_task(str(tmp_path / "mytask"))
    assert by_path.name == "mytask" and by_path.train == t.train


def test_local_folder_overrides_catalogue(tmp_path):
    write_jsonl(tmp_path / "arc_easy" / "train.jsonl", _rows("x", 10))
    write_jsonl(tmp_path / "arc_easy" / "validation.jsonl", _rows("v", 3))
    write_jsonl(tmp_path / "arc_easy" / "test.jsonl", _rows("y", 5))
    t = load_task("arc_easy", tmp_path)
    assert t.source == str(tmp_path / "arc_easy")
    assert t.sizes() == {"train": 10, "validation": 3, "test": 5}


def test_missing_id_gets_positional_id(tmp_path):
    path = tmp_path / "t" / "train.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps({"question": "q?", "choices": ["a", "b"], "label": 1}) + "\n\n")
    assert read_jsonl(path, "t", "train") == [MCExample("t-train-00000", "q?", ["a", "b"], 1)]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"question": "q", "choices": ["a", "b"]}', r"missing key\(s\) \['label'\]"),
        ('{"question": "q", "choices": "ab", "label": 0}', "'choices' must be a list of strings"),
        ('{"question": "q", "choices": ["a", "b"], "label": "A"}', "'label' must be an integer"),
        ('["q", ["a"], 0]', "a JSON list"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, line, match):
    path = tmp_path / "bad" / "train.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps({"id": "ok", "question": "q", "choices": ["a", "b"], "label": 0}) + "\n" + line + "\n")
    with pytest.raises(DataError, match=match) as info:
        read_jsonl(path, "bad", "train")
    assert f"{path}:2" in str(info.value)


def _with_bad_rows(folder: Path) -> None:
    good = _rows("g", 20)
    bad = [
        MCExample("bad-label", "q?", ["a", "b"], 2),
        MCExample("bad-one-choice", "q?", ["a"], 0),
        MCExample("bad-empty-question", "", ["a", "b"], 0),
    ]
    write_jsonl(folder / "train.jsonl", good[:10] + bad + good[10:])
    write_jsonl(folder / "test.jsonl", _rows("t", 5))


def test_bad_rows_dropped_and_counted(tmp_path, caplog):
    _with_bad_rows(tmp_path / "noisy")
    with caplog.at_level(logging.WARNING, logger="kroncl.data"):
        t = load_task("noisy", tmp_path)
    assert sorted(t.dropped["train"]) == ["bad-empty-question", "bad-label", "bad-one-choice"]
    assert t.dropped["test"] == []
    assert len(t.train) + len(t.validation) == 20
    assert "noisy/train: dropped 3 of 23 rows" in caplog.text
    assert "answer not among choices: bad-label" in caplog.text


def test_bad_rows_strict_error_lists_ids(tmp_path):
    _with_bad_rows(tmp_path / "noisy")
    with pytest.raises(DataError) as info:
        load_task("noisy", tmp_path, strict=True)
    msg = str(info.value)
    for rid in ("bad-label", "bad-one-choice", "bad-empty-question"):
        assert rid in msg
    assert "data.strict=false" in msg


def test_unknown_task_and_bad_data_dir(tmp_path):
    with pytest.raises(DataError, match="unknown task 'nosuchtask'.*Known tasks: arc_challenge"):
        load_task("nosuchtask", tmp_path)
    with pytest.raises(DataError, match="is not a folder"):
        load_task("arc_easy", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no train.jsonl"):
        load_task("empty", tmp_path)
    with pytest.raises(DataError, match="is a path but not a folder"):
        load_task(str(tmp_path / "nowhere"))


def test_non_utf8_bytes_name_the_file_and_line(tmp_path):
    path = tmp_path / "latin" / "train.jsonl"
    path.parent.mkdir()
    good = json.dumps({"id": "ok", "question": "q", "choices": ["a", "b"], "label": 0}).encode()
    path.write_bytes(good + b"\n" + '{"question": "caf\xe9", "choices": ["a", "b"], "label": 0}\n'.encode("latin-1"))
    with pytest.raises(DataError) as info:
        read_jsonl(path, "latin", "train")
    assert str(info.value) == (f"{path}:2: not UTF-8 text (byte b'\\xe9' at column 18); save the file as UTF-8, "
                               "e.g. iconv -f latin1 -t utf-8 in.jsonl > out.jsonl")


def test_non_utf8_reaches_load_task_as_a_data_error(tmp_path):
    write_jsonl(tmp_path / "t" / "test.jsonl", _rows("te", 5))
    (tmp_path / "t" / "train.jsonl").write_bytes(b'{"question": "\xff", "choices": ["a", "b"], "label": 0}\n')
    with pytest.raises(DataError, match=r"train\.jsonl:1: not UTF-8 text"):
        load_task("t", tmp_path)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom" / "train.jsonl"
    path.parent.mkdir()
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"question": "q", "choices": ["a", "b"], "label": 1}).encode() + b"\r\n")
    assert read_jsonl(path, "bom", "train")[0].label == 1
