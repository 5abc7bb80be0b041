"""The commented examples in config/ are true: uncommented, every key is read and applied.

Each check runs in a fresh process started in a directory holding `.dlt/`, as a user would run
pipedrive-sync (dlt reads `.dlt/*.toml` of the working directory once per process).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import CORE_ENTITIES

from pipelines.pipedrive_sync.listen import DEFAULT_LATENCY_SECONDS

CONFIG = Path(__file__).resolve().parent.parent / "config"
PROBE = """
import json
from pipelines.pipedrive_sync.exit_codes import ConfigError
from pipelines.pipedrive_sync.settings import resolve
try:
    s = resolve(require_token=False)
except ConfigError as exc:
    print(json.dumps({"error": str(exc)}))
    raise SystemExit(0)
o, h = s.options, s.http
print(json.dumps({
    "token": s.token, "base_url": s.base_url, "entities": s.entities,
    "start_date": o.start_date, "destination": s.destination,
    "duckdb_path": str(s.duckdb_path), "dataset": s.dataset, "chunk_pages": o.chunk_pages,
    "fields_refresh": o.fields_refresh.total_seconds(),
    "users_refresh": (o.refresh_interval("users", None) or 0) and o.refresh_interval("users", None).total_seconds(),
    "stages_refresh": (o.refresh_interval("stages", None) or 0) and o.refresh_interval("stages", None).total_seconds(),
    "reconcile_hours": s.reconcile_interval.total_seconds() / 3600,
    "daily_token_budget": s.daily_token_budget,
    "hard_deletes": o.hard_deletes,
    "parallel_entities": o.parallel_entities,
    "http": [h.connect_timeout, h.read_timeout, h.max_attempts, h.backoff_base, h.backoff_max,
             h.max_rate_limit_wait, h.page_limit, h.prefetch, h.decode_threads],
    "oauth_client": s.oauth.client_id if s.oauth else None,
}))
"""


def _uncommented(text: str) -> str:
    """Every `# key = value` and `# [table]` line of an example made live."""
    lines = []
    for line in text.splitlines():
        match = re.match(r"^# ?(\[[\w.]+\]|[a-z_]+ = .*)$", line)
        lines.append(match.group(1) if match else line)
    return "\n".join(lines) + "\n"


def _resolved(tmp_path: Path, config: str, secrets: str, probe: str = PROBE) -> dict[str, Any]:
    """What `probe` prints (its last line, JSON) in a project whose `.dlt` holds these files."""
    dlt_dir = tmp_path / ".dlt"
    dlt_dir.mkdir(exist_ok=True)
    (dlt_dir / "config.toml").write_text(config)
    (dlt_dir / "secrets.toml").write_text(secrets)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIPEDRIVE_", "SOURCES__", "DESTINATION__", "RUNTIME__"))
    }
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_every_documented_config_key_is_applied(tmp_path: Path) -> None:
    config = _uncommented((CONFIG / "config.toml").read_text())
    got = _resolved(tmp_path, config, (CONFIG / "secrets.toml.example").read_text())
    assert got["token"] == "your-personal-api-token"
    assert got["base_url"].startswith("https://api.pipedrive.com")
    assert got["entities"] == [*CORE_ENTITIES, "users"]
    assert got["start_date"] == "2023-01-01T00:00:00Z"
    assert (got["destination"], got["duckdb_path"], got["dataset"]) == (
        "duckdb",
        "pipedrive.duckdb",
        "main",
    )
    assert got["chunk_pages"] == 200
    assert got["fields_refresh"] == 360 * 60
    assert (got["users_refresh"], got["stages_refresh"]) == (3600, 900)
    assert got["reconcile_hours"] == 24
    assert got["daily_token_budget"] == 30000
    assert got["hard_deletes"] is False
    assert got["parallel_entities"] == 3
    assert got["http"] == [10, 60, 6, 1.0, 30, 120, 500, 4, 2]


def test_the_oauth_example_is_read(tmp_path: Path) -> None:
    secrets = _uncommented((CONFIG / "secrets.toml.example").read_text())
    secrets = secrets.replace('api_token = "your-personal-api-token"', "")
    got = _resolved(tmp_path, "", secrets)
    assert got["oauth_client"] == "..." and got["token"] == ""


def test_a_changed_value_is_honoured_and_a_bad_one_named(tmp_path: Path) -> None:
    config = _uncommented((CONFIG / "config.toml").read_text())
    assert (
        _resolved(tmp_path, config.replace("chunk_pages = 200", "chunk_pages = 7"), "")[
            "chunk_pages"
        ]
        == 7
    )
    bad = _resolved(tmp_path, config.replace("chunk_pages = 200", 'chunk_pages = "many"'), "")
    assert "chunk_pages" in bad["error"]
    bad = _resolved(tmp_path, config.replace("read_timeout = 60", 'read_timeout = "slow"'), "")
    assert bad["error"] == "read_timeout must be a number, got 'slow'"
    bad = _resolved(tmp_path, config.replace("decode_threads = 2", "decode_threads = -1"), "")
    assert bad["error"] == "decode_threads must not be negative, got -1"
    one = config.replace("parallel_entities = 3", "parallel_entities = 1")
    assert _resolved(tmp_path, one, "")["parallel_entities"] == 1
    bad = _resolved(tmp_path, config.replace("parallel_entities = 3", "parallel_entities = 0"), "")
    assert bad["error"] == "parallel_entities must be positive, got 0"


LISTEN_PROBE = """
import json
from pipelines.pipedrive_sync.listen import resolve_listen
s = resolve_listen()
print(json.dumps({"user": s.user, "password": s.password, "latency": s.latency_seconds}))
"""


def test_the_listen_examples_are_read(tmp_path: Path) -> None:
    config = _uncommented((CONFIG / "config.toml").read_text())
    documented = f"webhook_latency_seconds = {DEFAULT_LATENCY_SECONDS:g}"
    assert documented in config  # the example shows the default
    got = _resolved(
        tmp_path,
        config.replace(documented, "webhook_latency_seconds = 6.5"),
        _uncommented((CONFIG / "secrets.toml.example").read_text()),
        LISTEN_PROBE,
    )
    assert got == {"user": "pipedrive", "password": "a-long-random-string", "latency": 6.5}
