"""The device probe answers what resolve_device would, without torch, or says it cannot tell."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.model.device_probe import confirm_probe, cpu_dtype_name, cpu_flags, cuda_impossible, probe_device_kind

AVX2 = frozenset({"fpu", "sse4_2", "avx", "avx2", "fma"})
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl"}


def cpuinfo(tmp_path: Path, flags: frozenset[str] | None) -> Path:
    path = tmp_path / "cpuinfo"
    lines = ["processor\t: 0", "model name\t: test"] + ([f"flags\t\t: {' '.join(sorted(flags))}"] if flags else [])
    path.write_text("\n".join(lines) + "\n")
    return path


def dev(tmp_path: Path, *nodes: str) -> Path:
    folder = tmp_path / "dev"
    folder.mkdir()
    for node in nodes:
        (folder / node).touch()
    return folder


@pytest.mark.parametrize(("flags", "expected"), [
    (AVX2, "float32"),  # no AVX512F: neither AVX512-BF16 nor AMX can be there
    (AVX512 | {"avx512_bf16"}, "bfloat16"),
    (AVX512 | {"amx_bf16", "amx_tile"}, "bfloat16"),
    (AVX512, None),  # bitsandbytes' cpuid probe may still find AVX512-BF16: only torch's path can tell
    (None, None),  # no /proc/cpuinfo (macOS, Windows)
])
def test_the_cpu_dtype_follows_the_flags_or_is_left_to_torch(flags, expected):
    assert cpu_dtype_name(flags) == expected


@pytest.mark.parametrize(("label", "platform", "nodes", "expected"), [
    ("cpu", "linux", ("nvidia0", "nvidiactl"), True),  # a CPU build of torch has no CUDA, whatever the machine has
    ("", "linux", (), True),  # a CUDA build without the driver's device nodes
    ("cu128", "linux", ("nvidiactl", "nvidia0"), False),
    ("", "linux", ("dxg",), False),  # WSL2 reaches the GPU through /dev/dxg
    ("rocm6.4", "linux", (), False),  # ROCm answers torch.cuda through /dev/kfd
    ("", "darwin", (), True),
    ("", "win32", (), False),
    (None, "linux", (), False),  # no torch installed: resolve_device's own error should surface
])
def test_cuda_is_ruled_out_only_when_it_cannot_be_there(tmp_path, label, platform, nodes, expected):
    assert cuda_impossible(label, platform, dev(tmp_path, *nodes)) is expected


def test_the_probe_reads_the_flags_line(tmp_path):
    assert cpu_flags(cpuinfo(tmp_path, AVX512 | {"amx_bf16"})) == AVX512 | {"amx_bf16"}
    assert cpu_flags(cpuinfo(tmp_path, None)) is None
    assert cpu_flags(tmp_path / "missing") is None
    gpu_dev = dev(tmp_path, "nvidia0")
    assert probe_device_kind("cpu", "linux", gpu_dev, cpuinfo(tmp_path, AVX2)) == ("cpu", "float32")
    assert probe_device_kind("cu128", "linux", gpu_dev, cpuinfo(tmp_path, AVX2)) is None


@pytest.mark.slow  # imports torch
def test_the_probe_agrees_with_resolve_device_on_this_machine():
    from ops.model.device import resolve_device

    info = resolve_device()
    probed = probe_device_kind()
    assert probed in (None, (info.type, info.dtype_name))
    confirm_probe(probed or (info.type, info.dtype_name), (info.type, info.dtype_name))


def test_a_disagreement_stops_the_step():
    with pytest.raises(RuntimeError, match="device probe said cpu/float32 but torch resolved cpu/bfloat16"):
        confirm_probe(("cpu", "float32"), ("cpu", "bfloat16"))
