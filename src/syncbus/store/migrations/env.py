"""Alembic environment: runs on the connection syncbus hands over (see store/migrate.py)."""

from __future__ import annotations

from alembic import context

import syncbus.content.tables
import syncbus.store.tables  # noqa: F401  (registers the bus's tables on the metadata)
from syncbus.store.db import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:  # `alembic` CLI use by developers: build an engine from the URL
    from syncbus.store.db import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
