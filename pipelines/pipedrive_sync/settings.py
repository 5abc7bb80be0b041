"""Run settings, resolved from CLI flags, environment variables and dlt config/secrets.

Precedence: CLI flag > PIPEDRIVE_* environment variable > dlt config/secrets
(`.dlt/config.toml`, `.dlt/secrets.toml`, `SOURCES__PIPEDRIVE__*`) > default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dlt

from sources.pipedrive.context import SyncOptions
from sources.pipedrive.http import HttpSettings
from sources.pipedrive.http.client import DEFAULT_BASE_URL

from .exit_codes import ConfigError

SECTION = "sources.pipedrive"


def _config(key: str, default: Any = None, secret: bool = False) -> Any:
    """A value from dlt config or secrets under `sources.pipedrive`, or the default."""
    provider: Any = dlt.secrets if secret else dlt.config
    try:
        value: Any = provider.get(f"{SECTION}.{key}")
    except Exception:  # noqa: BLE001 - an unreadable provider is the same as "not set"
        value = None
    return default if value is None else value


def _flag(value: Any, key: str) -> bool:
    """A boolean setting; env vars arrive as text ("false", "0", "no")."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off", ""):
            return False
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return bool(value)


def _env_or_config(env: str, key: str, default: Any = None, secret: bool = False) -> Any:
    value = os.environ.get(env)
    if value not in (None, ""):
        return value
    return _config(key, default, secret)


def _minutes(value: Any, name: str) -> timedelta:
    try:
        return timedelta(minutes=float(value))
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number of minutes, got {value!r}") from None


# a long first sync commits every 200 pages per entity (100k rows): data and cursors together
DEFAULT_CHUNK_PAGES = 200
DEFAULT_TOKEN_URL = "https://oauth.pipedrive.com/oauth/token"


@dataclass
class OAuthSettings:
    """An installed OAuth app: client credentials and the (rotating) refresh token."""

    client_id: str
    client_secret: str = field(repr=False)
    refresh_token: str = field(repr=False)
    token_url: str = DEFAULT_TOKEN_URL
    token_store: Path | None = None  # default: next to dlt's working state


def default_data_dir() -> Path:
    """dlt's working directory: DLT_DATA_DIR, like dlt itself, else ~/.dlt."""
    data_dir = os.environ.get("DLT_DATA_DIR")
    return Path(data_dir) if data_dir else Path.home() / ".dlt"


# the dataset of destinations other than DuckDB when --dataset is not given
OTHER_DESTINATIONS_DATASET = "pipedrive"


def default_dataset_for(destination: str, duckdb_path: Path) -> str:
    """The dataset used without --dataset: DuckDB's `main` (any client's default schema), or
    the older `pipedrive` that an existing file holds; `pipedrive` elsewhere."""
    if destination != "duckdb":
        return OTHER_DESTINATIONS_DATASET
    from .warehouse import peek_default_dataset

    return peek_default_dataset(duckdb_path)


# API tokens one run may spend on the history backfill (20 per deal): the day's syncs keep theirs
DEFAULT_BACKFILL_MAX_TOKENS = 10_000

# how long a run waits for a DuckDB file that another dataset's run holds
DEFAULT_LOCK_WAIT_SECONDS = 60.0


@dataclass
class RunSettings:
    """Everything one `pipedrive-sync run` needs."""

    token: str = field(repr=False, default="")
    oauth: OAuthSettings | None = None
    base_url: str = DEFAULT_BASE_URL
    base_url_explicit: bool = False
    entities: list[str] | None = None
    destination: str = "duckdb"
    duckdb_path: Path = Path("pipedrive.duckdb")
    # "" = the default: DuckDB `main` (or the older `pipedrive` a file already holds, see
    # `warehouse.default_dataset`), `pipedrive` on other destinations
    dataset: str = ""
    dataset_explicit: bool | None = None  # given by the user (else the run may detect it)
    full_refresh: bool = False
    force_reconcile: bool = False
    reconcile_interval: timedelta = timedelta(hours=24)
    daily_token_budget: int | None = None  # the company's, for `status -f openmetrics`
    start_date_asked: bool = False  # --start-date given: say so when it cannot apply
    options: SyncOptions = field(default_factory=SyncOptions)
    http: HttpSettings = field(default_factory=HttpSettings)
    lock_wait: float = DEFAULT_LOCK_WAIT_SECONDS
    data_dir: Path = field(default_factory=default_data_dir)
    backfill_history: bool = False  # read older deal history from the changelogs this run
    backfill_max_tokens: int = DEFAULT_BACKFILL_MAX_TOKENS

    def __post_init__(self) -> None:
        if self.dataset_explicit is None:
            self.dataset_explicit = bool(self.dataset)
        if not self.dataset:
            self.dataset = default_dataset_for(self.destination, self.duckdb_path)

    @property
    def pipelines_dir(self) -> Path:
        """Where dlt's local working state lives (under DLT_DATA_DIR)."""
        return self.data_dir / "pipelines"


def resolve(
    *,
    entities: str | None = None,
    destination: str | None = None,
    duckdb_path: str | None = None,
    dataset: str | None = None,
    full_refresh: bool = False,
    start_date: str | None = None,
    refresh_fields: bool = False,
    hard_deletes: bool | None = None,
    reconcile: bool = False,
    refresh_all: bool = False,
    require_token: bool = True,
    backfill_history: bool = False,
    backfill_max_tokens: int | None = None,
) -> RunSettings:
    """Build RunSettings; raises ConfigError with a one-line fix for anything missing or invalid."""
    token = _env_or_config("PIPEDRIVE_API_TOKEN", "api_token", secret=True)
    oauth = None if token else _oauth_settings()
    if require_token and not token and oauth is None:
        raise ConfigError(
            "no Pipedrive credentials: set PIPEDRIVE_API_TOKEN (or sources.pipedrive.api_token in"
            " .dlt/secrets.toml), or an OAuth app's PIPEDRIVE_CLIENT_ID, PIPEDRIVE_CLIENT_SECRET"
            " and PIPEDRIVE_REFRESH_TOKEN"
        )
    entity_list = None
    raw_entities = entities or _config("entities")
    if raw_entities:
        if isinstance(raw_entities, str):
            entity_list = [e.strip() for e in raw_entities.split(",") if e.strip()]
        else:
            entity_list = [str(e) for e in raw_entities]
        from sources.pipedrive.entities import select_entities

        try:
            select_entities(entity_list)
        except ValueError as exc:
            raise ConfigError(f"--entities: {exc}") from None

    options = SyncOptions(
        start_date=start_date or _config("start_date"),
        chunk_pages=_optional_int(_config("chunk_pages", DEFAULT_CHUNK_PAGES), "chunk_pages"),
        fields_refresh=_minutes(_config("fields_refresh_minutes", 360), "fields_refresh_minutes"),
        refresh_overrides=_refresh_overrides(_config("refresh_minutes")),
        refresh_all=refresh_all,
        force_fields_refresh=refresh_fields,
        hard_deletes=(
            _flag(_config("hard_deletes", False), "hard_deletes")
            if hard_deletes is None
            else hard_deletes
        ),
        columnar=_flag(_config("columnar", True), "columnar"),
        parallel_entities=_optional_int(
            _config("parallel_entities", SyncOptions.parallel_entities), "parallel_entities"
        )
        or SyncOptions.parallel_entities,
    )
    if options.start_date:
        _check_timestamp(options.start_date)
    http = HttpSettings(
        connect_timeout=_number("connect_timeout", HttpSettings.connect_timeout, float),
        read_timeout=_number("read_timeout", HttpSettings.read_timeout, float),
        max_attempts=_number("max_attempts", HttpSettings.max_attempts, int),
        backoff_base=_number("backoff_base", HttpSettings.backoff_base, float),
        backoff_max=_number("backoff_max", HttpSettings.backoff_max, float),
        max_rate_limit_wait=_number("max_rate_limit_wait", HttpSettings.max_rate_limit_wait, float),
        page_limit=min(500, _number("page_limit", HttpSettings.page_limit, int)),
        prefetch=_number("prefetch_pages", HttpSettings.prefetch, int),
        decode_threads=_number("decode_threads", HttpSettings.decode_threads, int),
    )
    base_url = _env_or_config("PIPEDRIVE_BASE_URL", "base_url", None)
    if base_url is not None:
        validate_base_url(str(base_url))
    chosen_dataset = dataset or _config("dataset")
    return RunSettings(
        token=token or "",
        oauth=oauth,
        base_url=base_url or DEFAULT_BASE_URL,
        base_url_explicit=base_url is not None,
        entities=entity_list,
        destination=destination or _config("destination", "duckdb"),
        duckdb_path=Path(duckdb_path or _config("duckdb_path", "pipedrive.duckdb")),
        dataset=str(chosen_dataset or ""),
        full_refresh=full_refresh,
        force_reconcile=reconcile,
        reconcile_interval=_minutes(
            float(_config("reconcile_interval_hours", 24)) * 60, "reconcile_interval_hours"
        ),
        options=options,
        http=http,
        lock_wait=_number("lock_wait_seconds", DEFAULT_LOCK_WAIT_SECONDS, float),
        daily_token_budget=_optional_int(_config("daily_token_budget"), "daily_token_budget"),
        start_date_asked=start_date is not None,
        backfill_history=backfill_history,
        backfill_max_tokens=_optional_int(
            backfill_max_tokens
            if backfill_max_tokens is not None
            else _config("backfill_max_tokens", DEFAULT_BACKFILL_MAX_TOKENS),
            "backfill_max_tokens",
        )
        or DEFAULT_BACKFILL_MAX_TOKENS,
    )


def validate_base_url(value: str) -> None:
    """An http(s) URL with a host, or a bare host name (https is assumed); raises ConfigError.

    A host with a port but no scheme (`127.0.0.1:8765`) is refused: that is a local or proxy
    server, whose scheme cannot be guessed.
    """
    text = value.strip()
    if "://" not in text:
        if ":" in text.split("/", 1)[0]:
            raise ConfigError(
                f"PIPEDRIVE_BASE_URL {value!r} has no scheme: write https://{text}, or"
                f" http://{text} for a plain-HTTP server"
            )
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(
            f"PIPEDRIVE_BASE_URL {value!r}: the scheme must be https:// (or http://),"
            f" not {parts.scheme}://"
        )
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise ConfigError(f"PIPEDRIVE_BASE_URL {value!r} has an invalid port") from None
    if not parts.hostname:
        raise ConfigError(
            f"PIPEDRIVE_BASE_URL {value!r} has no host: write e.g. https://api.pipedrive.com"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"PIPEDRIVE_BASE_URL {value!r}: give the API root only, without ? or #")


def _refresh_overrides(value: Any) -> dict[str, timedelta]:
    """`sources.pipedrive.refresh_minutes = {users = 60, files = 15}`: per-entity cadences."""
    if not value:
        return {}
    if not isinstance(value, dict):
        raise ConfigError("refresh_minutes must be a table of entity = minutes")
    from sources.pipedrive.entities import ENTITY_BY_NAME

    unknown = sorted(set(value) - set(ENTITY_BY_NAME))
    if unknown:
        raise ConfigError(f"refresh_minutes names unknown entities: {', '.join(unknown)}")
    return {name: _minutes(minutes, f"refresh_minutes.{name}") for name, minutes in value.items()}


def _oauth_settings() -> OAuthSettings | None:
    """OAuth app credentials, when all three are configured (a partial set is an error)."""
    values = {
        "client_id": _env_or_config("PIPEDRIVE_CLIENT_ID", "oauth.client_id", secret=True),
        "client_secret": _env_or_config(
            "PIPEDRIVE_CLIENT_SECRET", "oauth.client_secret", secret=True
        ),
        "refresh_token": _env_or_config(
            "PIPEDRIVE_REFRESH_TOKEN", "oauth.refresh_token", secret=True
        ),
    }
    present = {k for k, v in values.items() if v}
    if not present:
        return None
    if present != set(values):
        missing = ", ".join(sorted(set(values) - present))
        raise ConfigError(f"incomplete OAuth configuration: missing {missing}")
    store = _env_or_config("PIPEDRIVE_OAUTH_TOKEN_STORE", "oauth.token_store")
    return OAuthSettings(
        client_id=str(values["client_id"]),
        client_secret=str(values["client_secret"]),
        refresh_token=str(values["refresh_token"]),
        token_url=str(
            _env_or_config("PIPEDRIVE_OAUTH_TOKEN_URL", "oauth.token_url", DEFAULT_TOKEN_URL)
        ),
        token_store=Path(store) if store else None,
    )


def _as_number(value: Any, name: str, kind: type[int] | type[float]) -> Any:
    """`value` as `kind`; a bad one is named in a one-line error."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{name} must be {what}, got {value!r}") from None


def _number(key: str, default: float, kind: type[int] | type[float]) -> Any:
    """A numeric setting, 0 or more."""
    number = _as_number(_config(key, default), key, kind)
    if number < 0:
        raise ConfigError(f"{key} must not be negative, got {number}")
    return number


def _optional_int(value: Any, name: str) -> int | None:
    """A positive whole number, or None when unset."""
    if value in (None, ""):
        return None
    number: int = _as_number(value, name, int)
    if number <= 0:
        raise ConfigError(f"{name} must be positive, got {number}")
    return number


def _check_timestamp(value: str) -> None:
    from sources.pipedrive.convert import iso_datetime  # how the sync reads it

    try:
        iso_datetime(value)
    except ValueError:
        raise ConfigError(
            f"start date {value!r} is not an ISO date or RFC 3339 time (e.g. 2024-01-01T00:00:00Z)"
        ) from None
