"""The integer IR: :class:`IntegerProgram` (plain data: ops, their validated records, constant
parameters and the qparams of every tensor), its ops (:mod:`quant.ir.ops`), running it on a backend
and saving it."""

from quant.ir.program import FORMAT_VERSION, IntegerProgram, Node, PackedTensor, TensorInfo

__all__ = ["FORMAT_VERSION", "IntegerProgram", "Node", "PackedTensor", "TensorInfo"]
