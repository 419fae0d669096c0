"""Brevitas as a peer of the benchmarks, installed beside the venv without touching torch.

``pip install --no-deps --target build/peers/brevitas brevitas dependencies==2.0.1 unfoldNd`` once (the two
small pure-Python packages are what Brevitas needs that the venv lacks); a benchmark then runs Brevitas in
a process of its own whose ``PYTHONPATH`` puts that folder first (:func:`brevitas_env`), so the benchmark's
own process never imports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent

#: Where :func:`install_brevitas` puts Brevitas and the two pure-Python packages it needs that the venv lacks.
BREVITAS_DIR = ROOT / "build" / "peers" / "brevitas"
BREVITAS_PACKAGES = ("brevitas", "dependencies==2.0.1", "unfoldNd")


def install_brevitas(probe: str, target: Path = BREVITAS_DIR) -> Optional[str]:
    """Brevitas in ``target`` (pip ``--no-deps --target``, once; torch and the venv untouched), checked by
    running the import statement ``probe`` in another process. ``None`` when it imports, else why not (pip's
    or the import's error)."""
    if not (target / "brevitas").is_dir():
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "--target",
               str(target), *BREVITAS_PACKAGES]  # fmt: skip
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"`{' '.join(cmd[2:])}` failed: {e}"
        if done.returncode != 0:
            return f"`{' '.join(cmd[2:])}` failed (exit {done.returncode}): {last_line(done.stderr or done.stdout)}"
    try:
        done = subprocess.run([sys.executable, "-W", "ignore", "-c", probe], capture_output=True, text=True,
                              timeout=300, env=brevitas_env(target))  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"importing brevitas from {target} failed: {e}"
    if done.returncode != 0:
        return f"importing brevitas from {target} failed: {last_line(done.stderr)}"
    return None


def last_line(text: str) -> str:
    """The last non-blank line of a process's output (the error of a traceback)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def brevitas_env(target: Path = BREVITAS_DIR) -> dict[str, str]:
    """This process's environment with ``target`` and the project first on ``PYTHONPATH``."""
    paths = [str(target), str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
