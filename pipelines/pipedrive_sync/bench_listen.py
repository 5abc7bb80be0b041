"""How fast `pipedrive-sync listen` makes a change visible, at what API cost, in what memory.

    python -m pipelines.pipedrive_sync.bench_listen [--deals 5000] [--rates 1,20,100]
        [--seconds 30] [--idle-seconds 20] [--latency-seconds 4] [--json FILE] [--workdir DIR]

1. The fake Pipedrive runs in this process (webhooks v2 delivered by 4 sender threads under
   Pipedrive's policy); `pipedrive-sync listen --public-url …` runs in a process of its own,
   registers its webhooks and catches up (the default entity set, DuckDB).
2. Idle: the listener's CPU share and RSS over `--idle-seconds` without events.
3. Per rate (changes per second): for `--seconds`, each change renames another deal
   (`bench <n>`); a reader opens the warehouse read-only every 0.2 s (every 50 ms while a
   batch holds the file, as `pipedrive-sync query` does) and notes when each title first
   shows. Event → visible = that moment minus the moment of
   the change (so the figures include delivery, journaling, batching, the API reads, the
   load, and the reader's own 0.2 s resolution). Also: the API tokens the fake charged per
   100 changed records, the listener's batches and its peak RSS.
4. SIGTERM: seconds until the listener has exited.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOKEN = "bench-token-0123456789"
HOOK_USER, HOOK_PASSWORD = "bench", "bench-webhook-password"
PROBE_SECONDS = 0.2
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Listener:
    """The `pipedrive-sync listen` process, its JSON log and its resource use."""

    proc: subprocess.Popen[str]
    port: int
    lines: list[dict[str, Any]] = field(default_factory=list)
    peak_rss: float = 0.0

    def read_log(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                continue

    def sample_rss(self) -> None:
        while self.proc.poll() is None:
            self.peak_rss = max(self.peak_rss, self.rss_mb())
            time.sleep(0.25)

    def rss_mb(self) -> float:
        try:
            pages = int(Path(f"/proc/{self.proc.pid}/statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            return 0.0
        return pages * PAGE / 2**20

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def health(self) -> dict[str, Any] | None:
        import requests

        try:
            answer = requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5)
        except requests.RequestException:
            return None
        return answer.json() if answer.status_code == 200 else None


def _start_listener(args: argparse.Namespace, fake: Any, work: Path) -> Listener:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEDRIVE_", "SOURCES__"))}
    env.update(
        DLT_DATA_DIR=str(work / "dlt"),
        PIPEDRIVE_API_TOKEN=TOKEN,
        PIPEDRIVE_BASE_URL=fake.base_url,
        PIPEDRIVE_WEBHOOK_USER=HOOK_USER,
        PIPEDRIVE_WEBHOOK_PASSWORD=HOOK_PASSWORD,
    )
    if args.latency_seconds is not None:
        env["SOURCES__PIPEDRIVE__WEBHOOK_LATENCY_SECONDS"] = str(args.latency_seconds)
    command = [
        sys.executable,
        "-m",
        "pipelines.pipedrive_sync",
        "listen",
        *("--port", str(port), "--public-url", f"http://127.0.0.1:{port}/pipedrive"),
        *("--duckdb-path", str(work / "bench.duckdb"), "--log-format", "json"),
    ]
    proc = subprocess.Popen(command, env=env, cwd=work, stdout=subprocess.PIPE, text=True)
    listener = Listener(proc, port)
    threading.Thread(target=listener.read_log, daemon=True).start()
    threading.Thread(target=listener.sample_rss, daemon=True).start()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        health = listener.health()
        if health is not None and health["status"] == "ready":
            return listener
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the listener did not get ready: {listener.lines[-3:]}")


class Reader:
    """Opens the warehouse read-only every PROBE_SECONDS; notes when each title shows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: dict[str, float] = {}
        self.busy = 0  # probes that found the file held by the listener
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import duckdb

        from .warehouse import READ_RETRY_SECONDS, open_duckdb

        wait = PROBE_SECONDS
        while not self._stop.wait(wait):
            try:
                with open_duckdb(self.path) as connection:
                    rows = connection.execute(
                        "SELECT title FROM deals WHERE title LIKE 'bench %'"
                    ).fetchall()
            except duckdb.IOException:  # a batch is writing: try again soon, as `query` does
                self.busy += 1
                wait = READ_RETRY_SECONDS
                continue
            wait = PROBE_SECONDS
            now = time.time()
            for (title,) in rows:
                self.seen.setdefault(title, now)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _phase(
    fake: Any, listener: Listener, reader: Reader, rate: float, seconds: float, deals: list[int]
) -> dict[str, Any]:
    """`rate` changes per second for `seconds`; what it took until each was visible."""
    count = max(1, int(rate * seconds))
    if count > len(deals):
        raise SystemExit(f"--deals too small: {count} changes need as many deals")
    tokens_before = fake.tokens_used
    log_before = len(listener.lines)
    listener.peak_rss = listener.rss_mb()
    made: dict[str, float] = {}
    started = time.monotonic()
    for n in range(count):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        title = f"bench {rate:g}/{n}"
        fake.update("deals", deals.pop(), title=title)
        made[title] = time.time()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not all(t in reader.seen for t in made):
        time.sleep(0.1)
    latencies = sorted(reader.seen[t] - made[t] for t in made if t in reader.seen)
    batches = [line for line in listener.lines[log_before:] if line.get("event") == "batch_applied"]
    tokens = fake.tokens_used - tokens_before
    return {
        "rate": rate,
        "changes": count,
        "visible": len(latencies),
        "p50": _quantile(latencies, 0.50),
        "p99": _quantile(latencies, 0.99),
        "max": round(latencies[-1], 2) if latencies else None,
        "tokens": tokens,
        "tokens_per_100": round(100 * tokens / count, 1),
        "batches": len(batches),
        "events_per_batch": statistics.median([b["events"] for b in batches]) if batches else 0,
        "batch_seconds": statistics.median([b["seconds"] for b in batches]) if batches else 0,
        "peak_rss_mb": round(listener.peak_rss),
    }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    index = min(len(values) - 1, max(0, round(q * len(values) + 0.5) - 1))
    return round(values[index], 2)


def _idle(listener: Listener, seconds: float) -> dict[str, Any]:
    cpu, wall = listener.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    used = listener.cpu_seconds() - cpu
    return {
        "seconds": seconds,
        "cpu_percent": round(100 * used / (time.monotonic() - wall), 2),
        "rss_mb": round(listener.rss_mb()),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sources.pipedrive_fake import FakePipedrive

    work = Path(args.workdir or tempfile.mkdtemp(prefix="pipedrive-bench-listen-"))
    work.mkdir(parents=True, exist_ok=True)
    scale = {"deals": args.deals, "persons": 200, "organizations": 100, "activities": 200}
    fake = FakePipedrive(token=TOKEN, seed=3, scale=scale)
    fake.webhooks.configure(senders=4)
    fake.start()
    try:
        listener = _start_listener(args, fake, work)
        report: dict[str, Any] = {"deals": args.deals}
        try:
            report["idle"] = _idle(listener, args.idle_seconds)
            reader = Reader(work / "bench.duckdb")
            deals = [d["id"] for d in fake.records("deals", archived=False)]
            report["rates"] = [
                _phase(fake, listener, reader, float(rate), args.seconds, deals)
                for rate in args.rates.split(",")
            ]
            reader.stop()
            report["reader_busy"] = reader.busy
            report["idle_after"] = _idle(listener, min(args.idle_seconds, 10))
        finally:
            stopping = time.monotonic()
            listener.proc.send_signal(signal.SIGTERM)
            code = listener.proc.wait(60)
            report["stop"] = {"exit_code": code, "seconds": round(time.monotonic() - stopping, 2)}
    finally:
        fake.stop()
    return report


def _print(report: dict[str, Any]) -> None:
    idle = report["idle"]
    print(f"idle: {idle['cpu_percent']}% of a core, RSS {idle['rss_mb']} MB")
    print(
        f"{'changes/s':>9} {'changes':>7} {'p50 s':>6} {'p99 s':>6} {'max s':>6}"
        f" {'tokens/100':>10} {'batches':>7} {'per batch':>9} {'batch s':>7} {'peak RSS':>8}"
    )
    for r in report["rates"]:
        print(
            f"{r['rate']:>9g} {r['changes']:>7} {r['p50']!s:>6} {r['p99']!s:>6} {r['max']!s:>6}"
            f" {r['tokens_per_100']:>10} {r['batches']:>7} {r['events_per_batch']:>9}"
            f" {r['batch_seconds']:>7.2f} {r['peak_rss_mb']:>5} MB"
        )
    after = report["idle_after"]
    print(f"idle afterwards: {after['cpu_percent']}% of a core, RSS {after['rss_mb']} MB")
    stop = report["stop"]
    print(f"SIGTERM: exit {stop['exit_code']} after {stop['seconds']} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.pipedrive_sync.bench_listen", description=__doc__
    )
    parser.add_argument("--deals", type=int, default=5000)
    parser.add_argument("--rates", default="1,20,100", help="changes per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="per rate")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument(
        "--latency-seconds", type=float, default=None, help="webhook_latency_seconds [4]"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    report = run(args)
    _print(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
