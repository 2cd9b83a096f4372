"""The run's name and description text (what the MLflow UI shows first)."""

from __future__ import annotations

from urllib.parse import parse_qs

from kroncl.tracking.run_view import CURVES_ARTIFACT, artifact_url, run_description, run_name, strategy_label


def test_run_name_says_stream_adapter_strategy_seed():
    assert run_name("arc", "lora", strategy_label("per_task", ["replay", "ewc"]), 3) == \
        "arc · lora · per_task+replay+ewc · seed 3"
    assert strategy_label("sequential") == "sequential"


def test_artifact_url_is_the_servers_get_artifact_route():
    url = artifact_url("abc123", CURVES_ARTIFACT)
    route, query = url.split("?")
    assert route == "get-artifact"  # relative: works under any --static-prefix
    assert parse_qs(query) == {"path": [CURVES_ARTIFACT], "run_uuid": ["abc123"]}


def test_description_embeds_the_chart_only_with_a_run_id():
    what = dict(stream="toy", tasks=["a", "b"], adapter="kron", strategy="sequential", seed=0, run_dir="/r")
    assert "![" not in run_description(**what)
    with_chart = run_description(**what, run_id="abc123")
    assert f"![forgetting curves]({artifact_url('abc123', CURVES_ARTIFACT)})" in with_chart
    assert with_chart.startswith("**Continual run**: stream `toy` (`a` → `b`)")
