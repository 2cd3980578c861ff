"""rollouts (one per model version and environment) and the decision of every tick

Revision ID: 0004_rollouts
Revises: 0003_leases
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_rollouts"
down_revision = "0003_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("pipeline", sa.String(length=128), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("candidate_version", sa.String(length=32), nullable=False),
        sa.Column("stable_version", sa.String(length=32), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("phase", sa.String(length=24), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pipeline", "environment", "candidate_version", name="uq_rollouts_candidate"),
    )
    op.create_index("ix_rollouts_pipeline_environment_phase", "rollouts", ["pipeline", "environment", "phase"])
    op.create_table(
        "rollout_decisions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("rollout_id", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("phase", sa.String(length=24), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["rollout_id"], ["rollouts.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rollout_decisions_rollout_id", "rollout_decisions", ["rollout_id"])


def downgrade() -> None:
    op.drop_index("ix_rollout_decisions_rollout_id", table_name="rollout_decisions")
    op.drop_table("rollout_decisions")
    op.drop_index("ix_rollouts_pipeline_environment_phase", table_name="rollouts")
    op.drop_table("rollouts")
