"""Alembic environment: one migration tree for SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from tether.hub.store.db import connect_arguments
from tether.hub.store.dialect import MIGRATE_LOCK_KEY
from tether.hub.store.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None

url, connect_args = connect_arguments(url)
engine = create_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Hubs started at once on one database each migrate: one at a time,
            # each reading the schema's version only once the one before committed.
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATE_LOCK_KEY})
        context.run_migrations()
engine.dispose()
