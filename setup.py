"""Build of the C extensions ``kernels._qk`` and ``quant._fakequant``; all metadata lives in pyproject.toml.

The sources are listed explicitly, once, in ``kernels/c/sources.txt``: the C99 core (read here
through ``kernels/c_sources.py``), plus the one binding file that includes ``Python.h``. That
module is loaded by file path because importing the ``kernels`` package needs the extension
this file builds.
"""

import importlib.util
from pathlib import Path

from setuptools import Extension, setup

_spec = importlib.util.spec_from_file_location("_qk_c_sources", Path(__file__).parent / "kernels" / "c_sources.py")
if _spec is None or _spec.loader is None:
    raise ImportError("cannot load kernels/c_sources.py")
c_sources = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(c_sources)

# Relative to the project root, where setuptools runs this file.
C_CORE_SOURCES: list[str] = [path.as_posix() for path in c_sources.core_sources(Path())]

setup(
    ext_modules=[
        Extension(
            "kernels._qk",
            sources=["kernels/_ext/qk_module.c", *C_CORE_SOURCES],
            # The binding sees the public API only; the core finds its internal headers by
            # relative #include.
            include_dirs=["kernels/c/include"],
            extra_compile_args=["-std=c99", "-O3", "-ffp-contract=off", "-Wall", "-Wextra"],
        ),
        # The simulation's one-pass fake quantization and pointwise LSTM step (quant/csrc). -fno-math-errno
        # and -fno-trapping-math let the compiler inline rintf/floorf/truncf as vector instructions and
        # vectorize the selects (no value changes: nothing reads errno or the FP exception flags);
        # -ffp-contract=off keeps every product and sum a rounded float32 operation, as torch computes them.
        Extension(
            "quant._fakequant",
            sources=["quant/csrc/fake_quant_module.c", "quant/csrc/fake_quant.c", "quant/csrc/lstm_step.c",
                     "quant/csrc/site.c"],
            depends=sorted(p.as_posix() for p in Path("quant/csrc").glob("*.h")),  # rebuilt when a header changes
            extra_compile_args=["-std=c99", "-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math",
                                "-Wall", "-Wextra"],
            extra_link_args=["-pthread"],
        ),
    ]
)
