"""Engines, managed sessions, write retries and database-error translation.

:class:`Sessions` owns the two engines of a store (plain reads; writes marked with
``WRITE_OPTION`` so SQLite opens them with ``BEGIN IMMEDIATE``). Every store operation runs
as one short transaction through :meth:`Sessions.run`: commit on success, roll back on any
error, SQLAlchemy exceptions translated into :mod:`registry.errors`, and transient failures
(unique-violation races, busy/locked databases, serialisation failures, deadlocks) retried
with jittered exponential backoff.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from registry.db import WRITE_OPTION, make_engine, safe_url
from registry.errors import AlreadyExists, Conflict, DatabaseError, InvalidValue, RegistryError

T = TypeVar("T")

WRITE_ATTEMPTS = 8


class _Retry(Exception):
    """Internal: a transient database failure; the whole transaction is run again."""

    def __init__(self, error: RegistryError) -> None:
        super().__init__(error.message)
        self.error = error


def translate(e: SQLAlchemyError, url: str) -> RegistryError:
    """Map a SQLAlchemy/DBAPI exception to a registry error (``retryable`` set if transient)."""
    orig = getattr(e, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None) or ""
    msg = (str(orig if orig is not None else e).strip().splitlines() or [type(e).__name__])[0]
    err: RegistryError
    retryable = False
    if isinstance(e, IntegrityError):
        if sqlstate == "23505" or msg.startswith("UNIQUE constraint failed"):
            err, retryable = AlreadyExists(f"record already exists: {msg}"), True
        elif sqlstate == "23503" or msg.startswith("FOREIGN KEY constraint failed"):
            err = Conflict(f"a referenced record is missing or still referenced: {msg}")
        elif sqlstate == "23514" or msg.startswith("CHECK constraint failed"):
            err = InvalidValue(f"value rejected by the database: {msg}")
        else:
            err = Conflict(f"integrity error: {msg}")
    elif sqlstate in ("40001", "40P01") or "database is locked" in msg or "database is busy" in msg:
        err, retryable = DatabaseError(f"database busy: {msg}"), True
    elif isinstance(e, DBAPIError):
        err = DatabaseError(f"database error on {safe_url(url)!r}: {msg}")
    else:
        err = DatabaseError(f"database error on {safe_url(url)!r}: {type(e).__name__}: {msg}")
    err.retryable = retryable
    return err


class Sessions:
    """The engines of one database URL and the managed transactions run on them."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo)
        self.write_engine = self.engine.execution_options(**{WRITE_OPTION: True})
        self.dialect = self.engine.dialect.name

    def dispose(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    def translate(self, e: SQLAlchemyError) -> RegistryError:
        """:func:`translate` with this database's URL in the message."""
        return translate(e, self.url)

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any error.

        Database exceptions leave as :class:`RegistryError` subclasses (transient ones as the
        internal ``_Retry``, which :meth:`run` handles).
        """
        session = Session(self.write_engine if write else self.engine, expire_on_commit=False)
        try:
            yield session
            session.commit()
        except SQLAlchemyError as e:
            session.rollback()
            err = self.translate(e)
            if err.retryable:
                raise _Retry(err) from e
            raise err from e
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def run(self, fn: Callable[[Session], T], *, write: bool = True) -> T:
        """Run ``fn`` in a managed session, retrying transient failures with jittered backoff."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with self.session(write=write) as session:
                    return fn(session)
            except _Retry as r:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise r.error from r.__cause__
                time.sleep(random.uniform(0.005, 0.05) * (2**attempt))
        raise AssertionError("unreachable")
