"""Pipedrive's API: requests and their envelopes, pages, prefetching and metrics. Each attempt
goes through `transport.py`; what it leads to is `policy.py`'s decision."""

from __future__ import annotations

import email.utils
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import urlencode

import orjson

from ..entities import API_PREFIX, Api
from .auth import Auth
from .errors import BadResponse, PipedriveError, RunStopped, TemporaryError
from .jsonbody import clean as clean_json
from .paginators import Paginator
from .policy import Accept, Decision, Fail, RenewAuth, RequestPolicy, json_object, not_json
from .ratelimit import STOP_POLL_SECONDS, RateLimiter
from .redact import redact
from .transport import HttpSettings, RequestMetrics, Transport

DEFAULT_BASE_URL = "https://api.pipedrive.com"


class PageItems:
    """A page's items, in the form the page was read in: parsed rows (`RowItems`) or decoded
    by a `Decoder` into another form (e.g. arrow columns). Consumers ask for what they need
    (`rows`, `len`, `resolve`) whatever the form."""

    joinable = True  # consecutive pages of this form may be converted together (`joined`)

    def __len__(self) -> int:
        raise NotImplementedError

    def rows(self) -> list[dict[str, Any]]:
        """The items as parsed JSON objects."""
        raise NotImplementedError

    def resolve(self) -> PageItems:
        """The items in their final form (waits for a decode still under way)."""
        return self

    def on_count(self, callback: Callable[[int], None]) -> None:
        """Call `callback(number of items)` once they are known."""
        callback(len(self))

    @classmethod
    def joined(cls, parts: Sequence[PageItems]) -> PageItems | None:
        """Several pages' items as one (processed together), or None where they cannot be."""
        return None


class RowItems(list[dict[str, Any]], PageItems):
    """Items already parsed into rows: the list itself, for the exact path as it is."""

    joinable = False

    def rows(self) -> list[dict[str, Any]]:
        return self


def page_items(data: list[dict[str, Any]] | PageItems) -> PageItems:
    """A page's `data` as `PageItems` (a parsed list becomes `RowItems`)."""
    return data if isinstance(data, PageItems) else RowItems(data)


class DeferredItems(PageItems):
    """Items still being decoded in the client's decode thread.

    The next page was requested as soon as the envelope's tail gave its cursor. A body that
    turns out not to be a valid page is fetched again with the usual validation and retries,
    so deferring never weakens what a bad response does.
    """

    def __init__(
        self,
        pending: Future[PageItems],
        refetch: Callable[[], dict[str, Any]],
        envelope: dict[str, Any],
        what: str,
    ) -> None:
        self._pending = pending
        self._refetch = refetch
        self._envelope = envelope
        self._what = what
        self._items: PageItems | None = None
        self._counters: list[Callable[[int], None]] = []

    def resolve(self) -> PageItems:
        if self._items is None:
            try:
                items = page_items(self._pending.result())
            except (PipedriveError, ValueError):
                body = self._refetch()
                if body.get("additional_data") != self._envelope.get("additional_data"):
                    # the next page was asked for with what the bad body said
                    raise TemporaryError(
                        f"{self._what}: a bad response pointed elsewhere than the page read"
                        " again; the next run continues from the last good page"
                    ) from None
                data = body.get("data")
                items = RowItems(data if isinstance(data, list) else [])
            self._items = items
            for callback in self._counters:
                callback(len(items))
        return self._items

    def __len__(self) -> int:
        return len(self.resolve())

    def rows(self) -> list[dict[str, Any]]:
        return self.resolve().rows()

    def on_count(self, callback: Callable[[int], None]) -> None:
        if self._items is None:
            self._counters.append(callback)
        else:
            callback(len(self._items))


_PEEK_LIMIT = 65_536  # an envelope tail longer than this is not worth peeking at


def peek_envelope(content: bytes) -> dict[str, Any] | None:
    """`{"additional_data": ...}` from the end of a list body, without parsing the records;
    None when the body does not end with it (then it is parsed in full, as usual)."""
    start = content.rfind(b'"additional_data"')
    if start < 0 or len(content) - start > _PEEK_LIMIT:
        return None
    try:
        tail = orjson.loads(b"{" + content[start:])
    except orjson.JSONDecodeError:
        return None
    extra = tail.get("additional_data") if isinstance(tail, dict) else None
    return {"additional_data": extra} if isinstance(extra, dict) else None


# content -> the envelope (its `data` a list or PageItems), or None for the plain JSON parse
Decoder = Callable[[bytes], "dict[str, Any] | None"]


@dataclass
class Page:
    """One list response: its items and where the next page starts (for resuming)."""

    items: PageItems
    body: dict[str, Any]
    request: str
    next_position: Any
    is_last: bool
    server_time: datetime | None = None

    def __post_init__(self) -> None:
        self.items = page_items(self.items)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The items as parsed JSON objects, whatever form the decoder gave them."""
        return self.items.rows()


def normalize_base_url(url: str | None) -> str:
    """`https://x.pipedrive.com`, with any `/v1` or `/api/v2` suffix and trailing slash removed."""
    url = (url or DEFAULT_BASE_URL).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = "https://" + url
    for suffix in ("/api/v2", "/api/v1", "/v1", "/v2"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    return url


def _parse_http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


class PipedriveClient:
    """GETs JSON from Pipedrive with auth, throttling, bounded retries and one status table."""

    def __init__(
        self,
        base_url: str | None,
        auth: Auth,
        settings: HttpSettings | None = None,
        limiter: RateLimiter | None = None,
        metrics: RequestMetrics | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.auth = auth
        self.settings = settings or HttpSettings()
        self.metrics = metrics or RequestMetrics()
        self.stop_event = stop_event or threading.Event()
        self._own_limiter = limiter is None
        self.limiter = limiter or RateLimiter(
            reserve=self.settings.ratelimit_reserve, stop_event=self.stop_event
        )
        self.transport = Transport(self.settings, self.limiter, self.metrics, self.stop_event)
        auth.use_transport(self.transport)
        self._decoder: ThreadPoolExecutor | None = None
        self._decoder_lock = threading.Lock()

    def renew(self) -> None:
        """New counters and a new stop flag for the next piece of work (a listener's batch or
        poll), on the same credentials, rate limiter and connections: the transport, which
        counts retries and waits them out, and the client's own limiter follow."""
        self.metrics = RequestMetrics()
        self.stop_event = threading.Event()
        self.transport.metrics = self.metrics
        self.transport.stop_event = self.stop_event
        if self._own_limiter:
            self.limiter.stop_event = self.stop_event

    # -- plumbing -------------------------------------------------------------------------
    def url(self, api: Api, path: str) -> str:
        return f"{self.base_url}{API_PREFIX[api]}/{path.lstrip('/')}"

    def describe(self, api: Api, path: str, params: Mapping[str, Any], method: str = "GET") -> str:
        query = urlencode(params) if params else ""
        return redact(f"{method} {API_PREFIX[api]}/{path}" + (f"?{query}" if query else ""))

    # -- one request ----------------------------------------------------------------------
    def get_json(
        self,
        api: Api,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        cost: int,
        label: str,
        decode: Decoder | None = None,
    ) -> tuple[dict[str, Any], Mapping[str, str]]:
        """GET one page; returns the parsed envelope and the response headers.

        Retries transient failures with backoff, waits out 429s, and raises one of the
        `PipedriveError` subclasses (with a one-line, secret-free message) otherwise.
        """
        return self.request_json("GET", api, path, params, cost=cost, label=label, decode=decode)

    def request_json(
        self,
        method: str,
        api: Api,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        body: Mapping[str, Any] | None = None,
        cost: int,
        label: str,
        decode: Decoder | None = None,
    ) -> tuple[dict[str, Any], Mapping[str, str]]:
        """`get_json` for any method (`body`: sent as JSON); only a GET's envelope must hold
        `data` (a DELETE answers without one). What each attempt leads to is `RequestPolicy`'s
        decision; this method carries it out, each attempt sent through `transport`."""
        params = dict(params or {})
        url = self.url(api, path)
        what = f"{label}: {self.describe(api, path, params, method)}"
        policy = RequestPolicy(self.settings, what)
        refetch = partial(self._refetch, api, path, params, cost, label)
        while True:
            headers = self.auth.headers()
            sent = self.transport.attempt(
                policy,
                method,
                url,
                f"PIPEDRIVE_BASE_URL {self.base_url}",
                params=params,
                json=body,
                headers=headers,
            )
            decision = sent.decision
            if sent.response is not None:
                self.metrics.record(label, cost)
            if sent.response is not None and isinstance(decision, Accept):
                self.metrics.note_answered(label)
                content = sent.response.content
                parsed = self._read_answer(content, method, what, decode, refetch)
                if parsed is not None:
                    return parsed, sent.response.headers
                decision = policy.on_failure(not_json(content))
            self._carry_out(decision, headers, label)

    def _read_answer(
        self,
        content: bytes,
        method: str,
        what: str,
        decode: Decoder | None,
        refetch: Callable[[], dict[str, Any]],
    ) -> dict[str, Any] | None:
        """A successful answer's envelope (None: the body is no JSON object)."""
        content = clean_json(content)  # nothing downstream sees bad text
        parsed = None
        if decode is not None:
            parsed = self._deferred(content, decode, what, refetch) or decode(content)
        if parsed is None:
            parsed = json_object(content)
        if parsed is not None and method == "GET":
            self._check_envelope(parsed, what)
        return parsed

    def _carry_out(self, decision: Decision, headers: Mapping[str, str], label: str) -> None:
        """Raise, renew the credentials, or wait before the next attempt."""
        if isinstance(decision, Fail):
            raise decision.error
        if isinstance(decision, RenewAuth):
            if not self.auth.on_unauthorized(headers):
                raise decision.otherwise
            return
        if isinstance(decision, Accept):  # an accepted answer is returned, never carried out
            raise AssertionError("an accepted answer reached the retry path")
        self.transport.wait(decision, label)

    def _deferred(
        self, content: bytes, decode: Decoder, what: str, refetch: Callable[[], dict[str, Any]]
    ) -> dict[str, Any] | None:
        """The page's envelope with its items decoding in the decode thread, so that the next
        request goes out at once; None if the body's tail does not give the envelope."""
        envelope = peek_envelope(content)
        if envelope is None:
            return None
        with self._decoder_lock:
            if self._decoder is None:
                self._decoder = ThreadPoolExecutor(
                    max(1, self.settings.decode_threads), thread_name_prefix="pipedrive-decode"
                )
            pending = self._decoder.submit(self._decode_items, content, decode, what)
        return {**envelope, "data": DeferredItems(pending, refetch, envelope, what)}

    def _refetch(
        self, api: Api, path: str, params: Mapping[str, Any], cost: int, label: str
    ) -> dict[str, Any]:
        return self.get_json(api, path, params, cost=cost, label=label)[0]

    def _decode_items(self, content: bytes, decode: Decoder, what: str) -> PageItems:
        body = decode(content)
        if body is None:
            body = orjson.loads(content)
            if not isinstance(body, dict):
                raise BadResponse(f"{what}: the response is not a JSON object")
        self._check_envelope(body, what)
        data = body.get("data")
        if isinstance(data, list | PageItems):
            return page_items(data)
        raise BadResponse(f"{what}: 'data' is not a list")

    @staticmethod
    def _check_envelope(body: dict[str, Any], what: str) -> None:
        if body.get("success") is False:
            raise BadResponse(f"{what}: Pipedrive answered success=false: {body.get('error')!r}")
        if "data" not in body:
            raise BadResponse(f"{what}: the response has no 'data' member")

    # -- pagination -----------------------------------------------------------------------
    def iter_pages(
        self,
        api: Api,
        path: str,
        params: Mapping[str, Any] | None,
        paginator: Paginator,
        *,
        cost: int,
        label: str,
        data_key: str | None = None,
        decode: Decoder | None = None,
    ) -> Iterator[Page]:
        """Every page of a list, fetched ahead of the consumer when `prefetch` > 0.

        `data_key`: the items are in `data[data_key]` (e.g. goals) rather than in `data`.
        `decode`: turns a page body into its envelope in the fetching thread (see `Decoder`).
        """
        pages = self._pages(
            api,
            path,
            dict(params or {}),
            paginator,
            cost=cost,
            label=label,
            data_key=data_key,
            decode=decode,
        )
        if self.settings.prefetch <= 0:
            yield from pages
            return
        yield from _prefetched(pages, self.settings.prefetch, self.stop_event)

    def iter_lists(
        self,
        api: Api,
        lists: Sequence[tuple[str, Mapping[str, Any]]],
        paginator: Callable[[], Paginator],
        *,
        cost: int,
        label: str,
        data_key: str | None = None,
    ) -> Iterator[list[Page]]:
        """Several independent lists (path, params), e.g. one per batch of parent ids: each
        list's pages, in the order given, with up to `prefetch` lists in flight at once (one
        request after another would wait out a round trip each). A failure is raised where its
        list comes, after the lists before it."""

        def read(path: str, params: Mapping[str, Any]) -> list[Page]:
            return list(
                self._pages(
                    api, path, dict(params), paginator(), cost=cost, label=label, data_key=data_key
                )
            )

        width = max(1, self.settings.prefetch)
        if width == 1 or len(lists) <= 1:
            for path, params in lists:
                yield read(path, params)
            return
        pool = ThreadPoolExecutor(
            max_workers=min(width, len(lists)), thread_name_prefix="pipedrive-lists"
        )
        pending: deque[Future[list[Page]]] = deque()
        try:
            for path, params in lists:
                pending.append(pool.submit(read, path, params))
                if len(pending) >= width:
                    yield self._result(pending.popleft())
            while pending:
                yield self._result(pending.popleft())
        finally:
            # a stopping run does not wait for answers still under way (daemon-like threads)
            pool.shutdown(wait=not self.stop_event.is_set(), cancel_futures=True)

    def _result(self, future: Future[list[Page]]) -> list[Page]:
        """A list's pages, unless the run stops first (its requests may hang until a timeout)."""
        while True:
            try:
                return future.result(timeout=STOP_POLL_SECONDS)
            except TimeoutError:
                if self.stop_event.is_set():
                    raise RunStopped("the run is stopping; not waiting for answers") from None

    def _pages(
        self,
        api: Api,
        path: str,
        params: dict[str, Any],
        paginator: Paginator,
        *,
        cost: int,
        label: str,
        data_key: str | None = None,
        decode: Decoder | None = None,
    ) -> Iterator[Page]:
        page_params: dict[str, Any] | None = {**params, **paginator.first_params()}
        while page_params is not None:
            body, headers = self.get_json(
                api, path, page_params, cost=cost, label=label, decode=decode
            )
            data = body.get("data")
            if data_key is not None and isinstance(data, dict):
                data = data.get(data_key)
            if data is None:
                data = []
            if not isinstance(data, list | PageItems):
                raise BadResponse(
                    f"{label}: {self.describe(api, path, page_params)}: 'data' is a "
                    f"{type(data).__name__}, expected a list"
                )
            items = page_items(data)
            request = self.describe(api, path, page_params)
            following = paginator.next_params(body, items)
            items.on_count(partial(self.metrics.add_rows, label))
            yield Page(
                items=items,
                body=body,
                request=request,
                next_position=paginator.position,
                is_last=following is None,
                server_time=_parse_http_date(headers.get("date")),
            )
            page_params = None if following is None else {**params, **following}


_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _next_slot(slots: queue.Queue[object], stop: threading.Event) -> object:
    while True:
        try:
            return slots.get(timeout=STOP_POLL_SECONDS)
        except queue.Empty:
            if stop.is_set():
                raise RunStopped("the run is stopping; not waiting for the answer") from None


def _prefetched(pages: Iterator[Page], depth: int, stop: threading.Event) -> Iterator[Page]:
    """Run `pages` in a thread `depth` pages ahead, so HTTP overlaps the consumer's work.

    When the run stops, the pages already here are handed out and the request under way is
    left behind (its daemon thread ends with its answer or its timeout)."""
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    closed = threading.Event()

    def put(item: object) -> bool:
        while not closed.is_set():
            try:
                slots.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for page in pages:
                if not put(page):
                    return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(_Failure(exc))

    worker = threading.Thread(target=produce, name="pipedrive-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = _next_slot(slots, stop)
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            assert isinstance(item, Page)
            yield item
    finally:
        closed.set()
