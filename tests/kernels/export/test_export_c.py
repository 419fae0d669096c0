"""``kernels.export_c``: exported folders of zoo programs build with gcc and clang, at -O0 and -O2, under
ASan/UBSan and for a 32-bit target, from a copy elsewhere (they depend on nothing outside themselves), and
reproduce every output code (and every op's, with intermediates) of the torch reference; the same
program gives a byte-identical folder; a wrong expected code is reported with its element; refusals.

gcc is needed (the kernel build needs it anyway); clang and the 32-bit libraries are installed by
``make toolchains`` (Debian: clang, gcc-multilib), and their tests are skipped with that hint without them.
``LOWBIT_FULL_SWEEP=1`` (``make test-all``) exports and runs every zoo model on every preset.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

import experiments.zoo
import kernels
from kernels.custom import compile_custom_op
import quant
from quant.contract.datapath import PRESETS
from quant.ir.program import IntegerProgram
from tests.quant.lowering.test_lowering import ZOO, ZOO_PRESETS, calibrated

CC = os.environ.get("CC", "cc")


def _works(cmd: list[str], tmp: Path) -> bool:
    src = tmp / "probe.c"
    src.write_text("#include <stdint.h>\nint main(void) { return (int)sizeof(int32_t) - 4; }\n")
    try:
        built = subprocess.run([*cmd, str(src), "-o", str(tmp / "probe")], capture_output=True, timeout=60)
        return built.returncode == 0 and subprocess.run([str(tmp / "probe")], timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def toolchains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bool]:
    tmp = tmp_path_factory.mktemp("probe")
    return {"clang": _works(["clang"], tmp), "m32": _works([CC, "-m32"], tmp), "cc": _works([CC], tmp)}


def zoo_program(name: str, preset: str, samples: int = 24) -> tuple[IntegerProgram, torch.Tensor]:
    """:func:`experiments.zoo.zoo_program` and ``samples`` seeded inputs of the model."""
    program, make_input = experiments.zoo.zoo_program(name, preset)
    torch.manual_seed(0)
    return program, make_input(samples)


def build_and_run(folder: Path, tmp: Path, cc: str = CC, cflags: str = "-O2") -> subprocess.CompletedProcess[str]:
    """``make test`` on a copy of ``folder`` in another place (the export must need nothing outside itself)."""
    copy = tmp / f"copy-{abs(hash((cc, cflags))) % 10**8}"
    shutil.copytree(folder, copy)
    try:
        return subprocess.run(["make", "-s", f"-j{os.cpu_count() or 1}", "-C", str(copy), "test", f"CC={cc}", f"CFLAGS={cflags}"],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    finally:
        shutil.rmtree(copy, ignore_errors=True)


SANITIZE = "-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"
#: Models and presets whose exports are built six ways (gcc and clang at -O0 and -O2, gcc with ASan/UBSan, gcc -m32;
#: in the default suite each build but the sanitizers' on two of them, see _build_cases).
CASES = [("residual", "tflite_int8"), ("inverted_residual", "w4a4_acc16_sat"), ("detector", "fbgemm_int8"),
         ("keyword_spotter", "w2a2_pow2_acc16")]  # fmt: skip
#: More, built once under the sanitizers: every op kind and preset of the zoo appears in one of the two lists.
MORE = [("branches", "mlas"), ("attention", "w4a8_acc32"), ("squeeze_excite", "w4a4_acc16_sat"),
        ("digits", "tflite_int8"), ("bn_cnn", "w2a2_pow2_acc16"), ("activations", "fbgemm_int8"),
        ("transformer_block", "w4a4_acc16_sat")]  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], Path]]:
    root = tmp_path_factory.mktemp("exports")
    folders = {}
    for name, preset in CASES + MORE:
        program, x = zoo_program(name, preset)
        folders[(name, preset)] = root / f"{name}-{preset}"
        kernels.export_c(program, folders[(name, preset)], x, intermediates=True, quiet=True)
    yield folders


BUILDS = ["gcc -O0", "gcc -O2", "gcc sanitizers", "clang -O0", "clang -O2", "gcc -m32"]


def _build_cases() -> list[tuple[str, str, str]]:
    """(name, preset, build): every case under the sanitizers and every other build on two cases in turn, so
    that each build and each case is covered (each case by three or four builds); ``LOWBIT_FULL_SWEEP=1``:
    every case by every build."""
    full = bool(os.environ.get("LOWBIT_FULL_SWEEP"))
    others = [b for b in BUILDS if b != "gcc sanitizers"]
    chosen = []
    for c, (name, preset) in enumerate(CASES):
        for b, build in enumerate(BUILDS):
            first = 2 * others.index(build) if build in others else -2
            turn = c in {first % len(CASES), (first + 1) % len(CASES)} and build in others
            if full or build == "gcc sanitizers" or turn:
                chosen.append((name, preset, build))
    return chosen


@pytest.mark.parametrize(("name", "preset", "build"), _build_cases())
def test_exported_folders_build_and_reproduce_every_code(name: str, preset: str, build: str, exported: Any,
                                                         toolchains: dict[str, bool], tmp_path: Path) -> None:  # fmt: skip
    cc, cflags = {"gcc -O0": (CC, "-O0"), "gcc -O2": (CC, "-O2"), "gcc sanitizers": (CC, SANITIZE),
                  "clang -O0": ("clang", "-O0"), "clang -O2": ("clang", "-O2"), "gcc -m32": (CC, "-O2 -m32")}[build]  # fmt: skip
    if build.startswith("clang") and not toolchains["clang"]:
        pytest.skip("clang is not installed: `make toolchains` installs it (Debian package clang)")
    if build.endswith("-m32") and not toolchains["m32"]:
        pytest.skip("no 32-bit C library: `make toolchains` installs it (Debian package gcc-multilib)")
    done = build_and_run(exported[(name, preset)], tmp_path, cc, cflags)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("all equal") and done.stderr == "", done.stdout + done.stderr


@pytest.mark.parametrize(("name", "preset"), MORE)
def test_more_exports_build_under_the_sanitizers(name: str, preset: str, exported: Any, tmp_path: Path) -> None:
    done = build_and_run(exported[(name, preset)], tmp_path, CC, SANITIZE)
    assert done.returncode == 0 and done.stdout.strip().endswith("all equal"), done.stdout + done.stderr


@pytest.mark.skipif(not os.environ.get("LOWBIT_FULL_SWEEP"), reason="the whole zoo x presets sweep: make test-all")
@pytest.mark.parametrize("preset", ZOO_PRESETS)
@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_export_reproduces_every_code(name: str, preset: str, tmp_path: Path) -> None:
    program, x = zoo_program(name, preset)
    kernels.export_c(program, tmp_path / "out", x, intermediates=True, quiet=True)
    done = build_and_run(tmp_path / "out", tmp_path, CC, SANITIZE)
    assert done.returncode == 0 and done.stdout.strip().endswith("all equal"), done.stdout + done.stderr


def test_the_folder_is_what_it_should_be(exported: Any) -> None:
    folder = exported[("detector", "fbgemm_int8")]
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert {"Makefile", "README.md", "model.c", "model.h", "model_test.c", "model_vectors.h",
            "qk/include/qk.h", "qk/include/qk_custom.h", "qk/src/qk_nms.c", "qk/src/qk_conv2d.c"} <= set(files)  # fmt: skip
    assert "qk/src/qk_softmax.c" not in files and "qk/src/qk_add.c" not in files  # only what the program needs
    kernel_c = Path(kernels.__file__).parent / "c"
    for f in files:
        if f.startswith("qk/"):
            assert (folder / f).read_bytes() == (kernel_c / f[3:]).read_bytes(), f  # copied unchanged
    source, header = (folder / "model.c").read_text(), (folder / "model.h").read_text()
    assert "malloc" not in source and "static const qk_datapath model__datapath" in source
    assert "Program SHA-256: " in source and "fbgemm_int8" in source and "acc_bits=32" in source
    assert "int model_run(const uint8_t *in, uint8_t *out0, uint8_t *out1, void *scratch);" in header  # uint8 codes
    assert "#define MODEL_SCRATCH_BYTES " in header and "#define MODEL_WEIGHT_BYTES " in header
    readme = (folder / "README.md").read_text()
    assert "make test" in readme and "MODEL_SCRATCH_BYTES" in readme and "fbgemm_int8" in readme


def test_the_same_program_gives_a_byte_identical_folder(tmp_path: Path) -> None:
    program, x = zoo_program("residual", "w4a8_acc32", samples=4)
    kernels.export_c(program, tmp_path / "a", x, quiet=True)
    program.save(tmp_path / "p.npz")
    kernels.export_c(IntegerProgram.load(tmp_path / "p.npz"), tmp_path / "b", x, quiet=True)

    def contents(d: Path) -> dict[str, bytes]:
        return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    assert contents(tmp_path / "a") == contents(tmp_path / "b")


def _bump_first_code(vectors: Path, array: str) -> None:
    """Change the first expected code of ``array`` in a vectors header (still a valid code)."""
    text = vectors.read_text()
    body = text.index("{\n        ", text.index(array)) + len("{\n        ")
    first = text[body:].split(",")[0]
    vectors.write_text(text[:body] + str((int(first) + 1) % 100) + text[body + len(first):])


def test_a_wrong_code_is_reported_with_its_place(exported: Any, tmp_path: Path) -> None:
    folder = tmp_path / "edited"
    shutil.copytree(exported[("residual", "tflite_int8")], folder)
    _bump_first_code(folder / "model_vectors.h", "model__vector_out0")
    done = build_and_run(folder, tmp_path)
    assert done.returncode != 0 and "run 0, output 0, element 0: got " in done.stdout, done.stdout
    _bump_first_code(folder / "model_vectors.h", "model__vector_op0")  # an intermediate code: named by its op
    done = build_and_run(folder, tmp_path)
    assert done.returncode != 0 and "run 0, op 0, element 0: got " in done.stdout, done.stdout


def test_several_samples_per_call(tmp_path: Path) -> None:
    program, x = zoo_program("mlp", "fbgemm_int8", samples=12)
    kernels.export_c(program, tmp_path / "out", x, batch=4, quiet=True)
    assert "#define MODEL_BATCH 4" in (tmp_path / "out" / "model.h").read_text()
    done = build_and_run(tmp_path / "out", tmp_path)
    assert done.returncode == 0 and "3 runs, 48 output codes, all equal" in done.stdout, done.stdout


def test_the_report_gives_the_memory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    program, x = zoo_program("mlp", "tflite_int8", samples=2)
    report = kernels.export_c(program, tmp_path / "out", x, name="mlp_int8")
    printed = capsys.readouterr().out
    weights = sum(np.asarray(n.params["weight"]).size + 4 * np.asarray(n.params["bias"]).size for n in program.nodes)
    assert report.weight_bytes == weights and f"{weights} bytes of weights" in printed
    assert report.scratch_bytes > 0 and f"{report.scratch_bytes} bytes of scratch" in printed
    assert (tmp_path / "out" / "mlp_int8.c").is_file() and "MLP_INT8_SCRATCH_BYTES" in (tmp_path / "out" / "mlp_int8.h").read_text()


# ----------------------------------------------------------------------------- refusals


def test_refusals_leave_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    program, x = zoo_program("mlp", "tflite_int8", samples=2)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"exists and is not empty \(pass overwrite=True to replace it\)"):
        kernels.export_c(program, busy, x, quiet=True)
    kernels.export_c(program, busy, x, overwrite=True, quiet=True)
    assert not (busy / "notes.txt").exists() and (busy / "model.c").is_file()
    with pytest.raises(ValueError, match="cannot write into"):
        kernels.export_c(program, tmp_path / "missing" / "deeper" / "out", x, quiet=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        kernels.export_c(program, tmp_path / "file", x, quiet=True)
    with pytest.raises(ValueError, match=r"name='int' must be a C identifier"):
        kernels.export_c(program, tmp_path / "n", x, name="int", quiet=True)
    with pytest.raises(ValueError, match="needs a positive multiple of batch=3"):
        kernels.export_c(program, tmp_path / "b", x, batch=3, quiet=True)
    with pytest.raises(TypeError, match="input 0 codes must have dtype int8"):
        kernels.export_c(program, tmp_path / "c", np.zeros((2, 20), np.uint8), quiet=True)

    def broken(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfile", broken)
    with pytest.raises(OSError, match="disk full"):
        kernels.export_c(program, tmp_path / "half", x, quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "file"]  # no half-written or temporary folder


def test_a_users_custom_op_exports_its_c_source(tmp_path: Path) -> None:
    from tests.quant.custom.test_registry import FLOOR, HALVE_C, _HalvingNet, _halve_float, _halve_params, _halve_reference

    src = tmp_path / "user_halve_export.c"
    src.write_text(HALVE_C.format(symbol="user_halve_export", rounding=FLOOR))
    lib = compile_custom_op([src], tmp_path / "libhalve.so")
    kw: dict[str, Any] = dict(float_fn=_halve_float, integer_params=_halve_params, reference=_halve_reference,
                              param_names=("z_in", "z_out", "y_min", "y_max"), c_symbol="user_halve_export",
                              c_library=str(lib), output_like=0)  # fmt: skip
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4)
    dp = PRESETS["w4a8_acc32"]
    try:
        halve = quant.register_op("user.halve_export", c_sources=[str(src)], **kw)
        model, handle = calibrated(_HalvingNet(halve), dp, [x])
        program = quant.lower(model, handle, x, datapath=dp)
        kernels.export_c(program, tmp_path / "out", x, intermediates=True, quiet=True)
        assert (tmp_path / "out" / "custom" / "user_halve_export.c").read_bytes() == src.read_bytes()
        done = build_and_run(tmp_path / "out", tmp_path, CC, SANITIZE)
        assert done.returncode == 0 and done.stdout.strip().endswith("all equal"), done.stdout + done.stderr
        quant.unregister_op("user.halve_export")
        quant.register_op("user.halve_export", **kw)  # the same op without its C source
        with pytest.raises(ValueError, match=r"node 'halve_export': custom op 'user.halve_export' has no C source to "
                                             r"export .*register it with c_sources="):  # fmt: skip
            kernels.export_c(program, tmp_path / "again", x, quiet=True)
        assert not (tmp_path / "again").exists()
    finally:
        quant.unregister_op("user.halve_export")
