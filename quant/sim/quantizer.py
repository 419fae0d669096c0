"""``Quantizer``: one quantization point (a weight, an input or an output) as an ``nn.Module``.

A quantizer owns a spec, an observer (:mod:`quant.sim.observers`) and its current
quantization parameters, and its forward fake-quantizes the tensor it is given:

* ``learn="none"``: ``fake_quantize(x, scale, zero_point)`` with the observer's
  ``(scale, zero_point)`` (float32 and int32 buffers) and the straight-through gradient;
* ``learn="lsq"``: :func:`quant.sim.learned.lsq_fake_quantize` with ``scale`` an
  ``nn.Parameter`` initialized to ``2 * mean(|x|) / sqrt(qmax)`` over the observed data
  and the gradient scale ``1 / sqrt(N * qmax)``, ``N = x.numel() / scale.numel()`` (the
  elements per scale in the current tensor, batch included); the zero point is fixed:
  0 for symmetric specs, else ``clamp(qmin - round(min_val / s), qmin, qmax)`` from the
  observer's minimum;
* ``learn="pact"`` (activations): :func:`quant.sim.learned.pact_fake_quantize` with ``alpha``
  an ``nn.Parameter`` initialized to the observer's clipping level ``s_obs * qmax``,
  where the observer runs on the spec made symmetric (PACT's zero point is 0), so
  ``minmax`` gives the maximum, ``percentile``/``mse`` a clipped level (there is no
  data-independent default such as 6.0: the first observed batch, or calibration,
  sets it). ``scale`` is ``alpha / qmax`` (detached) and ``zero_point`` is 0;
* ``learn="a2q"`` (weights, with ``accumulator=AccumulatorTarget(...)``):
  :func:`quant.sim.a2q.a2q_fake_quantize`, accumulator-aware codes whose every output channel has
  ``||q||_1 <= accumulator.l1_limit``, from ``scale`` (an ``nn.Parameter`` initialized by the observer,
  as LSQ's step) and ``norm`` (the weight-normalization gain, an ``nn.Parameter`` initialized to the
  observed ``||w||_1`` per channel); the zero point is 0.

Three flags drive the forward, in this order:

1. ``enabled`` (default True): False returns ``x`` itself;
2. ``observing`` (default True): update the observer with ``x`` (no gradients). With
   ``learn="none"`` and ``quantizing`` the qparams are recomputed from the observer right
   away (QAT style, as ``torch.ao``'s ``FakeQuantize``: observe, then quantize with the
   updated qparams). With ``learn="lsq"``/``"pact"``/``"a2q"`` and ``quantizing``, the first
   observed batch initializes the learned parameter (unless already calibrated) and
   observing then switches itself off: from there the parameter is learned;
3. ``quantizing`` (default True): return the fake-quantized ``x``; False returns ``x``
   (calibration pass-through).

Calibration (what a handle's ``calibrate()`` does): ``observing=True,
quantizing=False``, run data, ``compute_qparams()``, then ``quantizing=True,
observing=False``. ``calibrated`` tells whether qparams exist. Quantizing before any
qparams exist raises ``RuntimeError``.

An empty input (a batch of 0) is returned as it is, observed by nobody, before or after
calibration. Inputs must be floating (``TypeError`` otherwise); the input's shape is checked against
the spec on every call (axis in range, ``group_size`` divides, the same qparams shape as
calibrated), with ``ValueError`` naming the quantizer. Once calibrated and not observing, the
forward does no host synchronization (binary specs excepted: they go through
:func:`~quant.sim.functional.fake_quantize` and its non-finite check); while observing, the
observer checks the statistics for NaN/Inf. No Python loop runs over channels.

``state_dict`` holds the qparams or learned parameter, the observer's statistics and
(as extra state) the flags, so a saved quantizer loads into a fresh one built with the
same arguments, and behaves the same.

>>> import torch
>>> from quant.contract.spec import QuantSpec
>>> q = Quantizer(QuantSpec(bits=4, granularity="channel", axis=0), learn="lsq")
>>> q
Quantizer(
  int4 sym per-channel(0) half_even, observer=minmax, learn=lsq
  (observer): MinMaxObserver(int4 sym per-channel(0) half_even)
)
>>> w = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
>>> y = q(w)
>>> q.calibrated, q.observing, [round(v, 4) for v in q.scale.tolist()]
(True, False, [0.5669, 0.8504])
"""

from __future__ import annotations

import os
import sys

from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from quant.sim import fused
from quant.sim.code_offsets import check_code_offsets, fake_quantize_with_offsets, quantize_with_offsets
from quant.sim.functional import check_qparams, fake_quantize, fake_quantize_values, qparams_shape, quantize
from quant.sim.learned import (
    lsq_effective_scale,
    lsq_fake_quantize,
    lsq_grad_scale,
    lsq_values,
    mean_abs_to_lsq_scale,
    pact_fake_quantize,
    pact_scale,
)
from quant.sim.observers import make_observer, reduce_to_qparams_shape, resize_for_load
from quant.sim.a2q import a2q_codes, a2q_fake_quantize, a2q_l1, check_a2q_spec
from quant.contract.accumulator import AccumulatorTarget
from quant.sim.rescaling import bias_shape, check_bias_shift, check_prescale, ensure_bias_hook, shifted_bias
from quant.sim.qparams import float32, range_to_qparams_scalar
from quant.contract.spec import QuantSpec

__all__ = ["LEARN_MODES", "Quantizer"]

LEARN_MODES: tuple[str, ...] = ("none", "lsq", "pact", "a2q")

_STATE_VERSION = 1


def caller_site() -> str:
    """``file:line`` of the innermost frame outside torch and ``quant.sim``: the user's code that made the call."""
    frame = sys._getframe(1)
    ours = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.abspath(torch.__file__)))
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(ours) and not path.startswith("<"):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return "call site unknown"


class Quantizer(nn.Module):
    """One fake-quantization point; see the module doc for the contract."""

    scale: torch.Tensor
    zero_point: torch.Tensor
    code_offsets: torch.Tensor
    prescale: torch.Tensor
    bias_prescale: torch.Tensor
    bias_shift: torch.Tensor

    def __init__(
        self,
        spec: QuantSpec,
        *,
        observer: str = "minmax",
        learn: str = "none",
        observer_kwargs: Optional[Mapping[str, Any]] = None,
        accumulator: Optional[AccumulatorTarget] = None,
    ) -> None:
        super().__init__()
        if not isinstance(spec, QuantSpec):
            raise TypeError(f"Quantizer: spec must be a QuantSpec, got {type(spec).__name__}")
        if learn not in LEARN_MODES:
            raise ValueError(f"Quantizer: learn={learn!r} is not one of {', '.join(map(repr, LEARN_MODES))}")
        if learn == "pact" and not spec.signed and spec.narrow:
            raise ValueError("Quantizer: learn='pact' needs the zero point 0, which unsigned narrow specs exclude")
        if learn == "a2q" and not isinstance(accumulator, AccumulatorTarget):
            raise ValueError(f"Quantizer: learn='a2q' needs accumulator=AccumulatorTarget(...), got {accumulator!r}")
        if learn != "a2q" and accumulator is not None:
            raise ValueError(f"Quantizer: accumulator is only for learn='a2q', not learn={learn!r}")
        if learn == "a2q":
            check_a2q_spec(spec, "Quantizer")
        self.spec = spec
        self.learn = learn
        #: The accumulator ``learn="a2q"`` keeps every product sum inside (quant.sim.a2q); None otherwise.
        self.accumulator = accumulator
        self.observer_name = observer
        self.observer_kwargs: dict[str, Any] = dict(observer_kwargs or {})
        obs_spec = spec.with_(symmetric=True) if learn == "pact" else spec
        self.observer = make_observer(observer, obs_spec, **self.observer_kwargs)
        self.enabled = True
        self.observing = True
        self.quantizing = True
        self.calibrated = False
        self._frozen = False
        self._lsq_seen = 0  # elements per scale behind lsq_mean_abs
        self._last_shape: Optional[tuple[int, ...]] = None  # of the last observed input
        #: ``(module name, role)``, set by ``attach`` on input/output quantizers: they take one tensor per forward
        #: of the model, counted in ``_calls`` while ``_counting`` (between the model's forward hooks).
        self.site: Optional[tuple[str, str]] = None
        #: A quantizer at a site some forwards never reach (an attention's key input when it is the query):
        #: ``calibrate()`` leaves it without qparams instead of failing when it saw no data.
        self.optional = False
        #: A quantizer every time step of a recurrence uses (an LSTM's hidden state): many tensors per forward
        #: by design, so the one-tensor-per-forward guard leaves it alone.
        self.per_step = False
        self._calls = 0
        self._counting = False
        #: Python-number copies of a per-tensor scale and zero point (the fused path takes them as numbers).
        self._host = fused.HostScalars()
        self.register_buffer("zero_point", torch.empty(0, dtype=torch.int32))
        #: Chosen codes (quant.sim.code_offsets): per element of the quantized tensor, the offset of its code
        #: from round-to-nearest, set by a post-training algorithm (quant.ptq); empty: round to nearest.
        self.register_buffer("code_offsets", torch.empty(0, dtype=torch.int32))
        #: Equivalent rescaling (quant.sim.rescaling), set by cross-layer equalization and SmoothQuant: factors
        #: per element of the quantized tensor, and a weight's layer's bias factors and shift (empty: none).
        self.register_buffer("prescale", torch.empty(0))
        self.register_buffer("bias_prescale", torch.empty(0))
        self.register_buffer("bias_shift", torch.empty(0))
        if learn == "none":
            self.register_buffer("scale", torch.empty(0))
        elif learn == "lsq":
            self.scale = nn.Parameter(torch.empty(0))
            self.register_buffer("lsq_mean_abs", torch.empty(0))
        elif learn == "a2q":  # the step and the norm g per output channel, and the observed ||v||_1 (g's start)
            self.scale = nn.Parameter(torch.empty(0))
            self.norm = nn.Parameter(torch.empty(0))
            self.register_buffer("a2q_l1", torch.empty(0))
        else:
            self.alpha = nn.Parameter(torch.empty(0))

    # ------------------------------------------------------------------ attributes
    def __getattr__(self, name: str) -> Union[torch.Tensor, nn.Module]:
        if name == "scale" and self.__dict__.get("learn") == "pact":
            alpha = self._parameters["alpha"]
            assert alpha is not None
            return pact_scale(alpha, self.spec)
        return super().__getattr__(name)

    def _learned(self) -> Optional[nn.Parameter]:
        if self.learn == "none":
            return None
        p = self._parameters["alpha" if self.learn == "pact" else "scale"]
        assert isinstance(p, nn.Parameter)
        return p

    def _learned_parameters(self) -> list[nn.Parameter]:
        """Every learned parameter: LSQ's step, PACT's clip, A2Q's step and norm (none for ``learn="none"``)."""
        names = {"none": (), "lsq": ("scale",), "pact": ("alpha",), "a2q": ("scale", "norm")}[self.learn]
        out = [self._parameters[n] for n in names]
        assert all(isinstance(p, nn.Parameter) for p in out)
        return out  # type: ignore[return-value]

    def _qparams_storage_shape(self) -> torch.Size:
        learned = self._learned()
        if learned is not None:
            return learned.shape
        s = self._buffers["scale"]
        assert s is not None
        return s.shape

    def _name(self) -> str:
        return f"Quantizer({self.extra_repr()})"

    def _refuse_second_call(self) -> None:
        """A module called twice in one forward would give one scale to two different tensors: refuse it."""
        self._counting = False  # the model's forward is over: this error ends it
        name, role = self.site or ("?", "?")
        raise RuntimeError(
            f"module {name!r} is called more than once in one forward of the model (the second call at "
            f"{caller_site()}): its {role} quantizer would give one scale to different tensors. Give each call "
            f"a module of its own (e.g. one nn.ReLU per use), or keep the module float ({{{name!r}: None}} in the "
            "recipe)"
        )

    def __prepare_scriptable__(self) -> "Quantizer":
        """Refuse ``torch.jit.script`` (which calls this on every submodule first) by name.

        The quantizer's forward is Python (flags, observers, validation) that TorchScript cannot
        compile; its error would point at a line of this file, not at the cause.
        """
        raise TypeError(
            f"torch.jit.script cannot compile a model with quantizers ({self._name()}): export the "
            "quantized model with quant.lower (an integer program, runnable in C) or quant.export_onnx, "
            "or torch.jit.trace it after the handle's freeze()"
        )

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Observe and/or fake-quantize ``x`` according to the flags (see the module doc); with prescale
        factors (:mod:`quant.sim.rescaling`) and enabled, of ``x * prescale``."""
        factors = self._buffers["prescale"]
        if factors is not None and factors.numel() and self.enabled and isinstance(x, torch.Tensor) and x.is_floating_point():
            x = self.rescaled(x)
        return self._fake_quantize(x) if self._prepare(x) else x

    def forward_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """``forward(x)`` (the same flags, observation, checks and values, computed without autograd) with what
        its backward needs, for a caller that differentiates by hand (the fused recurrence of
        :mod:`quant.sim.recurrent`): ``(values, mask, d_scale)``. ``mask`` is the input gradient's 0/1 mask,
        None when ``x`` passes through (gradient 1); ``d_scale`` is LSQ's per-element derivative of the values
        by its step (multiply the summed product with the incoming gradient by :meth:`lsq_grad_scale`), None
        for ``learn="none"``. Per-tensor specs with ``learn="none"`` or ``"lsq"`` only."""
        assert self.spec.granularity == "tensor" and self.learn in ("none", "lsq") and not self.has_prescale
        if not self._prepare(x):
            return x, None, None
        scale = self._buffers["scale"] if self.learn == "none" else None
        if scale is not None and scale.device.type == "cpu" and fused.fused_applies(x, scale, self.spec):
            # no autograd op on this path (new tensors and a C pass), so no no_grad context either
            values, fused_mask = fused.fake_quantize_per_tensor_with_mask(
                x.detach(), float(self._host.get("scale", scale)), int(self._host.get("zero_point", self.zero_point)),
                self.spec,
            )  # fmt: skip
            return values, fused_mask, None
        with torch.no_grad():
            if self.learn == "lsq":
                learned = self._learned()
                assert learned is not None
                s = lsq_effective_scale(learned.detach(), self.spec).reshape(()).to(x.dtype)
                if fused.fused_applies(x, s, self.spec):  # one C pass, the same values, mask and derivative
                    return fused.lsq_parts(x.detach(), float(s), int(self.zero_point.reshape(())), self.spec)
                return lsq_values(x.detach(), s, self.zero_point.reshape(()), self.spec, None, need_s=True)
            assert scale is not None
            values, mask = fake_quantize_values(x.detach(), scale.reshape(()).to(x.dtype), self.zero_point.reshape(()),
                                                self.spec, None, need_mask=True)  # fmt: skip
            return values, mask, None

    def host_site(self) -> Optional[fused.HostSite]:
        """This quantizer's observer range and qparams as a C site for a run of calls that the fused recurrence
        makes without Python in between (:class:`quant.sim.fused.HostSite`), or None where only this forward
        applies: other learn modes, observers, granularities, binary specs, devices, or flags (disabled,
        pass-through, QAT under torch.distributed, no qparams yet while not observing). Give the site back to
        :meth:`end_host_site` when the run is over, also after an error."""
        from quant.sim.observers import MinMaxObserver, MovingAverageMinMaxObserver, _distributed

        spec, obs = self.spec, self.observer
        if not fused.active() or self.zero_point.device.type != "cpu":
            return None
        if not self.enabled or self.learn in ("pact", "a2q") or spec.granularity != "tensor" or spec.is_binary:
            return None
        if spec.rounding == "stochastic":
            return None
        if self.learn == "lsq":  # the learned step, fixed for the run: no observer once it is set
            learned = self._learned()
            assert learned is not None
            if self.observing or not self.quantizing or not self.calibrated or learned.numel() != 1 or not learned.is_cpu:
                return None
            step = lsq_effective_scale(learned.detach(), spec).reshape(()).to(torch.float32)
            return fused.HostSite.new_lsq(spec, float(step), int(self.zero_point.reshape(())))
        if type(obs) not in (MinMaxObserver, MovingAverageMinMaxObserver):
            return None
        if not self.quantizing or (self.observing and obs.training and _distributed()):
            return None
        range_ = obs.host_range() if obs.has_data else None
        if obs.has_data and range_ is None:  # statistics of another shape or device
            return None
        scale = self._buffers["scale"]
        assert scale is not None
        qparams = None
        if self.calibrated:
            if scale.shape != () or scale.device.type != "cpu":
                return None
            qparams = float(self._host.get("scale", scale)), int(self._host.get("zero_point", self.zero_point))
        elif not self.observing:
            return None  # the forward raises its error
        moving = isinstance(obs, MovingAverageMinMaxObserver)
        return fused.HostSite.new(spec, observing=self.observing, quantizing=self.quantizing, moving_average=moving,
                                  momentum=float32(float(getattr(obs, "momentum", 0.0))), range_=range_, qparams=qparams,
                                  observer_name=type(obs).__name__)  # fmt: skip

    def end_host_site(self, site: fused.HostSite) -> None:
        """Write what a :meth:`host_site` run observed and computed back into the observer and the qparams
        (an LSQ site has nothing to write)."""
        if site.lsq:
            return
        has_range, lo, hi, calibrated, scale, zero_point = site.values()
        if has_range:
            self.observer._store_host_range(lo, hi)
        if calibrated and self.observing:
            self._store_host_qparams(scale, zero_point)
        if self.observing and site.last_shape is not None:
            self.__dict__["_last_shape"] = site.last_shape

    def lsq_grad_scale(self, x: torch.Tensor) -> float:
        """LSQ's gradient scale for an input shaped like ``x``: ``1 / sqrt(N * qmax)``, ``N`` elements per step."""
        learned = self._learned()
        assert learned is not None
        return lsq_grad_scale(max(1, x.numel() // max(1, learned.numel())), self.spec.qmax)

    def _prepare(self, x: torch.Tensor) -> bool:
        """The checks and the observation of a forward; True when ``x`` is then to be fake-quantized."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            what = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"{self._name()} expects a floating tensor, got {what}")
        if not self.enabled:
            return False
        if self._counting:
            self._calls += 1
            if self._calls > 1:
                self._refuse_second_call()
        try:
            shape = qparams_shape(x.shape, self.spec)
        except ValueError as e:
            raise ValueError(f"{self._name()}: input of shape {tuple(x.shape)} does not fit the spec: {e}") from None
        if x.numel() == 0:  # nothing to observe or to quantize: the empty tensor itself, qparams or not
            return False
        if self.observing:
            self._observe(x)
            if self.quantizing:
                if self.learn == "none":
                    self._store_observer_qparams(validate_shape=None)
                else:
                    if not self.calibrated:
                        self.compute_qparams()
                    self.observing = False
        if not self.quantizing:
            return False
        if not self.calibrated:
            raise RuntimeError(
                f"{self._name()} has no quantization parameters yet: observe data first "
                "(observing=True, or the handle's calibrate()) or load a state_dict"
            )
        have = self._qparams_storage_shape()
        if have != shape:
            raise ValueError(
                f"{self._name()}: input of shape {tuple(x.shape)} needs quantization parameters of shape {shape}, "
                f"but they have shape {tuple(have)}"
            )
        offsets = self._buffers["code_offsets"]
        if offsets is not None and offsets.numel() and offsets.shape != x.shape:
            raise ValueError(f"{self._name()}: input of shape {tuple(x.shape)} does not fit its code offsets of shape "
                             f"{tuple(offsets.shape)} (chosen by a post-training algorithm for another tensor)")  # fmt: skip
        return True

    def _fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        learned = self._learned()
        if learned is not None and self.learn == "lsq":
            n = max(1, x.numel() // max(1, learned.numel()))
            gs = lsq_grad_scale(n, self.spec.qmax)
            return lsq_fake_quantize(x, learned, self.zero_point, self.spec, gs, validate=False)
        if learned is not None and self.learn == "a2q":
            assert self.accumulator is not None
            gs = lsq_grad_scale(max(1, x.numel() // max(1, learned.numel())), self.spec.qmax)
            norm = self._parameters["norm"]
            assert norm is not None
            return a2q_fake_quantize(x, learned, norm, self.spec, self.accumulator.l1_limit, gs)
        if learned is not None:
            return pact_fake_quantize(x, learned, self.spec)
        scale = self._buffers["scale"]
        assert scale is not None
        offsets = self._buffers["code_offsets"]
        if offsets is not None and offsets.numel():
            return fake_quantize_with_offsets(x, scale, self.zero_point, offsets, self.spec)
        if self.spec.granularity == "tensor" and scale.device.type == "cpu" and fused.fused_applies(x, scale, self.spec):
            s = float(self._host.get("scale", scale))
            z = int(self._host.get("zero_point", self.zero_point))
            return fused.fake_quantize_per_tensor(x, s, z, self.spec)
        return fake_quantize(x, scale, self.zero_point, self.spec, validate=False)

    def _observe(self, x: torch.Tensor) -> None:
        self.observer.update_checked(x)
        self.__dict__["_last_shape"] = tuple(x.shape)  # a plain attribute: past nn.Module.__setattr__'s checks
        if self.learn == "lsq" and x.numel():
            with torch.no_grad():
                self._observe_mean_abs(x)
        if self.learn == "a2q" and x.numel():  # a weight: its ||v||_1 per channel starts the norm g
            self.a2q_l1 = a2q_l1(x.detach(), self.spec).to(torch.float32)

    def _observe_mean_abs(self, x: torch.Tensor) -> None:
        """LSQ's running mean of ``|x|`` per qparam (its initial step)."""
        batch = reduce_to_qparams_shape(x.detach().abs(), self.spec, "mean").to(torch.float32)
        n = x.numel() // max(1, batch.numel())
        old = self._buffers["lsq_mean_abs"]
        assert old is not None
        if self._lsq_seen == 0 or old.shape != batch.shape:
            new = batch
            self._lsq_seen = 0
        else:
            new = old + (batch - old) * (n / (self._lsq_seen + n))
        self.lsq_mean_abs = new
        self._lsq_seen += n

    # ------------------------------------------------------------------ qparams
    @torch.no_grad()
    def effective_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, zero_point)`` the forward quantizes with (detached; LSQ's and PACT's scales as
        projected), in the qparams shape; ``RuntimeError`` before any qparams exist."""
        if not self.calibrated:
            raise RuntimeError(f"{self._name()} has no quantization parameters yet")
        learned = self._learned()
        if learned is not None and self.learn in ("lsq", "a2q"):
            scale = lsq_effective_scale(learned.detach(), self.spec)
        elif learned is not None:
            scale = pact_scale(learned, self.spec)
        else:
            buf = self._buffers["scale"]
            assert buf is not None
            scale = buf
        return scale.detach().clone(), self.zero_point.detach().clone()

    # ------------------------------------------------------------------ chosen codes
    @property
    def has_code_offsets(self) -> bool:
        """Whether a post-training algorithm chose this quantizer's codes (:attr:`code_offsets` is set)."""
        offsets = self._buffers["code_offsets"]
        return offsets is not None and offsets.numel() > 0

    def set_code_offsets(self, offsets: torch.Tensor) -> None:
        """Fix the codes of the tensor this quantizer takes (a weight) at ``clamp(round(x/s) + z + offsets)``
        (:mod:`quant.sim.code_offsets`); ``offsets`` has the tensor's shape. For ``learn="none"`` quantizers
        with qparams; ``ValueError`` naming the quantizer otherwise."""
        if self.learn != "none":
            raise ValueError(f"{self._name()}: code offsets need fixed qparams (learn='none'), not learn={self.learn!r}")
        if not self.calibrated:
            raise ValueError(f"{self._name()}: code offsets are relative to qparams: calibrate first")
        shape = tuple(offsets.shape)
        try:
            qparams_shape(shape, self.spec)
        except ValueError as e:
            raise ValueError(f"{self._name()}: code offsets of shape {shape} do not fit the spec: {e}") from None
        checked = check_code_offsets(offsets, shape, self.spec, self._name())
        self._buffers["code_offsets"] = checked.to(self.zero_point.device)

    def clear_code_offsets(self) -> None:
        """Back to round-to-nearest codes."""
        self._buffers["code_offsets"] = torch.empty(0, dtype=torch.int32, device=self.zero_point.device)

    # ------------------------------------------------------------------ equivalent rescaling
    @property
    def has_prescale(self) -> bool:
        """Whether this quantizer quantizes its tensor times prescale factors (:mod:`quant.sim.rescaling`)."""
        factors = self._buffers["prescale"]
        return factors is not None and factors.numel() > 0

    def set_prescale(self, factors: torch.Tensor) -> None:
        """Quantize ``x * factors`` from now on (``factors``: positive, finite, of the tensor's shape); the qparams
        and code offsets stay as they are (recalibrate for the rescaled tensor's range)."""
        self._buffers["prescale"] = check_prescale(factors, tuple(factors.shape), self._name()).to(self.zero_point.device)

    def set_bias_prescale(self, factors: torch.Tensor, module: nn.Module) -> None:
        """Have ``module`` (the layer whose weight this quantizer takes) compute with its bias times ``factors``
        (positive, finite, of the bias's shape) while this quantizer is enabled."""
        checked = check_prescale(factors, bias_shape(module), self._name())
        self._buffers["bias_prescale"] = checked.to(self.zero_point.device)
        ensure_bias_hook(module)

    def set_bias_shift(self, shift: torch.Tensor, module: nn.Module) -> None:
        """Have ``module`` (the layer whose weight this quantizer takes) add ``shift`` to its bias while this
        quantizer quantizes (:func:`quant.sim.rescaling.shifted_bias`)."""
        checked = check_bias_shift(shift, bias_shape(module), self._name())
        self._buffers["bias_shift"] = checked.to(self.zero_point.device)
        ensure_bias_hook(module)

    def clear_rescaling(self) -> None:
        """No prescale factors, bias factors or bias shift."""
        device = self.zero_point.device
        for key in ("prescale", "bias_prescale", "bias_shift"):
            self._buffers[key] = torch.empty(0, device=device)

    def rescaled(self, x: torch.Tensor) -> torch.Tensor:
        """``x * prescale`` (``x`` itself without factors): the tensor whose codes this quantizer gives."""
        factors = self._buffers["prescale"]
        if factors is None or not factors.numel():
            return x
        if factors.shape != x.shape:
            raise ValueError(f"{self._name()}: a tensor of shape {tuple(x.shape)} does not fit its prescale factors "
                             f"of shape {tuple(factors.shape)}")  # fmt: skip
        return x * factors.to(x.dtype)

    def layer_bias(self, bias: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The bias the layer of this weight quantizer computes with: ``bias`` times the bias factors plus the bias
        shift (:func:`quant.sim.rescaling.shifted_bias`), detached. What the lowering and exact mode take."""
        return shifted_bias(bias, self._buffers["bias_prescale"], self._buffers["bias_shift"])

    def float_bias(self, bias: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The bias of the rescaled float model (``bias`` times the bias factors, no shift), detached."""
        return shifted_bias(bias, self._buffers["bias_prescale"], None)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The int64 codes this quantizer gives ``x``: :func:`quant.sim.functional.quantize` of ``x`` times its
        prescale factors (:meth:`rescaled`) with the effective qparams, and its code offsets where a
        post-training algorithm set them. What the lowering puts into an integer program as weight codes.
        ``learn="a2q"``: :func:`quant.sim.a2q.a2q_codes`, whose every output channel has an L1 norm of at
        most the accumulator target's limit (checked here, exactly)."""
        x = self.rescaled(x)
        s, z = self.effective_qparams()
        if self.learn == "a2q":
            return self._a2q_codes(x, s)
        offsets = self._buffers["code_offsets"]
        if offsets is not None and offsets.numel():
            if offsets.shape != x.shape:
                raise ValueError(f"{self._name()}: a tensor of shape {tuple(x.shape)} does not fit its code offsets "
                                 f"of shape {tuple(offsets.shape)}")  # fmt: skip
            return quantize_with_offsets(x, s, z, offsets, self.spec).to(torch.int64)
        return quantize(x, s, z, self.spec).to(torch.int64)

    def _a2q_codes(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        assert self.accumulator is not None
        norm = self._parameters["norm"]
        assert norm is not None
        if tuple(qparams_shape(x.shape, self.spec)) != tuple(s.shape):
            raise ValueError(f"{self._name()}: a tensor of shape {tuple(x.shape)} does not fit its {tuple(s.shape)} "
                             "learned steps")  # fmt: skip
        limit = self.accumulator.l1_limit
        codes = a2q_codes(x, s, norm, self.spec, limit).to(torch.int64)
        l1 = reduce_to_qparams_shape(codes.abs(), self.spec, "sum")
        if l1.numel() and int(l1.max()) > limit:  # impossible by construction (quant.sim.a2q): never hand it on
            raise RuntimeError(f"{self._name()}: A2Q codes with an L1 norm of {int(l1.max())} above {limit}")
        return codes

    def _store_observer_qparams(self, validate_shape: Optional[tuple[int, ...]]) -> None:
        host = self.observer.host_range() if validate_shape is None else None
        if host is not None:  # per tensor on the CPU: the same qparams from Python floats, stored in place
            scale, zero_point = range_to_qparams_scalar(host[0], host[1], self.spec)
            self._store_host_qparams(scale, zero_point)
            return
        s, z = self.observer.qparams()
        if validate_shape is not None:
            check_qparams(torch.empty(validate_shape, device="meta"), s, z, self.spec)
        self._buffers["scale"], self._buffers["zero_point"] = s, z  # the buffers' new values (past __setattr__)
        self.__dict__["calibrated"] = True

    def _store_host_qparams(self, scale: float, zero_point: int) -> None:
        """``scale, zero_point = scale, zero_point`` (shape ``()``), in place when the buffers are CPU scalars."""
        s, z = self._buffers["scale"], self._buffers["zero_point"]
        assert s is not None and z is not None
        if s.shape == () and z.shape == () and s.device.type == "cpu" and z.device.type == "cpu":
            if not self._host.holds("scale", s, scale):  # unchanged qparams are not written again
                s.fill_(scale)
            if not self._host.holds("zero_point", z, zero_point):
                z.fill_(zero_point)
        else:
            self.scale = s = torch.tensor(scale, dtype=torch.float32, device=s.device)
            self.zero_point = z = torch.tensor(zero_point, dtype=torch.int32, device=z.device)
        self._host.put("scale", s, scale)
        self._host.put("zero_point", z, zero_point)
        self.__dict__["calibrated"] = True

    def compute_qparams(self) -> None:
        """Set the qparams from the observer (``learn="none"``), or re-initialize the
        learned parameter from the observed statistics (``"lsq"``, ``"pact"``; ``"a2q"``: the observer's step
        and the norm ``g = ||v||_1``); validated with :func:`~quant.sim.functional.check_qparams`.
        ``RuntimeError`` if nothing was observed."""
        if not self.observer.has_data:
            raise RuntimeError(f"{self._name()}: cannot compute quantization parameters, no data was observed")
        shape = self._last_shape
        if self.learn == "none":
            self._store_observer_qparams(validate_shape=shape)
            return
        learned = self._learned()
        assert learned is not None
        if self.learn == "lsq":
            mean_abs = self._buffers["lsq_mean_abs"]
            assert mean_abs is not None
            s = mean_abs_to_lsq_scale(mean_abs, self.spec)
            if self.spec.symmetric:
                z = torch.zeros(s.shape, dtype=torch.int32, device=s.device)
            else:
                lo = torch.clamp(self.observer.min_val, max=0.0)
                s_eff = lsq_effective_scale(s, self.spec)
                z = torch.clamp(self.spec.qmin - torch.round(lo / s_eff), self.spec.qmin, self.spec.qmax)
                z = z.to(torch.int32)
            if shape is not None:
                check_qparams(torch.empty(shape, device="meta"), s, z, self.spec.with_(scale="float"))
            new = s
        elif self.learn == "a2q":
            new, z = self.observer.qparams()
            if shape is not None:
                check_qparams(torch.empty(shape, device="meta"), new, z, self.spec)
            norm, l1 = self._parameters["norm"], self._buffers["a2q_l1"]
            assert norm is not None and l1 is not None
            norm.data = l1.to(device=new.device, dtype=norm.dtype).clone()
        else:
            s_obs, _ = self.observer.qparams()
            new = s_obs * float(self.spec.qmax)
            z = torch.zeros(new.shape, dtype=torch.int32, device=new.device)
            if shape is not None:
                check_qparams(torch.empty(shape, device="meta"), pact_scale(new, self.spec), z, self.spec)
        # on the device of the observed data, like the qparams buffers of learn="none"
        learned.data = new.to(dtype=learned.dtype)
        self.zero_point = z.to(new.device)
        self.calibrated = True

    # ------------------------------------------------------------------ state
    def freeze(self) -> None:
        """Stop observing; the qparams (or the learned parameter, whose ``requires_grad``
        becomes False) stay fixed. Qparams are computed first if data was observed but
        none exist yet."""
        if not self.calibrated and self.observer.has_data:
            self.compute_qparams()
        self.observing = False
        self._frozen = True
        for learned in self._learned_parameters():
            learned.requires_grad_(False)

    def reset(self) -> None:
        """Forget observations and qparams (``calibrated=False``), unfreeze and observe again."""
        self.observer.reset()
        device = self.zero_point.device
        self.zero_point = torch.empty(0, dtype=torch.int32, device=device)
        if self.learn == "none":
            self.scale = torch.empty(0, device=device)
        for learned in self._learned_parameters():
            learned.data = torch.empty(0, dtype=learned.dtype, device=learned.device)
            learned.requires_grad_(True)
        if self.learn == "a2q":
            self.a2q_l1 = torch.empty(0, device=device)
        if self.learn == "lsq":
            self.lsq_mean_abs = torch.empty(0, device=device)
            self._lsq_seen = 0
        self.calibrated = False
        self.observing = True
        self._frozen = False

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "config": self.extra_repr(),
            "enabled": self.enabled,
            "observing": self.observing,
            "quantizing": self.quantizing,
            "calibrated": self.calibrated,
            "frozen": self._frozen,
            "lsq_seen": self._lsq_seen,
        }

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise ValueError(f"{self._name()}: unsupported saved state {state!r}")
        if state["config"] != self.extra_repr():
            raise ValueError(
                f"{self._name()}: the state_dict was saved from a quantizer configured as {state['config']!r}"
            )
        self.enabled = bool(state["enabled"])
        self.observing = bool(state["observing"])
        self.quantizing = bool(state["quantizing"])
        self.calibrated = bool(state["calibrated"])
        self._frozen = bool(state["frozen"])
        self._lsq_seen = int(state["lsq_seen"])
        for learned in self._learned_parameters():
            learned.requires_grad_(not self._frozen)

    def _load_from_state_dict(  # type: ignore[no-untyped-def]
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        self._check_loaded_qparams(state_dict, prefix)
        if prefix + "code_offsets" not in state_dict:  # saved before code offsets existed: round to nearest
            state_dict[prefix + "code_offsets"] = torch.empty(0, dtype=torch.int32)
        elif state_dict[prefix + "code_offsets"].numel():
            offsets = state_dict[prefix + "code_offsets"]
            check_code_offsets(offsets, tuple(offsets.shape), self.spec, f"{self._name()}: {prefix}code_offsets")
        for key in ("prescale", "bias_prescale", "bias_shift"):  # saved before rescaling existed: none
            state_dict.setdefault(prefix + key, torch.empty(0))
        for key in ("prescale", "bias_prescale"):
            factors = state_dict[prefix + key]
            if isinstance(factors, torch.Tensor) and factors.numel():
                check_prescale(factors, tuple(factors.shape), f"{self._name()}: {prefix}{key}")
        shift = state_dict[prefix + "bias_shift"]
        if isinstance(shift, torch.Tensor) and shift.numel():
            check_bias_shift(shift, tuple(shift.shape), f"{self._name()}: {prefix}bias_shift")
        resize_for_load(self, state_dict, prefix)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _check_loaded_qparams(self, state_dict: Mapping[str, Any], prefix: str) -> None:
        """``ValueError`` naming the key for a saved scale that is not finite and > 0 with a finite reciprocal
        (a learned LSQ step or PACT clip: not finite; training may take it to or below 0, and the forward
        projects it to ``max(., SCALE_EPS)``), or a zero point outside the spec's code range: such a state
        would quantize to garbage."""
        learned = self.learn != "none"
        for key in ("scale", "alpha", "norm"):  # norm: A2Q's learned norm, like a learned step
            t = state_dict.get(prefix + key)
            if isinstance(t, torch.Tensor) and t.numel():
                v = t.detach().to(torch.float64)
                usable = torch.isfinite(v)
                if not learned:
                    usable &= (v > 0) & torch.isfinite(1.0 / v.to(torch.float32))
                if not bool(usable.all()):
                    bad = v[~usable].reshape(-1)[:4].tolist()
                    need = "finite" if learned else "finite and > 0 with a finite float32 reciprocal"
                    raise ValueError(f"{self._name()}: {prefix}{key} holds {bad}; a saved "
                                     f"{'learned step' if learned else 'scale'} must be {need}")  # fmt: skip
        z = state_dict.get(prefix + "zero_point")
        if isinstance(z, torch.Tensor) and z.numel():
            if z.is_floating_point() and not bool(torch.isfinite(z).all()):
                raise ValueError(f"{self._name()}: {prefix}zero_point is not finite")
            lo, hi = self.spec.qmin, self.spec.qmax
            if int(z.min()) < lo or int(z.max()) > hi:
                raise ValueError(f"{self._name()}: {prefix}zero_point holds values in [{int(z.min())}, {int(z.max())}] "
                                 f"outside the code range [{lo}, {hi}] of {self.spec.describe()}")  # fmt: skip

    def extra_repr(self) -> str:
        learn = f"a2q({self.accumulator.describe()})" if self.accumulator is not None else self.learn
        return f"{self.spec.describe()}, observer={self.observer_name}, learn={learn}"
