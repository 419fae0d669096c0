"""``python -m experiments.run [overrides]``: one experiment, float -> scheme -> datapath -> C kernels.

``run(cfg, out_dir)`` (pure: a :class:`~experiments.schema.RunConfig` in, a summary out) does:

1. checks what can be checked before any training: the scheme against the datapath (bits,
   signedness, pow2 scales), the model against the data's shape, the output directory;
2. loads the dataset (:mod:`experiments.data`), builds the model, trains it in float or loads it
   from the cache (``cache_dir/float/<hash>.pt``, the hash of data, model, training and seed: a
   sweep point that reuses a float model skips training), and folds its BatchNorms;
3. attaches the scheme (``*`` rule: weights and inputs of every Conv/Linear; the first and last
   layers at ``first_last_bits`` when set) with the method's observer and learning mode,
   calibrates, and for QAT trains ``method.epochs`` (then refreshes the calibration of the tensors
   between layers), checkpointing every epoch in ``out_dir/qat_checkpoint.pt``: the same command
   with the same ``hydra.run.dir`` resumes an interrupted run where its last epoch ended;
4. evaluates top-1 accuracy in float, fast simulation, exact simulation of the datapath and the
   program on the C kernels; lowers the program, saves it (``program.npz``) and verifies it with
   :func:`quant.verify` on ``verify_samples`` test samples;
5. writes ``summary.json`` and TensorBoard logs (scalars per epoch, an hparams entry with the final
   metrics, weight and quantization-error histograms, per-layer SQNR and bit-operation plots), and
   prints a compact table.

``torchrun --standalone --nproc_per_node=2 -m experiments.run method=qat_lsq hydra.run.dir=DIR`` trains
the QAT step under ``torch.distributed`` (DDP, gloo; each rank on its shard of the training set, the
observers' statistics all-reduced so the scales agree on every rank); rank 0 does the rest.
``python -m experiments.run -m scheme=w8a8,w4a4,w2a2 seed=0,1`` sweeps with Hydra's launcher;
``python -m experiments.compare <sweep dir>`` tabulates and plots the runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import hydra
import torch
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

import quant
from quant.lowering.lowerer import LoweringError
from quant.mixed.cost import cost
from experiments.models.registry import build_model
from experiments.schema import CONFIG_DIR, RunConfig, register, to_objects
from experiments.training import accuracy, train
from quant.contract.spec import QuantSpec
from quant.sim.recipe import WEIGHT_MODULES, QuantizerConfig

__all__ = ["ExperimentError", "bit_operations", "check_config", "load_data", "main", "objective", "run"]

#: Bumped when the float training changes, so cached float models are not reused across it.
FLOAT_CACHE_VERSION = 1


class ExperimentError(ValueError):
    """A config that cannot run, found before any training."""


# ----------------------------------------------------------------------------- checks and data


def check_config(cfg: RunConfig, out_dir: Path) -> None:
    """Refuse what would fail later: a scheme the datapath cannot run, an unknown method, an unwritable ``out_dir``."""
    specs = {"scheme.weight": (cfg.scheme.weight, "weight"), "scheme.input": (cfg.scheme.input, "activation")}
    if (cfg.scheme.weight is None) != (cfg.scheme.input is None):
        raise ExperimentError(f"scheme {cfg.scheme.name!r}: weight and input are quantized together (both or none)")
    for where, (spec, role) in specs.items():
        if spec is None:
            continue
        try:
            cfg.datapath.check_spec(spec, role)
            for bits in {cfg.scheme.first_last_bits, *(cfg.scheme.layer_bits.values() if role == "weight" else ())}:
                if bits is not None:
                    cfg.datapath.check_spec(_wider(spec, bits), role)
        except ValueError as err:
            raise ExperimentError(f"scheme {cfg.scheme.name!r} ({where}) cannot run on datapath {cfg.datapath.name!r}: "
                                  f"{err}") from None  # fmt: skip
    if cfg.method.kind not in ("ptq", "qat"):
        raise ExperimentError(f"method.kind={cfg.method.kind!r} must be 'ptq' or 'qat'")
    if cfg.method.kind == "qat" and cfg.method.epochs < 1:
        raise ExperimentError(f"method {cfg.method.name!r}: QAT needs method.epochs >= 1")
    if cfg.scheme.weight is not None:
        try:
            _quantizer_configs(cfg)
        except ValueError as err:
            raise ExperimentError(f"method {cfg.method.name!r} with scheme {cfg.scheme.name!r}: {err}") from None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".writable-{os.getpid()}"  # one per process: ranks of a torchrun share the folder
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ExperimentError(f"the output directory {str(out_dir)!r} is not writable: {err}") from None


def load_data(cfg: RunConfig) -> Any:
    """The dataset of ``cfg.data`` (:func:`experiments.data.load_dataset`)."""
    from experiments.data import DatasetNotInstalledError, load_dataset

    options = {} if cfg.data.subset is None else {"subset": cfg.data.subset}
    try:
        return load_dataset(cfg.data.name, seed=cfg.seed, **options)
    except (ValueError, OSError, RuntimeError, DatasetNotInstalledError) as err:
        raise ExperimentError(f"data {cfg.data.name!r}: {err}") from None


# ----------------------------------------------------------------------------- the scheme


def _wider(spec: QuantSpec, bits: int) -> QuantSpec:
    return spec.with_(bits=bits, narrow=False) if spec.bits != bits else spec


def _quantizer_configs(cfg: RunConfig) -> tuple[QuantizerConfig, QuantizerConfig]:
    assert cfg.scheme.weight is not None and cfg.scheme.input is not None
    m = cfg.method
    weight = QuantizerConfig(cfg.scheme.weight, observer="minmax", learn="lsq" if m.learn == "lsq" else "none")
    kwargs: Any = dict(m.observer_kwargs)  # QuantizerConfig freezes a mapping into sorted pairs
    act = QuantizerConfig(cfg.scheme.input, observer=m.observer, observer_kwargs=kwargs, learn=m.learn)
    return weight, act


def recipe(cfg: RunConfig, model: nn.Module) -> dict[str, Any]:
    """The recipe of the scheme and method: every Conv/Linear, then the first and last at ``first_last_bits``."""
    weight, act = _quantizer_configs(cfg)
    rules: dict[str, Any] = {"*": {"weight": weight, "input": act}}
    bits = cfg.scheme.first_last_bits
    layers = [name for name, mod in model.named_modules() if isinstance(mod, WEIGHT_MODULES)]
    if bits is not None:
        for name in sorted({layers[0], layers[-1]}):
            rules[name] = {"weight": QuantizerConfig(_wider(weight.spec, bits), weight.observer, weight.learn),
                           "input": QuantizerConfig(_wider(act.spec, bits), act.observer, act.learn,
                                                    act.observer_kwargs)}  # fmt: skip
    for name, layer_bits in sorted(cfg.scheme.layer_bits.items()):
        if name not in layers:
            raise ExperimentError(f"scheme.layer_bits: {name!r} is not a Conv/Linear of the model ({', '.join(layers)})")
        rules[name] = {**rules.get(name, {}), "weight": QuantizerConfig(_wider(weight.spec, layer_bits), weight.observer,
                                                                        weight.learn)}  # fmt: skip
    return rules


def bit_operations(model: nn.Module, handle: Optional[quant.QuantHandle], example: torch.Tensor) -> dict[str, int]:
    """Bit operations per layer for one sample: multiply-accumulates x the bits of their two operands (32 in
    float), as :func:`quant.mixed.cost.cost` counts them. Conv, transposed conv and Linear: weight x input
    bits; ``nn.MultiheadAttention``: its four projections (weight x input bits) and its two matmuls (``query``
    x ``key`` and ``attention`` x ``value`` bits); ``nn.LSTM``/``nn.GRU``: their gate products over every step
    (weight x input, weight x hidden bits)."""
    return {layer.name: layer.bops for layer in cost(model, handle, example).layers}


def program_bytes(program: Any) -> int:
    """Bytes of a program's constants: weight codes (packed for 1, 2, 4 bits), int32 biases, lookup tables."""
    total = 0
    for node in program.nodes:
        for p in node.params.values():
            data = getattr(p, "data", p)
            total += int(data.nbytes)
    return total


def model_bytes(model: nn.Module, handle: Optional[quant.QuantHandle]) -> int:
    """Bytes of the model under the scheme: each quantized weight tensor at its bit width (rounded up to a
    byte), every other parameter (biases, BatchNorms, unquantized layers) in 32 bits; the quantizers' own
    learned parameters (LSQ steps, PACT clips) are not the model's."""
    from torch.nn.utils import parametrize

    bits: dict[int, int] = {}
    skip: set[int] = set()
    if handle is not None:
        for name in handle.configs:  # every parametrized tensor with a quantizer (an LSTM has one per gate matrix)
            mod: Any = model.get_submodule(name)
            if not parametrize.is_parametrized(mod):
                continue
            for plist in mod.parametrizations.values():
                quantizers = [q for q in plist if isinstance(q, quant.Quantizer)]
                if quantizers:
                    bits[id(plist.original)] = quantizers[0].spec.bits
        skip = {id(p) for _, _, q in handle.quantizers() for p in q.parameters()}
    total = 0
    for p in model.parameters():
        if id(p) in skip:
            continue
        total += math.ceil(p.numel() * bits[id(p)] / 8) if id(p) in bits else 4 * p.numel()
    return total


# ----------------------------------------------------------------------------- the float model


def float_key(cfg: RunConfig) -> str:
    """What determines the float model (data, model, training, seed), hashed: its cache key."""
    what = {"data": asdict(cfg.data), "model": asdict(cfg.model), "train": asdict(cfg.train), "seed": cfg.seed,
            "version": FLOAT_CACHE_VERSION}  # fmt: skip
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def float_model(cfg: RunConfig, data: Any, log: Any) -> tuple[nn.Module, bool]:
    """The trained float model (BN not folded) and whether it came from the cache."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model.name, data.input_shape, data.num_classes, cfg.model.width)
    path = Path(cfg.cache_dir) / "float" / f"{float_key(cfg)}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model, True

    def on_epoch(epoch: int, loss: float) -> None:
        if log is not None:
            log.add_scalar("float/train_loss", loss, epoch)
            log.add_scalar("float/test_accuracy", accuracy(model, data.x_test, data.y_test), epoch)

    train(model, data.x_train, data.y_train, epochs=cfg.train.epochs, lr=cfg.train.lr, batch_size=cfg.data.batch_size,
          seed=cfg.seed, desc="float", on_epoch=on_epoch, progress=cfg.progress)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model, False


# ----------------------------------------------------------------------------- one run


def _calibrate(handle: quant.QuantHandle, model: nn.Module, data: Any, cfg: RunConfig) -> None:
    model.eval()
    bs = cfg.calib.batch_size
    with torch.no_grad(), handle.calibrate():
        for i in tqdm(range(cfg.calib.batches), desc="calibrate", leave=False, disable=not cfg.progress):
            chunk = data.x_train[i * bs : (i + 1) * bs]
            if len(chunk):
                model(chunk)


@torch.no_grad()
def _predictions(program: Any, x: torch.Tensor, backend: str, batch: int = 512) -> torch.Tensor:
    out = []
    for start in range(0, len(x), batch):
        codes = program.run(x[start : start + batch], backend=backend)
        codes = codes[0] if isinstance(codes, tuple) else codes
        out.append(torch.from_numpy(codes.astype("int64")).argmax(dim=1))
    return torch.cat(out)


def run(cfg: RunConfig, out_dir: Path) -> dict[str, Any]:
    """One experiment (see the module docstring); the summary written to ``out_dir/summary.json``."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    check_config(cfg, out_dir)
    rank, world = _process_group()
    data = load_data(cfg)
    try:
        build_model(cfg.model.name, data.input_shape, data.num_classes, cfg.model.width)
    except ValueError as err:
        raise ExperimentError(f"model {cfg.model.name!r} on data {cfg.data.name!r}: {err}") from None
    log = _writer(cfg, out_dir) if rank == 0 else None
    model, cached = float_model(cfg, data, log)
    model = quant.fold_bn(model.eval())
    acc: dict[str, Optional[float]] = {"float": accuracy(model, data.x_test, data.y_test), "fast": None, "exact": None,
                                       "c": None}  # fmt: skip
    verification: dict[str, Any] = {"outputs": 0, "mismatches": None}
    handle: Optional[quant.QuantHandle] = None
    program = None
    report = None
    if cfg.scheme.weight is not None:
        handle = quant.attach(model, recipe(cfg, model))
        _calibrate(handle, model, data, cfg)
        if cfg.method.kind == "qat":
            def on_epoch(epoch: int, loss: float) -> None:
                if log is not None:
                    log.add_scalar("qat/train_loss", loss, epoch)
                    log.add_scalar("qat/test_accuracy_fast", accuracy(model, data.x_test, data.y_test), epoch)

            if cfg.method.learn == "none":  # STE QAT: the activation observers keep tracking the ranges
                for _, role, q in handle.quantizers():
                    q.observing = q.observing or role == "input"
            trained, x_train, y_train, ckpt = model, data.x_train, data.y_train, out_dir / "qat_checkpoint.pt"
            if world > 1:  # DDP on this rank's shard; the observers all-reduce their batch extremes
                from torch.nn.parallel import DistributedDataParallel

                trained = DistributedDataParallel(model)
                x_train, y_train = data.x_train[rank::world], data.y_train[rank::world]
                ckpt = out_dir / f"qat_checkpoint.rank{rank}.pt"
            train(trained, x_train, y_train, epochs=cfg.method.epochs, lr=cfg.method.lr,
                  batch_size=cfg.data.batch_size, seed=cfg.seed + 1, desc=f"QAT {cfg.method.learn}",
                  on_epoch=on_epoch, progress=cfg.progress and rank == 0, checkpoint=ckpt)  # fmt: skip
            model.eval()
            if world > 1:
                _write_rank_qparams(handle, out_dir / f"qparams.rank{rank}.json")
                torch.distributed.barrier()
                if rank != 0:  # rank 0 evaluates, lowers, verifies and writes the summary
                    torch.distributed.destroy_process_group()
                    return {}
            handle.freeze()
            handle.disable()  # refresh the statistics of the tensors between layers (quantizers keep theirs)
            handle.edges = None
            _calibrate(handle, model, data, cfg)
            handle.enable()
        acc["fast"] = accuracy(model, data.x_test, data.y_test)
        try:
            program = quant.lower(model, handle, data.x_test[:1], datapath=cfg.datapath)
        except LoweringError as err:  # a layer the integer datapath does not run yet: simulation results only
            verification["not_lowered"] = str(err)
            print(f"experiments.run: the integer datapath cannot run this model yet, fast simulation only: {err}")
    if program is not None and handle is not None:
        program.save(out_dir / "program.npz")
        handle.set_mode("exact", cfg.datapath)
        acc["exact"] = accuracy(model, data.x_test, data.y_test)
        handle.set_mode("fast")
        acc["c"] = float((_predictions(program, data.x_test, "c") == data.y_test).double().mean())
        n = len(data.x_test) if cfg.verify_samples is None else min(cfg.verify_samples, len(data.x_test))
        report = quant.verify(model, handle, program, data.x_test[:n], batch_size=256, progress=cfg.progress)
        (out_dir / "verification.json").write_text(report.to_json())
        verification = {"outputs": int(report.output.compared), "mismatches": int(report.mismatches),
                        "samples": n, "fast_vs_datapath_differing": report.fast_differing_fraction,
                        "sqnr_db": _finite(report.sqnr_db)}  # fmt: skip
    bops = bit_operations(model, handle, data.x_test)
    summary = {
        "accuracy": acc,
        "verification": verification,
        "scheme": {"name": cfg.scheme.name, "weight": None if cfg.scheme.weight is None else asdict(cfg.scheme.weight),
                   "input": None if cfg.scheme.input is None else asdict(cfg.scheme.input),
                   "first_last_bits": cfg.scheme.first_last_bits},
        "method": asdict(cfg.method),
        "datapath": cfg.datapath.as_dict(),
        "data": asdict(cfg.data),
        "model": asdict(cfg.model),
        "seed": cfg.seed,
        "bops": sum(bops.values()),
        "bops_per_layer": bops,
        "model_bytes": model_bytes(model, handle),
        "program_bytes": None if program is None else program_bytes(program),
        "float_cached": cached,
        "seconds": time.perf_counter() - start,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if log is not None:
        _log_final(log, cfg, summary, model, handle, report)
        log.close()
    print(table([summary]))
    if world > 1:
        torch.distributed.destroy_process_group()
    return summary


def _process_group() -> tuple[int, int]:
    """``(rank, world size)``: a gloo process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    return torch.distributed.get_rank(), world


def _write_rank_qparams(handle: quant.QuantHandle, path: Path) -> None:
    """Every quantizer's scale and zero point on this rank (ranks must agree after DDP QAT)."""
    out = {}
    for name, role, q in handle.quantizers():
        s, z = q.effective_qparams()
        out[f"{name}.{role}"] = {"scale": s.reshape(-1).tolist(), "zero_point": z.reshape(-1).tolist()}
    path.write_text(json.dumps(out, sort_keys=True) + "\n")


def _finite(v: float) -> Optional[float]:
    return v if math.isfinite(v) else None


def table(summaries: list[dict[str, Any]]) -> str:
    """A compact table of summaries: scheme, method, datapath, the four accuracies, mismatches, BOPs, bytes."""

    def pct(v: Optional[float]) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    head = (f"{'scheme':<18} {'method':<14} {'datapath':<16} {'float':>7} {'fast':>7} {'exact':>7} {'C':>7} "
            f"{'mismatches':>10} {'MBOPs':>9} {'bytes':>8}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for s in summaries:
        a, v = s["accuracy"], s["verification"]
        mism = "-" if v["mismatches"] is None else str(v["mismatches"])
        lines.append(f"{s['scheme']['name']:<18} {s['method']['name']:<14} {s['datapath']['name']:<16} "
                     f"{pct(a['float']):>7} {pct(a['fast']):>7} {pct(a['exact']):>7} {pct(a['c']):>7} {mism:>10} "
                     f"{s['bops'] / 1e6:>9.2f} {s['model_bytes']:>8}")  # fmt: skip
    return "\n".join(lines)


# ----------------------------------------------------------------------------- TensorBoard


def _writer(cfg: RunConfig, out_dir: Path) -> Any:
    if not cfg.logger.tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))


def _log_final(log: Any, cfg: RunConfig, summary: dict[str, Any], model: nn.Module,
               handle: Optional[quant.QuantHandle], report: Any) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hparams = {"scheme": cfg.scheme.name, "method": cfg.method.name, "datapath": cfg.datapath.name,
               "data": cfg.data.name, "model": cfg.model.name, "seed": cfg.seed,
               "weight_bits": 32 if cfg.scheme.weight is None else cfg.scheme.weight.bits,
               "input_bits": 32 if cfg.scheme.input is None else cfg.scheme.input.bits}  # fmt: skip
    metrics = {f"hparam/accuracy_{k}": (-1.0 if v is None else v) for k, v in summary["accuracy"].items()}
    metrics["hparam/mismatches"] = float(summary["verification"]["mismatches"] or 0)
    metrics["hparam/bops"] = float(summary["bops"])
    metrics["hparam/model_bytes"] = float(summary["model_bytes"])
    log.add_hparams(hparams, metrics, run_name=".")
    if cfg.logger.histograms and handle is not None:
        from quant.sim.fast import original_parameter

        for name, mod in handle.modules.items():  # every quantized weight: in_proj_weight, weight_hh_l0, ... too
            quantized = getattr(mod, "parametrizations", {})
            for tensor in quantized:
                w = original_parameter(mod, tensor)
                suffix = "" if tensor == "weight" else f".{tensor}"
                log.add_histogram(f"weights/{name}{suffix}", w)
                q = quantized[tensor][0]  # the quantizer that parametrizes it
                log.add_histogram(f"weight_quantization_error/{name}{suffix}", (q(w) - w).detach())
    names = list(summary["bops_per_layer"])
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(names) + 2), 3))
    ax.bar(range(len(names)), [summary["bops_per_layer"][n] / 1e6 for n in names])
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("MBOPs per sample")
    ax.set_title(f"bit operations: {cfg.scheme.name}")
    fig.tight_layout()
    log.add_figure("plots/bops_per_layer", fig)
    plt.close(fig)
    if report is not None:
        ops = [o for o in report.ops if o.fast.compared and o.op in ("conv2d", "linear", "add", "mul", "lut")]
        fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(ops) + 2), 3))
        ax.bar(range(len(ops)), [min(o.fast.sqnr_db, 99.0) for o in ops])
        ax.set_xticks(range(len(ops)), [o.name for o in ops], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("SQNR dB (datapath vs fast)")
        ax.set_title(f"per-layer SQNR: {cfg.scheme.name} on {cfg.datapath.name}")
        fig.tight_layout()
        log.add_figure("plots/per_layer_sqnr", fig)
        plt.close(fig)


@hydra.main(config_path=str(CONFIG_DIR), config_name="run", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """The Hydra entry point: compose, convert to the schemas, run in Hydra's output directory; returns the
    objective a sweeper optimizes (:func:`objective`)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        objects = to_objects(cfg)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"experiments.run: invalid config: {err}") from None
    try:
        summary = run(objects, Path(HydraConfig.get().runtime.output_dir))
    except ExperimentError as err:
        raise SystemExit(f"experiments.run: {err}") from None
    return objective(summary, objects.objective_bops_budget) if summary else 0.0  # other ranks report nothing


def objective(summary: dict[str, Any], bops_budget: Optional[float]) -> float:
    """What a sweeper maximizes: the C-kernel accuracy (float accuracy for a float scheme), minus 1 when the
    run's bit operations exceed ``bops_budget``."""
    acc = summary["accuracy"]["c"] if summary["accuracy"]["c"] is not None else summary["accuracy"]["float"]
    over = bops_budget is not None and summary["bops"] > bops_budget
    return float(acc) - (1.0 if over else 0.0)


register()

if __name__ == "__main__":
    main()
