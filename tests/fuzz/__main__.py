"""``python -m tests.fuzz``: fuzz every entry point of the C extension and report what happened.

    python -m tests.fuzz --cases 100000 --sanitize --jobs 2     # what ``make fuzz`` runs
    python -m tests.fuzz --cases 2000 --targets api.conv2d raw.conv2d
    python -m tests.fuzz --replay outputs/fuzz/cases/3.pkl       # rerun one recorded case, in this process

The cases are spread evenly over the chosen targets (rounded up, so at least ``--cases`` run).
Per target it prints how many cases agreed ("ok"), were refused alike ("refused"), and how many
were findings: "disagree" (C and the reference differ), "unclear" (a raw exception or message),
"crash", "hang". Every finding is written to ``<out>/findings.jsonl`` and its case pickled under
``<out>/cases/`` for ``--replay``; the summary goes to ``<out>/report.json``. The exit status is 1
when there is any finding.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import pickle
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from tests.fuzz import sanitized

KINDS = ("ok", "refused", "disagree", "unclear", "crash", "hang")
FINDINGS = ("disagree", "unclear", "crash", "hang")


def _parse(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=2000, help="cases in all, spread over the targets (default 2000)")
    p.add_argument("--targets", nargs="*", default=["*"], help="target names or glob patterns (default all)")
    p.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    p.add_argument("--sanitize", action="store_true", help="run under the ASan/UBSan build of the extension")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a case may take before it is a hang")
    p.add_argument("--jobs", type=int, default=1, help="processes, each fuzzing a share of the targets")
    p.add_argument("--out", type=Path, default=Path("outputs/fuzz"), help="where findings and the report go")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="a tqdm bar")
    p.add_argument("--list", action="store_true", help="print the target names and exit")
    p.add_argument("--replay", type=Path, help="rerun one pickled case in this process and print its verdict")
    p.add_argument("--shard", default="0/1", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _selected(patterns: list[str], names: list[str]) -> list[str]:
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen:
        raise SystemExit(f"--targets {' '.join(patterns)} matches none of: {', '.join(names)}")
    return chosen


def _reexec_sanitized(argv: list[str]) -> int:
    reason = sanitized.available()
    if reason:
        raise SystemExit(f"--sanitize: {reason}")
    extension = sanitized.build()
    print(f"sanitized extension: {extension}", flush=True)
    return subprocess.call([sys.executable, "-m", "tests.fuzz", *argv], env=sanitized.environment(extension))


def _run_jobs(args: argparse.Namespace, argv: list[str]) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(args.jobs):
        shard_args = [a for a in argv if a != "--progress"] + ["--shard", f"{i}/{args.jobs}", "--out",
                                                                 str(args.out / f"shard{i}"), "--no-progress"]  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.fuzz", *shard_args]))
    codes = [p.wait() for p in procs]
    reports = [json.loads((args.out / f"shard{i}" / "report.json").read_text()) for i in range(args.jobs)]
    merged = {"seconds": max(r["seconds"] for r in reports), "sanitized": reports[0]["sanitized"],
              "targets": {k: v for r in reports for k, v in r["targets"].items()}}  # fmt: skip
    _summarize(merged, args.out)
    return max(codes)


def _summarize(report: dict[str, Any], out: Path) -> None:
    totals: Counter[str] = Counter()
    width = max(len(t) for t in report["targets"])
    print(f"{'target':<{width}} " + " ".join(f"{k:>8}" for k in KINDS))
    for target, counts in report["targets"].items():
        totals.update(counts)
        print(f"{target:<{width}} " + " ".join(f"{counts.get(k, 0):>8}" for k in KINDS))
    cases = sum(totals.values())
    findings = sum(totals[k] for k in FINDINGS)
    report["cases"], report["findings"] = cases, findings
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    sanitizer = "under ASan+UBSan" if report["sanitized"] else "without sanitizers"
    print(f"{cases} cases {sanitizer} in {report['seconds']:.0f} s: {findings} findings "
          f"({', '.join(f'{totals[k]} {k}' for k in FINDINGS)}); report {out / 'report.json'}")  # fmt: skip


def _fuzz(args: argparse.Namespace, extension: Optional[Path]) -> int:
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from tqdm import tqdm

    from tests.fuzz.server import ForkServer, Verdict
    from tests.fuzz.targets import TARGETS, execute

    index, count = (int(v) for v in args.shard.split("/"))
    names = _selected(args.targets, list(TARGETS))
    share = names[index::count]
    per_target = max(1, -(-args.cases // len(names)))  # rounded up: at least --cases in all
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cases").mkdir(exist_ok=True)
    findings = (args.out / "findings.jsonl").open("w")
    report: dict[str, Any] = {"sanitized": extension is not None, "targets": {}}
    bar = tqdm(total=per_target * len(share), unit="case", disable=not args.progress, desc="fuzz")
    start = time.perf_counter()
    with ForkServer(execute, timeout_s=args.timeout) as server:
        for target in share:
            counts: Counter[str] = Counter()
            strategy = TARGETS[target][0]

            def record(case: Any, verdict: Verdict, target: str = target, counts: Counter[str] = counts) -> None:
                counts[verdict.kind] += 1
                bar.update(1)
                if verdict.kind in FINDINGS:
                    number = sum(1 for _ in (args.out / "cases").iterdir())
                    path = args.out / "cases" / f"{number}.pkl"
                    path.write_bytes(pickle.dumps((target, case)))
                    findings.write(json.dumps({"target": target, "kind": verdict.kind, "detail": verdict.detail,
                                               "case": repr(case)[:4000], "replay": str(path)}) + "\n")  # fmt: skip
                    findings.flush()

            def submit(case: Any, target: str = target, record: Any = record) -> None:
                record(case, server.run(target, case))

            run_all = seed(args.seed)(
                settings(max_examples=per_target, database=None, deadline=None, phases=[Phase.generate],
                         suppress_health_check=list(HealthCheck))(given(strategy)(lambda case: submit(case)))
            )  # fmt: skip
            run_all()
            report["targets"][target] = dict(counts)
    bar.close()
    findings.close()
    report["seconds"] = time.perf_counter() - start
    report["restarts"] = server.restarts
    _summarize(report, args.out)
    return 1 if any(report["targets"][t].get(k, 0) for t in share for k in FINDINGS) else 0


def _replay(path: Path) -> int:
    from tests.fuzz.targets import execute

    target, case = pickle.loads(path.read_bytes())
    print(f"{target}: {case!r}")
    verdict = execute(target, case)
    print(f"verdict: {verdict.kind} {verdict.detail}")
    return 0 if verdict.kind in ("ok", "refused") else 1


def main(argv: Optional[list[str]] = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = _parse(raw)
    extension = sanitized.load()  # before anything imports kernels
    if args.sanitize and extension is None:
        return _reexec_sanitized(raw)
    if args.list:
        from tests.fuzz.targets import TARGETS

        print("\n".join(TARGETS))
        return 0
    if args.replay:
        return _replay(args.replay)
    if args.jobs > 1 and args.shard == "0/1":
        return _run_jobs(args, raw)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return _fuzz(args, extension)


if __name__ == "__main__":
    sys.exit(main())
