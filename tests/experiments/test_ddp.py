"""QAT under torch.distributed (DDP, gloo, 2 CPU processes): the observers all-reduce their batch extremes in
training, so every rank ends with the statistics of the global batch and identical scales; launched by torchrun
through experiments.run, rank 0 then evaluates and verifies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.multiprocessing.spawn import spawn

from quant.contract.spec import QuantSpec
from quant.sim.observers import make_observer

ROOT = Path(__file__).resolve().parents[2]


def _observe(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        batches = [torch.randn(8, 4) * (1 + i) for i in range(3)]
        results: dict[str, object] = {}
        for kind in ("minmax", "moving_average"):
            obs = make_observer(kind, QuantSpec(bits=8, signed=False, symmetric=False))
            obs.train()
            for b in batches:
                obs.update(b[rank * 4 : (rank + 1) * 4])  # this rank's half of every global batch
            results[kind] = [obs.min_val.item(), obs.max_val.item()]
            obs.eval()
            obs.update(torch.full((2,), 100.0 * (rank + 1)))  # eval: each rank alone, no collective
            results[kind + "_eval"] = obs.max_val.item()
        Path(out, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def test_observers_in_training_see_the_global_batch(tmp_path: Path) -> None:
    port = 29500 + os.getpid() % 1000
    spawn(_observe, args=(2, port, str(tmp_path)), nprocs=2, join=True)  # type: ignore[no-untyped-call]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    torch.manual_seed(0)
    batches = [torch.randn(8, 4) * (1 + i) for i in range(3)]
    for kind in ("minmax", "moving_average"):
        single = make_observer(kind, QuantSpec(bits=8, signed=False, symmetric=False))
        for b in batches:
            single.update(b)  # one process over the global batches
        assert r0[kind] == r1[kind] == [single.min_val.item(), single.max_val.item()]
        assert r0[kind + "_eval"] != r1[kind + "_eval"]


def test_torchrun_qat_ends_with_the_same_scales_on_every_rank(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                           "experiments.run", "+experiment=smoke", "method=qat_ste", "method.epochs=2", "logger=none",
                           "progress=false", f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={out}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    ranks = [json.loads((out / f"qparams.rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"]["name"] == "qat_ste" and summary["verification"]["mismatches"] == 0
