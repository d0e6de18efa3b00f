"""Registrations racing against one embedded sqlite registry: distinct versions, no duplicates, no lock errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from tests.tiny import write_tiny_report

pytestmark = pytest.mark.slow

SCRIPT = r"""
import json, sys, time
from pathlib import Path
from ops.registry.register import register_once
from ops.registry.spec import RegistrySpec
args = json.loads(sys.argv[1])
while time.time() < args["start_at"]:  # all processes reach MLflow together
    time.sleep(0.01)
info = register_once(
    tracking_uri=args["uri"], registry_uri=None, artifact_location=None, experiment="concurrency",
    spec=RegistrySpec(model_name="race"), adapter_dir=Path(args["adapter"]), base_model_dir=Path(args["base"]),
    prompt_format="alpaca", params={"i": args["fp"]}, metrics={"tuned": {"eval_loss": 1.0}},
    report_path=Path(args["report"]), tags={"registration_fingerprint": args["fp"]}, log=lambda _: None)
print(json.dumps({"fp": args["fp"], "version": info.version, "cache_hit": info.cache_hit}))
"""


def test_four_concurrent_registrations_get_distinct_versions_and_a_duplicate_gets_none(tiny_quantized, tiny_adapter, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report = tmp_path / "report.json"
    write_tiny_report(report)
    MlflowClient(uri).search_experiments()  # create the schema once, as the pipeline's first step would
    start_at = time.time() + 25  # after every process has imported torch and mlflow
    fingerprints = ["fp-0", "fp-1", "fp-2", "fp-3", "fp-0"]  # the last one repeats the first adapter
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = [subprocess.Popen(
        [sys.executable, "-c", SCRIPT, json.dumps({
            "uri": uri, "fp": fp, "start_at": start_at, "report": str(report),
            "adapter": str(tiny_adapter[0] / "adapter"), "base": str(tiny_quantized[0] / "model")})],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for fp in fingerprints]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        assert "database is locked" not in err
        results.append(json.loads(out.strip().splitlines()[-1]))

    versions = MlflowClient(uri).search_model_versions("name='race'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]
    by_fp = {}
    for r in results:
        by_fp.setdefault(r["fp"], set()).add(r["version"])
    assert all(len(v) == 1 for v in by_fp.values()), by_fp  # both fp-0 registrations name one version
    assert sum(r["cache_hit"] for r in results) == 1
    tags = {v.tags["registration_fingerprint"]: int(v.version) for v in versions}
    assert tags == {fp: next(iter(vs)) for fp, vs in by_fp.items()}
