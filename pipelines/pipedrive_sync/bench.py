"""Throughput benchmark against the bundled fake Pipedrive: `make bench` / `python -m pipelines.pipedrive_sync.bench`.

    python -m pipelines.pipedrive_sync.bench [--deals 100000] [--custom-fields 40]
        [--persons 20000] [--organizations 10000] [--activities 50000] [--runs 3]
        [--entities deals,persons,organizations,activities] [--no-whole-run] [--json FILE]
        [--latency-ms 0] [--parallel-entities N] [--sequential-baseline] [--messy]
        [--columnar on|off]

What it does, each step in a process of its own so that nothing shares a GIL or a heap:

1. starts the fake server (`--serve` mode of this module) with every page pre-rendered, so the
   server is not the bottleneck of its own benchmark (its CPU share is printed);
2. per run (`--runs`, medians are reported):
   * **raw fetch**: the pages a full sync reads (same endpoints, parameters, page size and HTTP
     client), downloaded and JSON-parsed, nothing else: the baseline;
   * **full sync per entity**: `run_sync` of one entity into a fresh DuckDB, end to end (fetch,
     convert, dlt extract/normalize/load, post-load steps), timed from the outside;
   * **whole run**: a full sync of the default entity set into a fresh DuckDB (wall time, peak
     RSS), then a **no-change incremental** run of the same set (requests and API tokens per
     entity, cross-checked with the tokens the fake charged);
   * with `--sequential-baseline`, the same full sync once more with one entity at a time
     (`parallel_entities = 1`), to show what extracting entities in parallel gains.

`--messy` gives the fake's custom fields values as messy as real accounts' (`FakePipedrive`'s
`messy`); `--columnar off` syncs every page row by row, for comparison.

`--latency-ms` makes the fake answer every request that much later, like a real API round trip
(the fake on localhost answers in microseconds, which hides what waiting on the network costs).

Peak memory is the sync process's own peak RSS (`wait4` rusage), fake server excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

TOKEN = "bench-token"
HEADLINE = ("deals", "persons", "organizations", "activities")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# ----------------------------------------------------------------------------- child roles
def _serve(args: argparse.Namespace) -> int:
    """Run the fake until stdin closes; answer `tokens` with the tokens charged so far."""
    from sources.pipedrive_fake import FakePipedrive

    started = time.perf_counter()
    scale = {
        "deals": args.deals,
        "persons": args.persons,
        "organizations": args.organizations,
        "activities": args.activities,
        "products": args.products,
    }
    fake = FakePipedrive(
        token=TOKEN,
        seed=args.seed,
        scale=scale,
        custom_field_count=args.custom_fields,
        messy=args.messy,
    )
    fake.warm()
    if args.latency_ms:
        fake.on_request(lambda record: time.sleep(args.latency_ms / 1000))  # a network round trip
    fake.start()
    ready = {"url": fake.base_url, "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(ready), flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "tokens":
                print(json.dumps({"tokens": fake.tokens_used}), flush=True)
    finally:
        fake.stop()
    return 0


def _client(url: str) -> Any:
    from sources.pipedrive.http import ApiTokenAuth, HttpSettings, PipedriveClient

    return PipedriveClient(url, ApiTokenAuth(TOKEN), HttpSettings())


def _raw(args: argparse.Namespace) -> int:
    """The baseline: the pages of a full sync, downloaded and parsed; nothing else."""
    from sources.pipedrive.entities import select_entities
    from sources.pipedrive.streams import make_paginator

    client = _client(args.url)
    out: dict[str, Any] = {}
    started = time.perf_counter()
    for entity in select_entities(args.entities.split(",")):
        rows = requests = 0
        t0 = time.perf_counter()
        for stream in entity.streams:
            if "{" in stream.path:  # per-record endpoints (followers) are not lists
                continue
            limit = min(client.settings.page_limit, getattr(stream, "page_limit", None) or 500)
            extra = {}
            if getattr(stream, "data_key", None):
                extra["data_key"] = stream.data_key
            for page in client.iter_pages(
                entity.api,
                stream.path,
                dict(stream.params),
                make_paginator(entity, limit),
                cost=stream.token_cost,
                label=stream.key,
                **extra,
            ):
                rows += len(page.items)
                requests += 1
        out[entity.name] = {
            "rows": rows,
            "requests": requests,
            "seconds": time.perf_counter() - t0,
        }
    _emit({"entities": out, "seconds": time.perf_counter() - started, "cpu": time.process_time()})
    return 0


def _sync(args: argparse.Namespace) -> int:
    """One `run_sync` (what `pipedrive-sync run` does) with per-step timings."""
    os.environ["DLT_DATA_DIR"] = str(Path(args.db).parent / "dlt")
    os.environ["PIPEDRIVE_API_TOKEN"] = TOKEN
    os.environ["PIPEDRIVE_BASE_URL"] = args.url
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")

    steps = _time_dlt_steps()
    from pipelines.pipedrive_sync.process_memory import tune_for_sync
    from pipelines.pipedrive_sync.runner import run_sync

    tune_for_sync()  # what the command line does
    from pipelines.pipedrive_sync.settings import resolve
    from pipelines.pipedrive_sync.summary import summary_rows

    settings = resolve(duckdb_path=args.db, entities=args.entities or None)
    if args.parallel_entities:
        settings.options = replace(settings.options, parallel_entities=args.parallel_entities)
    if args.columnar == "off":
        settings.options = replace(settings.options, columnar=False)
    started = time.perf_counter()
    result = run_sync(settings)
    seconds = time.perf_counter() - started
    entities = {
        row["entity"]: {
            "rows": row["rows"],
            "requests": row["requests"],
            "tokens": row["tokens"],
            "status": row["status"],
        }
        for row in summary_rows(result)
    }
    _emit(
        {
            "code": result.code,
            "message": result.message,
            "seconds": seconds,
            "cpu": time.process_time(),
            "requests": result.metrics.requests,
            "tokens": result.metrics.tokens,
            "entities": entities,
            "steps": steps,
        }
    )
    return 0


def _time_dlt_steps() -> dict[str, Any]:
    """Wall seconds spent in dlt's extract / normalize / load (summed over the run's loads),
    the process CPU seconds (every thread) and the peak RSS (MB) sampled while each ran."""
    import functools
    import threading

    from dlt.pipeline.pipeline import Pipeline

    totals: dict[str, Any] = {
        "extract": 0.0,
        "normalize": 0.0,
        "load": 0.0,
        "rss_mb": {},
        "cpu": {},
    }
    current = ["other"]

    def sample() -> None:
        page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        while True:
            try:
                rss = int(Path("/proc/self/statm").read_text().split()[1]) * page / 2**20
            except (OSError, ValueError, IndexError):
                return
            peaks = totals["rss_mb"]
            peaks[current[0]] = max(peaks.get(current[0], 0.0), round(rss))
            time.sleep(0.1)

    threading.Thread(target=sample, name="bench-rss", daemon=True).start()
    for name in ("extract", "normalize", "load"):
        original = getattr(Pipeline, name)

        def timed(original: Any = original, name: str = name) -> Any:
            @functools.wraps(original)
            def wrapper(self: Any, *a: Any, **k: Any) -> Any:
                t0, c0 = time.perf_counter(), time.process_time()
                current[0] = name
                try:
                    return original(self, *a, **k)
                finally:
                    current[0] = "other"
                    totals[name] += time.perf_counter() - t0
                    cpu = totals["cpu"]
                    cpu[name] = cpu.get(name, 0.0) + time.process_time() - c0

            return wrapper

        setattr(Pipeline, name, timed())
    return totals


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write("BENCH-RESULT " + json.dumps(payload) + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------- the driver
class Fake:
    """The fake server in a child process."""

    def __init__(self, args: argparse.Namespace) -> None:
        cmd = [
            sys.executable,
            "-m",
            "pipelines.pipedrive_sync.bench",
            "--role",
            "serve",
            *filter(None, (_flag(k, getattr(args, k)) for k in _FAKE_ARGS)),
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the fake server did not start")
        ready = json.loads(line)
        self.url: str = ready["url"]
        self.startup_seconds: float = ready["seconds"]

    def tokens(self) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("tokens\n")
        self.proc.stdin.flush()
        return int(json.loads(self.proc.stdout.readline())["tokens"])

    def cpu_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / TICKS

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


_FAKE_ARGS = (
    "deals",
    "persons",
    "organizations",
    "activities",
    "products",
    "custom_fields",
    "seed",
    "latency_ms",
    "messy",
)


def _flag(name: str, value: Any) -> str:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else ""
    return f"{flag}={value}"


def _child(role: str, fake: Fake, **options: str) -> dict[str, Any]:
    """Run one measured step in a fresh process; adds wall time, peak RSS and fake CPU share."""
    cmd = [sys.executable, "-m", "pipelines.pipedrive_sync.bench", "--role", role]
    cmd += ["--url", fake.url]
    for key, value in options.items():
        cmd += [f"--{key}", value]
    fake_cpu = fake.cpu_seconds()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage: its peak RSS
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    lines = [line for line in out.splitlines() if line.startswith("BENCH-RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"benchmark step {role} failed (exit {proc.returncode}):\n{out[-2000:]}")
    result = json.loads(lines[-1].removeprefix("BENCH-RESULT "))
    result["process_seconds"] = wall
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    busy = fake.cpu_seconds() - fake_cpu
    result["fake_cpu_share"] = busy / result["seconds"] if result["seconds"] else 0.0
    return result


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="pipedrive-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    headline = [e for e in args.entities.split(",") if e]
    _say(
        f"starting the fake: {args.deals:,} deals with {args.custom_fields}"
        f" {'messy ' if args.messy else ''}custom fields, "
        f"{args.persons:,} persons, {args.organizations:,} organizations, "
        f"{args.activities:,} activities, {args.products:,} products"
    )
    fake = Fake(args)
    _say(f"fake ready at {fake.url} after {fake.startup_seconds:.0f}s (pages pre-rendered)")
    runs: list[dict[str, Any]] = []
    parallel = {"parallel-entities": str(args.parallel_entities)} if args.parallel_entities else {}
    parallel["columnar"] = args.columnar
    try:
        for n in range(1, args.runs + 1):
            run: dict[str, Any] = {}
            _say(f"run {n}/{args.runs}: raw fetch")
            run["raw"] = _child("raw", fake, entities=",".join(headline))
            run["entity_sync"] = {}
            for entity in headline:
                _say(f"run {n}/{args.runs}: full sync of {entity}")
                db = _fresh(work / f"run{n}-{entity}") / "bench.duckdb"
                run["entity_sync"][entity] = _child(
                    "sync", fake, db=str(db), entities=entity, **parallel
                )
            if args.whole_run:
                db = _fresh(work / f"run{n}-all") / "bench.duckdb"
                _say(f"run {n}/{args.runs}: full sync of the default entity set")
                run["full"] = _child("sync", fake, db=str(db), entities="", **parallel)
                _say(f"run {n}/{args.runs}: no-change incremental sync")
                before = fake.tokens()
                run["incremental"] = _child("sync", fake, db=str(db), entities="", **parallel)
                run["incremental"]["fake_tokens"] = fake.tokens() - before
                if args.sequential_baseline:
                    db = _fresh(work / f"run{n}-sequential") / "bench.duckdb"
                    _say(f"run {n}/{args.runs}: full sync of the default set, one at a time")
                    run["sequential"] = _child(
                        "sync",
                        fake,
                        db=str(db),
                        entities="",
                        **{"parallel-entities": "1", "columnar": args.columnar},
                    )
            runs.append(run)
            if not args.keep:
                for path in work.glob(f"run{n}-*"):
                    shutil.rmtree(path, ignore_errors=True)
    finally:
        fake.close()
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    report = summarize(args, runs, fake)
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": report, "runs": runs}, indent=2))
    return report


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def summarize(args: argparse.Namespace, runs: list[dict[str, Any]], fake: Fake) -> dict[str, Any]:
    """Medians over runs, printed as a table; returns the numbers."""
    headline = [e for e in args.entities.split(",") if e]
    print()
    print(
        f"pipedrive-sync benchmark — {os.cpu_count()} CPUs, fake in its own process; "
        f"median of {len(runs)} run(s)"
        + ("; messy custom field values" if args.messy else "")
        + ("; columnar path off" if args.columnar == "off" else "")
    )
    print(
        f"{'entity':<14}{'rows':>10}{'raw s':>9}{'raw rows/s':>12}{'sync s':>9}"
        f"{'sync rows/s':>13}{'sync/raw':>10}{'peak MB':>9}{'fake CPU':>10}"
    )
    summary: dict[str, Any] = {"entities": {}}
    for entity in headline:
        raw = [r["raw"]["entities"][entity] for r in runs]
        runs_raw = [r["raw"] for r in runs] if len(headline) == 1 else []
        syn = [r["entity_sync"][entity] for r in runs]
        rows = syn[0]["entities"].get(entity, {}).get("rows", 0)
        raw_rate = _median([x["rows"] / x["seconds"] for x in raw if x["seconds"]])
        sync_rate = _median([rows / x["seconds"] for x in syn if x["seconds"]])
        ratio = _median(
            [
                (rows / s["seconds"]) / (r["rows"] / r["seconds"])
                for s, r in zip(syn, raw, strict=True)
                if s["seconds"] and r["seconds"] and r["rows"]
            ]
        )
        entry = {
            "rows": rows,
            "raw_seconds": _median([x["seconds"] for x in raw]),
            "raw_rows_per_s": raw_rate,
            "sync_seconds": _median([x["seconds"] for x in syn]),
            "sync_rows_per_s": sync_rate,
            "sync_over_raw": ratio,
            "peak_rss_mb": _median([x["peak_rss_mb"] for x in syn]),
            "raw_cpu_seconds": _median([r["cpu"] for r in runs_raw]) if runs_raw else None,
            "sync_cpu_seconds": _median([x["cpu"] for x in syn]),
            "fake_cpu_share": _median([x["fake_cpu_share"] for x in syn]),
            "steps": {
                k: _median([x["steps"][k] for x in syn]) for k in ("extract", "normalize", "load")
            },
            "cpu_by_step": {
                k: _median([x["steps"]["cpu"].get(k, 0.0) for x in syn])
                for k in ("extract", "normalize", "load")
            },
            "rss_by_step": {
                k: _median([x["steps"]["rss_mb"].get(k, 0) for x in syn])
                for k in ("extract", "normalize", "load", "other")
            },
        }
        summary["entities"][entity] = entry
        print(
            f"{entity:<14}{rows:>10,}{entry['raw_seconds']:>9.2f}{raw_rate:>12,.0f}"
            f"{entry['sync_seconds']:>9.2f}{sync_rate:>13,.0f}{ratio:>9.0%}"
            f"{entry['peak_rss_mb']:>9.0f}{entry['fake_cpu_share']:>9.0%}"
        )
    for entity in headline:
        st = summary["entities"][entity]["steps"]
        cpu = summary["entities"][entity]["cpu_by_step"]
        print(
            f"  {entity}: dlt extract {st['extract']:.2f}s (fetch + convert + write; "
            f"{cpu['extract']:.2f} CPU s), normalize {st['normalize']:.2f}s, load "
            f"{st['load']:.2f}s ({cpu['load']:.2f} CPU s); peak RSS by step (MB): "
            + ", ".join(
                f"{k} {v:.0f}" for k, v in summary["entities"][entity]["rss_by_step"].items()
            )
        )
        entry = summary["entities"][entity]
        if entry["raw_cpu_seconds"] is not None:  # the raw fetch read this entity alone
            print(
                f"  process CPU seconds (start-up included): raw fetch "
                f"{entry['raw_cpu_seconds']:.2f}, full sync {entry['sync_cpu_seconds']:.2f}"
            )
    if args.whole_run and runs and "full" in runs[0]:
        full = [r["full"] for r in runs]
        inc = [r["incremental"] for r in runs]
        rows = sum(e["rows"] for e in full[0]["entities"].values())
        summary["whole_run"] = {
            "rows": rows,
            "seconds": _median([x["seconds"] for x in full]),
            "peak_rss_mb": _median([x["peak_rss_mb"] for x in full]),
            "requests": _median([x["requests"] for x in full]),
            "tokens": _median([x["tokens"] for x in full]),
            "exit_code": full[-1]["code"],
        }
        summary["incremental"] = {
            "seconds": _median([x["seconds"] for x in inc]),
            "requests": _median([x["requests"] for x in inc]),
            "tokens": _median([x["tokens"] for x in inc]),
            "fake_tokens": _median([x["fake_tokens"] for x in inc]),
            "peak_rss_mb": _median([x["peak_rss_mb"] for x in inc]),
            "exit_code": inc[-1]["code"],
            "entities": {
                name: {"requests": e["requests"], "tokens": e["tokens"]}
                for name, e in inc[-1]["entities"].items()
            },
        }
        w, i = summary["whole_run"], summary["incremental"]
        print()
        print(
            f"whole run (default entity set, full sync): {w['rows']:,} rows in "
            f"{w['seconds']:.1f}s ({w['rows'] / w['seconds']:,.0f} rows/s), peak RSS "
            f"{w['peak_rss_mb']:.0f} MB, {w['requests']:,.0f} requests, {w['tokens']:,.0f} tokens"
        )
        print(
            f"no-change incremental run: {i['seconds']:.1f}s, {i['requests']:.0f} requests, "
            f"{i['tokens']:.0f} API tokens (the fake charged {i['fake_tokens']:.0f}), "
            f"peak RSS {i['peak_rss_mb']:.0f} MB"
        )
        if "sequential" in runs[0]:
            one = _median([r["sequential"]["seconds"] for r in runs])
            one_rss = _median([r["sequential"]["peak_rss_mb"] for r in runs])
            summary["whole_run"]["sequential_seconds"] = one
            summary["whole_run"]["sequential_peak_rss_mb"] = one_rss
            print(
                f"  the same full sync one entity at a time (parallel_entities = 1): {one:.1f}s,"
                f" peak RSS {one_rss:.0f} MB; in parallel {w['seconds']:.1f}s"
                f" ({one / w['seconds']:.2f}x)"
            )
        costly = sorted(i["entities"].items(), key=lambda kv: -kv[1]["tokens"])
        print(
            "  tokens per entity: "
            + ", ".join(f"{name} {e['tokens']}" for name, e in costly if e["tokens"])
        )
    summary["fake_startup_seconds"] = fake.startup_seconds
    summary["messy"] = args.messy
    summary["columnar"] = args.columnar
    return summary


def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.pipedrive_sync.bench",
        description="Throughput benchmark of pipedrive-sync against the fake Pipedrive.",
    )
    parser.add_argument("--deals", type=int, default=100_000)
    parser.add_argument("--custom-fields", type=int, default=40, help="custom fields on deals")
    parser.add_argument("--persons", type=int, default=20_000)
    parser.add_argument("--organizations", type=int, default=10_000)
    parser.add_argument("--activities", type=int, default=50_000)
    parser.add_argument("--products", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--entities",
        default=",".join(HEADLINE),
        help="entities timed one by one (raw fetch and full sync); default %(default)s",
    )
    parser.add_argument(
        "--no-whole-run",
        dest="whole_run",
        action="store_false",
        help="skip the full + no-change sync of the default entity set",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="the fake answers each request this much later (a real API round trip)",
    )
    parser.add_argument(
        "--parallel-entities",
        type=int,
        help="entities extracted at the same time (default: the configured parallel_entities)",
    )
    parser.add_argument(
        "--sequential-baseline",
        action="store_true",
        help="also time the whole run with one entity at a time",
    )
    parser.add_argument(
        "--messy",
        action="store_true",
        help="custom field values as messy as real accounts' (odd spellings, numbers as"
        " strings and strings as numbers, partial objects, records with every field null)",
    )
    parser.add_argument(
        "--columnar",
        choices=("on", "off"),
        default="on",
        help="the columnar fast path of the syncs (off: every page row by row)",
    )
    parser.add_argument("--json", help="also write every measurement to this file")
    parser.add_argument("--workdir", help="where the DuckDB files go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the DuckDB files")
    # internal: the roles of the child processes
    parser.add_argument("--role", choices=("bench", "serve", "raw", "sync"), default="bench")
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "serve":
        return _serve(args)
    if args.role == "raw":
        return _raw(args)
    if args.role == "sync":
        return _sync(args)
    bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
