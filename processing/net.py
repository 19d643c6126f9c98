"""Network calls to outside services: timeouts, a retry budget, short reasons.

Every service call goes through ``with_budget``: the configured timeout is
the whole budget of a service (all attempts together), so a service that
never answers costs at most its timeout.  Connection failures and HTTP 5xx
are retried while the budget lasts; anything else fails at once.
"""
import time
from dataclasses import dataclass

import requests

from .errors import one_line


class TimeoutSession(requests.Session):
    """A requests session whose calls time out unless told otherwise
    (pyvo's synchronous TAP queries pass no timeout of their own)."""

    def __init__(self, timeout):
        super().__init__()
        self.timeout = timeout
        self.headers["User-Agent"] = "RAPAS-pipeline (" + self.headers.get("User-Agent", "") + ")"

    def request(self, *args, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        return super().request(*args, **kwargs)


class ServiceUnavailable(Exception):
    """The service did not give a usable answer within its budget."""

    def __init__(self, message, attempts):
        super().__init__(message)
        self.attempts = attempts


@dataclass(frozen=True)
class Budget:
    timeout_s: float = 30.0
    retries: int = 1

    @classmethod
    def from_config(cls, options):
        return cls(float(options.get("timeout", cls.timeout_s)), int(options.get("retries", cls.retries)))


def with_budget(budget, attempt, sleep=time.sleep):
    """Call ``attempt(seconds_left)`` until it returns, retrying transient
    failures while the budget lasts.  Returns (result, attempts); raises
    ``ServiceUnavailable`` with a one-line reason."""
    deadline = time.monotonic() + budget.timeout_s
    attempts, last = 0, ""
    while True:
        left = deadline - time.monotonic()
        if attempts and left < 1.0:
            raise ServiceUnavailable(f"no answer within {budget.timeout_s:g} s ({last})", attempts)
        attempts += 1
        try:
            return attempt(max(left, 0.5)), attempts
        except Exception as exc:        # classified below: transient or not
            last = reason(exc)
            if not is_transient(exc) or attempts > budget.retries:
                raise ServiceUnavailable(last, attempts) from exc
        sleep(min(2.0 ** (attempts - 1), max(0.0, deadline - time.monotonic()) / 4))


def is_transient(exc):
    """Worth another attempt: refused or reset connections and server errors.
    A timeout is not retried (it has used the budget)."""
    for link in _chain(exc):
        if isinstance(link, (requests.Timeout, TimeoutError)):
            return False
    for link in _chain(exc):
        if isinstance(link, requests.ConnectionError):
            return True
        response = getattr(link, "response", None)
        if response is not None and getattr(response, "status_code", 0) >= 500:
            return True
    return False


#: what the root cause of a failure says when the service could not be reached at all
UNREACHABLE = ("Failed to resolve", "Name or service not known", "Connection refused", "Read timed out",
               "timed out")


def reason(exc):
    """The root cause of a network failure, short (the chain pyvo and urllib3
    build repeats the URL several times)."""
    root = list(_chain(exc))[-1]
    text = one_line(root, 200)
    for marker in UNREACHABLE:
        if marker in text:
            return marker.lower() + " (" + type(root).__name__ + ")"
    return text


def unreachable(why):
    """Whether ``reason``'s text says the service could not be reached."""
    return why.startswith(tuple(marker.lower() for marker in UNREACHABLE))


def _chain(exc):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__
