"""Fixtures for registry tests: real SQLite files and, under ``-m postgres``, a real PostgreSQL.

PostgreSQL tests read ``KRONCL_TEST_POSTGRES_URL`` (``eval "$(.ci/postgres.sh)"`` starts a server
and exports it). Each test gets its own schema (via the connection's ``search_path``), dropped
afterwards, so tests never see each other's rows. When the variable is missing the tests FAIL
with instructions; they never skip silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from registry import RegistryStore

ENV_PG = "KRONCL_TEST_POSTGRES_URL"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose connections live in a fresh, private schema of the test database."""
    base = os.environ.get(ENV_PG)
    if not base:
        pytest.fail(
            f"{ENV_PG} is not set but a postgres test was selected: start a server with "
            f'`eval "$(.ci/postgres.sh)"` or deselect these tests with -m "not postgres"',
            pytrace=False,
        )
    schema = f"kroncl_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite and (marked ``postgres``) on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def store(backend_url: str, tmp_path: Path) -> Iterator[RegistryStore]:
    s = RegistryStore(backend_url, artifact_root=tmp_path / "artifacts")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def make_artifact(tmp_path: Path) -> Callable[..., Path]:
    """Write a small adapter-like directory (or one file) with the given content; returns it."""
    counter = iter(range(10**6))

    def make(content: str = "weights", *, single_file: bool = False, config: str = "{}") -> Path:
        d = tmp_path / "src" / f"artifact{next(counter)}"
        d.mkdir(parents=True)
        (d / "adapter.safetensors").write_bytes(content.encode())
        if single_file:
            return d / "adapter.safetensors"
        (d / "adapter_config.json").write_text(config)
        return d

    return make


@pytest.fixture
def populated(store: RegistryStore, make_artifact: Callable[..., Path]) -> RegistryStore:
    """A base model, a task and one adapter with no versions yet."""
    store.register_base_model("org/tiny-bert", revision="rev1")
    store.register_task("arc-easy")
    store.register_adapter("arc-kron", "arc-easy", "org/tiny-bert")
    return store
