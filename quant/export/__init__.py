"""Exporters of an :class:`~quant.ir.program.IntegerProgram` to other formats, and the importer back.

* :func:`export_onnx` (:mod:`quant.export.onnx_export`): one ONNX file, in the ``qoperator`` form (integer ops
  ONNX Runtime computes bit for bit as the program, :mod:`quant.export.onnx_qoperator`) or the ``qdq`` form
  (float ops between QuantizeLinear/DequantizeLinear, :mod:`quant.export.onnx_qdq`);
* :func:`import_onnx` (:mod:`quant.export.onnx_import`): the program of a qoperator file, written by
  :func:`export_onnx` or by ONNX Runtime's static quantizer;
* :mod:`quant.export.agreement`: how often ONNX Runtime's codes equal the program's (``python -m
  experiments.onnx_agreement`` prints the table of docs/onnx.md).
"""

from quant.export.onnx_export import export_onnx
from quant.export.onnx_import import import_onnx

__all__ = ["export_onnx", "import_onnx"]
