"""Task queue: task.taken (annotations + active leases, kept up to date by labeler.assignment) with the
index ix_task_queue (project_id, taken, id), ix_assignment_expiry (status, expires_at), and
project.open_tasks (tasks below the overlap), so that choosing the next task and an annotator's progress
read an index or one row instead of counting every task's load. Existing tasks are counted once here.

Revision ID: 0005_task_queue
Revises: 0004_audit_event
Create Date: 2026-11-30 22:05:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0005_task_queue'
down_revision = '0004_audit_event'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('taken', sa.Integer(), server_default='0', nullable=False))
        batch_op.create_index('ix_task_queue', ['project_id', 'taken', 'id'], unique=False)
    with op.batch_alter_table('assignment', schema=None) as batch_op:
        batch_op.create_index('ix_assignment_expiry', ['status', 'expires_at'], unique=False)
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.add_column(sa.Column('open_tasks', sa.Integer(), server_default='0', nullable=False))
    op.execute(
        "UPDATE task SET taken = (SELECT count(*) FROM annotation WHERE annotation.task_id = task.id)"
        " + (SELECT count(*) FROM assignment WHERE assignment.task_id = task.id AND assignment.status = 'active')"
    )
    op.execute("UPDATE project SET open_tasks = (SELECT count(*) FROM task WHERE task.project_id = project.id"
               " AND task.taken < project.overlap)")


def downgrade() -> None:
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.drop_column('open_tasks')
    with op.batch_alter_table('assignment', schema=None) as batch_op:
        batch_op.drop_index('ix_assignment_expiry')
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_index('ix_task_queue')
        batch_op.drop_column('taken')
