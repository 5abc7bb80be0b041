"""The README's library examples run as written, and share one warehouse state with each other.

The Airflow, Dagster and plain-dlt snippets are taken from README.md and executed against the
fake Pipedrive and a real PostgreSQL, configured the way the README says (`[sources.pipedrive]`
in `.dlt/secrets.toml`, `DESTINATION__POSTGRES__CREDENTIALS`). Airflow and Dagster are not
installed: small stand-ins for the classes the snippets import do what their real counterparts
do with them (call the callable; run the dlt pipeline on the source).
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN
from pg_server import Server
from pg_server import rows as _pg

from sources.pipedrive_fake import FakePipedrive

README = Path(__file__).resolve().parent.parent / "README.md"


def _block(marker: str) -> str:
    """The python code block of the README that starts with `marker` (or follows a heading)."""
    text = README.read_text(encoding="utf-8")
    if not marker.startswith("## "):
        blocks = re.findall(r"```python\n(.*?)```", text, re.S)
        found = [b for b in blocks if b.partition("\n")[0].startswith(marker)]
        assert len(found) == 1, f"one README block starting with {marker!r}"
        return found[0]
    section = text[text.index(marker) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, marker
    return match.group(1)


class _Operator:
    created: list[Any] = []

    def __init__(self, task_id: str, **kwargs: Any) -> None:
        self.task_id = task_id
        self.kwargs = kwargs
        _Operator.created.append(self)


class _AssetsDefinition:
    def __init__(self, fn: Any, source: Any, pipeline: Any) -> None:
        self.fn, self.source, self.pipeline = fn, source, pipeline


class _DagsterDltResource:
    """dagster-dlt's resource: `run` runs the asset's dlt pipeline on its source."""

    def run(self, context: Any, **kwargs: Any) -> Iterator[Any]:
        yield context.assets.pipeline.run(context.assets.source, **kwargs)


def _dlt_assets(*, dlt_source: Any, dlt_pipeline: Any, group_name: str) -> Any:
    return lambda fn: _AssetsDefinition(fn, dlt_source, dlt_pipeline)


def _install_stand_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    modules = {
        "airflow": {},
        "airflow.operators": {},
        "airflow.operators.bash": {"BashOperator": _Operator},
        "airflow.operators.python": {"PythonOperator": _Operator},
        "dagster": {
            "AssetExecutionContext": type("AssetExecutionContext", (), {}),
            "Definitions": lambda **kwargs: kwargs,
        },
        "dagster_dlt": {"DagsterDltResource": _DagsterDltResource, "dlt_assets": _dlt_assets},
    }
    for name, members in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(members)
        monkeypatch.setitem(sys.modules, name, module)


def _deal_columns(url: str) -> list[str]:
    rows = _pg(
        url,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'pipedrive'"
        " AND table_name = 'deals' ORDER BY column_name",
    )
    return [r[0] for r in rows]


def _incremental(fake: FakePipedrive, since: int) -> bool:
    pages = [r for r in fake.requests[since:] if r.path == "/api/v2/deals"]
    return bool(pages) and all("updated_since" in r.query for r in pages)


@pytest.mark.postgres
def test_the_readme_library_examples_run_and_share_one_state(
    postgres: Server,
    fake: FakePipedrive,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dlt.common.configuration.container import Container
    from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext

    url = postgres.database("readme_examples")
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", url)
    dot_dlt = tmp_path / ".dlt"
    dot_dlt.mkdir()
    (dot_dlt / "secrets.toml").write_text(f'[sources.pipedrive]\napi_token = "{TOKEN}"\n')
    (dot_dlt / "config.toml").write_text(f'[sources.pipedrive]\nbase_url = "{fake.base_url}"\n')
    Container()[PluggableRunContext].reload(str(tmp_path))  # dlt reads .dlt/ of this directory
    _install_stand_ins(monkeypatch)

    airflow: dict[str, Any] = {}
    exec(compile(_block("# Airflow"), "README.md#airflow", "exec"), airflow)
    task = next(
        o for o in _Operator.created if o.task_id == "pipedrive" and "python_callable" in o.kwargs
    )
    task.kwargs["python_callable"]()
    columns = _deal_columns(url)
    assert columns and "budget" in columns

    fake.update("deals", fake.records("deals")[0]["id"], title="changed for Dagster")
    seen = len(fake.requests)
    dagster: dict[str, Any] = {}
    exec(compile(_block("# Dagster"), "README.md#dagster", "exec"), dagster)
    assets = dagster["pipedrive_assets"]
    context = types.SimpleNamespace(assets=assets)
    list(assets.fn(context, dagster["defs"]["resources"]["dlt"]))
    assert _incremental(fake, seen)
    assert _deal_columns(url) == columns

    fake.update("deals", fake.records("deals")[1]["id"], title="changed for plain dlt")
    seen = len(fake.requests)
    plain: dict[str, Any] = {}
    exec(compile(_block("## Using the dlt source"), "README.md#plain", "exec"), plain)
    assert _incremental(fake, seen)
    assert _deal_columns(url) == columns

    titles = dict(_pg(url, "SELECT id, title FROM pipedrive.deals"))
    assert titles == {
        d["id"]: d["title"] for d in fake.records("deals", deleted=None, archived=None)
    }
    identity = _pg(url, "SELECT company_id, pipeline_name FROM pipedrive.sync_identity")
    assert identity == [(fake.company["id"], "pipedrive")]
