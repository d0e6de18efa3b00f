"""What the headless runner shows: the steps' own log lines on the terminal, everything else in the run's log file.

Dagster's default console logger prints every framework event (about 70 DEBUG lines for a cached run) and a
step failure's whole traceback before the line a user needs. Here the terminal gets what the steps say (INFO and
above, one short line each); the run's log file gets every event and traceback; `verbose` prints both.
The failure summary itself is built from the run's events afterwards (`failures`), one line per failed step.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import dagster as dg

from ops.core.progress import write

# Dagster puts the structured record (step key, the original message, the DagsterEvent) under this attribute.
META = "dagster_meta"


# Dagster's own line for each step skipped after a failure; the failure summary names the cause once instead.
SKIPPED_STEP = re.compile(r"^Dependencies for step \S+ (failed|were not executed)")


# Dagster's event for a step starting to wait on a pool slot: without it on the terminal a queued step looks hung
# (its periodic "still blocked" repeats stay in the log file).
BLOCKED_BY_POOL = re.compile(r"^Step blocked by limit for pool ")


class StepLinesOnly(logging.Filter):
    """Keep what steps log themselves (context.log) and a step's wait for a pool slot; drop Dagster's other events
    and skip notices (the log file has them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        meta = getattr(record, META, None) or {}
        message = meta.get("orig_message", "")
        if BLOCKED_BY_POOL.match(message):  # a DEBUG engine event, shown anyway
            return True
        return (record.levelno >= logging.INFO and meta.get("dagster_event") is None
                and not SKIPPED_STEP.match(message))


class RepeatsDropped(logging.Filter):
    """Show a warning once per run: each step that loads a model repeats the same device warning."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = (getattr(record, META, None) or {}).get("orig_message", record.getMessage())
        new = message not in self.seen
        self.seen.add(message)
        return new


class AboveProgressBars(logging.StreamHandler):
    """Writes each line above any progress bar on the same stream (tqdm.write), so lines never break a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # logging's own contract: a failed emit reports itself and goes on
            self.handleError(record)


class StepLineFormatter(logging.Formatter):
    """`HH:MM:SS step  message`, or `HH:MM:SS step  WARNING message` above INFO."""

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, META, None) or {}
        step = meta.get("step_key") or meta.get("resource_name") or "run"
        message = meta.get("orig_message", record.getMessage())
        level = "" if record.levelno <= logging.INFO else f"{record.levelname} "
        return f"{self.formatTime(record, '%H:%M:%S')} {step:<22s} {level}{message}"


def console_logger(log_file: Path, verbose: bool = False, terminal=None) -> dg.LoggerDefinition:
    """A Dagster logger writing every record to `log_file` and the steps' own lines (all records when
    `verbose`) to `terminal` (default stderr), above any progress bar there."""

    def build(_init_context) -> logging.Logger:
        logger = logging.Logger("qlora", logging.DEBUG)  # not registered globally: one per run
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(to_file)
        to_terminal = AboveProgressBars(terminal or sys.stderr)
        if verbose:
            to_terminal.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        else:
            # INFO and above, but for the pool-wait event (DEBUG): the filter decides
            to_terminal.addFilter(StepLinesOnly())
            to_terminal.addFilter(RepeatsDropped())
            to_terminal.setFormatter(StepLineFormatter())
        logger.addHandler(to_terminal)
        return logger

    return dg.LoggerDefinition(build, description="Steps' lines on the terminal; every event in the run log file.")


def first_line_without_class(cls_name: str, message: str) -> str:
    """`ops.data.sources.DataError: x` -> `x`: Python's formatted exception repeats the (qualified) class name."""
    text = message.strip()
    text = re.sub(rf"^(?:[\w.]+\.)?{re.escape(cls_name)}:\s*", "", text)
    return " ".join(text.split("\n")[0].split()) if text else "(no message)"


# Dagster's wrappers around the user's exception: step errors, and a RetryPolicy's "Exceeded max_retries" (whose
# cause is the error of the last try).
WRAPPERS = ("Dagster", "RetryRequested")


def _user_error(error):
    """The user's exception under Dagster's wrappers (DagsterExecutionStepExecutionError, retry exhaustion)."""
    while error.cause is not None and error.cls_name.startswith(WRAPPERS):
        error = error.cause
    return error


def failed_checks(events) -> list[str]:
    """Checks of ERROR severity that did not pass, with the reason the check gave."""
    found = []
    for event in events:
        if event.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        evaluation = event.event_specific_data
        if evaluation.passed or evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue
        asset = evaluation.asset_key.to_user_string()
        why = " ".join((evaluation.description or "did not pass").split())
        found.append(f"error: blocking check {evaluation.check_name} on {asset} failed: {why}")
    return found


def failures(events) -> list[str]:
    """Every failed step of a run, in order, one line per cause: steps that failed with the same error share a
    line; a step stopped by blocking checks is replaced by the checks, each with its reason."""
    checks = failed_checks(events)
    causes: dict[tuple[str, str], list[str]] = {}  # (class, message) -> steps, in the order they failed
    for event in events:
        if not event.is_step_failure or not event.step_failure_data or not event.step_failure_data.error:
            continue
        error = _user_error(event.step_failure_data.error)
        if error.cls_name == "DagsterAssetCheckFailedError" and checks:
            continue  # the checks below say why, each in its own words
        message = first_line_without_class(error.cls_name, error.message)
        causes.setdefault((error.cls_name, message), []).append(event.step_key)
    found = [f"error: step{'s' if len(steps) > 1 else ''} {', '.join(steps)} failed: {cls}: {message}"
             for (cls, message), steps in causes.items()]
    return found + checks
