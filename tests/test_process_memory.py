"""The allocator settings a sync run makes: large blocks in their own maps, not in glibc's
heaps, and arrow on jemalloc."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

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
