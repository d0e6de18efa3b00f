"""`qlora`: look up, compare, load and export registered adapters on any MLflow tracking server.

    qlora models [NAME] [--json]           registered models, or one model's versions
    qlora show NAME@ALIAS|NAME/VERSION     one version's lineage tags, params and metrics
    qlora generate REF [PROMPT...] [--input TEXT]... [--system TEXT] [--messages JSON]... [--max-new-tokens N]
    qlora export REF OUT_DIR [--dtype auto|bfloat16|float32]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..data.prompt_formats import check_request
from . import lookup


def cmd_models(client, args) -> Any:
    """List registered models, or the versions of one."""
    if args.name:
        return lookup.list_versions(client, args.name)
    return lookup.list_models(client)


def cmd_show(client, args) -> Any:
    """One version's details."""
    return lookup.version_details(client, lookup.resolve(client, lookup.parse_ref(args.ref)))


def generation_requests(args) -> list[dict[str, Any]]:
    """The request rows `qlora generate` sends: one per PROMPT (with its --input), one per --messages.

    A PROMPT is the instruction of an alpaca model, the user message of a chat model, else the raw prompt.
    --input is given once for every prompt or once per prompt; --system goes with every request.
    """
    prompts, inputs = list(args.prompts), list(args.input or [])
    if inputs and len(inputs) not in (1, len(prompts)):
        raise lookup.LookupFailed(f"--input was given {len(inputs)} times for {len(prompts)} prompts; "
                                  "give it once (for every prompt) or once per prompt")
    requests = [{"prompt": p, **({"input": inputs[0] if len(inputs) == 1 else inputs[i]} if inputs else {})}
                for i, p in enumerate(prompts)]
    for text in args.messages or []:
        try:
            messages = json.loads(text)
        except json.JSONDecodeError as err:
            raise lookup.LookupFailed(f"--messages is not JSON ({err.msg}): {text[:80]!r}") from None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise lookup.LookupFailed(f'--messages must be a JSON list of {{"role", "content"}} objects: {text[:80]!r}')
        requests.append({"messages": messages})
    if not requests:
        raise lookup.LookupFailed("nothing to generate: give a PROMPT or --messages")
    return [{**r, "system": args.system} if args.system is not None else r for r in requests]


def cmd_generate(client, args) -> Any:
    """Load the registered pyfunc model and generate for each request, rendered as in training."""
    import mlflow
    import pandas as pd

    requests = generation_requests(args)
    ref = lookup.parse_ref(args.ref)
    lookup.resolve(client, ref)  # a clear error before a slow download
    # The model's training format, from its MLmodel file alone: bad requests fail before the weights load.
    config = mlflow.models.Model.load(ref.uri).flavors["python_function"].get("config") or {}
    for n, request in enumerate(requests, 1):
        try:
            check_request(request, config.get("prompt_format", "text"))
        except ValueError as err:
            raise lookup.LookupFailed(f"request {n}: {err}") from None
    model = mlflow.pyfunc.load_model(ref.uri)
    outputs = []
    # One call per run of rows with the same fields: MLflow cannot convert a column that some rows leave out
    # when its values are lists (messages).
    for _, group in itertools.groupby(requests, key=lambda r: sorted(r)):
        rows = list(group)
        outputs += model.predict(pd.DataFrame(rows), params={"max_new_tokens": args.max_new_tokens})
    return [{**r, "generation": g} for r, g in zip(requests, outputs)]


def cmd_export(client, args) -> Any:
    """Download the version, merge adapter into the dequantized base, save, and measure the difference."""
    import mlflow

    from ..model.device import resolve_device
    from ..model.export import export_merged

    ref = lookup.parse_ref(args.ref)
    lookup.resolve(client, ref)
    with tempfile.TemporaryDirectory(prefix="qlora-export-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=tmp))
        flavor = mlflow.models.Model.load(local).flavors["python_function"]
        artifacts = flavor.get("artifacts", {})
        if "base_model" not in artifacts:
            raise lookup.LookupFailed(f"{ref.uri} was logged without its base (hub id "
                                      f"{flavor.get('config', {}).get('base_model_id')!r}); export needs the base")
        return export_merged(local / artifacts["base_model"]["path"], local / artifacts["adapter"]["path"],
                             args.out_dir, resolve_device(),
                             prompt_format=flavor.get("config", {}).get("prompt_format", "text"),
                             dtype=args.dtype).model_dump()


def print_models(result: list[dict], args) -> None:
    print(lookup.table(result))


def print_show(result: dict, args) -> None:
    for key in ("name", "version", "aliases", "status", "created", "run_id", "source"):
        print(f"{key + ':':<9} {lookup.cell(result[key])}")
    for section in ("tags", "params", "metrics"):
        print(f"\n{section}:")
        width = max((len(k) for k in result[section]), default=0)
        for key, value in result[section].items():
            shown = lookup.cell(value) if section == "metrics" else lookup.shorten(str(value))
            print(f"  {key:<{width}}  {shown}")


def print_generate(result: list[dict], args) -> None:
    for row in result:
        asked = row["prompt"] if "prompt" in row else row["messages"][-1]["content"]
        if "input" in row:
            asked = f"{asked} | {row['input']}"
        print(row["generation"] if len(result) == 1 else f"{asked!r} -> {row['generation']}")


def print_export(result: dict, args) -> None:
    from ..model.export import ExportResult, describe

    print(describe(ExportResult.model_validate(result)))


COMMANDS = {"models": (cmd_models, print_models), "show": (cmd_show, print_show),
            "generate": (cmd_generate, print_generate), "export": (cmd_export, print_export)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qlora", description="Look up, load and export registered adapters. "
                                     "Tracking server: MLFLOW_TRACKING_URI, else the sqlite registry in QLORA_HOME.")
    parser.add_argument("--tracking-uri", help="overrides MLFLOW_TRACKING_URI")
    sub = parser.add_subparsers(dest="command", required=True)
    models = sub.add_parser("models", help="list registered models, or one model's versions")
    models.add_argument("name", nargs="?")
    show = sub.add_parser("show", help="one version's lineage, params and metrics")
    show.add_argument("ref", help="NAME@ALIAS or NAME/VERSION")
    gen = sub.add_parser("generate", help="generate with a registered model")
    gen.add_argument("ref", help="NAME@ALIAS or NAME/VERSION")
    gen.add_argument("prompts", nargs="*", metavar="PROMPT",
                     help="an alpaca model's instruction, a chat model's user message, else the whole prompt")
    gen.add_argument("--input", action="append", metavar="TEXT",
                     help="alpaca input section: once for every prompt, or once per prompt")
    gen.add_argument("--system", metavar="TEXT", help="chat system message (default: the one the training data had)")
    gen.add_argument("--messages", action="append", metavar="JSON",
                     help='a whole chat conversation ending with a user turn: \'[{"role": "user", "content": "..."}]\'')
    gen.add_argument("--max-new-tokens", type=int, default=32)
    export = sub.add_parser("export", help="write the base with the adapter merged, loadable without PEFT/bnb")
    export.add_argument("ref", help="NAME@ALIAS or NAME/VERSION")
    export.add_argument("out_dir", type=Path)
    export.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"])
    for p in (models, show, gen, export):
        p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `qlora` console script; errors are one line on stderr and exit status 1."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stdout parseable
    uri = args.tracking_uri or lookup.tracking_uri()
    run, show = COMMANDS[args.command]
    try:
        os.environ["MLFLOW_TRACKING_URI"] = uri  # pyfunc loading reads the global URI
        result = run(lookup.connect(uri), args)
    except lookup.LookupFailed as exc:
        return fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - a CLI prints one line, not a traceback
        return fail(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:500])
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        show(result, args)
    return 0


def fail(message: str) -> int:
    print(f"qlora: error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
