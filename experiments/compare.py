"""``python -m experiments.compare <sweep dir>``: the runs of a sweep side by side.

Reads every ``summary.json`` below the directory (one per run of ``experiments.run``), prints a
Markdown table (one row per run: data, model, scheme, method, datapath, seed, the four
accuracies, verification mismatches, BOPs, model bytes) and writes it as ``compare.md`` and
``compare.csv`` into the directory, with PNG plots: datapath accuracy against weight bits, against
BOPs and against model size (the Pareto front of accuracy vs cost marked), and the per-layer
fraction of codes where fast simulation and the datapath differ (from each run's
``verification.json``). The plots and a combined hparams view also go to TensorBoard
(``<sweep dir>/tensorboard``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any, Optional, Sequence

__all__ = ["collect", "main", "pareto_front", "rows"]

COLUMNS = ["run", "data", "model", "scheme", "method", "datapath", "seed", "float", "fast", "exact", "c", "mismatches",
           "weight_bits", "bops", "model_bytes"]  # fmt: skip


def collect(sweep: Path) -> list[tuple[Path, dict[str, Any]]]:
    """``(run directory, summary)`` of every run below ``sweep``, in path order."""
    found = sorted(sweep.rglob("summary.json"))
    if not found:
        raise SystemExit(f"experiments.compare: no summary.json below {str(sweep)!r} (is it a sweep directory?)")
    return [(p.parent, json.loads(p.read_text())) for p in found]


def rows(runs: Sequence[tuple[Path, dict[str, Any]]], sweep: Path) -> list[dict[str, Any]]:
    """One flat row per run (the columns of :data:`COLUMNS`)."""
    out = []
    for path, s in runs:
        acc = s["accuracy"]
        weight = s["scheme"]["weight"]
        out.append({"run": str(path.relative_to(sweep)) or ".", "data": s["data"]["name"], "model": s["model"]["name"],
                    "scheme": s["scheme"]["name"], "method": s["method"]["name"], "datapath": s["datapath"]["name"],
                    "seed": s["seed"], "float": acc["float"], "fast": acc["fast"], "exact": acc["exact"], "c": acc["c"],
                    "mismatches": s["verification"]["mismatches"], "weight_bits": 32 if weight is None else weight["bits"],
                    "bops": s["bops"], "model_bytes": s["model_bytes"]})  # fmt: skip
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower or equal cost with higher or equal accuracy, one strictly."""
    front = []
    for i, (ci, ai) in enumerate(points):
        if not any((cj <= ci and aj >= ai) and (cj < ci or aj > ai) for j, (cj, aj) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{100 * v:.2f}%" if v <= 1.0 else f"{v:.3g}"
    return str(v)


def markdown(table: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table (accuracies in percent)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in COLUMNS) + " |" for r in table]
    return "\n".join(lines)


def _accuracy(r: dict[str, Any]) -> float:
    best = r["c"] if r["c"] is not None else r["float"]
    return float(best)


def plots(table: Sequence[dict[str, Any]], runs: Sequence[tuple[Path, dict[str, Any]]], out: Path) -> list[Path]:
    """The PNG plots (see the module docstring); their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for key, label, log in (("weight_bits", "weight bits", False), ("bops", "bit operations per sample", True),
                            ("model_bytes", "model size (bytes)", True)):  # fmt: skip
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        points = [(float(r[key]), _accuracy(r)) for r in table]
        ax.scatter([p[0] for p in points], [100 * p[1] for p in points], color="tab:blue")
        for r, (x, y) in zip(table, points):
            ax.annotate(f"{r['scheme']}/{r['method']}", (x, 100 * y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if key != "weight_bits":
            front = pareto_front(points)
            ax.plot([points[i][0] for i in front], [100 * points[i][1] for i in front], color="tab:red", lw=1,
                    label="Pareto front")  # fmt: skip
            ax.legend(fontsize=7)
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy on the datapath (C; fp32: float), %")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / f"accuracy_vs_{key}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    any_line = False
    for (run_dir, s), r in zip(runs, table):
        vpath = run_dir / "verification.json"
        if not vpath.is_file():
            continue
        ops = [o for o in json.loads(vpath.read_text())["ops"] if o["fast"]["compared"]]
        fractions = [o["fast"]["differing"] / o["fast"]["compared"] for o in ops]
        ax.plot(range(len(ops)), [100 * f for f in fractions], marker="o", ms=3, label=f"{r['scheme']}/{r['datapath']}")
        any_line = True
    if any_line:
        ax.set_xlabel("op of the program (in order)")
        ax.set_ylabel("codes fast != datapath, %")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / "fast_vs_datapath_per_layer.png"
        fig.savefig(path, dpi=120)
        written.append(path)
    plt.close(fig)
    return written


def _log(table: Sequence[dict[str, Any]], images: Sequence[Path], out: Path) -> None:
    import numpy as np
    from matplotlib import image as mpimg
    from torch.utils.tensorboard import SummaryWriter

    log = SummaryWriter(log_dir=str(out / "tensorboard"))
    for p in images:
        log.add_image(f"compare/{p.stem}", np.asarray(mpimg.imread(p))[..., :3], dataformats="HWC")
    for r in table:
        hp = {k: r[k] for k in ("data", "model", "scheme", "method", "datapath", "seed", "weight_bits")}
        metrics = {f"hparam/{k}": (-1.0 if r[k] is None else float(r[k])) for k in ("float", "fast", "exact", "c", "bops",
                                                                                    "model_bytes")}  # fmt: skip
        log.add_hparams(hp, metrics, run_name=r["run"])
    log.close()


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a sweep directory of experiments.run -m (or any folder of runs)")
    parser.add_argument("--no-tensorboard", action="store_true")
    args = parser.parse_args(argv)
    runs = collect(args.sweep)
    table = rows(runs, args.sweep)
    text = markdown(table)
    verified = [r for r in table if r["mismatches"] is not None]
    total = sum(int(r["mismatches"]) for r in verified)
    text += (f"\n\nverification: {total} mismatches over {len(verified)} quantized run(s) "
             "(exact simulation vs torch reference vs C kernels, every op)")  # fmt: skip
    print(text)
    (args.sweep / "compare.md").write_text(text + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(table)
    (args.sweep / "compare.csv").write_text(buf.getvalue())
    images = plots(table, runs, args.sweep)
    if not args.no_tensorboard:
        _log(table, images, args.sweep)
    print(f"written: compare.md, compare.csv, {', '.join(p.name for p in images)} in {args.sweep}")


if __name__ == "__main__":
    main()
