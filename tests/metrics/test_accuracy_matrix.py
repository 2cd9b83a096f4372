"""AccuracyMatrix: filling, completeness, summary and its three files."""

from __future__ import annotations

import csv
import json
import math

import pytest

from kroncl.metrics import AccuracyMatrix, summarize

TASKS = ["boolq", "piqa", "arc_easy"]
R = [
    [0.80, 0.40, 0.10],
    [0.60, 0.90, 0.35],
    [0.70, 0.50, 0.95],
]
B = [0.25, 0.30, 0.20]


def filled() -> AccuracyMatrix:
    m = AccuracyMatrix(TASKS)
    for j, acc in enumerate(B):
        m.set_baseline(TASKS[j], acc)
    for i, row in enumerate(R):
        m.set_row(i, row)
    return m


def test_fill_progressively():
    m = AccuracyMatrix(TASKS)
    assert m.completed_experiences == 0 and not m.is_complete and not m.has_baseline
    assert m.summary()["acc"] is None
    m.set_row(0, dict(zip(TASKS, R[0])))
    m.set(1, "boolq", 0.6)
    assert m.completed_experiences == 1  # row 1 still has gaps
    assert m.get(1, 0) == 0.6 and m.get(1, "piqa") is None
    summary = m.summary()
    assert summary["completed_experiences"] == 1
    assert summary["acc"] == pytest.approx(0.80)  # tasks seen so far: only boolq
    assert summary["bwt"] is None


def test_complete_summary_matches_summarize():
    m = filled()
    assert m.is_complete and m.has_baseline
    s = m.summary()
    ref = summarize(R, B)
    for key in ("acc", "bwt", "fwt", "forgetting", "avalanche_fwt"):
        assert s[key] == pytest.approx(ref[key])
    assert s["task_names"] == TASKS and s["num_tasks"] == 3 and s["completed_experiences"] == 3
    assert len(s["over_time"]) == 3


def test_save_writes_json_csv_and_metrics(tmp_path):
    m = filled()
    m.set_baseline("piqa", 0.3)
    paths = m.save(tmp_path / "eval")
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        "accuracy_matrix.csv", "accuracy_matrix.json", "metrics.json",
    ]  # no temp files left behind

    with paths["matrix_csv"].open(newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["after", *TASKS]
    assert table[1][0] == "before" and [float(x) for x in table[1][1:]] == B
    assert [r[0] for r in table[2:]] == TASKS
    assert [[float(x) for x in r[1:]] for r in table[2:]] == R

    metrics = json.loads(paths["metrics_json"].read_text())
    assert metrics["bwt"] == pytest.approx(-0.25)
    assert metrics["fwt"] == pytest.approx(0.125)

    loaded = AccuracyMatrix.load(tmp_path / "eval")
    assert loaded == m


def test_round_trip_with_gaps(tmp_path):
    m = AccuracyMatrix(TASKS)
    m.set(0, 2, 0.1)
    data = m.to_dict()
    assert data["rows"][0] == [None, None, 0.1] and data["baseline"] == [None] * 3
    assert AccuracyMatrix.from_dict(json.loads(json.dumps(data))) == m
    m.save(tmp_path)
    rows = list(csv.reader((tmp_path / "accuracy_matrix.csv").open(newline="")))
    assert rows[1] == ["before", "", "", ""]
    assert rows[2] == ["boolq", "", "", "0.1"]


def test_save_overwrites_atomically(tmp_path):
    m = filled()
    m.save(tmp_path)
    m.set(2, 0, 0.1)
    m.save(tmp_path)
    assert AccuracyMatrix.load(tmp_path).get(2, 0) == 0.1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task_names": []}, "at least one task"),
        ({"task_names": ["a", "a"]}, "lists a task twice"),
        ({"task_names": ["a", "b"], "baseline": [0.1]}, "baseline has 1 entries"),
        ({"task_names": ["a"], "rows": [[0.1], [0.2]]}, "rows has 2 rows"),
        ({"task_names": ["a"], "rows": [[math.inf]]}, "not finite"),
    ],
)
def test_invalid_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AccuracyMatrix(**kwargs)


def test_invalid_updates_name_the_problem():
    m = AccuracyMatrix(TASKS)
    with pytest.raises(KeyError, match="unknown task 'hellaswag'"):
        m.set(0, "hellaswag", 0.5)
    with pytest.raises(IndexError, match="experience index 3"):
        m.set(3, 0, 0.5)
    with pytest.raises(ValueError, match="not finite"):
        m.set(0, 0, math.nan)
    with pytest.raises(ValueError, match="2 values for 3 tasks"):
        m.set_row(0, [0.1, 0.2])
    with pytest.raises(ValueError, match="format_version"):
        AccuracyMatrix.from_dict({"format_version": 99, "task_names": TASKS})
