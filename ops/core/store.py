"""The content-addressed artifact store: `<root>/<asset>/<fingerprint>/`, written atomically.

A step writes into a temporary sibling directory and renames it into place only when it has finished, so
a crash never leaves something that looks finished. A directory that exists is a cache hit.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, TypeVar

from pydantic import BaseModel, ConfigDict

from .atomic import atomic_dir

COMPLETE_MARKER = "_COMPLETE.json"
CONFIG_KEY = "config"  # the step's settings, saved beside its result for lineage


class StepSummary(BaseModel):
    """Base of every stored op result: saved as the artifact's JSON summary, read back typed on a cache hit."""

    # extra="ignore": the saved file also holds the step's config (CONFIG_KEY), which is no part of the result.
    model_config = ConfigDict(frozen=True, extra="ignore")


S = TypeVar("S", bound=StepSummary)


@dataclass(frozen=True)
class ArtifactRef:
    """What one asset hands the next: where its artifact is and the fingerprint that names it."""

    asset: str
    fingerprint: str
    path: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ArtifactRef":
        return cls(**json.loads(text))


class ArtifactStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, asset: str, fp: str) -> Path:
        return self.root / asset / fp

    def ref(self, asset: str, fp: str) -> ArtifactRef:
        return ArtifactRef(asset=asset, fingerprint=fp, path=str(self.path(asset, fp)))

    def work_dir(self, asset: str, fp: str) -> Path:
        """A directory that survives crashes (training checkpoints), removed once the artifact is finished."""
        return self.root / asset / f".work-{fp}"

    def is_complete(self, asset: str, fp: str) -> bool:
        return (self.path(asset, fp) / COMPLETE_MARKER).is_file()

    @contextmanager
    def writing(self, asset: str, fp: str, replace: bool = False) -> Iterator[Path]:
        """Yield a temporary directory; on success it becomes `<root>/<asset>/<fp>`, on failure it is removed.

        Write the step's summary with `finish(tmp, summary)` before leaving the block. When another process
        finished the same fingerprint first, its artifact is kept (same inputs, same content) unless `replace`.
        Raises:
            RuntimeError: the block finished without writing its summary (nothing is kept).
        """
        with atomic_dir(self.path(asset, fp), replace, lambda d: (d / COMPLETE_MARKER).is_file()) as tmp:
            yield tmp
            if not (tmp / COMPLETE_MARKER).is_file():
                raise RuntimeError(f"step for {asset} finished without writing its summary (store.finish)")
        shutil.rmtree(self.work_dir(asset, fp), ignore_errors=True)


def read_summary(ref: ArtifactRef) -> dict:
    """The summary saved with a finished artifact, as raw JSON (the result's fields and CONFIG_KEY)."""
    return json.loads((Path(ref.path) / COMPLETE_MARKER).read_text())


def read_result(ref: ArtifactRef, result_type: type[S]) -> S:
    """The typed result saved with a finished artifact.

    Raises:
        pydantic.ValidationError: the saved summary lacks a field of `result_type` (written by other code).
    """
    return result_type.model_validate(read_summary(ref))


def read_config(ref: ArtifactRef) -> dict:
    """The settings the artifact was made with."""
    return read_summary(ref).get(CONFIG_KEY, {})


def finish(tmp_dir: Path, summary: dict) -> None:
    """Mark a step's temporary directory as finished, saving its summary (a JSON-able dict)."""
    (Path(tmp_dir) / COMPLETE_MARKER).write_text(json.dumps(summary, indent=2, default=str))


@dataclass(frozen=True)
class StepResult(Generic[S]):
    """A materialized step: where its artifact is, its typed result, its settings, and whether it was cached."""

    ref: ArtifactRef
    summary: S
    config: dict
    cache_hit: bool


def materialize(store: ArtifactStore, asset: str, fp: str, work: Callable[[Path], S], result_type: type[S], *,
                force: bool = False, log: Callable[[str], Any] = print, config: dict | None = None) -> StepResult[S]:
    """Run `work(tmp_dir) -> result` unless `<asset>/<fp>` is already complete (a cache hit).

    Args:
        store, asset, fp: where the artifact goes: `<root>/<asset>/<fp>/`.
        work: writes the artifact into the temporary folder it is given; returns the op's typed result.
        result_type: that result's class, to read a cached summary back.
        force: recompute even when a finished artifact exists; the old one is replaced only once the new one
            has been written completely.
        log: one line per decision (cache hit or computing).
        config: the step's settings, saved beside the result (CONFIG_KEY) for lineage.
    Returns:
        the artifact's reference, typed result, settings and whether it was a cache hit.
    Raises:
        whatever `work` raises; nothing is left that looks finished.
    """
    if store.is_complete(asset, fp) and not force:
        log(f"cache hit: {asset} {fp} is already at {store.path(asset, fp)}")
        ref = store.ref(asset, fp)
        return StepResult(ref, read_result(ref, result_type), read_config(ref), True)
    log(f"computing {asset} {fp}" + (" (forced)" if force else ""))
    with store.writing(asset, fp, replace=force) as tmp:
        result = work(tmp)
        finish(tmp, {**result.model_dump(mode="json"), CONFIG_KEY: config or {}})
    return StepResult(store.ref(asset, fp), result, config or {}, False)
