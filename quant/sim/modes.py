"""The registry of simulation modes: how ``attach`` wires quantizers into one module, and how to undo it.

A mode is a :class:`SimulationMode`: ``check`` refuses a module it cannot wire (before
``attach`` touches any module), ``attach`` wires the quantizers of one module and returns a
:class:`ModuleAttachment` whose ``remove`` undoes exactly that wiring. ``fast`` (float fake
quantization, :mod:`quant.sim.fast`) is the built-in mode; a datapath-exact mode registers
itself the same way with :func:`register_mode`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Mapping, Optional, Protocol

import torch
import torch.nn as nn

from quant.sim.quantizer import Quantizer
from quant.sim.recipe import QuantizerConfig

__all__ = ["MODES", "ModuleAttachment", "SimulationMode", "register_mode"]


@dataclass
class ModuleAttachment(abc.ABC):
    """The quantizers one mode attached to one module, and how to take them off.

    ``quantizers`` maps role -> Quantizer in the order weight, input, output.
    ``remove()`` must restore the module exactly as it was (parameters, their order in
    ``_parameters``, buffers, submodules, hooks, class).
    """

    name: str
    module: nn.Module
    configs: dict[str, QuantizerConfig]
    quantizers: dict[str, Quantizer]

    @abc.abstractmethod
    def remove(self) -> None:
        """Take this module's quantizers off again."""


class SimulationMode(Protocol):
    """One way of simulating a recipe on a model (see the module docstring)."""

    name: str

    def check(self, name: str, module: nn.Module, configs: Mapping[str, QuantizerConfig]) -> None:
        """``ValueError`` naming module ``name`` if it cannot take the quantizers of ``configs`` (role -> config)."""
        ...

    def attach(
        self, name: str, module: nn.Module, configs: Mapping[str, QuantizerConfig], device: Optional[torch.device]
    ) -> ModuleAttachment:
        """Wire the quantizers of ``configs`` (role -> config) into ``module`` on ``device``."""
        ...


MODES: dict[str, SimulationMode] = {}
"""Simulation modes by name."""


def register_mode(mode: SimulationMode) -> SimulationMode:
    """Register ``mode`` for ``attach(..., mode=mode.name)``; a name is registered once."""
    if mode.name in MODES:
        raise ValueError(f"simulation mode {mode.name!r} is already registered")
    MODES[mode.name] = mode
    return mode
