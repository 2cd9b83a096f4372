"""Alembic environment for the registry.

At runtime ``registry.migrate`` passes an open connection (inside its transaction) through
``config.attributes["connection"]``. For writing new migrations by hand, a URL works too:

    python - <<'EOF'
    from alembic import command
    from registry.migrate import alembic_config
    cfg = alembic_config(); cfg.set_main_option("sqlalchemy.url", "sqlite:////tmp/dev.db")
    command.upgrade(cfg, "head"); command.revision(cfg, "describe change", autogenerate=True)
    EOF
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from registry.db import make_engine
from registry.rows import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables so migrations stay portable.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()
