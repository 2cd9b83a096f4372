"""Initial registry schema: base models, tasks, adapters, versions, lineage, aliases, tags.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25 15:47:28.655860

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "base_models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("revision", sa.String(length=256), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_base_models")),
        sa.UniqueConstraint("name", name=op.f("uq_base_models_name")),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("name", name=op.f("uq_tasks_name")),
    )
    op.create_table(
        "adapters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("base_model_id", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_version", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["base_model_id"],
            ["base_models.id"],
            name=op.f("fk_adapters_base_model_id_base_models"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_adapters_task_id_tasks"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adapters")),
        sa.UniqueConstraint("name", name=op.f("uq_adapters_name")),
    )
    op.create_index(op.f("ix_adapters_base_model_id"), "adapters", ["base_model_id"], unique=False)
    op.create_index(op.f("ix_adapters_task_id"), "adapters", ["task_id"], unique=False)
    op.create_table(
        "adapter_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("a_out", sa.Integer(), nullable=True),
        sa.Column("a_in", sa.Integer(), nullable=True),
        sa.Column("r", sa.Integer(), nullable=True),
        sa.Column("alpha", sa.Float(), nullable=True),
        sa.Column("bits", sa.Integer(), nullable=False),
        sa.Column("param_count", sa.BigInteger(), nullable=True),
        sa.Column("artifact_location", sa.String(length=512), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("bits >= 1 AND bits <= 64", name=op.f("ck_adapter_versions_bits_range")),
        sa.CheckConstraint("number >= 1", name=op.f("ck_adapter_versions_number_positive")),
        sa.ForeignKeyConstraint(
            ["adapter_id"],
            ["adapters.id"],
            name=op.f("fk_adapter_versions_adapter_id_adapters"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adapter_versions")),
        sa.UniqueConstraint(
            "adapter_id", "number", name=op.f("uq_adapter_versions_adapter_id_number")
        ),
    )
    op.create_index(
        op.f("ix_adapter_versions_method"), "adapter_versions", ["method"], unique=False
    )
    op.create_index(
        op.f("ix_adapter_versions_mlflow_run_id"),
        "adapter_versions",
        ["mlflow_run_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_adapter_versions_sha256"), "adapter_versions", ["sha256"], unique=False
    )
    op.create_table(
        "aliases",
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["adapter_id"],
            ["adapters.id"],
            name=op.f("fk_aliases_adapter_id_adapters"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["adapter_versions.id"],
            name=op.f("fk_aliases_version_id_adapter_versions"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("adapter_id", "name", name=op.f("pk_aliases")),
    )
    op.create_index(op.f("ix_aliases_version_id"), "aliases", ["version_id"], unique=False)
    op.create_table(
        "lineage_edges",
        sa.Column("child_id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=False),
        sa.Column("relation", sa.String(length=64), nullable=False),
        sa.CheckConstraint("child_id <> parent_id", name=op.f("ck_lineage_edges_no_self_loop")),
        sa.ForeignKeyConstraint(
            ["child_id"],
            ["adapter_versions.id"],
            name=op.f("fk_lineage_edges_child_id_adapter_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["adapter_versions.id"],
            name=op.f("fk_lineage_edges_parent_id_adapter_versions"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("child_id", "parent_id", name=op.f("pk_lineage_edges")),
    )
    op.create_index(
        op.f("ix_lineage_edges_parent_id"), "lineage_edges", ["parent_id"], unique=False
    )
    op.create_table(
        "version_tags",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.String(length=1024), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["adapter_versions.id"],
            name=op.f("fk_version_tags_version_id_adapter_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", "key", name=op.f("pk_version_tags")),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("version_tags")
    op.drop_index(op.f("ix_lineage_edges_parent_id"), table_name="lineage_edges")
    op.drop_table("lineage_edges")
    op.drop_index(op.f("ix_aliases_version_id"), table_name="aliases")
    op.drop_table("aliases")
    op.drop_index(op.f("ix_adapter_versions_sha256"), table_name="adapter_versions")
    op.drop_index(op.f("ix_adapter_versions_mlflow_run_id"), table_name="adapter_versions")
    op.drop_index(op.f("ix_adapter_versions_method"), table_name="adapter_versions")
    op.drop_table("adapter_versions")
    op.drop_index(op.f("ix_adapters_task_id"), table_name="adapters")
    op.drop_index(op.f("ix_adapters_base_model_id"), table_name="adapters")
    op.drop_table("adapters")
    op.drop_table("tasks")
    op.drop_table("base_models")
