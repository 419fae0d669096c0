"""Build of the C extension ``kernels._qk``; all metadata lives in pyproject.toml.

The sources are listed explicitly: the C99 core under ``kernels/c/src`` and the one
binding file that includes ``Python.h``.
"""

from setuptools import Extension, setup

C_CORE_SOURCES: list[str] = []

setup(
    ext_modules=[
        Extension(
            "kernels._qk",
            sources=["kernels/_ext/qk_module.c", *C_CORE_SOURCES],
            include_dirs=["kernels/c/include"],
            extra_compile_args=["-std=c99", "-O3", "-ffp-contract=off", "-Wall", "-Wextra"],
        )
    ]
)
