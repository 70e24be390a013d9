"""The audit log (audit_event: logins, failed logins, user and token changes, project changes, uploads,
exports) and prompt.text, the prompt as plain text for the admin's task search, filled in here for the
prompts already stored.

Revision ID: 0004_audit_event
Revises: 0003_project_kind
Create Date: 2026-11-30 23:00:00
"""

import json

from alembic import op
import sqlalchemy as sa


revision = '0004_audit_event'
down_revision = '0003_project_kind'
branch_labels = None
depends_on = None


def prompt_text(prompt) -> str:
    # labeler.importer.prompt_text when this revision was written (a migration keeps its own copy)
    if isinstance(prompt, str):
        return prompt
    return "\n".join(str(m.get("content", "")) for m in prompt or [] if isinstance(m, dict))


def upgrade() -> None:
    op.create_table(
        'audit_event',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('action', sa.String(length=32), nullable=False),
        sa.Column('actor_id', sa.Integer(), nullable=True),
        sa.Column('actor', sa.String(length=80), nullable=False),
        sa.Column('source', sa.String(length=8), nullable=False),
        sa.Column('ip', sa.String(length=64), nullable=False),
        sa.Column('target', sa.String(length=255), nullable=False),
        sa.Column('detail', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['actor_id'], ['user.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_audit_event_action'), 'audit_event', ['action'], unique=False)
    op.create_index(op.f('ix_audit_event_actor_id'), 'audit_event', ['actor_id'], unique=False)
    op.create_index(op.f('ix_audit_event_created_at'), 'audit_event', ['created_at'], unique=False)

    with op.batch_alter_table('prompt') as batch:
        batch.add_column(sa.Column('text', sa.Text(), nullable=False, server_default=''))
    prompt = sa.table('prompt', sa.column('id', sa.Integer()), sa.column('prompt', sa.Text()), sa.column('text', sa.Text()))
    conn = op.get_bind()
    # read as text and parse here: the same on SQLite (JSON is text) and PostgreSQL (json cast to text)
    rows = conn.execute(sa.select(prompt.c.id, sa.cast(prompt.c.prompt, sa.Text()))).all()
    for row_id, raw in rows:
        conn.execute(prompt.update().where(prompt.c.id == row_id).values(text=prompt_text(json.loads(raw) if raw else "")))


def downgrade() -> None:
    with op.batch_alter_table('prompt') as batch:
        batch.drop_column('text')
    op.drop_index(op.f('ix_audit_event_created_at'), table_name='audit_event')
    op.drop_index(op.f('ix_audit_event_actor_id'), table_name='audit_event')
    op.drop_index(op.f('ix_audit_event_action'), table_name='audit_event')
    op.drop_table('audit_event')
