"""QuantScheme: names, validation, JSON form."""

import json

import pytest

from kroncl.errors import ConfigError, QuantFormatError
from kroncl.quant import FORMAT_VERSION, QuantScheme


@pytest.mark.parametrize(("name", "bits"), [("int8", 8), ("int4", 4), ("nf4", 4), ("NF4", 4)])
def test_from_name_builds_scheme(name, bits):
    scheme = QuantScheme.from_name(name, block_size=32)
    assert scheme.kind == name.lower()
    assert scheme.bits == bits
    assert scheme.block_size == 32


def test_from_name_none_means_no_quantization():
    assert QuantScheme.from_name("none") is None


@pytest.mark.parametrize("bad", ["int2", "fp8", "", None, 4])
def test_unknown_name_is_named_in_error(bad):
    with pytest.raises(ConfigError, match=repr(bad).replace("(", r"\(")):
        QuantScheme.from_name(bad)


@pytest.mark.parametrize("bad", [0, -64, 2.5, True, "64"])
def test_bad_block_size_is_named_in_error(bad):
    with pytest.raises(ConfigError, match="block_size") as info:
        QuantScheme.from_name("int4", block_size=bad)
    assert repr(bad) in str(info.value)


def test_bad_scale_dtype_and_bits_mismatch():
    with pytest.raises(ConfigError, match="'float8'"):
        QuantScheme.from_name("int4", scale_dtype="float8")
    with pytest.raises(ConfigError, match="bits=8"):
        QuantScheme(bits=8, kind="int4")


@pytest.mark.parametrize("name", ["int8", "int4", "nf4"])
@pytest.mark.parametrize("scale_dtype", ["bfloat16", "float16", "float32"])
def test_meta_round_trips_through_json(name, scale_dtype):
    scheme = QuantScheme.from_name(name, block_size=16, scale_dtype=scale_dtype)
    meta = json.loads(json.dumps(scheme.to_meta()))
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["scheme"] == name
    assert QuantScheme.from_meta(meta) == scheme


def test_from_meta_rejects_unknown_version_and_scheme():
    meta = QuantScheme.from_name("int4").to_meta()
    with pytest.raises(QuantFormatError, match="format_version 99"):
        QuantScheme.from_meta({**meta, "format_version": 99})
    with pytest.raises(QuantFormatError, match="'int3'"):
        QuantScheme.from_meta({**meta, "scheme": "int3"})
    with pytest.raises(QuantFormatError, match="null"):
        QuantScheme.from_meta({**meta, "scheme": "none"})
    with pytest.raises(QuantFormatError, match="JSON object"):
        QuantScheme.from_meta(["int4"])


def test_run_config_validates_with_the_scheme_module():
    from kroncl.config import QuantConfig, validate_quant
    from kroncl.quant.scheme import SCHEME_NAMES

    errors: list[str] = []
    validate_quant(QuantConfig(scheme="int5", block_size=0), errors)
    assert errors[0] == f"quant='int5' is not one of {', '.join(SCHEME_NAMES)}"
    assert errors[1].startswith("quant.block_size=0: Quantization block_size must be a positive integer")
    for name in SCHEME_NAMES:
        errors = []
        validate_quant(QuantConfig(scheme=name, block_size=32), errors)
        assert errors == []
        scheme = QuantConfig(scheme=name, block_size=32).to_scheme()
        assert scheme == QuantScheme.from_name(name, block_size=32)


def test_config_and_scheme_names_load_no_torch():
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, kroncl.config, kroncl.quant.scheme;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'torch');"
        "print(bad[:5]); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("bad", [-1, 2.5, True, "65"])
def test_bad_keep_below_is_named_in_error(bad):
    with pytest.raises(ConfigError, match="keep_below must be an integer >= 0") as info:
        QuantScheme.from_name("int8", keep_below=bad)
    assert repr(bad) in str(info.value)
    from kroncl.config import QuantConfig, validate_quant

    errors: list[str] = []
    validate_quant(QuantConfig(scheme="int4", keep_below=bad), errors)
    assert errors == [f"quant.keep_below={bad!r}: " + str(info.value)]


def test_keep_below_round_trips_and_defaults_to_zero_for_old_metadata():
    scheme = QuantScheme.from_name("nf4", keep_below=65)
    assert QuantScheme.from_meta(json.loads(json.dumps(scheme.to_meta()))) == scheme
    old = {k: v for k, v in scheme.to_meta().items() if k != "keep_below"}
    assert QuantScheme.from_meta(old).keep_below == 0
