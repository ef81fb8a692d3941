"""Every exception trackasync raises, in one place.

::

    TrackError
    ├── ConfigError            bad client settings (also a ValueError)
    ├── InvalidEvent           bad input at the call site (also a ValueError)
    │   └── PayloadTooLarge    a command or one property value over its limit
    ├── ClientStateError       misuse of the lifecycle (also a RuntimeError)
    │   └── ClientClosed       the client no longer takes commands
    ├── QueueFull              no room in the queue under the chosen overflow policy
    ├── SpoolError             the spool cannot keep a command (a full disk)
    ├── DeliveryFailed         a command's final outcome was not "accepted"
    ├── MissingExtra           an optional dependency is not installed (also an ImportError)
    └── RequestError           one HTTP request failed (.status, .request_id)
        ├── TransportError     the request did not get an HTTP answer
        │   └── RequestTimeout it took longer than the configured timeout
        │                      (also a TimeoutError)
        └── APIError           the API answered with an error (.errors, .body)
            ├── BadRequest     400/404/413 or 200 with "success": false: permanent
            ├── AuthError      401/403: credentials or permissions
            ├── RateLimited    429 (.retry_after): the API dropped the data
            └── ServerError    5xx: the API failed, retryable

``RequestError`` and its subclasses describe what happened to one request. The
pipeline never raises them at a caller that queued a command: they are retried or
folded into that command's ``DeliveryFailed`` (as ``.error`` and ``__cause__``).
``Client.system_time()`` raises them directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

FailureReason = Literal["rejected", "gave_up", "dropped", "closed", "kept", "filtered"]


class TrackError(Exception):
    """The root of every exception raised by trackasync."""


class ConfigError(TrackError, ValueError):
    """A client setting is invalid; raised when the client or a config is built."""


class MissingExtra(TrackError, ImportError):
    """A feature needs an optional dependency that is not installed.

    The message names the extra to install, e.g. ``pip install 'trackasync[otel]'``.
    """


class InvalidEvent(TrackError, ValueError):
    """The command given to ``track``/``update_customer`` cannot be sent as it is.

    Raised at the call, before anything is queued, so nothing already queued is
    affected. ``field`` names the argument or property at fault when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class PayloadTooLarge(InvalidEvent):
    """A command, or one of its property values, is over the API's size limit.

    ``size`` is the encoded size in bytes and ``limit`` the limit it broke.
    """

    def __init__(
        self, message: str, *, field: str | None = None, size: int, limit: int
    ) -> None:
        super().__init__(message, field=field)
        self.size = size
        self.limit = limit


class ClientStateError(TrackError, RuntimeError):
    """The client was used against its lifecycle (another event loop, reopened)."""


class ClientClosed(ClientStateError):
    """The client is closing or closed and takes no more commands."""


class QueueFull(TrackError):
    """The queue had no room: overflow policy "raise", or "wait" ran out of time.

    Nothing was queued by the call that raised it.
    """


class SpoolError(TrackError):
    """The spool cannot write a command to disk (the disk is full, or the file
    cannot be written).

    Raised by a durable ``track``/``update_customer`` whose command could not be
    committed. The command stays queued in memory and is sent as usual; the
    spool writes it as soon as the disk takes it again. What the spool held
    before is never lost.
    """


class RequestError(TrackError):
    """One HTTP request to the API failed.

    ``status`` is the HTTP status (``None`` without an answer) and ``request_id``
    the API's ``x-request-id`` header, when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id


class TransportError(RequestError):
    """The request got no HTTP answer: connection refused, reset or dropped."""


class RequestTimeout(TransportError, TimeoutError):
    """The request took longer than the configured timeout.

    Also a ``TimeoutError`` (so an ``OSError``), as Python's own timeouts are:
    ``except TimeoutError`` catches it.
    """


class APIError(RequestError):
    """The API answered with an error status or an error body.

    ``errors`` holds the API's own error strings, whatever shape the body had;
    ``body`` is the raw response body.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        errors: Sequence[str] = (),
        body: bytes = b"",
    ) -> None:
        super().__init__(message, status=status, request_id=request_id)
        self.errors = tuple(errors)
        self.body = body


class BadRequest(APIError):
    """The API refused the request or command as invalid; retrying cannot help."""


class AuthError(APIError):
    """401 or 403: the credentials are wrong or lack a permission."""


class RateLimited(APIError):
    """429: over the API's rate limit; the data was dropped, so it is retried.

    ``retry_after`` is the wait the API asked for, in seconds, when it said one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 429,
        request_id: str | None = None,
        errors: Sequence[str] = (),
        body: bytes = b"",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, status=status, request_id=request_id, errors=errors, body=body
        )
        self.retry_after = retry_after


class ServerError(APIError):
    """A 5xx answer: the API failed; the request is retried."""


class DeliveryFailed(TrackError):
    """A queued command ended without being accepted by the API.

    ``reason`` is one of:

    - ``"rejected"``: the API refused it; ``errors`` holds its own error strings;
    - ``"gave_up"``: retries ran out (attempts or deadline) on retryable failures;
    - ``"dropped"``: the overflow policy dropped it before it was sent;
    - ``"closed"``: the client closed before it could be delivered;
    - ``"kept"``: the client closed before it could be delivered, and the
      command stays in the spool: the next run on that spool sends it. It is
      counted in ``Stats.kept``, not in ``Stats.failed``.
    - ``"filtered"``: ``before_send`` dropped the event at its call; it was
      never queued, is counted in ``Stats.filtered``, not in ``Stats.failed``,
      and its handle is done as soon as the call returns.

    ``status``, ``attempts`` and ``request_id`` describe the last request that
    carried it, and ``error`` is that request's failure when it had one.
    """

    def __init__(
        self,
        reason: FailureReason,
        message: str,
        *,
        errors: Sequence[str] = (),
        status: int | None = None,
        attempts: int = 0,
        request_id: str | None = None,
        error: RequestError | None = None,
    ) -> None:
        super().__init__(message)
        self.reason: FailureReason = reason
        self.errors = tuple(errors)
        self.status = status
        self.attempts = attempts
        self.request_id = request_id
        self.error = error
        # Set here, not by "raise ... from": the same object is raised at every
        # await of its Delivery, and its cause must be there each time.
        self.__cause__ = error

    def _twin(self) -> DeliveryFailed:
        """A new failure equal to this one (made at the call: no ``error``).

        Built without ``__init__``, by copying the attributes in one step: at
        less than half the cost, which counts where one is made per command
        (commands dropped, or kept on disk only, during an outage).
        """
        twin = _new_exception(DeliveryFailed, *self.args)
        twin.__dict__.update(self.__dict__)
        return twin


_new_exception = BaseException.__new__
