"""``python -m syncbus.bench``: the bench without the CLI (same options as ``syncbus bench``).

``python -m syncbus.bench chart OUT.png A.json [B.json ...]`` draws one chart of several runs
(one panel per run). ``--pyinstrument DIR`` profiles the timed phases named by
``--pyinstrument-phase`` (default: process) and writes a text and an HTML report per phase.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from syncbus.bench import BenchHooks, run_bench
from syncbus.bench.prepare import PhaseWrapper
from syncbus.bench.report import main as chart_main
from syncbus.bench.workload import PROFILES


def _profiler(out_dir: str, phases: set[str], tag: str) -> PhaseWrapper:
    from pyinstrument import Profiler

    @contextmanager
    def wrap(phase: str) -> Iterator[None]:
        if phase not in phases:
            yield
            return
        profiler = Profiler(interval=0.001)
        profiler.start()
        try:
            yield
        finally:
            profiler.stop()
            base = Path(out_dir) / f"{tag}-{phase}"
            base.parent.mkdir(parents=True, exist_ok=True)
            base.with_suffix(".txt").write_text(profiler.output_text(unicode=True, show_all=False))
            base.with_suffix(".html").write_text(profiler.output_html())
            if profiler.last_session is not None:
                top = Path(f"{base}-self-time.txt")
                top.write_text(self_time_report(profiler.last_session.root_frame()))

    return wrap


def _where(frame: Any) -> str:
    path = str(frame.file_path or "")
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/syncbus/" in path:
        return "syncbus." + path.rsplit("/syncbus/", 1)[1].removesuffix(".py").replace("/", ".")
    if not path or path.startswith("<"):
        return "built-in (C)"
    return "stdlib"


def self_time_report(root: Any, top: int = 30) -> str:
    """Self time summed per function and per library/module over a pyinstrument call tree."""
    per_function: dict[str, float] = defaultdict(float)
    per_place: dict[str, float] = defaultdict(float)
    stack = [root] if root is not None else []
    total = 0.0
    while stack:
        frame = stack.pop()
        stack.extend(frame.children)
        if frame.is_synthetic:
            continue
        spent = frame.total_self_time
        total += spent
        where = _where(frame)
        per_place[where] += spent
        short = "/".join(str(frame.file_path or "").split("/")[-2:])
        per_function[f"{frame.function}  ({short or where}:{frame.line_no})"] += spent
    lines = [f"total sampled time: {total:.3f} s", "", "self time per library / module:"]
    for name, spent in sorted(per_place.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {spent:8.3f} s  {100 * spent / total:5.1f} %  {name}")
    lines += ["", f"top {top} functions by self time:"]
    for name, spent in sorted(per_function.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {spent:8.3f} s  {100 * spent / total:5.1f} %  {name}")
    return "\n".join(lines) + "\n"


def main() -> None:
    if sys.argv[1:2] == ["chart"]:
        chart_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(prog="python -m syncbus.bench", description=__doc__)
    parser.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    parser.add_argument("--db", default=None, help="SQLite file URL or PostgreSQL server URL")
    parser.add_argument("--json", default=None, help="write the JSON report here")
    parser.add_argument("--chart", default=None, help="write the PNG chart here")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--pyinstrument", default=None, metavar="DIR")
    parser.add_argument("--pyinstrument-phase", action="append", default=None)
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["peers", "end-to-end", "http"],
        help="leave out",
    )
    args = parser.parse_args()
    hooks = BenchHooks(skip=frozenset(args.skip))
    if args.pyinstrument:
        tag = f"{args.profile}-{'postgresql' if args.db and 'postgres' in args.db else 'sqlite'}"
        phases = set(args.pyinstrument_phase or ["process"])
        hooks.wrap_phase = _profiler(args.pyinstrument, phases, tag)
    run_bench(
        args.profile,
        args.db,
        args.json,
        Console(),
        args.chart,
        hooks=hooks,
        batch_size=args.batch_size,
    )


if __name__ == "__main__":
    main()
