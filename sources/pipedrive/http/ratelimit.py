"""Proactive throttling from Pipedrive's `x-ratelimit-*` headers.

Pipedrive limits bursts per rolling 2-second window and reports, on every response, how many
requests remain (`x-ratelimit-remaining`) and in how many seconds the window resets
(`x-ratelimit-reset`). We stop just before the window runs dry instead of collecting 429s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from .errors import RunStopped


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


WINDOW_SECONDS = 2.0  # Pipedrive's burst window
FIRST_ANSWER_WAIT = 10.0  # seconds the others wait for the first request's answer, at most
STOP_POLL_SECONDS = 0.2  # how often a wait looks whether the run is stopping


class RateLimiter:
    """Shared by every thread of a run; sleeps before a request that would exceed the burst limit."""

    def __init__(
        self,
        reserve: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.reserve = reserve
        self._clock = clock
        # waits end at once when the run is stopping (a 429 can ask for up to two minutes)
        self.stop_event = stop_event or threading.Event()
        self._sleep = sleep or self._stoppable_sleep
        self._lock = threading.Lock()
        self._answered = threading.Condition(self._lock)
        self._first_answer = False  # until then one request at a time: it tells the window
        self._remaining: float | None = None
        self._reset_at = 0.0
        self._in_flight = 0  # sent, no answer yet: a `remaining` header may not count them
        self._limit: float | None = None  # the window's size (`x-ratelimit-limit`), once known
        self._generation = 0  # which window (as this process knows it) a request was sent in
        self.waited_seconds = 0.0
        self.throttled = 0

    def before_request(self) -> int:
        """Block until a request fits in the current window; count it against the window.

        Returns the window's generation, to hand back to `after_response` with the answer.
        """
        while True:
            with self._lock:
                if not self._first_answer and self._in_flight:
                    # parallel entities start together: learn the window before they all go
                    self._wait_first_answer()
                    continue
                now = self._clock()
                if self._remaining is not None and now >= self._reset_at:
                    self._start_window(now)
                if self._remaining is None:
                    self._in_flight += 1
                    return self._generation
                if self._remaining > self.reserve:
                    self._remaining -= 1
                    self._in_flight += 1
                    return self._generation
                wait = self._reset_at - now
                self.throttled += 1
            self.waited_seconds += wait
            self._pause(wait)

    def _start_window(self, now: float) -> None:
        """(Holding the lock) a new window: as big as the last one said, less the requests still
        in flight (they may reach Pipedrive in it), until an answer sent in it tells more.
        Letting every thread through until then overran it with 429s. One request always
        goes, however many are in flight: a window never passes without progress."""
        self._generation += 1
        if self._limit is None:
            self._remaining = None
        else:
            self._remaining = max(self._limit - self._in_flight, self.reserve + 1)
        self._reset_at = now + WINDOW_SECONDS

    def _wait_first_answer(self) -> None:
        """(Holding the lock) wait for the first answer, at most FIRST_ANSWER_WAIT seconds."""
        deadline = time.monotonic() + FIRST_ANSWER_WAIT
        while not self._first_answer:
            self._raise_if_stopping()
            left = deadline - time.monotonic()
            if left <= 0:
                self._first_answer = True  # no answer in time: stop holding back
                return
            self._answered.wait(timeout=min(left, STOP_POLL_SECONDS))

    def _stoppable_sleep(self, seconds: float) -> None:
        self.stop_event.wait(seconds)

    def _raise_if_stopping(self) -> None:
        if self.stop_event.is_set():
            raise RunStopped("the run is stopping; no further requests")

    def _pause(self, seconds: float) -> None:
        self._raise_if_stopping()
        self._sleep(seconds)
        self._raise_if_stopping()

    def after_response(self, headers: Mapping[str, str] | None, sent_in: int | None = None) -> None:
        """Learn the window's state from an answer (None: the request got no answer).

        `sent_in` is what `before_request` returned. Requests other threads still have in
        flight may have reached Pipedrive after this answer's count was taken: they are
        subtracted. Answers are handled in any order under load, so within a window the count
        only goes down; an answer to a request sent in an earlier window tells nothing new.
        """
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            self._first_answer = True
            self._answered.notify_all()
            remaining = _header_number(headers or {}, "x-ratelimit-remaining")
            if remaining is None:
                return
            self._limit = _header_number(headers or {}, "x-ratelimit-limit")
            sent_in = self._generation if sent_in is None else sent_in
            if sent_in < self._generation:
                return
            reset = _header_number(headers or {}, "x-ratelimit-reset")
            left = remaining - self._in_flight
            self._remaining = left if self._remaining is None else min(self._remaining, left)
            self._reset_at = self._clock() + (reset if reset is not None else WINDOW_SECONDS)

    def wait(self, seconds: float) -> None:
        """Wait after a 429, and make every other thread wait too."""
        with self._lock:
            self._remaining = 0
            self._reset_at = max(self._reset_at, self._clock() + seconds)
        self.waited_seconds += seconds
        self._pause(seconds)
