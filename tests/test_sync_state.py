"""The typed sync state writes exactly the dicts existing warehouses hold (and reads them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sources.pipedrive.postload import retired_columns
from sources.pipedrive.sync_state import (
    BOUNDARY_LIMIT,
    BackfillState,
    Cursor,
    EntityStreams,
    ResumePoint,
    StreamState,
    committed_field_states,
    committed_stream,
    committed_streams,
    field_state,
    has_cursor,
    source_state,
)

T0 = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)

# a stream state as an existing warehouse commits it (the format must not change)
STORED = {
    "since": "2024-05-01T12:30:00Z",
    "boundary": {"7": "abcd"},
    "resume": {"position": "cursor-2", "updated_since": "2024-04-01T00:00:00Z"},
    "hashes": {"1": "ff"},
    "read_at": "2024-05-02T08:00:00.123456+00:00",
}


def test_reads_the_stored_format():
    state = StreamState(dict(STORED))
    assert state.cursor() == Cursor(T0, {"7": "abcd"})
    assert state.resume == ResumePoint("cursor-2", "2024-04-01T00:00:00Z")
    assert state.resuming and state.has_cursor
    assert state.hashes == {"1": "ff"}
    assert state.read_at == datetime(2024, 5, 2, 8, 0, 0, 123456, tzinfo=UTC)


def test_writes_the_stored_format_through_to_the_dict():
    raw: dict = {}
    state = StreamState(raw)
    state.save_cursor(Cursor(T0, {"7": "abcd"}))
    state.save_resume(ResumePoint("cursor-2", "2024-04-01T00:00:00Z"))
    state.save_hashes({"1": "ff"})
    state.mark_read(datetime(2024, 5, 2, 8, 0, 0, 123456, tzinfo=UTC))
    assert raw == STORED


def test_empty_state():
    state = StreamState({})
    assert state.cursor() == Cursor(None, {})
    assert state.resume is None and not state.resuming and not state.has_cursor
    assert state.hashes == {} and state.read_at is None


def test_no_cursor_stores_nothing():
    raw: dict = {}
    StreamState(raw).save_cursor(Cursor(None, {"1": "x"}))
    assert raw == {}


def test_cursor_copy_does_not_write_back():
    raw = dict(STORED, boundary={"7": "abcd"})
    cursor = StreamState(raw).cursor()
    cursor.boundary["8"] = "ee"
    assert raw["boundary"] == {"7": "abcd"}


def test_a_boundary_too_large_is_dropped():
    raw: dict = {}
    boundary = {str(i): "h" for i in range(BOUNDARY_LIMIT + 1)}
    StreamState(raw).save_cursor(Cursor(T0, boundary))
    assert raw == {"since": "2024-05-01T12:30:00Z", "boundary": {}}
    StreamState(raw).save_cursor(Cursor(T0, dict(list(boundary.items())[:BOUNDARY_LIMIT])))
    assert len(raw["boundary"]) == BOUNDARY_LIMIT


def test_cursor_stored_in_utc():
    raw: dict = {}
    StreamState(raw).save_cursor(Cursor(T0.astimezone(timezone(timedelta(hours=2))), {}))
    assert raw["since"] == "2024-05-01T12:30:00Z"


def test_rewind_and_clear_resume():
    raw = dict(STORED)
    state = StreamState(raw)
    state.rewind("2024-04-01T00:00:00Z")
    state.clear_resume()
    state.clear_resume()  # nothing to clear: no error
    assert raw["since"] == "2024-04-01T00:00:00Z" and raw["boundary"] == {}
    assert "resume" not in raw


def test_an_empty_resume_entry_is_still_resuming_but_has_no_point():
    # the cadence check asks whether the key exists, the reader whether it holds a point
    state = StreamState({"resume": {}})
    assert state.resuming and state.resume is None


def test_due():
    day = timedelta(days=1)
    assert StreamState({}).due(day, T0)
    assert StreamState({"read_at": T0.isoformat()}).due(None, T0)
    assert not StreamState({"read_at": T0.isoformat()}).due(day, T0 + timedelta(hours=23))
    assert StreamState({"read_at": T0.isoformat()}).due(day, T0 + day)
    resuming = {"read_at": T0.isoformat(), "resume": {"position": 1, "updated_since": None}}
    assert StreamState(resuming).due(day, T0)


def test_entity_streams_write_into_the_resource_state():
    resource: dict = {}
    streams = EntityStreams(resource)
    streams.stream("deals").save_hashes({"1": "a"})
    streams.stream("deals_archived").mark_read(T0)
    assert resource == {
        "streams": {"deals": {"hashes": {"1": "a"}}, "deals_archived": {"read_at": T0.isoformat()}}
    }
    streams.forget()
    assert resource == {"streams": {}}


def test_committed_views():
    pipeline_state = {
        "sources": {
            "pipedrive": {
                "resources": {
                    "deals": {"streams": {"deals": dict(STORED), "deals_archived": {}}},
                    "persons": {"streams": {"persons": {"hashes": {}}}},
                },
                "custom_fields": {"deal": {}},
            }
        }
    }
    source = source_state(pipeline_state)
    assert source["custom_fields"] == {"deal": {}}
    assert source_state(pipeline_state, "other") == {}
    assert source_state(None) == {}
    assert [key for key, _ in committed_streams(source, "deals")] == ["deals", "deals_archived"]
    assert committed_stream(source, "deals", "deals").since == T0
    assert committed_stream(source, "deals", "nope").read_at is None
    assert committed_stream(source, "nope", "nope").read_at is None
    assert has_cursor(source, "deals")
    assert not has_cursor(source, "persons")
    assert not has_cursor(source, "organizations")


# one entity's custom-field catalog as an existing warehouse commits it
STORED_FIELDS = {
    "raw": [{"key": "abc", "name": "Budget"}],
    "fetched_at": "2024-05-01T12:30:00+00:00",
    "pinned": {"abc": "budget"},
    "known": {"abc": {"key": "abc"}},
    "labels": {"abc": {"1": "Low"}},
    "retired": {"def": ["old_column"], "abc before its type changed": ["budget"]},
    "reread": True,
}


def test_field_catalog_reads_and_writes_the_stored_format():
    source = {"custom_fields": {"deal": {**STORED_FIELDS}}, "resources": {}}
    fields = field_state(source, "deal")
    assert fields.definitions == STORED_FIELDS["raw"] and fields.fetched_at == T0
    assert fields.pinned == {"abc": "budget"} and fields.labels == {"abc": {"1": "Low"}}
    assert fields.take_reread() and not fields.take_reread()
    fields.save_definitions([], T0 + timedelta(days=1))
    fields.pinned = {"abc": "budget_2"}
    raw = source["custom_fields"]["deal"]
    assert raw["raw"] == [] and raw["fetched_at"] == "2024-05-02T12:30:00+00:00"
    assert raw["pinned"] == {"abc": "budget_2"} and "reread" not in raw
    assert field_state(source, "person").definitions is None  # created empty
    assert retired_columns({"sources": {"pipedrive": source}}) == {
        "deals": ["old_column", "budget"]
    }
    assert dict(committed_field_states({})) == {}


def test_backfill_progress_in_the_stored_format():
    raw: dict = {}
    state = BackfillState(raw)
    state.start(500, T0)
    state.start(900, T0 + timedelta(days=1))  # the range is fixed by the first run
    state.advance(120)
    assert (state.after, state.until, state.done) == (120, 500, False)
    state.finish(T0)
    assert raw == {
        "until": 500,
        "started_at": "2024-05-01T12:30:00+00:00",
        "after": 120,
        "done": True,
        "finished_at": "2024-05-01T12:30:00+00:00",
    }
