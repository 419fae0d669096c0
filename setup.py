"""Build of the C extension ``kernels._qk``; all metadata lives in pyproject.toml.

The sources are listed explicitly: the C99 core under ``kernels/c/src`` and the one
binding file that includes ``Python.h``.
"""

from setuptools import Extension, setup

C_CORE_SOURCES: list[str] = [
    "kernels/c/src/qk_add.c",
    "kernels/c/src/qk_avg_pool2d.c",
    "kernels/c/src/qk_check_bias.c",
    "kernels/c/src/qk_check_datapath.c",
    "kernels/c/src/qk_check_output.c",
    "kernels/c/src/qk_check_requant.c",
    "kernels/c/src/qk_check_weights.c",
    "kernels/c/src/qk_check_x_zero_point.c",
    "kernels/c/src/qk_conv2d.c",
    "kernels/c/src/qk_conv2d_output_size.c",
    "kernels/c/src/qk_depthwise_row.c",
    "kernels/c/src/qk_gemm_i16.c",
    "kernels/c/src/qk_isa_query.c",
    "kernels/c/src/qk_linear.c",
    "kernels/c/src/qk_load_weights.c",
    "kernels/c/src/qk_lut.c",
    "kernels/c/src/qk_max_abs_diff.c",
    "kernels/c/src/qk_max_pool2d.c",
    "kernels/c/src/qk_mm_block.c",
    "kernels/c/src/qk_pack.c",
    "kernels/c/src/qk_requant_row.c",
    "kernels/c/src/qk_requantize.c",
    "kernels/c/src/qk_rounding_right_shift.c",
    "kernels/c/src/qk_saturating_rounding_doubling_high_mul.c",
    "kernels/c/src/qk_select_isa.c",
    "kernels/c/src/qk_status_message.c",
    "kernels/c/src/qk_unpack.c",
]

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
