"""Progress bars for long loops (training steps, evaluation batches), shown only on a terminal.

A bar goes to `terminal()`: sys.stderr, unless a runner named the real terminal with `bars_to(stream)` (the
headless runner does, because Dagster redirects the process's stderr into its compute-log file while steps run).
tqdm's `disable=None` turns a bar off when that stream is not a TTY, so the Dagster UI's logs, pytest and piped
output never see one. Log lines printed while a bar is up must go through `write` (tqdm.write), or they break it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from contextlib import contextmanager
from typing import Any, Iterator, TextIO

from tqdm import tqdm

_TERMINAL: TextIO | None = None  # set by bars_to(); None: sys.stderr as it is when a bar starts


def terminal() -> TextIO:
    """The stream bars and the lines around them are written to."""
    return _TERMINAL or sys.stderr


@contextmanager
def bars_to(stream: TextIO | None) -> Iterator[None]:
    """Send bars to `stream` (e.g. a duplicate of the terminal's stderr taken before a redirect) inside the block."""
    global _TERMINAL
    saved, _TERMINAL = _TERMINAL, stream
    try:
        yield
    finally:
        _TERMINAL = saved


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
             leave: bool = False, file: TextIO | None = None, disable: bool | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar over `iterable` (or `total` manual updates), on the terminal only.

    Args:
        iterable: what to loop over; None for a bar advanced with `.update(n)`.
        total: how many items (default len(iterable) where it has one).
        desc: the bar's label, e.g. "train" or "eval base loss".
        unit: what one item is ("step", "batch").
        leave: keep the finished bar on screen (False: erased, the step's log line says the outcome).
        file: where to draw (default `terminal()`).
        disable: None: draw only when `file` is a TTY (tqdm's rule); True/False force it (tests use False).
        kwargs: passed to tqdm (postfix, initial, ...).
    Returns:
        the tqdm object; iterate over it or call `.update()`, and close it (or use it as a context manager).
    """
    # disable is always passed explicitly, so the TQDM_DISABLE that hides libraries' bars does not hide these
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=file or terminal(), disable=disable,
                dynamic_ncols=True, **kwargs)


def write(line: str, file: TextIO | None = None) -> None:
    """Print `line` above any bar on the same stream (tqdm.write), without breaking the bar."""
    tqdm.write(line, file=file or terminal())
