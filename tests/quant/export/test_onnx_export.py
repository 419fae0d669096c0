"""export_onnx as a file writer: checked models, the metadata (datapath preset and knobs, program digest),
byte-for-byte reproducible files, and clear refusals that leave no file behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from experiments.zoo import zoo_program
from quant.export.agreement import ort_session
from quant.export.onnx_export import DEFAULT_OPSET, export_onnx, onnx_model
from quant.export.onnx_format import DATAPATH_KEY, DIGEST_KEY, FORMAT_KEY, KNOBS_KEY, TENSORS_KEY, VERSION_KEY
from quant.ir.program import IntegerProgram
from tests.quant.export.support import zoo_case

FORMS = ["qoperator", "qdq"]


@pytest.mark.parametrize("form", FORMS)
def test_files_pass_the_checker_and_carry_the_datapath_and_digest(form: str, tmp_path: Path) -> None:
    program, _ = zoo_case("squeeze_excite", "mlas")
    path = tmp_path / "se.onnx"
    export_onnx(program, path, form=form)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta[FORMAT_KEY] == form and meta[VERSION_KEY] == "1"
    assert meta[DATAPATH_KEY] == "mlas"
    assert json.loads(meta[KNOBS_KEY]) == program.datapath.as_dict()
    assert meta[DIGEST_KEY] == program.digest()
    assert list(json.loads(meta[TENSORS_KEY])) == list(program.tensors)
    assert [i.name for i in model.graph.input] == list(program.inputs)
    assert [o.name for o in model.graph.output] == [*program.outputs, *(f"{o}_dequantized" for o in program.outputs)]
    assert model.opset_import[0].version == DEFAULT_OPSET


@pytest.mark.parametrize("form", FORMS)
def test_the_same_program_gives_the_same_bytes(form: str, tmp_path: Path) -> None:
    program, _ = zoo_case("branches", "mlas")
    export_onnx(program, tmp_path / "a.onnx", form=form)
    export_onnx(program, tmp_path / "b.onnx", form=form)
    program.save(tmp_path / "p.npz")
    export_onnx(IntegerProgram.load(tmp_path / "p.npz"), tmp_path / "c.onnx", form=form)
    again, _ = zoo_program("branches", "mlas")  # lowered anew
    export_onnx(again, tmp_path / "d.onnx", form=form)
    data = {p: (tmp_path / p).read_bytes() for p in ("a.onnx", "b.onnx", "c.onnx", "d.onnx")}
    assert len(set(data.values())) == 1


def test_sub_byte_programs_pick_the_opset_of_their_types() -> None:
    w4a4, _ = zoo_case("mlp", "w4a4_acc16_sat")
    w2a2, _ = zoo_case("mlp", "w2a2_pow2_acc16")
    m4, m2 = onnx_model(w4a4, form="qdq"), onnx_model(w2a2, form="qdq")
    assert m4.opset_import[0].version == 21 and m2.opset_import[0].version == 25
    types = {t.data_type for t in m4.graph.initializer}
    assert onnx.TensorProto.INT4 in types and onnx.TensorProto.UINT4 in types
    assert onnx.TensorProto.INT2 in {t.data_type for t in m2.graph.initializer}
    with pytest.raises(ValueError, match=r"export_onnx\(form='qdq'\): opset=21 must be an integer in 25\.\.\d+"):
        onnx_model(w2a2, form="qdq", opset=21)


def test_an_older_opset_is_written_when_the_ops_allow_it() -> None:
    mlp, make_input = zoo_case("mlp", "mlas")
    attention, _ = zoo_case("attention", "mlas")
    assert onnx_model(mlp, form="qoperator", opset=13).opset_import[0].version == 13
    assert onnx_model(attention, form="qoperator", opset=18).opset_import[0].version == 18
    with pytest.raises(ValueError, match=r"opset=17 must be an integer in 18\.\."):
        onnx_model(attention, form="qoperator", opset=17)
    x = make_input(8)
    outs = ort_session(onnx_model(mlp, form="qoperator", opset=13).SerializeToString()).run(None, {"x": x.numpy()})
    assert np.array_equal(outs[0], mlp.run(x))


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_bad_requests_raise_naming_the_problem_and_leave_no_file(tmp_path: Path) -> None:
    program, _ = zoo_case("mlp", "mlas")
    detector, _ = zoo_case("detector", "mlas")
    target = tmp_path / "model.onnx"
    with pytest.raises(ValueError, match=r"export_onnx: unknown form 'qlinear'; forms: 'qoperator', 'qdq'"):
        export_onnx(program, target, form="qlinear")
    with pytest.raises(ValueError, match=r"opset=12 must be an integer in 13\.\."):
        export_onnx(program, target, form="qoperator", opset=12)
    with pytest.raises(TypeError, match=r"program must be an IntegerProgram, got str"):
        export_onnx("model.npz", target)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"node 'nms' \(detection\.nms\) cannot be expressed"):
        export_onnx(detector, target, form="qoperator")
    assert _listing(tmp_path) == []
    target.write_bytes(b"previous")
    with pytest.raises(ValueError):
        export_onnx(detector, target, form="qdq")
    assert target.read_bytes() == b"previous" and _listing(tmp_path) == ["model.onnx"]


def test_an_unwritable_path_raises_oserror_naming_it(tmp_path: Path) -> None:
    program, _ = zoo_case("mlp", "mlas")
    missing = tmp_path / "no" / "such" / "dir" / "m.onnx"
    with pytest.raises(FileNotFoundError, match=r"export_onnx: cannot write .*no/such/dir/m\.onnx"):
        export_onnx(program, missing)
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(OSError, match=r"export_onnx: cannot write .*folder\.onnx"):
        export_onnx(program, tmp_path / "folder.onnx")
    assert _listing(tmp_path) == ["folder.onnx"] and _listing(tmp_path / "folder.onnx") == []
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(PermissionError, match=r"export_onnx: cannot write .*locked/m\.onnx"):
                export_onnx(program, locked / "m.onnx")
        finally:
            locked.chmod(0o700)


def test_a_written_file_has_the_usual_permissions(tmp_path: Path) -> None:
    program, _ = zoo_case("mlp", "mlas")
    export_onnx(program, tmp_path / "m.onnx")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "m.onnx").stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("form", FORMS)
def test_custom_ops_are_refused_in_both_forms(form: str) -> None:
    program, _ = zoo_case("detector", "mlas")
    with pytest.raises(ValueError, match=rf"export_onnx\(form='{form}'\): node 'nms' \(detection\.nms\) cannot be "
                                         "expressed: custom ops have no ONNX counterpart"):  # fmt: skip
        onnx_model(program, form=form)
