"""The allocator settings a sync run makes: large blocks in their own maps, not in glibc's
heaps, and arrow on jemalloc."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pipelines.pipedrive_sync.process_memory import _glibc

# mallinfo2 counts the blocks glibc serves from their own maps (hblks)
PROBE = textwrap.dedent(
    """
    import ctypes, sys
    from pipelines.pipedrive_sync.process_memory import _glibc, map_large_blocks_separately

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = _glibc()
    libc.mallinfo2.restype = MallInfo2
    took = map_large_blocks_separately() if sys.argv[1] == "on" else None
    big = bytearray(8 * 2**20)  # freeing a mapped block raises glibc's own threshold to its size
    del big
    before = libc.mallinfo2().hblks
    page = bytearray(2 * 2**20)  # a page body's size
    print(took, libc.mallinfo2().hblks - before)
    """
)


def _mapped_blocks(setting: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, setting], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.mark.skipif(_glibc() is None, reason="glibc's allocator only (musl, macOS: no mallopt)")
def test_page_sized_blocks_get_their_own_map_after_a_larger_block_was_freed() -> None:
    assert _mapped_blocks("on") == "True 1"
    assert _mapped_blocks("off") == "None 0"  # glibc's default: carved from the heap


def test_arrow_allocates_from_jemalloc_after_the_setting() -> None:
    probe = (
        "import pyarrow as pa;"
        " from pipelines.pipedrive_sync.process_memory import arrow_memory_from_jemalloc;"
        " print(arrow_memory_from_jemalloc(), pa.default_memory_pool().backend_name,"
        " pa.array([1, 2]).sum().as_py())"
    )
    env = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}  # arrow's own default
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    assert done.stdout.split() == ["jemalloc", "jemalloc", "3"]


def test_jemalloc_hands_freed_pages_back_sooner_than_arrow_would() -> None:
    """Set before the sync's arenas exist: the decay time applies only to arenas made later."""
    probe = (
        "import pyarrow as pa; asked = [];"
        " pa.jemalloc_set_decay_ms = asked.append;"
        " from pipelines.pipedrive_sync import process_memory as pm;"
        " pm.arrow_memory_from_jemalloc(); print(asked == [pm.JEMALLOC_DECAY_MS], asked)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "[100]"]


RUN_SYNC_PROBE = """
import sys, dlt, pyarrow as pa
from pipelines.pipedrive_sync.runner import run_sync
from pipelines.pipedrive_sync.settings import resolve
from sources.pipedrive_fake import FakePipedrive

with FakePipedrive(token="probe-token-123", scale={"deals": 60}) as fake:
    settings = resolve(duckdb_path=sys.argv[1], entities="deals", require_token=False)
    settings.token, settings.base_url = fake.token, fake.base_url
    assert run_sync(settings).code == 0
print(pa.default_memory_pool().backend_name, dlt.config.get("load.truncate_staging_dataset"))
"""


def test_run_sync_leaves_the_callers_process_settings_alone(tmp_path: Path) -> None:
    """An Airflow worker calling `run_sync` keeps its allocator and its dlt config: only the
    command line tunes the process (arrow's pool, glibc), and the staging flag is the run's."""
    env = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "system", "DLT_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", RUN_SYNC_PROBE, str(tmp_path / "probe.duckdb")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["system", "None"]


def test_merge_staging_tables_are_emptied_after_each_load(syncer: Any, fake: Any) -> None:
    assert syncer.run(entities="deals").code == 0
    fake.update("deals", fake.records("deals")[0]["id"], title="merged")
    assert syncer.run(entities="deals").code == 0
    assert syncer.query("SELECT count(*) FROM main_staging.deals") == [(0,)]
