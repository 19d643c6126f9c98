"""The archive database from the job side: telling a lost connection (a
PostgreSQL restart, a terminated backend) from other errors, and waiting
until DaCHS's connection pools work again.

DaCHS pools its connections per process; after a restart the pooled ones
are dead, and each use of one fails once (DaCHS then discards it, and on a
"server closed the connection" error marks every pool of the process
stale).  ``retrying`` repeats an action that is safe to repeat until the
database answers again.
"""
import time

#: how long a job waits for a restarting database (s)
RESTART_WAIT = 60.0
#: SQLSTATEs of a connection that went away: admin or crash shutdown, starting up
_GONE_STATES = {"57P01", "57P02", "57P03"}


def _errors():
    from gavo.base import sqlsupport
    return sqlsupport.OperationalError, sqlsupport.InterfaceError


def is_disconnect(exc):
    """Whether ``exc``, or an exception it was raised from, is a lost
    database connection (and not, say, a constraint or a timeout)."""
    operational, interface = _errors()
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, interface):
            return True
        if isinstance(exc, operational):
            code = getattr(exc, "pgcode", None)
            if code is None or code.startswith("08") or code in _GONE_STATES:
                return True
        exc = exc.__cause__ or exc.__context__
    return False


def retrying(action, wait=RESTART_WAIT, pause=0.5):
    """``action()``, repeated while it fails for a lost connection, for at
    most ``wait`` seconds; only for actions that are safe to repeat."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return action()
        except Exception as exc:
            if not is_disconnect(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)


def wait_until_answering(wait=RESTART_WAIT):
    """Use each of DaCHS's pools (trusted reads, writes, admin) until it
    answers, so that what follows gets live connections."""
    from gavo import base

    def ping(pool):
        with pool() as conn:
            list(conn.query("SELECT 1"))

    for pool in (base.getTableConn, base.getWritableTableConn, base.getWritableAdminConn):
        retrying(lambda: ping(pool), wait)
