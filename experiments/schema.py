"""The typed schemas of the experiment configs, registered in Hydra's ``ConfigStore``.

Every config group of ``configs/`` has a dataclass here, stored as ``base_<group>`` in its group;
each option's YAML starts from it (``defaults: [base_<group>, _self_]``), so an unknown key or a
value of the wrong type fails at composition with Hydra's own message. The project's frozen
dataclasses are the schemas themselves, not copies: :class:`~quant.contract.spec.QuantSpec` for
the ``weight`` and ``input`` of a scheme and :class:`~quant.contract.datapath.Datapath` for the
``datapath`` group. Their structured nodes are stored writable, so command-line overrides of
any field (``scheme.weight.bits=4``, ``datapath.acc_bits=16``) work; the values are validated
when :func:`to_objects` turns the composed config back into those dataclasses.

>>> cfg = compose_config(["scheme=w4a4", "scheme.weight.bits=3", "train.epochs=2"])
>>> cfg.scheme.weight.bits, cfg.scheme.input.bits, cfg.train.epochs, cfg.datapath.name
(3, 4, 2, 'fbgemm_int8')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from quant.contract.datapath import Datapath
from quant.contract.spec import QuantSpec

__all__ = ["CONFIG_DIR", "CalibConfig", "DataConfig", "LoggerConfig", "MethodConfig", "ModelConfig", "RunConfig",
           "SchemeConfig", "TrainConfig", "compose_config", "register", "to_objects"]  # fmt: skip

#: The configs folder of the repository (``configs/run.yaml`` is the primary config).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class DataConfig:
    """A dataset of :mod:`experiments.data`: ``name``, a stratified ``subset`` of samples per split (None:
    all), the training ``batch_size``."""

    name: str = "digits"
    subset: Optional[int] = None
    batch_size: int = 64


@dataclass
class ModelConfig:
    """A model of :mod:`experiments.models.registry` and its ``width``."""

    name: str = "cnn"
    width: int = 16


@dataclass
class SchemeConfig:
    """A quantization scheme: the ``weight`` and ``input`` specs of every Conv/Linear (None: float),
    optionally the first and last layers at ``first_last_bits`` (weights and inputs), and per-layer weight
    widths ``layer_bits`` (module name -> bits; mixed precision, e.g. searched by the Optuna sweeper)."""

    name: str = "w8a8"
    weight: Optional[QuantSpec] = field(default_factory=lambda: QuantSpec(bits=8, granularity="channel", axis=0))
    input: Optional[QuantSpec] = field(default_factory=lambda: QuantSpec(bits=8, signed=False, symmetric=False))
    first_last_bits: Optional[int] = None
    layer_bits: dict[str, int] = field(default_factory=dict)


@dataclass
class MethodConfig:
    """How the scheme is applied: ``ptq`` (calibration only) or ``qat`` (calibration, then ``epochs`` of
    training at ``lr``); the activation ``observer`` (minmax, moving_average, percentile, mse) with its
    ``observer_kwargs``; what QAT learns: ``learn`` none (STE), lsq (step sizes) or pact (clipping)."""

    name: str = "ptq_minmax"
    kind: str = "ptq"
    observer: str = "minmax"
    observer_kwargs: dict[str, float] = field(default_factory=dict)
    learn: str = "none"
    epochs: int = 0
    lr: float = 1e-3


@dataclass
class TrainConfig:
    """Float training: ``epochs`` of Adam at ``lr`` with a cosine schedule."""

    epochs: int = 15
    lr: float = 3e-3


@dataclass
class CalibConfig:
    """Calibration: ``batches`` training batches of ``batch_size`` through the model."""

    batches: int = 8
    batch_size: int = 128


@dataclass
class LoggerConfig:
    """TensorBoard logging in the run directory (scalars, hparams, histograms, plots)."""

    tensorboard: bool = True
    histograms: bool = True


@dataclass
class RunConfig:
    """One experiment run: data x model x scheme x method x datapath, and how to train, calibrate, log.
    ``verify_samples`` test samples are verified on the integer datapath (None: the whole test split); the
    value a sweeper optimizes is the C-kernel accuracy, minus 1 above ``objective_bops_budget`` BOPs;
    the float model is cached under ``cache_dir`` by the hash of what determines it."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    scheme: SchemeConfig = field(default_factory=SchemeConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    datapath: Datapath = field(default_factory=lambda: Datapath.preset("fbgemm_int8"))
    train: TrainConfig = field(default_factory=TrainConfig)
    calib: CalibConfig = field(default_factory=CalibConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    verify_samples: Optional[int] = None
    objective_bops_budget: Optional[float] = None
    cache_dir: str = "${oc.env:LOWBIT_CACHE,${oc.env:HOME}/.cache/lowbit-quant}"
    progress: bool = True


def _writable(node: Any) -> Any:
    """``node`` with the read-only flag of frozen dataclasses cleared at every level."""
    OmegaConf.set_readonly(node, False)
    if isinstance(node, DictConfig):
        for key in node.keys():
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                _writable(child)
    return node


_REGISTERED = False


def register() -> None:
    """Store every schema in Hydra's ``ConfigStore`` (once): ``base_run`` and ``base_<group>`` in each group."""
    global _REGISTERED
    if _REGISTERED:
        return
    cs = ConfigStore.instance()
    cs.store(name="base_run", node=_writable(OmegaConf.structured(RunConfig)))
    for group, schema in (("data", DataConfig), ("model", ModelConfig), ("scheme", SchemeConfig),
                          ("method", MethodConfig), ("datapath", Datapath), ("train", TrainConfig),
                          ("calib", CalibConfig), ("logger", LoggerConfig)):  # fmt: skip
        cs.store(group=group, name=f"base_{group}", node=_writable(OmegaConf.structured(schema)))
    _REGISTERED = True


def compose_config(overrides: Sequence[str] = (), config_name: str = "run") -> DictConfig:
    """The composed config of ``configs/<config_name>.yaml`` with ``overrides`` (for tests and tools; the apps
    use ``@hydra.main``)."""
    from hydra import compose, initialize_config_dir

    register()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def to_objects(cfg: DictConfig) -> RunConfig:
    """The composed config as the dataclasses (``QuantSpec`` and ``Datapath`` validated on the way)."""
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert isinstance(plain, dict)
    plain.pop("hydra", None)

    def spec(d: Optional[dict[str, Any]]) -> Optional[QuantSpec]:
        return None if d is None else QuantSpec(**d)

    s = plain["scheme"]
    scheme = SchemeConfig(name=s["name"], weight=spec(s["weight"]), input=spec(s["input"]),
                          first_last_bits=s["first_last_bits"], layer_bits=dict(s["layer_bits"]))  # fmt: skip
    return RunConfig(
        seed=plain["seed"], data=DataConfig(**plain["data"]), model=ModelConfig(**plain["model"]), scheme=scheme,
        method=MethodConfig(**plain["method"]), datapath=Datapath(**plain["datapath"]),
        train=TrainConfig(**plain["train"]), calib=CalibConfig(**plain["calib"]), logger=LoggerConfig(**plain["logger"]),
        verify_samples=plain["verify_samples"], objective_bops_budget=plain["objective_bops_budget"],
        cache_dir=plain["cache_dir"], progress=plain["progress"],
    )  # fmt: skip
