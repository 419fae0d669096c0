"""``export_onnx``: an :class:`~quant.ir.program.IntegerProgram` as one ONNX file, in one of two forms.

* ``"qoperator"`` (:mod:`quant.export.onnx_qoperator`): integer ops that ONNX Runtime computes exactly as
  the program does, on the ``mlas`` datapath;
* ``"qdq"`` (:mod:`quant.export.onnx_qdq`): float ops between ``QuantizeLinear``/``DequantizeLinear`` pairs,
  any datapath, agreeing with the program on most codes (:mod:`quant.export.agreement` measures it).

Both graphs take the program's float inputs (named as the program's inputs) and return its output codes
(named as its outputs), then the dequantized outputs ``<output>_dequantized``. The model's metadata
(:mod:`quant.export.onnx_format`) holds the datapath's preset name and knobs, the program digest and
what :func:`quant.export.import_onnx` needs to rebuild the program exactly. The same program always gives
the same bytes.

>>> import tempfile, os
>>> from quant.contract.datapath import Datapath
>>> from quant.contract.attrs import LinearAttrs
>>> from quant.ir.program import IntegerProgram, Node, TensorInfo
>>> dp = Datapath.preset("mlas")
>>> attrs = LinearAttrs.build(w_shape=(2, 3), x_zero_point=3, w_zero_point=0, y_zero_point=7, multiplier=[0.01, 0.02],
...                           y_signed=False, datapath=dp)
>>> p = IntegerProgram(dp, {"x": TensorInfo("x", (None, 3), 8, False, 0.5, 3), "y": TensorInfo("y", (None, 2), 8, False, 0.25, 7)},
...                    [Node("fc", "linear", ("x",), "y", attrs, {"weight": np.array([[1, 2, 3], [-4, 5, -6]], np.int8)})], ["x"], ["y"])
>>> model = onnx_model(p, form="qoperator")
>>> [n.op_type for n in model.graph.node], [o.name for o in model.graph.output]
(['QuantizeLinear', 'QGemm', 'DequantizeLinear'], ['y', 'y_dequantized'])
>>> with tempfile.TemporaryDirectory() as d:
...     export_onnx(p, os.path.join(d, "p.onnx"), form="qdq")
...     export_onnx(p, os.path.join(d, "p.onnx"), form="qoperand")
Traceback (most recent call last):
...
ValueError: export_onnx: unknown form 'qoperand'; forms: 'qoperator', 'qdq'
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional, Union

import numpy as np
import onnx
from onnx import helper

from quant.export.onnx_format import (
    DATAPATH_KEY,
    DIGEST_KEY,
    FORMAT_KEY,
    FORMS,
    KNOBS_KEY,
    METADATA_VERSION,
    MS_DOMAIN,
    NODES_KEY,
    ORIGINS_KEY,
    TENSORS_KEY,
    VERSION_KEY,
    code_container,
)
from quant.export.onnx_graph import GraphBuilder
from quant.export.onnx_functions import LOWBIT_DOMAIN
from quant.export.onnx_qdq import build_qdq, qdq_min_opset
from quant.export.onnx_qoperator import build_qoperator, qoperator_min_opset
from quant.ir.program import IntegerProgram

__all__ = ["DEFAULT_OPSET", "export_onnx", "onnx_model"]

#: The opset written when none is asked for (int4 types need 21; int2 types raise it to 25).
DEFAULT_OPSET = 21
_PRODUCER = "lowbit-quant quant.export"


def _check_form_and_opset(program: IntegerProgram, form: str, opset: Optional[int]) -> int:
    if not isinstance(program, IntegerProgram):
        raise TypeError(f"export_onnx: program must be an IntegerProgram, got {type(program).__name__}")
    if form not in FORMS:
        raise ValueError(f"export_onnx: unknown form {form!r}; forms: {', '.join(map(repr, FORMS))}")
    need = qoperator_min_opset(program) if form == "qoperator" else qdq_min_opset(program)
    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        return max(DEFAULT_OPSET, need)
    if isinstance(opset, bool) or not isinstance(opset, int) or not need <= opset <= newest:
        raise ValueError(f"export_onnx(form={form!r}): opset={opset!r} must be an integer in {need}..{newest} "
                         f"for this program")  # fmt: skip
    return opset


def _metadata(program: IntegerProgram, form: str) -> dict[str, str]:
    tensors = {t.name: {"scale": t.scale, "zero_point": t.zero_point, "bits": t.bits, "signed": t.signed}
               for t in program.tensors.values()}  # fmt: skip
    return {
        FORMAT_KEY: form,
        VERSION_KEY: str(METADATA_VERSION),
        DATAPATH_KEY: program.datapath.name,
        KNOBS_KEY: json.dumps(program.datapath.as_dict(), sort_keys=True),
        DIGEST_KEY: program.digest(),
        TENSORS_KEY: json.dumps(tensors),  # in the program's order, which its digest depends on
        NODES_KEY: json.dumps({n.name: {"op": n.op, "args": n.attrs.build_args()} for n in program.nodes}, sort_keys=True),
        ORIGINS_KEY: json.dumps(program.origins, sort_keys=True),
    }


def onnx_model(program: IntegerProgram, *, form: str = "qdq", opset: Optional[int] = None) -> onnx.ModelProto:
    """The ONNX model of ``program`` in ``form`` (``"qoperator"`` or ``"qdq"``, see the module doc) at ``opset``
    (default :data:`DEFAULT_OPSET`, or the first that holds the program's code types); checked by
    ``onnx.checker.check_model``. ``ValueError`` naming the node, the op and the form for what the form cannot
    express, or for an unknown form or an opset outside the range."""
    version = _check_form_and_opset(program, form, opset)
    reserved = set(program.tensors) | set(program.inputs)
    for name in program.outputs:
        if name in program.inputs:
            raise ValueError(f"export_onnx(form={form!r}): output {name!r} is the program's input; an ONNX graph "
                             "input is float, so it cannot also be the codes")  # fmt: skip
    g = GraphBuilder(reserved, opset=version)
    names = (build_qoperator if form == "qoperator" else build_qdq)(program, g)
    outputs = [g.value_info(names[name], code_container(program.tensors[name].bits, program.tensors[name].signed)[0],
                            program.tensors[name].shape) for name in program.outputs]  # fmt: skip
    for name in program.outputs:
        info = program.tensors[name]
        _, width = code_container(info.bits, info.signed)
        deq = g.fresh(f"{name}_dequantized")
        scale = g.constant(f"{name}/dequantize/scale", np.float32(info.scale))
        zp = g.codes_constant(f"{name}/dequantize/zero_point", info.zero_point, width, info.signed)
        g.node("DequantizeLinear", [names[name], scale, zp], [deq], name=f"{name}/dequantize")
        outputs.append(g.value_info(deq, onnx.TensorProto.FLOAT, info.shape))
    inputs = [g.value_info(name, onnx.TensorProto.FLOAT, program.tensors[name].shape) for name in program.inputs]
    value_infos = [g.value_info(onnx_name, code_container(program.tensors[t].bits, program.tensors[t].signed)[0],
                                program.tensors[t].shape) for t, onnx_name in names.items() if t not in program.outputs]  # fmt: skip
    graph = helper.make_graph(g.nodes, "lowbit_program", inputs, outputs, g.initializers, value_info=value_infos,
                              doc_string=f"{program!r} in the {form} form of quant.export")  # fmt: skip
    opsets = [helper.make_opsetid("", version)]
    if form == "qoperator":
        opsets.append(helper.make_opsetid(MS_DOMAIN, 1))
    if g.functions:
        opsets.append(helper.make_opsetid(LOWBIT_DOMAIN, 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name=_PRODUCER, producer_version=str(METADATA_VERSION),
                              functions=list(g.functions.values()))  # fmt: skip
    model.ir_version = helper.find_min_ir_version_for([opsets[0]])
    helper.set_model_props(model, _metadata(program, form))
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(program: IntegerProgram, path: Union[str, Path], *, form: str = "qdq", opset: Optional[int] = None) -> None:
    """Write ``program`` to the ONNX file ``path`` in ``form`` (see :func:`onnx_model`).

    The file is written whole or not at all: the model is built and checked first (a ``ValueError`` names what
    cannot be expressed), then written to a temporary file in the same directory and moved onto ``path``; an
    unwritable path raises ``OSError`` naming it and leaves nothing behind.
    """
    data = onnx_model(program, form=form, opset=opset).SerializeToString()
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent if str(target.parent) else ".")
    except OSError as err:
        raise type(err)(err.errno, f"export_onnx: cannot write {str(path)!r}: {err.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, target)
    except OSError as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise type(err)(err.errno, f"export_onnx: cannot write {str(path)!r}: {err.strerror}") from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
