"""Accuracy heatmap and forgetting curves render to real PNG files."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from kroncl.metrics import AccuracyMatrix
from kroncl.tracking import plot_accuracy_heatmap, plot_forgetting_curves

TASKS = ["boolq", "piqa", "arc_easy"]
R = [
    [0.80, 0.40, 0.10],
    [0.60, 0.90, 0.35],
    [0.70, 0.50, 0.95],
]
B = [0.25, 0.30, 0.20]


def assert_real_png(path: Path) -> Image.Image:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5_000, f"{path.name} is only {len(data)} bytes"
    image = Image.open(path)
    image.verify()
    image = Image.open(path).convert("L")
    low, high = image.getextrema()
    assert high - low > 100, "image is (almost) a single colour"
    return image


@pytest.mark.parametrize("plot", [plot_accuracy_heatmap, plot_forgetting_curves])
def test_complete_matrix(plot, tmp_path: Path):
    out = plot(AccuracyMatrix(TASKS, baseline=B, rows=R), tmp_path / "sub" / "plot.png")
    assert out == tmp_path / "sub" / "plot.png"
    image = assert_real_png(out)
    assert image.width > 300 and image.height > 200
    assert [p.name for p in out.parent.iterdir()] == ["plot.png"]  # no temp file left


@pytest.mark.parametrize("plot", [plot_accuracy_heatmap, plot_forgetting_curves])
def test_partial_matrix_without_baseline(plot, tmp_path: Path):
    m = AccuracyMatrix(TASKS)
    m.set_row(0, R[0])
    m.set(1, 0, 0.6)
    assert_real_png(plot(m, tmp_path / "partial.png"))


def test_heatmap_grows_with_the_number_of_tasks(tmp_path: Path):
    small = assert_real_png(plot_accuracy_heatmap(AccuracyMatrix(["a"], rows=[[0.5]]), tmp_path / "1.png"))
    names = [f"task{i}" for i in range(6)]
    rows = [[0.1 * ((i + j) % 10) for j in range(6)] for i in range(6)]
    large = assert_real_png(plot_accuracy_heatmap(AccuracyMatrix(names, rows=rows), tmp_path / "6.png"))
    assert large.width > small.width and large.height > small.height


def test_one_chart_holds_every_task_curve_acc_and_chance():
    """The forgetting chart: one curve per task over the experience index, ACC, one chance line."""
    from kroncl.tracking import forgetting_curves_figure

    fig = forgetting_curves_figure(AccuracyMatrix(TASKS, baseline=B, rows=R), chance={t: 0.25 for t in TASKS})
    (ax,) = fig.axes
    curves = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert list(curves) == [*TASKS, "ACC (tasks seen)", "chance"]
    for j, task in enumerate(TASKS):
        xs, ys = curves[task].get_data()
        assert list(xs) == [-1, 0, 1, 2]  # before, then the experience index
        assert list(ys) == pytest.approx([B[j], *(row[j] for row in R)])
    assert list(curves["chance"].get_ydata()) == [0.25, 0.25]
    # integer ticks, named by the task each experience trained
    assert list(ax.get_xticks()) == [-1, 0, 1, 2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["before", *(f"{i}\n{t}" for i, t in enumerate(TASKS))]
    assert ax.get_ylabel() == "accuracy" and "experience" in ax.get_xlabel()


def test_chance_levels_that_differ_get_one_line_per_task():
    from kroncl.tracking import forgetting_curves_figure

    m = AccuracyMatrix(TASKS)
    m.set_row(0, R[0])
    fig = forgetting_curves_figure(m, chance={"boolq": 0.5, "piqa": 0.5, "arc_easy": 0.25, "unknown": 0.1})
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert [x for x in labels if x.startswith("chance")] == ["chance boolq", "chance piqa", "chance arc_easy"]
    assert forgetting_curves_figure(m).axes[0].get_lines()[-1].get_label() == "ACC (tasks seen)"  # no chance given


def test_png_of_the_chart_with_chance(tmp_path: Path):
    out = plot_forgetting_curves(AccuracyMatrix(TASKS, baseline=B, rows=R), tmp_path / "c.png",
                                 chance={t: 0.25 for t in TASKS})
    assert_real_png(out)
