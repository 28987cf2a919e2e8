"""The errors every call raises: one class per HTTP status family, each
carrying the server's stable error ``code``, its message and its details."""

from __future__ import annotations

from typing import Any, Dict, Optional


class QuernError(Exception):
    """An answer that was not 2xx, or no answer at all."""

    def __init__(self, status: int, code: str, message: str, details: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: Dict[str, Any] = details or {}


class TimeoutWaiting(QuernError, TimeoutError):
    """A wait ran out before the task (or workflow) ended. ``task`` (or
    ``workflow``) is what the last look saw. Also a ``TimeoutError``."""

    task: Any = None
    workflow: Any = None


class TransportError(QuernError):
    """The server could not be reached, or the connection broke."""


class BadRequest(QuernError):
    """400: malformed JSON, a wrong type, a field that breaks a rule."""


class NotFound(QuernError):
    """404: no such task, workflow, schedule, webhook or route."""


class Conflict(QuernError):
    """409: the state does not allow it (cancel of a finished task, an idempotency key reused)."""


class Gone(QuernError):
    """410: the events after that offset were deleted by retention (``offset_expired``)."""


class PayloadTooLarge(QuernError):
    """413: the body is over the server's limit."""


class Unprocessable(QuernError):
    """422: semantically invalid: a cyclic workflow, a bad cron, an input that breaks its schema."""


class Unavailable(QuernError):
    """503: the server is not ready or is shutting down."""


class UndecodableValue(QuernError):
    """A value of a successful answer that this SDK cannot decode (nested too
    deeply for Python's ``json`` module); ``details["text"]`` is its JSON text.
    Raised by ``AsyncResult.get()`` for such a result; the clients' calls
    answer a ``quern.Undecodable`` in the value's place instead."""


_BY_STATUS = {400: BadRequest, 404: NotFound, 409: Conflict, 410: Gone, 413: PayloadTooLarge, 422: Unprocessable}


def from_answer(status: int, body: Any) -> QuernError:
    """The error for a non-2xx answer with JSON ``body``."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return QuernError(status, "http_error", f"the server answered {status}")
    cls = _BY_STATUS.get(status, Unavailable if status == 503 else QuernError)
    return cls(status, str(err.get("code", "unknown")), str(err.get("message", "")), err.get("details") or {})
