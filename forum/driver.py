"""Hot paths that run a few Core statements on the request's own asyncpg connection.

SQLAlchemy's per-execution work (cache key, parameter and result processing) was about half of a vote's
CPU (docs/benchmarks.md, issue 14): a :class:`DriverStatement` is compiled once and run by asyncpg, which
prepares it once per connection, inside the transaction the request commits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncSession


class DriverStatement:
    """A Core statement compiled once for asyncpg: ``conn.fetchrow(s.sql, *s.args({...}))``."""

    def __init__(self, statement: Any) -> None:
        compiled = statement.compile(dialect=asyncpg_dialect())
        self.sql = str(compiled)
        self.defaults = dict(compiled.params)
        self.names = list(compiled.positiontup or [])

    def args(self, params: dict[str, Any]) -> list[Any]:
        values = {**self.defaults, **params}
        return [values[name] for name in self.names]


async def driver_of(session: AsyncSession, *, begin: bool = False) -> Any:
    """The asyncpg connection under the session's.

    SQLAlchemy's asyncpg adapter sends ``BEGIN`` lazily, before the first statement *it* runs: statements
    run on the driver before that are outside any transaction (autocommit). ``begin=True`` starts the
    session's transaction first if nothing has (the one the request commits or rolls back), so that the
    statements that follow are one unit and ``FOR UPDATE`` locks hold until the commit. Reads that need no
    transaction (as-you-type) leave it False and pay no ``BEGIN``/``COMMIT`` round trips.
    """
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    if begin:
        adapted = raw.dbapi_connection  # sqlalchemy's AsyncAdapt_asyncpg_connection
        if adapted._transaction is None:
            # What the adapter itself does before its first statement (it tracks the transaction, so the
            # session's commit and rollback end it); a no-op on an autocommit connection.
            await adapted._start_transaction()
    return raw.driver_connection
