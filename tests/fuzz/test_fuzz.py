"""The fuzzing harness: its fork server records crashes and hangs without dying, its sanitized build is the
one loaded and is live, its verdicts flag what they must, and a short sanitized run of every target
finds nothing (``make fuzz`` runs the long one)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fuzz import sanitized
from tests.fuzz.api_targets import _judge
from tests.fuzz.server import ForkServer, Verdict
from tests.fuzz.targets import TARGETS

REPO = Path(__file__).resolve().parents[2]


def _misbehave(target: str, case: Any) -> Verdict:
    if case == "segv":
        ctypes.string_at(0)
    elif case == "hang":
        time.sleep(30)
    elif case == "exit":
        os._exit(86)
    return Verdict("ok", str(case))


def test_a_crash_or_a_hang_is_recorded_and_the_server_goes_on() -> None:
    with ForkServer(_misbehave, timeout_s=1.0) as server:
        assert server.run("t", 1) == Verdict("ok", "1")
        crash = server.run("t", "segv")
        assert crash.kind == "crash" and "signal 11 (SIGSEGV)" in crash.detail
        assert server.run("t", 2) == Verdict("ok", "2")  # a fresh worker
        hang = server.run("t", "hang")
        assert hang.kind == "hang" and "within 1 s" in hang.detail
        exited = server.run("t", "exit")
        assert exited.kind == "crash" and "exited with status 86" in exited.detail
        assert server.run("t", 3) == Verdict("ok", "3")
        assert server.restarts == 3


def test_the_verdicts_flag_disagreements_and_unclear_errors() -> None:
    ok = ("ok", np.array([1, 2]))
    assert _judge(ok, ok).kind == "ok"
    assert _judge(ok, ("ok", np.array([1, 3]))).kind == "disagree"
    assert _judge(ok, ("error", ("ValueError", "x: bad"))).kind == "disagree"
    assert _judge(("error", ("TypeError", "x: bad")), ("error", ("ValueError", "x: bad"))).kind == "disagree"
    assert _judge(("error", ("ValueError", "a")), ("error", ("ValueError", "b"))).kind == "refused"
    assert _judge(("error", ("ValueError", "conv2d: oops (qk_status 3)")), ok).kind == "unclear"
    assert _judge(("unclear", "MemoryError: 2 TiB"), ok).kind == "unclear"
    assert _judge(ok, None).kind == "disagree"  # a C-only change C accepted
    assert _judge(("error", ("TypeError", "x must be C-contiguous")), None).kind == "refused"


def test_every_entry_point_has_a_target() -> None:
    from kernels import _qk

    kernel_functions = {"conv2d", "linear", "requantize", "add", "mul", "softmax", "layernorm", "lstm", "gru", "avg_pool2d", "max_pool2d", "lut",
                        "pack", "unpack", "rounding_right_shift", "srdhm"}  # fmt: skip
    free_functions = {"conv2d_output_size", "conv2d_scratch_bytes", "linear_scratch_bytes", "lstm_scratch_bytes",
                      "gru_scratch_bytes", "conv2d_cache_bytes", "linear_cache_bytes",
                      "struct_bytes", "status_message", "isa_query"}  # fmt: skip
    assert {n for n in dir(_qk) if callable(getattr(_qk, n))} == kernel_functions | free_functions | {"abi"}
    for name in kernel_functions:
        assert f"raw.{name}" in TARGETS
    for name in kernel_functions - {"srdhm"}:
        assert f"api.{name}" in TARGETS
    assert "api.saturating_rounding_doubling_high_mul" in TARGETS and "custom.detection.nms" in TARGETS
    assert "raw.custom.detection.nms" in TARGETS and "raw.free_functions" in TARGETS


_ASAN = sanitized.available()


@pytest.mark.skipif(_ASAN is not None, reason=f"no sanitized build here: {_ASAN}")
def test_the_sanitized_extension_is_the_one_loaded_and_asan_is_live(tmp_path: Path) -> None:
    extension = sanitized.build()
    script = (
        "import ctypes, numpy as np\n"
        "from tests.fuzz import sanitized\n"
        "path = sanitized.load()\n"
        "import kernels\n"
        "from kernels import _qk, api\n"
        "assert _qk.__file__ == api._qk.__file__ == str(path), _qk.__file__\n"
        "print('loaded', flush=True)\n"
        "a = np.zeros(8, np.uint8)\n"
        "ctypes.memset(a.ctypes.data, 1, 64)  # a heap overflow of 56 bytes\n"
    )  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=sanitized.environment(extension),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "loaded" in done.stdout, done.stderr[-2000:]
    assert done.returncode == 86 and "AddressSanitizer: heap-buffer-overflow" in done.stderr


def test_a_short_run_of_every_target_finds_nothing(tmp_path: Path) -> None:
    """Every target, ~100 cases each, under ASan+UBSan where available (else without), 0 findings."""
    args = [sys.executable, "-m", "tests.fuzz", "--cases", str(100 * len(TARGETS)), "--no-progress", "--seed", "7",
            "--out", str(tmp_path)]  # fmt: skip
    if _ASAN is None:
        args.append("--sanitize")
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=540)
    findings = (tmp_path / "findings.jsonl").read_text() if (tmp_path / "findings.jsonl").exists() else ""
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + findings[:3000]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["sanitized"] is (_ASAN is None)
    assert set(report["targets"]) == set(TARGETS) and report["findings"] == 0
    assert report["cases"] >= 95 * len(TARGETS)
