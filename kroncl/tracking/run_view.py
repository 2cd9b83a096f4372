"""What a run looks like in the MLflow UI: its name and its description (``mlflow.note.content``).

A run is named by what it is, ``"<stream> · <adapter> · <strategy> · seed <n>"`` (the run
directory's timestamped name stays a tag), and its description says what to open: the one chart
with every task's forgetting curve and the files with the final numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

DESCRIPTION_TAG = "mlflow.note.content"
"""The tag MLflow's UI shows (and edits) as the run's description."""

CURVES_ARTIFACT = "accuracy/forgetting_curves.png"
"""Every task's accuracy after each experience, in one chart (:func:`~kroncl.tracking.plots.forgetting_curves_figure`)."""


def strategy_label(mode: str, plugins: Sequence[str] = ()) -> str:
    """``"sequential"``, or with plugins ``"sequential+replay+ewc"``."""
    return "+".join([mode, *plugins])


def run_name(stream: str, adapter: str, strategy: str, seed: Any) -> str:
    """The MLflow run name: ``"toy · kron · sequential · seed 0"``."""
    return f"{stream} · {adapter} · {strategy} · seed {seed}"


def artifact_url(run_id: str, path: str) -> str:
    """The MLflow server's URL of a run's artifact, relative to the UI's page (``get-artifact``)."""
    return f"get-artifact?path={quote(path, safe='')}&run_uuid={run_id}"


def run_description(*, stream: str, tasks: Sequence[str], adapter: str, strategy: str, seed: Any,
                    run_dir: str, run_id: str | None = None) -> str:
    """Markdown for the run's description: what the run is, what to open, what the steps mean.

    With ``run_id``, the forgetting chart is embedded (an image served by the MLflow server's
    ``get-artifact`` route, so the UI shows it in the run's overview without a click).
    """
    order = " → ".join(f"`{t}`" for t in tasks)
    chart = [] if run_id is None else [
        "", f"[![forgetting curves]({artifact_url(run_id, CURVES_ARTIFACT)})]"
            f"({artifact_url(run_id, CURVES_ARTIFACT)})"]
    return "\n".join([
        f"**Continual run**: stream `{stream}` ({order}), adapter `{adapter}`, strategy `{strategy}`, "
        f"seed {seed}. Run directory: `{run_dir}`.",
        *chart,
        "",
        f"- **Forgetting chart**: *Artifacts* → `{CURVES_ARTIFACT}`: every task's accuracy after each "
        "experience in one chart (x = experience index, big dot = the experience that trained the "
        "task, dashed = ACC over the tasks seen, dotted = chance).",
        "- **Final numbers**: `accuracy/metrics.json` (ACC, BWT, FWT, forgetting), the accuracy matrix "
        "in `accuracy/accuracy_matrix.csv` and `accuracy/accuracy_heatmap.png`; the same values are "
        "the metrics `final/*`.",
        "",
        "Steps: `acc/<task>`, `stream/*`, `predictions/*`, `select/*`, `quant/*`, `routing/*` are "
        "logged at step = experience index (0 = after training on the first task). `stream/bwt`, "
        "`stream/fwt` and `stream/forgetting` need two tasks seen: one point per experience from "
        "experience 1 on (a single dot with two tasks); their last value is `final/bwt` etc. "
        "`baseline/<task>` (before training), `reference/<task>/*` (chance, majority answer) and "
        "`final/*` are single values; `val/<task>/acc` is at step = epoch. "
        "`avalanche/*` are avalanche-lib's own metrics at step = training iteration, not "
        "comparable with the experience steps.",
    ])
