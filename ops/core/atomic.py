"""Writing so that a crash never leaves something that looks finished: into a temporary sibling, then renamed.

One rule for every writer of the project: the artifact store's step folders, the embedded base's build and the
IO manager's artifact references.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(final: Path, replace: bool = False,
               is_complete: Callable[[Path], bool] = Path.exists) -> Iterator[Path]:
    """Yield an empty temporary sibling of `final`; when the block succeeds it becomes `final`, else it is removed.

    Args:
        final: the folder to create.
        replace: replace a complete `final` (a forced rebuild); else one finished first by another process is
            kept (same inputs, same content) and ours dropped.
        is_complete: whether an existing `final` counts as finished; one that does not (a leftover) is replaced.
    Raises:
        whatever the block raises; OSError when the rename fails and no complete `final` exists either.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if is_complete(final) and not replace:
            return  # a concurrent writer finished first; `finally` drops ours
        if final.exists():  # a forced rebuild, or an incomplete leftover
            shutil.rmtree(final)
        try:
            os.replace(tmp, final)
        except OSError:  # lost a race with a concurrent writer between the check and the rename
            if not is_complete(final):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary sibling renamed into place: readers see the old or the new file,
    never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
