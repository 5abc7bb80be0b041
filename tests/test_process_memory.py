"""The glibc setting a sync run makes: large blocks in their own maps, not in the heaps."""

from __future__ import annotations

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
