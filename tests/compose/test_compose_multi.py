"""Several task adapters resident in one model, routed per batch row by task label."""

from __future__ import annotations

import pytest
import torch

from kroncl.adapters import load_adapter, routed_forward
from kroncl.composition import ComposeError, attach_adapters
from kroncl.models import ModelConfig, build_model
from pipelines.compose import compose, select_versions
from registry import AdapterVersion

ATOL = 1e-5


@pytest.fixture
def multi(trained):
    versions = select_versions(trained.store, [trained.refs["toy_larger"], trained.refs["toy_smaller"]])
    return compose(trained.store, versions)


def test_each_task_batch_equals_its_single_adapter_model(trained, multi, live_scores, make_batch):
    composed = multi.composed
    assert composed.tasks == ["toy_larger", "toy_smaller"] and composed.multi
    for task in composed.tasks:
        batch = make_batch(trained.model, trained.splits[task].test, composed.label(task))
        live = live_scores(trained.sets[task], batch)
        assert (composed(batch) - live).abs().max().item() <= ATOL
    # The two sets really differ, so routing to the wrong one would be caught.
    batch = make_batch(trained.model, trained.splits["toy_larger"].test, 0)
    a, b = (live_scores(trained.sets[t], batch) for t in ("toy_larger", "toy_smaller"))
    assert (a - b).abs().max().item() > 1e-3


def test_mixed_batch_routes_every_row_to_its_task(trained, multi, live_scores, make_batch):
    composed = multi.composed
    rows_large = trained.splits["toy_larger"].test[:5]
    rows_small = trained.splits["toy_smaller"].test[:7]
    model = trained.model
    feats = [{**model.encode(ex), "task_labels": 0} for ex in rows_large]
    feats += [{**model.encode(ex), "task_labels": 1} for ex in rows_small]
    order = torch.randperm(len(feats), generator=torch.Generator().manual_seed(0)).tolist()
    batch = model.collate([feats[i] for i in order])
    scores = composed(batch)
    expected = torch.where(
        (batch["task_labels"] == 0)[:, None],
        live_scores(trained.sets["toy_larger"], batch),
        live_scores(trained.sets["toy_smaller"], batch),
    )
    assert (scores - expected).abs().max().item() <= ATOL


def test_quantized_and_fp32_sets_serve_one_mixed_batch_in_one_forward(trained, make_batch):
    """An int8 version (dequantized once at load) beside an fp32 one: the one-forward mixed path
    equals one forward per task."""
    versions = select_versions(trained.store, [trained.refs["toy_larger@int8"], trained.refs["toy_smaller"]])
    composed = compose(trained.store, versions).composed
    model = trained.model
    feats = [{**model.encode(ex), "task_labels": i % 2}
             for i, ex in enumerate(trained.splits["toy_larger"].test[:6] + trained.splits["toy_smaller"].test[:6])]
    batch = model.collate(feats)
    with torch.no_grad():
        split = routed_forward(composed.model, composed.model.backbone, batch, batch["task_labels"],
                               composed.route, mixed=False)
    assert (composed(batch) - split).abs().max().item() <= ATOL


def test_a_batch_without_task_labels_takes_each_rows_most_confident_set(trained, multi, live_scores, make_batch):
    composed = multi.composed
    batch = make_batch(trained.model, trained.splits["toy_larger"].test + trained.splits["toy_smaller"].test, 0)
    del batch["task_labels"]
    per_set = torch.stack([live_scores(trained.sets[t], batch) for t in composed.tasks])
    entropy = torch.special.entr(per_set.softmax(-1)).sum(-1)
    chosen = entropy.argmin(0)
    composed.routed.clear()
    scores = composed(batch)
    expected = per_set[chosen, torch.arange(len(chosen))]
    assert (scores - expected).abs().max().item() <= ATOL
    assert composed.routed == {t: int((chosen == i).sum()) for i, t in enumerate(composed.tasks) if (chosen == i).any()}
    assert sum(composed.routed.values()) == len(chosen)


def test_evaluation_without_task_labels_reports_routing_accuracy(trained, multi):
    from pipelines.compose.evaluation import evaluate

    known = evaluate(multi, data_dir=None)
    unknown = evaluate(multi, task_labels="unknown")
    assert [e.task for e in unknown] == ["toy_larger", "toy_smaller"]
    assert all(e.routing_acc is not None and 0 <= e.routing_acc <= 1 for e in unknown)
    assert all(e.routing_acc is None for e in known)
    # Fitted on each version's own training rows, with the composed labels.
    assert multi.composed.router is not None and multi.composed.router.labels == [0, 1]
    assert multi.composed.router._rows == {0: len(trained.splits["toy_larger"].train),
                                           1: len(trained.splits["toy_smaller"].train)}
    for k, u in zip(known, unknown):  # fully routed to its own set = the labelled accuracy
        if u.routing_acc == 1.0:
            assert u.acc == k.acc


def test_route_by_label_or_name_and_clear_errors(multi, trained, make_batch):
    composed = multi.composed
    assert composed.route(1) == composed.route("toy_smaller") == "toy_smaller"
    with pytest.raises(ComposeError, match="0=toy_larger, 1=toy_smaller"):
        composed.route(2)
    with pytest.raises(ComposeError, match="task 'piqa' is not in this composition"):
        composed.route("piqa")
    with pytest.raises(ComposeError, match="cannot merge 2 resident adapter sets"):
        composed.merge()


def test_merge_with_several_versions_is_refused(trained):
    versions = select_versions(trained.store, [trained.refs["toy_larger"], trained.refs["toy_smaller"]])
    with pytest.raises(ComposeError, match="--merge folds one adapter.*--weights"):
        compose(trained.store, versions, merge=True)


def test_mixing_methods_is_refused_for_resident_sets(trained):
    # --task toy_smaller picks the newest version: the LoRA adapter.
    versions = select_versions(trained.store, tasks=["toy_larger", "toy_smaller"], bits=32)
    assert [v.method for v in versions] == ["kron", "lora"]
    with pytest.raises(ComposeError, match="is a 'lora' adapter but .* is 'kron'.*methods cannot be mixed"):
        compose(trained.store, versions)


def test_two_versions_of_one_task_are_refused(trained):
    versions = select_versions(trained.store, [trained.refs["toy_larger"], trained.refs["toy_larger@int8"]])
    with pytest.raises(ComposeError, match=r"several versions of task\(s\) \['toy_larger'\]"):
        compose(trained.store, versions)


def test_versions_on_different_base_models_are_refused(trained):
    v = trained.store.get_version(trained.refs["toy_larger"])
    other = AdapterVersion(**{**v.__dict__, "adapter": "other-toy_smaller-kron", "task": "toy_smaller",
                              "base_model": "other-bert"})
    with pytest.raises(ComposeError, match="different base models.*other-bert"):
        compose(trained.store, [v, other])


def test_attach_refuses_a_model_that_already_has_adapters(trained):
    loaded = load_adapter(trained.store.fetch_artifact(trained.refs["toy_larger"]))
    model = build_model(ModelConfig(name="tiny"))
    attach_adapters(model, {"toy_larger": loaded})
    with pytest.raises(ComposeError, match="already carries adapter sets"):
        attach_adapters(model, {"toy_larger": loaded})
