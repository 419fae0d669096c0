"""Custom ops: :func:`register_op` (the registry's public side) and the ops this project ships.

* :mod:`quant.custom.registry`: ``register_op``, the function a model calls, the record of a call;
* :mod:`quant.custom.nms`: ``detection.nms``, integer non-maximum suppression (section 10.1).
"""

from quant.custom.registry import (
    custom_attrs,
    custom_op_of,
    elementwise,
    elementwise_function_of,
    register_op,
    unregister_op,
)

__all__ = ["custom_attrs", "custom_op_of", "elementwise", "elementwise_function_of", "register_op", "unregister_op"]
