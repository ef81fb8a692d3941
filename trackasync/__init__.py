"""asyncio client for the Bloomreach Engagement Tracking API.

Everything public is importable from here; the submodules are private.
"""

from . import _logging
from ._auth import PrivateKey as PrivateKey, PublicToken as PublicToken
from ._client import Client as Client
from ._config import Limits as Limits, Retry as Retry
from ._delivery import Delivery as Delivery, Receipt as Receipt
from ._exceptions import (
    APIError as APIError,
    AuthError as AuthError,
    BadRequest as BadRequest,
    ClientClosed as ClientClosed,
    ClientStateError as ClientStateError,
    ConfigError as ConfigError,
    DeliveryFailed as DeliveryFailed,
    InvalidEvent as InvalidEvent,
    MissingExtra as MissingExtra,
    PayloadTooLarge as PayloadTooLarge,
    QueueFull as QueueFull,
    RateLimited as RateLimited,
    RequestError as RequestError,
    RequestTimeout as RequestTimeout,
    ServerError as ServerError,
    SpoolError as SpoolError,
    TrackError as TrackError,
    TransportError as TransportError,
)
from ._metrics import (
    otel_metrics as otel_metrics,
    prometheus_metrics as prometheus_metrics,
)
from ._options import Durability as Durability, Mode as Mode
from ._pipeline import ClientState as ClientState
from ._shape import BeforeSend as BeforeSend, Event as Event
from ._signals import close_on_sigterm as close_on_sigterm
from ._stats import (
    CloseReport as CloseReport,
    FlushResult as FlushResult,
    Stats as Stats,
)
from ._sync import SyncClient as SyncClient, SyncDelivery as SyncDelivery
from ._table import Overflow as Overflow
from ._transport import (
    AiohttpTransport as AiohttpTransport,
    Request as Request,
    Response as Response,
    Transport as Transport,
)
from ._version import VERSION as __version__

__all__ = (
    "AiohttpTransport",
    "APIError",
    "AuthError",
    "BadRequest",
    "BeforeSend",
    "Client",
    "ClientClosed",
    "ClientState",
    "ClientStateError",
    "close_on_sigterm",
    "CloseReport",
    "ConfigError",
    "Delivery",
    "DeliveryFailed",
    "Durability",
    "Event",
    "FlushResult",
    "InvalidEvent",
    "Limits",
    "MissingExtra",
    "Mode",
    "otel_metrics",
    "Overflow",
    "PayloadTooLarge",
    "PrivateKey",
    "prometheus_metrics",
    "PublicToken",
    "QueueFull",
    "RateLimited",
    "Receipt",
    "Request",
    "RequestError",
    "RequestTimeout",
    "Response",
    "Retry",
    "ServerError",
    "SpoolError",
    "Stats",
    "SyncClient",
    "SyncDelivery",
    "TrackError",
    "Transport",
    "TransportError",
    "__version__",
)

# Every line the library logs names it and escapes control characters (see
# _logging): a filter on its own logger only, no handler, no level.
_logging.install()
