"""Keep secrets out of every message, log line and exception this project produces."""

from __future__ import annotations

import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()

# query parameters and headers that carry credentials, whatever their value
_SECRET_PARAM = re.compile(
    r"(?i)(api_token|access_token|refresh_token|client_secret|x-api-token|authorization)"
    r"([=:]\s*(?:Bearer\s+|Basic\s+)?)([^&\s,'\"]+)"
)

# a password in a URL's user info: postgresql://loader:secret@db/analytics
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+@", re.IGNORECASE)


def register_secret(value: str | None) -> None:
    """Remember a secret so `redact` masks it anywhere it appears."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """`text` with every registered secret and credential-looking parameter masked."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
