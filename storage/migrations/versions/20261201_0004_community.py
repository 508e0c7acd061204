"""Servers run the bot for their members: settings, role rules, bans, an audit, fast time

guilds gain a default model version, an NSFW policy and banned words; channels say
whether the bot answers there; role_rules, member_bans and audit_entries are new;
jobs record the engine's seconds (what fast time counts) and, with images, whether the
safety checker flagged them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("(CURRENT_TIMESTAMP)"),
                     nullable=False)


def upgrade() -> None:
    with op.batch_alter_table("guilds") as batch:
        batch.add_column(sa.Column("default_version", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("nsfw_policy", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("banned_words", sa.JSON(), nullable=True))
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("answers", sa.Boolean(), nullable=False, server_default="0"))
    op.create_table(
        "role_rules",
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("role_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("modes", sa.JSON(), nullable=False),
        sa.Column("fast_seconds_per_day", sa.Integer(), nullable=True),
        sa.Column("fast_seconds_per_month", sa.Integer(), nullable=True),
        sa.Column("queued", sa.Integer(), nullable=True),
        _created_at(),
        sa.ForeignKeyConstraint(["guild_id"], ["guilds.id"], name=op.f("fk_role_rules_guild_id_guilds"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("guild_id", "role_id", name=op.f("pk_role_rules")),
    )
    op.create_table(
        "member_bans",
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("moderator_id", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        _created_at(),
        sa.PrimaryKeyConstraint("guild_id", "user_id", name=op.f("pk_member_bans")),
    )
    op.create_table(
        "audit_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("moderator_id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target_user_id", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_entries")),
    )
    op.create_index(op.f("ix_audit_entries_guild_id"), "audit_entries", ["guild_id"], unique=False)
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("gpu_seconds", sa.Float(), nullable=True))
        batch.add_column(sa.Column("flagged", sa.Boolean(), nullable=False, server_default="0"))
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("flagged", sa.Boolean(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("flagged")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("flagged")
        batch.drop_column("gpu_seconds")
    op.drop_index(op.f("ix_audit_entries_guild_id"), table_name="audit_entries")
    op.drop_table("audit_entries")
    op.drop_table("member_bans")
    op.drop_table("role_rules")
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("answers")
    with op.batch_alter_table("guilds") as batch:
        batch.drop_column("banned_words")
        batch.drop_column("nsfw_policy")
        batch.drop_column("default_version")
