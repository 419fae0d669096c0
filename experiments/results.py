"""``python -m experiments.results <results dir> [--out docs]``: ``docs/results.md`` from the study sweeps.

The studies are the ``experiment`` bundles of ``configs/experiment`` on Fashion-MNIST (``make
results`` runs them all into ``outputs/results/<study>`` and then this): per-tensor vs per-channel
weights at 4 bits, min-max vs percentile vs MSE calibration at 4 bits, PTQ vs LSQ QAT at 4, 3 and 2
bits, and 32- vs 16-bit accumulators, wrapping vs saturating. For each study this writes its table
(float, fast-simulation, exact-simulation and C-kernel accuracy, verification mismatches, BOPs,
model bytes), its plots (``<out>/results/<study>_*.png``) and a paragraph that reads the measured
numbers against the trends reported in the literature (Krishnamoorthi 2018; Wu et al. 2020; Esser et
al. 2020; Colbert et al. 2023). Every figure in the page comes from the runs' ``summary.json``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from experiments.compare import collect, plots, rows

__all__ = ["STUDIES", "main", "render"]

Row = dict[str, Any]


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _acc(rows_: Sequence[Row], column: str = "c", **match: Any) -> Optional[float]:
    """The ``column`` accuracy of the first row matching ``match`` (None when absent or not measured)."""
    for r in rows_:
        if all(r.get(k) == v for k, v in match.items()):
            return None if r[column] is None else float(r[column])
    return None


def _granularity(rs: Sequence[Row]) -> str:
    tensor, channel = _acc(rs, scheme="w4a8_per_tensor"), _acc(rs, scheme="w4a8")
    if tensor is None or channel is None:
        return "(incomplete sweep)"
    gap = 100 * (channel - tensor)
    return (f"With 4-bit weights and 8-bit activations after min-max calibration, one scale per output channel "
            f"reaches {_pct(channel)} on the datapath against {_pct(tensor)} with one scale per tensor "
            f"({gap:+.2f} points). Krishnamoorthi (2018) reports the same direction: per-channel weight "
            "scales are what makes 4-bit post-training weights usable, because the channels' ranges differ by "
            "large factors and a per-tensor scale spends most of the 16 levels on the widest channel.")


def _calibration(rs: Sequence[Row]) -> str:
    found = {m: _acc(rs, method=m) for m in ("ptq_minmax", "ptq_percentile", "ptq_mse")}
    if any(v is None for v in found.values()):
        return "(incomplete sweep)"
    best = max(found, key=lambda m: found[m] or 0.0)
    parts = ", ".join(f"{m.removeprefix('ptq_')} {_pct(v)}" for m, v in found.items())
    return (f"At W4A4, datapath accuracy by activation calibration: {parts}; the best here is "
            f"{best.removeprefix('ptq_')}. Wu et al. (2020) compare max, percentile, MSE and entropy calibration of "
            "activations and find the clipping methods ahead of the plain maximum, since a few outliers stretch "
            "the range and leave few levels for the bulk of the distribution; the effect grows as bits shrink."
            + (" Here min-max holds up: the activations of this small CNN have short tails." if best == "ptq_minmax"
               else " The measurement agrees: min-max is the worst of the three here." if min(found, key=lambda m: found[m] or 0.0)
               == "ptq_minmax" else ""))  # fmt: skip


def _qat(rs: Sequence[Row]) -> str:
    lines, fast_gains, datapath_gains = [], [], []
    for scheme in ("w4a4", "w3a3", "w2a2"):
        ptq, qat = _acc(rs, scheme=scheme, method="ptq_minmax"), _acc(rs, scheme=scheme, method="qat_lsq")
        fptq, fqat = _acc(rs, "fast", scheme=scheme, method="ptq_minmax"), _acc(rs, "fast", scheme=scheme, method="qat_lsq")
        if None in (ptq, qat, fptq, fqat):
            continue
        assert ptq is not None and qat is not None and fptq is not None and fqat is not None
        lines.append(f"{scheme}: PTQ {_pct(ptq)}, LSQ {_pct(qat)} on the datapath ({100 * (qat - ptq):+.2f} points; in "
                     f"fast simulation {_pct(fptq)} -> {_pct(fqat)})")  # fmt: skip
        fast_gains.append(fqat - fptq)
        datapath_gains.append(qat - ptq)
    if not lines:
        return "(incomplete sweep)"
    text = ("Accuracy after min-max PTQ and after 5 epochs of LSQ quantization-aware training: " + "; ".join(lines)
            + ". Krishnamoorthi (2018) finds post-training quantization below 8 bits costly and quantization-aware "
            "training the way to recover it at 4 bits; Esser et al. (2020) show learned step sizes keeping 3-bit "
            "networks close to full precision and 2-bit ones within a few points on ImageNet, the gain of QAT over "
            "PTQ growing as the width shrinks.")  # fmt: skip
    if any(f > 0 >= d for f, d in zip(fast_gains, datapath_gains)):
        text += (" Here QAT gains in fast simulation, where those papers measure, but not all of it survives on the "
                 "integer datapath: fast simulation quantizes each layer's inputs and weights, while the datapath also "
                 "rounds every tensor between them (conv outputs before an activation, pooled values, the requantized "
                 "accumulators), so a network trained to the fast model's noise meets other noise at inference. This "
                 "gap is what exact mode measures (and can train through), and why the tables here report both.")  # fmt: skip
    return text


def _accumulators(rs: Sequence[Row]) -> str:
    def acc(bits: int, overflow: str) -> Optional[float]:
        for r in rs:
            if r["acc_bits"] == bits and r["overflow"] == overflow:
                return None if r["c"] is None else float(r["c"])
        return None

    w32, w16, s16 = acc(32, "wrap"), acc(16, "wrap"), acc(16, "saturate")
    if None in (w32, w16, s16):
        return "(incomplete sweep)"
    return (f"W8A8 on a 32-bit accumulator reaches {_pct(w32)}; on a 16-bit accumulator it reaches {_pct(w16)} "
            f"when sums wrap around and {_pct(s16)} when they saturate. One product of a uint8 and an int8 code is up "
            "to 2^15 in magnitude, so a 16-bit accumulator can overflow once a few products add up; wrap-around turns "
            "an overflow into a value of the wrong sign and magnitude, saturation into a clipped one, which is why "
            "narrow-accumulator work (Colbert et al. 2023, A2Q) constrains the weights so that overflow cannot happen "
            "at all. Fast simulation does not model the accumulator and reports the 32-bit accuracy for all four.")


#: (folder, title, paragraph writer) of each study, in page order.
STUDIES: list[tuple[str, str, Callable[[Sequence[Row]], str]]] = [
    ("granularity", "Per-tensor vs per-channel weights at 4 bits (post-training)", _granularity),
    ("calibration", "Min-max vs percentile vs MSE calibration at 4 bits", _calibration),
    ("qat_low_bits", "Post-training quantization vs LSQ quantization-aware training at 4, 3 and 2 bits", _qat),
    ("accumulators", "32-bit vs 16-bit accumulators, wrapping vs saturating (W8A8)", _accumulators),
]


def _table(rs: Sequence[Row]) -> str:
    cols = ["scheme", "method", "datapath", "acc_bits", "overflow", "float", "fast", "exact", "c", "mismatches", "bops",
            "model_bytes"]  # fmt: skip
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rs:
        cells = [_pct(r[c]) if c in ("float", "fast", "exact", "c") else ("-" if r[c] is None else str(r[c])) for c in cols]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def render(results: Path, out: Path) -> str:
    """The Markdown page; the plots are copied to ``out/results/``."""
    images = out / "results"
    images.mkdir(parents=True, exist_ok=True)
    sections = []
    setup: Optional[Row] = None
    for folder, title, paragraph in STUDIES:
        sweep = results / folder
        if not sweep.is_dir():
            sections.append(f"## {title}\n\n(not run: `{folder}` is missing from {results})\n")
            continue
        runs = collect(sweep)
        rs = rows(runs, sweep)
        for (path, s), r in zip(runs, rs):
            r["acc_bits"], r["overflow"] = s["datapath"]["acc_bits"], s["datapath"]["overflow"]
        setup = setup or runs[0][1]
        pictures = []
        for p in plots(rs, runs, sweep):
            target = images / f"{folder}_{p.name}"
            shutil.copyfile(p, target)
            pictures.append(f"![{p.stem}](results/{target.name})")
        sections.append(f"## {title}\n\n`python -m experiments.run -m +experiment={folder}`\n\n{_table(rs)}\n\n"
                        f"{paragraph(rs)}\n\n" + " ".join(pictures) + "\n")  # fmt: skip
    intro = ["# Results: sub-8-bit schemes on Fashion-MNIST, on the integer datapath", "",
             "Generated by `make results` (the four study sweeps, then `python -m experiments.results "
             "outputs/results --out docs`); every number comes from the runs' `summary.json`. Accuracy is top-1 on "
             "the test split: `float` the float model (BatchNorm folded), `fast` fast simulation, `exact` exact "
             "simulation of the datapath, `c` the lowered program on the C kernels (equal to `exact` by "
             "construction, which `mismatches` = 0 from `quant.verify` confirms op by op)."]  # fmt: skip
    if setup is not None:
        d, m = setup["data"], setup["model"]
        intro.append("")
        intro.append(f"Setup: data `{d['name']}` (subset {d['subset']} training images, batch {d['batch_size']}), model "
                     f"`{m['name']}` (width {m['width']}), seed {setup['seed']}, datapath `{setup['datapath']['name']}` "
                     "unless the study varies it; QAT runs 5 epochs from the float model.")  # fmt: skip
    return "\n".join(intro) + "\n\n" + "\n".join(sections)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.results", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the folder holding one sweep folder per study")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where results.md and results/ go")
    args = parser.parse_args(argv)
    page = render(args.results, args.out)
    (args.out / "results.md").write_text(page)
    print(f"written {args.out / 'results.md'}")


if __name__ == "__main__":
    main()
