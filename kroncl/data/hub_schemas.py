"""Pure per-row mappings from each Hugging Face hub schema to :class:`MCExample`.

The hub loader (:mod:`kroncl.data.hub`) calls exactly these functions on every row, so the tests
that feed them hand-written hub rows test the real mapping. A mapper never raises on a bad
answer: it returns ``label=-1`` and :func:`kroncl.data.example.drop_invalid` drops and counts the
row.

Choices of representation (the same as the offline JSONL copies in ``../shared/data``, so a model
sees the same text whichever source a task came from):

- ARC / OpenBookQA: ``question`` (``question_stem``) and the choice texts; answer keys ``A``–``E``
  and ``1``–``5`` are both normalised to the index of the key among the row's own labels.
- PIQA: question = ``goal``, choices = ``[sol1, sol2]``.
- WinoGrande: question = the sentence with its ``_`` blank shown, choices = ``[option1, option2]``.
  An encoder scores the pair (sentence, option); a decoder scores the option after the
  sentence. Filling the blank per option would suit a decoder slightly better but makes the two
  choices differ by one word inside a long identical text, which an encoder reading pairs
  learns from less well; keeping the options short serves both.
- HellaSwag: question = ``"<activity_label>: <ctx>"``, choices = the four ``endings``, with the
  WikiHow markup (``[title]``, ``[step]``, ...) removed as lm-evaluation-harness does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from kroncl.data.example import MCExample

__all__ = [
    "answer_index",
    "arc_row",
    "openbookqa_row",
    "piqa_row",
    "winogrande_row",
    "hellaswag_row",
    "clean_wikihow",
]

_LETTERS = "ABCDEFGH"


def _canonical_key(key: str) -> int | None:
    """Position a letter or 1-based digit answer key stands for: "A"/"1" -> 0, "C"/"3" -> 2."""
    key = key.strip().upper()
    if len(key) == 1 and key in _LETTERS:
        return _LETTERS.index(key)
    if key.isdigit() and int(key) >= 1:
        return int(key) - 1
    return None


def answer_index(answer_key: Any, choice_labels: Sequence[str]) -> int:
    """Index of ``answer_key`` among ``choice_labels``; -1 when it names none of them.

    Exact match first (``"B"`` in ``["A","B","C"]``); otherwise the key and the labels are
    compared by the position they stand for, so a row mixing schemes (key ``"2"`` with labels
    ``A``–``D``) still resolves.

    >>> answer_index("B", ["A", "B", "C", "D"])
    1
    >>> answer_index("4", ["1", "2", "3", "4", "5"])
    3
    >>> answer_index("2", ["A", "B", "C"])
    1
    >>> answer_index("E", ["A", "B", "C", "D"])
    -1
    """
    if answer_key is None:
        return -1
    key = str(answer_key).strip()
    labels = [str(lab).strip() for lab in choice_labels]
    if key in labels:
        return labels.index(key)
    want = _canonical_key(key)
    if want is None:
        return -1
    positions = [_canonical_key(lab) for lab in labels]
    return positions.index(want) if want in positions else -1


def _text_and_labels(choices: Mapping[str, Sequence[str]]) -> tuple[list[str], list[str]]:
    texts = [str(t).strip() for t in choices.get("text", [])]
    labels = [str(lab) for lab in choices.get("label", [])]
    if len(labels) != len(texts):
        # A malformed row: give positional labels so the answer can still resolve by position.
        labels = [_LETTERS[i] if i < len(_LETTERS) else str(i + 1) for i in range(len(texts))]
    return texts, labels


def arc_row(row: Mapping[str, Any], row_id: str) -> MCExample:
    """``allenai/ai2_arc``: ``question``, ``choices{text,label}``, ``answerKey`` (A–E or 1–5)."""
    texts, labels = _text_and_labels(row.get("choices") or {})
    return MCExample(
        id=row_id,
        question=str(row.get("question") or "").strip(),
        choices=texts,
        label=answer_index(row.get("answerKey"), labels),
    )


def openbookqa_row(row: Mapping[str, Any], row_id: str) -> MCExample:
    """``allenai/openbookqa`` (main): ``question_stem``, ``choices{text,label}``, ``answerKey``."""
    texts, labels = _text_and_labels(row.get("choices") or {})
    return MCExample(
        id=row_id,
        question=str(row.get("question_stem") or "").strip(),
        choices=texts,
        label=answer_index(row.get("answerKey"), labels),
    )


def _int_label(value: Any) -> int:
    """Hub integer labels, sometimes strings; unlabeled test rows carry -1 or ""."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def piqa_row(row: Mapping[str, Any], row_id: str) -> MCExample:
    """``ybisk/piqa``: ``goal``, ``sol1``, ``sol2``, ``label`` (0/1; -1 on the unlabeled test)."""
    return MCExample(
        id=row_id,
        question=str(row.get("goal") or "").strip(),
        choices=[str(row.get("sol1") or "").strip(), str(row.get("sol2") or "").strip()],
        label=_int_label(row.get("label")),
    )


def winogrande_row(row: Mapping[str, Any], row_id: str) -> MCExample:
    """``allenai/winogrande``: ``sentence`` with ``_``, ``option1``, ``option2``, ``answer`` "1"/"2"."""
    answer = _int_label(row.get("answer"))
    return MCExample(
        id=row_id,
        question=str(row.get("sentence") or "").strip(),
        choices=[str(row.get("option1") or "").strip(), str(row.get("option2") or "").strip()],
        label=answer - 1 if answer in (1, 2) else -1,
    )


def clean_wikihow(text: str) -> str:
    """Remove HellaSwag's WikiHow markup: ``" [title]"`` ends a sentence, other tags vanish.

    >>> clean_wikihow("How to bake [title] Preheat the oven. [step] Mix.")
    'How to bake. Preheat the oven. Mix.'
    """
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return re.sub(r"\s{2,}", " ", text).strip()


def hellaswag_row(row: Mapping[str, Any], row_id: str) -> MCExample:
    """``Rowan/hellaswag``: ``activity_label``, ``ctx``, ``endings``, ``label`` ("0"–"3"; "" on test)."""
    ctx = clean_wikihow(str(row.get("ctx") or ""))
    activity = str(row.get("activity_label") or "").strip()
    question = f"{activity}: {ctx}" if activity and ctx else ctx
    return MCExample(
        id=row_id,
        question=question,
        choices=[clean_wikihow(str(e)) for e in row.get("endings") or []],
        label=_int_label(row.get("label")),
    )
