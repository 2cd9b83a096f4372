"""PNG plots of an accuracy matrix (matplotlib, no pyplot: figures render through Agg).

Using ``matplotlib.figure.Figure`` directly keeps these functions free of pyplot's global
state, so they work in headless jobs and never open a window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from matplotlib.figure import Figure

from kroncl.fileio import atomic_write
from kroncl.metrics import AccuracyMatrix


def _save_png(fig: Figure, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))

def plot_accuracy_heatmap(matrix: AccuracyMatrix, path: str | Path, title: str | None = None) -> Path:
    """Annotated heatmap of the accuracy matrix.

    Rows: ``before`` (baseline), ``after <task>`` per experience; columns: tasks. Cells not
    measured yet are blank and annotated ``-``.

    Args:
        matrix: the matrix to draw (may be incomplete).
        path: output ``.png`` path (written atomically; parent folders created).
        title: figure title; default "Accuracy matrix".

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    import numpy as np

    T = matrix.num_tasks
    rows = [matrix.baseline, *matrix.rows]
    data = np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=float)
    finite = data[np.isfinite(data)]
    vmax = max(1.0, float(finite.max())) if finite.size else 1.0

    fig = Figure(figsize=(1.2 * T + 2.5, 0.6 * (T + 1) + 1.5))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto")
    fig.colorbar(image, ax=ax, label="accuracy")
    ax.set_xticks(range(T), matrix.task_names, rotation=30, ha="right")
    ax.set_yticks(range(T + 1), ["before"] + [f"after {t}" for t in matrix.task_names])
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("model state")
    for i in range(T + 1):
        for j in range(T):
            v = data[i, j]
            if math.isnan(v):
                ax.text(j, i, "-", ha="center", va="center", color="gray")
            else:
                # Dark text on the bright end of viridis, light text elsewhere.
                color = "black" if v > 0.6 * vmax else "white"
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color=color)
    ax.set_title(title or "Accuracy matrix")
    return _save_png(fig, Path(path))


def forgetting_curves_figure(matrix: AccuracyMatrix, title: str | None = None,
                             chance: Mapping[str, float] | None = None) -> Figure:
    """Every task's accuracy over the stream in one chart (the figure, not saved).

    x = experience index: ``-1`` is ``before`` (baseline, if measured), ``i`` is the model after
    training on task ``i`` (tick ``"i\\n<task>"``); the point where a task is trained is drawn
    larger, so the drop after it is its forgetting. The dashed black line is ACC over the tasks
    seen so far; dotted lines are each task's chance level, when ``chance`` (task -> accuracy of
    a random pick) is given, one grey line when all tasks share it.

    Lines of ``fig.axes[0]`` in order: per task its curve and its trained-point marker (when
    measured), then ACC (when a row is measured), then the chance line(s).
    """
    T = matrix.num_tasks
    fig = Figure(figsize=(max(6.0, 1.1 * T + 3), 4.5))
    ax = fig.add_subplot()
    colors: dict[str, str] = {}
    for j, name in enumerate(matrix.task_names):
        xs: list[int] = []
        ys: list[float] = []
        if matrix.baseline[j] is not None:
            xs.append(-1)
            ys.append(matrix.baseline[j])
        for i in range(T):
            v = matrix.rows[i][j]
            if v is not None:
                xs.append(i)
                ys.append(v)
        (line,) = ax.plot(xs, ys, marker="o", markersize=4, label=name)
        colors[name] = line.get_color()
        if matrix.rows[j][j] is not None:
            ax.plot([j], [matrix.rows[j][j]], marker="o", markersize=9, color=line.get_color())
    over_time = matrix.over_time()
    if over_time:
        ax.plot([r["experience"] for r in over_time], [r["acc"] for r in over_time],
                linestyle="--", color="black", linewidth=2, label="ACC (tasks seen)")
    levels = {t: float(c) for t, c in (chance or {}).items() if t in colors and c is not None}
    if levels and len({round(c, 6) for c in levels.values()}) == 1:
        ax.axhline(next(iter(levels.values())), linestyle=":", color="gray", label="chance")
    else:
        for name, level in levels.items():
            ax.axhline(level, linestyle=":", color=colors[name], label=f"chance {name}")
    labels = ["before"] + [f"{i}\n{t}" for i, t in enumerate(matrix.task_names)]
    ax.set_xticks(range(-1, T), labels)
    ax.set_xlim(-1.3, T - 0.7)
    ax.set_xlabel("experience (model after training on that task)")
    ax.set_ylabel("accuracy")
    values = [v for row in [matrix.baseline, *matrix.rows] for v in row if v is not None]
    ax.set_ylim(0.0, 1.02 * max([1.0, *values]))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    ax.set_title(title or "Accuracy per task over the stream")
    return fig


def plot_forgetting_curves(matrix: AccuracyMatrix, path: str | Path, title: str | None = None,
                           chance: Mapping[str, float] | None = None) -> Path:
    """:func:`forgetting_curves_figure` saved as a PNG at ``path`` (written atomically).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    return _save_png(forgetting_curves_figure(matrix, title, chance), Path(path))
