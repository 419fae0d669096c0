"""The standalone C export of an integer program: :func:`export_c` (see :mod:`kernels.export.folder`)."""

from kernels.export.folder import ExportReport, export_c

__all__ = ["ExportReport", "export_c"]
