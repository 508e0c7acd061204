"""The web app: one-time sign-in links (/web) kept by their hash until used or expired, and
jobs indexed by server (a server's gallery)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "web_sign_ins",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("(CURRENT_TIMESTAMP)"),
                  nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_web_sign_ins")),
    )
    op.create_index(op.f("ix_web_sign_ins_expires_at"), "web_sign_ins", ["expires_at"], unique=False)
    op.create_index(op.f("ix_jobs_guild_id"), "jobs", ["guild_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_guild_id"), table_name="jobs")
    op.drop_index(op.f("ix_web_sign_ins_expires_at"), table_name="web_sign_ins")
    op.drop_table("web_sign_ins")
