"""Name rules and version references."""

from __future__ import annotations

import pytest

from registry import InvalidName, VersionRef, parse_ref
from registry.names import NAME_RULE, validate_base_model_name, validate_name, validate_relation


@pytest.mark.parametrize("name", ["a", "arc-easy", "Arc_Easy.v2", "0abc", "x" * 128])
def test_valid_names_pass_unchanged(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-lead",
        ".hidden",
        "..",
        "../etc",
        "a/b",
        "a\\b",
        "with space",
        "x" * 129,
        "naïve",
        None,
        3,
    ],
)
def test_invalid_names_name_value_and_rule(name: object) -> None:
    with pytest.raises(InvalidName) as info:
        validate_name(name, "adapter name")
    assert info.value.code == "INVALID_NAME"
    assert repr(name) in str(info.value)
    assert NAME_RULE in str(info.value)
    assert "adapter name" in str(info.value)


def test_base_model_names_allow_one_org_prefix_but_no_traversal() -> None:
    assert validate_base_model_name("sentence-transformers/all-MiniLM-L6-v2")
    for bad in ["a/b/c", "/abs", "org/../x", "../x", "org/", "org//x"]:
        with pytest.raises(InvalidName, match="base model name"):
            validate_base_model_name(bad)


def test_relations_are_snake_case_words() -> None:
    assert validate_relation("continued_from") == "continued_from"
    for bad in ["ContinuedFrom", "continued-from", "1x", ""]:
        with pytest.raises(InvalidName, match="lineage relation"):
            validate_relation(bad)


def test_parse_ref_forms_and_round_trip() -> None:
    assert parse_ref("arc:3") == VersionRef("arc", number=3)
    assert parse_ref("arc@production") == VersionRef("arc", alias="production")
    assert parse_ref("arc") == VersionRef("arc", alias="latest")
    assert str(parse_ref("arc:3")) == "arc:3"
    assert str(parse_ref("arc@prod")) == "arc@prod"


@pytest.mark.parametrize(
    "ref", ["arc:0", "arc:-1", "arc:x", "arc:", ":3", "arc@", "arc@../x", "../arc:1"]
)
def test_parse_ref_rejects_malformed(ref: str) -> None:
    with pytest.raises(InvalidName) as info:
        parse_ref(ref)
    assert info.value.code == "INVALID_NAME"
