"""Proactive throttling from Pipedrive's `x-ratelimit-*` headers.

Pipedrive limits bursts per rolling 2-second window and reports, on every response, how many
requests remain (`x-ratelimit-remaining`) and in how many seconds the window resets
(`x-ratelimit-reset`). We stop just before the window runs dry instead of collecting 429s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


class RateLimiter:
    """Shared by every thread of a run; sleeps before a request that would exceed the burst limit."""

    def __init__(
        self,
        reserve: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.reserve = reserve
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._remaining: float | None = None
        self._reset_at = 0.0
        self._in_flight = 0  # sent, no answer yet: a `remaining` header may not count them
        self.waited_seconds = 0.0
        self.throttled = 0

    def before_request(self) -> None:
        """Block until a request fits in the current window; count it against the window."""
        while True:
            with self._lock:
                now = self._clock()
                if self._remaining is None or now >= self._reset_at:
                    if self._remaining is not None and now >= self._reset_at:
                        self._remaining = None  # window over: the next response tells us more
                    self._in_flight += 1
                    return
                if self._remaining > self.reserve:
                    self._remaining -= 1
                    self._in_flight += 1
                    return
                wait = self._reset_at - now
                self.throttled += 1
            self.waited_seconds += wait
            self._sleep(wait)

    def after_response(self, headers: Mapping[str, str] | None) -> None:
        """Learn the window's state from a response (None: the request got no answer).

        Requests other threads still have in flight may have reached Pipedrive after this
        response's count was taken: they are subtracted, so parallel entities cannot overrun
        the window on a stale `remaining`.
        """
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            remaining = _header_number(headers or {}, "x-ratelimit-remaining")
            if remaining is None:
                return
            reset = _header_number(headers or {}, "x-ratelimit-reset")
            self._remaining = remaining - self._in_flight
            self._reset_at = self._clock() + (reset if reset is not None else 2.0)

    def wait(self, seconds: float) -> None:
        """Wait after a 429, and make every other thread wait too."""
        with self._lock:
            self._remaining = 0
            self._reset_at = max(self._reset_at, self._clock() + seconds)
        self.waited_seconds += seconds
        self._sleep(seconds)
