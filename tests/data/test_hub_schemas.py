"""Hand-written rows in each hub schema, through the mapping functions the hub loader uses."""

from __future__ import annotations

import datasets
import pytest

from kroncl.data import TASKS, DataError, MCExample, drop_invalid, load_task
from kroncl.data.hub_schemas import answer_index, arc_row, hellaswag_row, openbookqa_row, piqa_row, winogrande_row


def test_catalogue_uses_these_mappers():
    assert TASKS["arc_challenge"].row_mapper is arc_row
    assert TASKS["arc_easy"].row_mapper is arc_row
    assert TASKS["openbookqa"].row_mapper is openbookqa_row
    assert TASKS["piqa"].row_mapper is piqa_row
    assert TASKS["winogrande"].row_mapper is winogrande_row
    assert TASKS["hellaswag"].row_mapper is hellaswag_row


@pytest.mark.parametrize(
    ("key", "labels", "expected"),
    [
        ("A", ["A", "B", "C", "D"], 0),
        ("D", ["A", "B", "C", "D"], 3),
        ("E", ["A", "B", "C", "D", "E"], 4),
        ("1", ["1", "2", "3", "4"], 0),
        ("5", ["1", "2", "3", "4", "5"], 4),
        ("3", ["A", "B", "C"], 2),  # mixed schemes resolve by position
        ("C", ["1", "2", "3"], 2),
        (" b ", ["A", "B"], 1),
        ("E", ["A", "B", "C", "D"], -1),
        ("5", ["1", "2", "3"], -1),
        ("", ["A", "B"], -1),
        (None, ["A", "B"], -1),
    ],
)
def test_answer_index(key, labels, expected):
    assert answer_index(key, labels) == expected


def test_arc_letter_labels_four_choices():
    row = {
        "id": "Mercury_7175875",
        "question": "An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most likely effect?",
        "choices": {
            "text": ["Planetary density will decrease.", "Planetary years will become longer.",
                     "Planetary days will become shorter.", "Planetary gravity will become stronger."],
            "label": ["A", "B", "C", "D"],
        },
        "answerKey": "C",
    }
    ex = arc_row(row, "Mercury_7175875")
    assert ex == MCExample(
        "Mercury_7175875", row["question"],
        ["Planetary density will decrease.", "Planetary years will become longer.",
         "Planetary days will become shorter.", "Planetary gravity will become stronger."],
        2,
    )


def test_arc_digit_labels_three_and_five_choices():
    three = {"question": "Which is a liquid at room temperature?",
             "choices": {"text": ["iron", "water", "salt"], "label": ["1", "2", "3"]}, "answerKey": "2"}
    five = {"question": "Which gas do plants take in?",
            "choices": {"text": ["oxygen", "nitrogen", "helium", "argon", "carbon dioxide"],
                        "label": ["1", "2", "3", "4", "5"]}, "answerKey": "5"}
    ex3, ex5 = arc_row(three, "r3"), arc_row(five, "r5")
    assert (len(ex3.choices), ex3.label, ex3.choices[ex3.label]) == (3, 1, "water")
    assert (len(ex5.choices), ex5.label, ex5.choices[ex5.label]) == (5, 4, "carbon dioxide")


def test_arc_letter_e_five_choices():
    row = {"question": "Pick the mammal.", "choices": {"text": ["shark", "frog", "eagle", "snake", "whale"],
                                                       "label": ["A", "B", "C", "D", "E"]}, "answerKey": "E"}
    assert arc_row(row, "x").label == 4


def test_openbookqa_row():
    row = {"id": "7-980", "question_stem": "The sun is responsible for",
           "choices": {"text": ["puppies learning new tricks", "children growing up and getting old",
                                "flowers wilting in a vase", "plants sprouting, blooming and wilting"],
                       "label": ["A", "B", "C", "D"]},
           "answerKey": "D"}
    ex = openbookqa_row(row, "7-980")
    assert ex.question == "The sun is responsible for"
    assert ex.label == 3 and ex.choices[3] == "plants sprouting, blooming and wilting"


def test_piqa_row_and_unlabeled_test_row():
    row = {"goal": "How do I ready a guinea pig cage?", "sol1": "Use paper bedding.", "sol2": "Use jeans bedding.", "label": 0}
    assert piqa_row(row, "p0") == MCExample("p0", "How do I ready a guinea pig cage?", ["Use paper bedding.", "Use jeans bedding."], 0)
    assert piqa_row({**row, "label": 1}, "p1").label == 1
    assert piqa_row({**row, "label": -1}, "p2").label == -1


def test_winogrande_row_keeps_blank_and_maps_answer():
    row = {"sentence": "Sarah was a much better surgeon than Maria so _ always got the easier cases.",
           "option1": "Sarah", "option2": "Maria", "answer": "2"}
    ex = winogrande_row(row, "w0")
    assert ex.question == row["sentence"] and "_" in ex.question
    assert ex.choices == ("Sarah", "Maria") and ex.label == 1
    assert winogrande_row({**row, "answer": "1"}, "w1").label == 0
    assert winogrande_row({**row, "answer": ""}, "w2").label == -1  # unlabeled test row


def test_hellaswag_row_cleans_markup_and_string_label():
    row = {"ind": 24, "activity_label": "Roof shingle removal",
           "ctx": "A man is sitting on a roof. he",
           "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                       "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
           "label": "3"}
    ex = hellaswag_row(row, "h0")
    assert ex.question == "Roof shingle removal: A man is sitting on a roof. he"
    assert ex.label == 3 and len(ex.choices) == 4
    wiki = {"activity_label": "Home", "ctx": "How to clean a sink [title] Rinse the sink. [step] Use soap.",
            "endings": ["[substeps] Scrub it.", "Eat it.", "Paint it.", "Sell it."], "label": ""}
    ex2 = hellaswag_row(wiki, "h1")
    assert ex2.question == "Home: How to clean a sink. Rinse the sink. Use soap."
    assert ex2.choices[0] == "Scrub it."
    assert ex2.label == -1


def test_bad_hub_rows_are_dropped_and_counted(caplog):
    rows = [
        arc_row({"question": "ok?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "B"}, "good"),
        arc_row({"question": "ok?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "E"}, "no-answer"),
        arc_row({"question": "ok?", "choices": {"text": ["a"], "label": ["A"]}, "answerKey": "A"}, "one-choice"),
        arc_row({"question": "  ", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "A"}, "no-question"),
    ]
    with caplog.at_level("WARNING", logger="kroncl.data"):
        kept, dropped = drop_invalid(rows, "arc_easy/train")
    assert [e.id for e in kept] == ["good"]
    assert sorted(dropped) == ["no-answer", "no-question", "one-choice"]
    assert "dropped 3 of 4" in caplog.text
    for rid in ("no-answer", "one-choice", "no-question"):
        assert rid in caplog.text


def _arc_hub_row(i: int, key: str, labels: list[str]) -> dict:
    return {"id": f"ARC_{i}", "question": f"question {i}?",
            "choices": {"text": [f"c{j}" for j in range(len(labels))], "label": labels}, "answerKey": key}


def test_hub_loader_maps_splits_and_rows(answering_hub, monkeypatch):
    """The real hub path: probe answers, ``datasets.load_dataset`` returns hub-schema rows."""
    hub_rows = {
        "train": [_arc_hub_row(i, "B", ["A", "B", "C", "D"]) for i in range(20)]
        + [_arc_hub_row(20, "4", ["1", "2", "3", "4", "5"]), _arc_hub_row(21, "F", ["A", "B", "C"])],
        "validation": [_arc_hub_row(100 + i, "1", ["1", "2", "3"]) for i in range(5)],
        "test": [_arc_hub_row(200 + i, "A", ["A", "B", "C", "D"]) for i in range(7)],
    }
    calls = []

    def fake_load_dataset(path, name=None, split=None, revision=None):
        calls.append((path, name, split, revision))
        return datasets.Dataset.from_list(hub_rows[split])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = load_task("arc_challenge", data_dir=None)
    assert sorted(calls) == sorted(("allenai/ai2_arc", "ARC-Challenge", s, None) for s in ("train", "validation", "test"))
    assert task.source == "hub:allenai/ai2_arc/ARC-Challenge"
    assert task.sizes() == {"train": 21, "validation": 5, "test": 7}
    assert task.dropped["train"] == ["ARC_21"]
    by_id = {e.id: e for e in task.train}
    assert by_id["ARC_0"].label == 1 and by_id["ARC_20"].label == 3 and len(by_id["ARC_20"].choices) == 5
    assert all(e.label == 0 and len(e.choices) == 3 for e in task.validation)


def test_hub_loader_uses_dev_split_as_test_for_piqa(answering_hub, monkeypatch):
    def piqa_rows(n, label):
        return [{"goal": f"goal {i}", "sol1": "a", "sol2": "b", "label": label} for i in range(n)]

    hub_rows = {"train": piqa_rows(30, 1), "validation": piqa_rows(10, 0)}
    seen = []

    def fake_load_dataset(path, name=None, split=None, revision=None):
        seen.append((path, name, split, revision))
        return datasets.Dataset.from_list(hub_rows[split])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = load_task("piqa", seed=3)
    assert sorted(s for _, _, s, _ in seen) == ["train", "validation"]
    assert {(p, n, r) for p, n, _, r in seen} == {("ybisk/piqa", "default", "refs/convert/parquet")}
    assert len(task.test) == 10 and all(e.label == 0 for e in task.test)  # hub dev split = our test
    assert len(task.validation) == 3 and len(task.train) == 27  # 10% of train carved
    assert task.train[0].id == "piqa-train-00000"


def test_hub_load_failure_is_one_data_error(answering_hub, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("Dataset scripts are no longer supported")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    with pytest.raises(DataError) as info:
        load_task("hellaswag")
    msg = str(info.value)
    assert "Rowan/hellaswag" in msg and "Dataset scripts are no longer supported" in msg and "data.dir" in msg
