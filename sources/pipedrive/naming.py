"""Readable, stable warehouse column names for Pipedrive custom fields.

Pipedrive identifies custom fields by 40-character hashes; users want to write
``SELECT customer_type, sum(budget) FROM deals``. This module turns field names into column
names and assigns them deterministically. It is pure: no I/O, no dlt calls.

Readable names (`readable_name`)
--------------------------------
1. ``%`` becomes `` pct `` and ``&`` becomes `` and ``.
2. Symbols (emoji, pictographs, ``©``, ``™``; Unicode categories So/Sk), control, format,
   surrogate, private-use and unassigned characters are dropped.
3. The rest is transliterated with `anyascii` and lowercased *afterwards* (``价格`` gives
   ``JiaGe`` and then ``jiage``: transliteration never introduces word breaks).
4. Every run of characters outside ``[a-z0-9]`` becomes one ``_``; leading and trailing
   underscores are stripped.
5. A name starting with a digit gets the prefix ``field_`` (``2024 Budget`` gives
   ``field_2024_budget``), so it is a valid unquoted SQL identifier.
6. The result is cut to `MAX_NAME_LENGTH` (40) characters (trailing ``_`` stripped again),
   leaving room for output suffixes such as ``_admin_area_level_1`` and for dlt's
   ``__v_text`` variant suffix under Postgres' 63-character limit.
7. If nothing is left, the result is ``""``.

Every non-empty result matches ``^[a-z][a-z0-9]*(_[a-z0-9]+)*$`` and is therefore a fixed point
of dlt's ``snake_case`` naming convention: dlt never renames these columns.

Column assignment (`assign_column_names`)
-----------------------------------------
A custom field can produce several output columns: its *column* ``c`` plus ``c<suffix>`` for
each of its output suffixes (a monetary field ``budget`` also writes ``budget_currency``; an
address field ``office`` writes ``office_locality``, ...). The *output names* of a candidate
column are all of these.

* Pinned fields (field key -> column from an earlier run) keep their column verbatim, even when
  the field was renamed, and even if that column now equals a reserved name (stability wins;
  the caller may check for that). Their column and, when the field is in ``fields``, all their
  output names are taken before any new field is named.
* New fields are named in definition order. The base is ``readable_name(field.name)``, or
  ``field_<first 8 characters of the key>`` when that is empty.
* Rule ``_custom``: if any output name of the base equals a *reserved* (standard or system)
  column, ``_custom`` is appended once (a custom ``Title`` on deals becomes ``title_custom``).
* Rule ``_N``: if any output name of the (possibly ``_custom``-suffixed) base is already taken
  - by a reserved column, a pinned field, or a field named earlier in this call - the first of
  ``_2``, ``_3``, ... whose output names are all free is appended (two fields named ``Source``
  become ``source`` and ``source_2``).
* When a suffix is appended the base is first cut so that the column stays within
  `MAX_NAME_LENGTH` characters.
Standard columns are therefore never shadowed by a new field, and a new field never takes a
pinned column or any output column of a pinned or earlier field (a new field named "Budget
Currency" next to a pinned or earlier monetary ``budget`` becomes ``budget_currency_2``; if the
text field comes first in definition order, it keeps ``budget_currency`` and the monetary field
becomes ``budget_2`` / ``budget_2_currency``). Reserved names are compared verbatim: pass them
as the (lowercase snake_case) column names dlt uses.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Protocol

from anyascii import anyascii

__all__ = [
    "CUSTOM_SUFFIX",
    "DIGIT_PREFIX",
    "FALLBACK_PREFIX",
    "MAX_NAME_LENGTH",
    "NamedField",
    "assign_column_names",
    "fallback_name",
    "readable_name",
]

MAX_NAME_LENGTH = 40
"""Longest column name produced for a field (suffixes for outputs come on top)."""
CUSTOM_SUFFIX = "_custom"
"""Appended to a custom field's name that collides with a reserved/standard column."""
DIGIT_PREFIX = "field_"
"""Prepended to a readable name that would start with a digit."""
FALLBACK_PREFIX = "field_"
"""Fallback column for a field without a readable name: prefix + first 8 characters of the key."""

_DROP_CATEGORIES = frozenset({"So", "Sk", "Cc", "Cf", "Cs", "Co", "Cn"})
_WORD_SUBSTITUTES = str.maketrans({"%": " pct ", "&": " and "})
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


class NamedField(Protocol):
    """What `assign_column_names` needs from a field definition."""

    @property
    def key(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def output_suffixes(self) -> tuple[str, ...]:
        """Suffixes of the extra output columns (``("_currency",)``); ``""`` may be included."""
        ...


def _cut(name: str, length: int) -> str:
    return name[:length].rstrip("_")


def readable_name(text: str) -> str:
    """A lowercase snake_case ASCII identifier for `text`, or ``""`` if nothing readable remains."""
    if not text:
        return ""
    text = text.translate(_WORD_SUBSTITUTES)
    kept = "".join(ch for ch in text if unicodedata.category(ch) not in _DROP_CATEGORIES)
    name = _NON_ALNUM.sub("_", anyascii(kept).lower()).strip("_")
    if not name:
        return ""
    if name[0].isdigit():
        name = DIGIT_PREFIX + name
    return _cut(name, MAX_NAME_LENGTH)


def fallback_name(key: str) -> str:
    """Column name for a field whose name has nothing readable: ``field_<key[:8]>``."""
    tail = _NON_ALNUM.sub("_", anyascii(key[:8]).lower()).strip("_")
    return FALLBACK_PREFIX + tail if tail else FALLBACK_PREFIX.rstrip("_")


def _with_suffix(base: str, suffix: str) -> str:
    return _cut(base, MAX_NAME_LENGTH - len(suffix)) + suffix


def _outputs(column: str, suffixes: Iterable[str]) -> set[str]:
    names = {column}
    names.update(column + s for s in suffixes)
    return names


def assign_column_names(
    fields: Sequence[NamedField],
    reserved: Collection[str],
    pinned: Mapping[str, str],
    taken: Collection[str] = (),
) -> dict[str, str]:
    """Map every field key in `fields` and `pinned` to its column name (see module docstring).

    `taken`: further names no new field may take (without the ``_custom`` rule), e.g. columns
    that keep the history of a field that got other columns.
    Deterministic: the same inputs always give the same result. The result contains all pinned
    entries unchanged, plus one entry per new field (first definition wins for duplicate keys).
    """
    reserved_set = set(reserved)
    by_key: dict[str, NamedField] = {}
    for f in fields:
        by_key.setdefault(f.key, f)

    taken = set(reserved_set) | set(taken)
    result: dict[str, str] = dict(pinned)
    for key, column in pinned.items():
        pinned_field = by_key.get(key)
        taken.update(_outputs(column, pinned_field.output_suffixes if pinned_field else ()))

    for key, f in by_key.items():
        if key in result:
            continue
        suffixes = f.output_suffixes
        base = readable_name(f.name) or fallback_name(key)
        if not _outputs(base, suffixes).isdisjoint(reserved_set):
            base = _with_suffix(base, CUSTOM_SUFFIX)
        column = base
        n = 2
        while not _outputs(column, suffixes).isdisjoint(taken):
            column = _with_suffix(base, f"_{n}")
            n += 1
        taken.update(_outputs(column, suffixes))
        result[key] = column
    return result
