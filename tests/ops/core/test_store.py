"""The content-addressed store: work runs once, then is a cache hit; a crash never leaves a finished-looking artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.core.store import (
    COMPLETE_MARKER,
    ArtifactRef,
    ArtifactStore,
    StepSummary,
    finish,
    materialize,
    read_config,
    read_result,
    read_summary,
)


class Payload(StepSummary):
    rows: int
    value: str


class Empty(StepSummary):
    pass


class CountingWork:
    """A step that writes one file and counts how often it really ran."""

    def __init__(self, value: str = "v1"):
        self.calls, self.value = 0, value

    def __call__(self, tmp):
        self.calls += 1
        (tmp / "payload.txt").write_text(self.value)
        return Payload(rows=3, value=self.value)


def leftovers(store: ArtifactStore, asset: str) -> list[str]:
    return sorted(p.name for p in (store.root / asset).iterdir() if p.name.startswith(".tmp-"))


def test_materialize_runs_once_then_hits_the_cache(tmp_path):
    store, work, lines = ArtifactStore(tmp_path), CountingWork(), []
    first = materialize(store, "ds", "fp1", work, Payload, log=lines.append, config={"max_rows": 3})
    assert work.calls == 1 and first.cache_hit is False
    assert first.ref == ArtifactRef("ds", "fp1", str(tmp_path / "ds" / "fp1"))
    assert first.summary == Payload(rows=3, value="v1") and first.config == {"max_rows": 3}
    assert (tmp_path / "ds" / "fp1" / "payload.txt").read_text() == "v1"
    assert store.is_complete("ds", "fp1")

    second = materialize(store, "ds", "fp1", work, Payload, log=lines.append, config={"max_rows": 3})
    assert work.calls == 1  # not called again
    assert second.cache_hit is True and second.ref == first.ref and second.summary == first.summary
    assert second.config == first.config
    assert lines == ["computing ds fp1", f"cache hit: ds fp1 is already at {tmp_path / 'ds' / 'fp1'}"]

    other = materialize(store, "ds", "fp2", work, Payload, log=lines.append)
    assert work.calls == 2 and other.cache_hit is False and other.config == {}
    assert leftovers(store, "ds") == []


def test_force_recomputes_and_replaces_the_artifact(tmp_path):
    store = ArtifactStore(tmp_path)
    materialize(store, "ds", "fp", CountingWork("old"), Payload, log=lambda _: None)
    newer, lines = CountingWork("new"), []
    result = materialize(store, "ds", "fp", newer, Payload, force=True, log=lines.append)
    assert newer.calls == 1 and result.cache_hit is False
    assert (tmp_path / "ds" / "fp" / "payload.txt").read_text() == "new"
    assert read_result(result.ref, Payload).value == "new"
    assert lines == ["computing ds fp (forced)"]
    assert leftovers(store, "ds") == []


def test_a_crash_inside_work_leaves_nothing_that_looks_finished(tmp_path):
    store = ArtifactStore(tmp_path)

    def crashing(tmp):
        (tmp / "half-written.bin").write_bytes(b"\0" * 1000)
        raise KeyboardInterrupt("killed mid-write")

    with pytest.raises(KeyboardInterrupt, match="killed mid-write"):
        materialize(store, "model", "fp", crashing, Payload, log=lambda _: None)
    assert not store.is_complete("model", "fp")
    assert not store.path("model", "fp").exists()
    assert list((tmp_path / "model").iterdir()) == []  # no .tmp- directory either

    work = CountingWork()
    assert materialize(store, "model", "fp", work, Payload, log=lambda _: None).cache_hit is False and work.calls == 1


def test_a_failed_forced_rerun_keeps_the_previous_artifact(tmp_path):
    store = ArtifactStore(tmp_path)
    materialize(store, "ds", "fp", CountingWork("old"), Payload, log=lambda _: None)

    def failing(tmp):
        raise ValueError("bad data")

    with pytest.raises(ValueError, match="bad data"):
        materialize(store, "ds", "fp", failing, Payload, force=True, log=lambda _: None)
    assert (tmp_path / "ds" / "fp" / "payload.txt").read_text() == "old"
    assert store.is_complete("ds", "fp") and leftovers(store, "ds") == []


def test_a_step_that_forgets_its_summary_is_not_finished(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError, match=r"step for ds finished without writing its summary \(store.finish\)"):
        with store.writing("ds", "fp") as tmp:
            (tmp / "payload.txt").write_text("x")
    assert not store.path("ds", "fp").exists() and leftovers(store, "ds") == []


def test_an_incomplete_leftover_is_recomputed_and_replaced(tmp_path):
    store = ArtifactStore(tmp_path)
    stale = store.path("ds", "fp")
    stale.mkdir(parents=True)
    (stale / "junk").write_text("from a run that died before the rename existed")
    work = CountingWork()
    result = materialize(store, "ds", "fp", work, Payload, log=lambda _: None)
    assert work.calls == 1 and result.cache_hit is False
    assert sorted(p.name for p in stale.iterdir()) == [COMPLETE_MARKER, "payload.txt"]


def test_finishing_removes_the_work_dir(tmp_path):
    store = ArtifactStore(tmp_path)
    work_dir = store.work_dir("adapter", "fp")
    assert work_dir == tmp_path / "adapter" / ".work-fp"
    work_dir.mkdir(parents=True)
    (work_dir / "checkpoint-2").mkdir()

    def work(tmp):
        assert work_dir.is_dir()  # survives while the step runs, for resuming
        return Empty()

    materialize(store, "adapter", "fp", work, Empty, log=lambda _: None)
    assert not work_dir.exists()


def test_summary_round_trips_through_read_result_and_ref_json(tmp_path):
    class Typed(StepSummary):
        path: Path
        n: float
        history: list[tuple[int, float]]

    store = ArtifactStore(tmp_path)
    made = Typed(path=tmp_path, n=1.5, history=[(1, 2.5)])
    result = materialize(store, "ds", "fp", lambda tmp: made, Typed, log=lambda _: None,
                         config={"source": "bundled", "seed": 42})
    saved = json.loads((tmp_path / "ds" / "fp" / COMPLETE_MARKER).read_text())
    assert saved == {"path": str(tmp_path), "n": 1.5, "history": [[1, 2.5]], "config": {"source": "bundled", "seed": 42}}
    assert read_summary(result.ref) == saved
    assert read_result(result.ref, Typed) == made == result.summary  # what a cache hit reads back
    assert read_config(result.ref) == {"source": "bundled", "seed": 42}
    assert materialize(store, "ds", "fp", lambda tmp: None, Typed, log=lambda _: None).summary == made
    assert ArtifactRef.from_json(result.ref.to_json()) == result.ref


def test_finish_writes_the_marker(tmp_path):
    finish(tmp_path, {"a": 1})
    assert json.loads((tmp_path / COMPLETE_MARKER).read_text()) == {"a": 1}
