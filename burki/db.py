"""Database connections around waits on other services."""

from __future__ import annotations

from django.db import connection

from burki.admission import initiation_slot_release


def connection_release() -> None:
    """Give this thread's pooled connection back before a long wait on another service (a
    provider's API, a SIP agent): a waiting thread then holds no PostgreSQL connection, and the
    next query takes one from the pool again. Without a pool (one persistent connection per
    thread) or inside a transaction, the connection stays. The initiation's slot of the
    process (burki.admission) is given back too.
    """
    initiation_slot_release()
    if connection.in_atomic_block or getattr(connection, "pool", None) is None:
        return
    connection.close()
