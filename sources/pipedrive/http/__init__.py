"""HTTP layer: client, auth, paginators, rate limiting, status table, redaction."""

from .auth import ApiTokenAuth, Auth, FileTokenStore, OAuthAuth, OAuthError, TokenStore
from .client import Page, PipedriveClient
from .errors import (
    AuthError,
    BadResponse,
    BaseUrlError,
    BudgetExhausted,
    EntityUnavailable,
    PipedriveError,
    RequestFailed,
    RunStopped,
    StopRequested,
    TemporaryError,
)
from .paginators import CursorPaginator, OffsetPaginator, Paginator, SinglePage
from .ratelimit import RateLimiter
from .redact import redact, register_secret
from .transport import HttpSettings, RequestMetrics

__all__ = [
    "ApiTokenAuth",
    "Auth",
    "AuthError",
    "BadResponse",
    "BaseUrlError",
    "BudgetExhausted",
    "CursorPaginator",
    "EntityUnavailable",
    "FileTokenStore",
    "HttpSettings",
    "OAuthAuth",
    "OAuthError",
    "OffsetPaginator",
    "Page",
    "Paginator",
    "PipedriveClient",
    "PipedriveError",
    "RateLimiter",
    "RequestFailed",
    "RequestMetrics",
    "RunStopped",
    "SinglePage",
    "StopRequested",
    "TemporaryError",
    "TokenStore",
    "redact",
    "register_secret",
]
