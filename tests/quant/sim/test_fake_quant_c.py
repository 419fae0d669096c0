"""quant/csrc (the fused fake quantization and LSTM step) under ASan + UBSan: the self-checking sweep of
tests/quant/sim/fake_quant_sanitizer_driver.c (every entry point, loop set and granularity, NaN/Inf and
extremes, threads, refusals) exits 0 without a report; and the sources build warning-free as strict C99."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CSRC = ROOT / "quant" / "csrc"
SOURCES = [CSRC / "fake_quant.c", CSRC / "lstm_step.c", CSRC / "site.c"]
DRIVER = Path(__file__).with_name("fake_quant_sanitizer_driver.c")
CC = os.environ.get("CC", "cc")
# the extension's own semantics flags (setup.py), strict warnings
FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-ffp-contract=off", "-fno-math-errno",
         "-fno-trapping-math", "-pthread"]  # fmt: skip

pytestmark = pytest.mark.skipif(shutil.which(CC) is None, reason=f"no C compiler ({CC}); install gcc")


def test_the_core_builds_as_strict_c99(tmp_path: Path) -> None:
    for src in SOURCES:
        proc = subprocess.run([CC, *FLAGS, "-O2", f"-I{CSRC}", "-c", str(src), "-o", str(tmp_path / "o.o")],
                              capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 0 and not proc.stderr, f"{src.name}:\n{proc.stderr}"


def test_sanitizer_sweep(tmp_path: Path) -> None:
    exe = tmp_path / "fake_quant_sanitizer_driver"
    flags = [*FLAGS, "-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined,float-cast-overflow",
             "-fno-sanitize-recover=all"]  # fmt: skip
    build = subprocess.run([CC, *flags, f"-I{CSRC}", *map(str, SOURCES), str(DRIVER), "-o", str(exe), "-lm"],
                           capture_output=True, text=True)  # fmt: skip
    assert build.returncode == 0 and not build.stderr, build.stderr
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")
    run = subprocess.run([str(exe), "20261201", "250"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout == "" and run.stderr == "", run.stdout + run.stderr
