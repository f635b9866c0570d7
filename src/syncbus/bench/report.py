"""The bench's output: a Markdown table, a JSON file, a chart, and a one-line summary.

Every throughput figure is a ratio to a baseline measured in the same run (same process, same
database, same durability settings); the latency and admin-scale profiles report times in ms
(``Timing``: median, p95, p99, min and max of repeated measurements). ``peak RSS`` is the
process's peak resident set size so far (``getrusage(RUSAGE_SELF).ru_maxrss``), read right after
the path ran; the drain profiles run their drain in a fresh subprocess, so that figure is the
drain's own.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HEADLINE_KEYS = (
    "process/setwise-floor",
    "process/raw-floor",
    "log/raw-insert",
    "syncbus/procrastinate",
    "syncbus/huey",
    "syncbus/celery",
)


@dataclass
class Row:
    """One timed path (or baseline) of one run."""

    backend: str
    path: str
    tasks: int
    seconds: float
    peak_rss_mb: float
    baseline: str | None = None
    ratio: float | None = None
    kind: str = "syncbus"  # syncbus | baseline | peer
    note: str = ""
    statements: int | None = None  # SQL statements on the bus's engine during the phase

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tasks_per_s"] = round(self.tasks_per_s, 1)
        out["seconds"] = round(self.seconds, 3)
        out["ratio"] = None if self.ratio is None else round(self.ratio, 3)
        out["statements_per_task"] = (
            None if self.statements is None else round(self.statements / self.tasks, 2)
        )
        return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


@dataclass
class Timing:
    """Repeated measurements of one thing, in ms: an admin page over HTTP, or a task from its
    POST to the moment it was seen applied."""

    label: str
    samples_ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    def to_dict(self) -> dict[str, Any]:
        ms = self.samples_ms
        return {
            "label": self.label,
            "runs": len(ms),
            "median_ms": round(self.median_ms, 2),
            "p95_ms": round(percentile(ms, 95), 2),
            "p99_ms": round(percentile(ms, 99), 2),
            "min_ms": round(min(ms), 2),
            "max_ms": round(max(ms), 2),
        }


@dataclass
class BenchReport:
    profile: str
    backend: str
    workload_version: int
    batch_size: int
    database: str
    machine: dict[str, Any]
    durability: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    latency: dict[str, Any] | None = None
    gates: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    headline: dict[str, float | None] = field(default_factory=dict)
    extra_summary: dict[str, str] = field(default_factory=dict)
    timings: list[Timing] = field(default_factory=list)
    # The lanes profile: targets met or not, and a worker's profile (``lanes.summarise_profile``).
    targets: list[dict[str, Any]] = field(default_factory=list)
    where_time_goes: dict[str, Any] | None = None
    json_path: str | None = None
    chart_path: str | None = None

    def row(self, path: str) -> Row | None:
        return next((r for r in self.rows if r.path == path), None)

    def set_ratio(self, path: str, baseline: str) -> None:
        row, base = self.row(path), self.row(baseline)
        if row is not None and base is not None:
            row.baseline = baseline
            row.ratio = row.tasks_per_s / base.tasks_per_s

    def ratio_of(self, path: str, baseline: str) -> float | None:
        row, base = self.row(path), self.row(baseline)
        if row is None or base is None:
            return None
        return row.tasks_per_s / base.tasks_per_s

    def summary_line(self) -> str:
        def fmt(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.2f}"

        parts = [f"{k}={fmt(self.headline.get(k))}" for k in HEADLINE_KEYS]
        parts += [f"{k}={v}" for k, v in self.extra_summary.items()]
        return "  ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "profile": self.profile,
            "backend": self.backend,
            "workload_version": self.workload_version,
            "batch_size": self.batch_size,
            "database": self.database,
            "machine": self.machine,
            "durability": self.durability,
            "results": [r.to_dict() for r in self.rows],
            "latency": self.latency,
            "gates": self.gates,
            "skipped": self.skipped,
            "headline": {k: None if v is None else round(v, 3) for k, v in self.headline.items()},
            "summary": self.summary_line(),
        }
        if self.timings:
            out["timings"] = [t.to_dict() for t in self.timings]
        if self.targets:
            out["targets"] = self.targets
        if self.where_time_goes is not None:
            out["where_time_goes"] = self.where_time_goes
        return out

    def write_json(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        self.json_path = path

    def markdown(self) -> str:
        m = self.machine
        lines = [
            f"### syncbus bench: profile `{self.profile}` on {self.backend} "
            f"(workload v{self.workload_version}, batch size {self.batch_size})",
            "",
        ]
        if self.rows:
            lines += self._rows_table()
        if self.timings:
            lines += ([""] if self.rows else []) + self._timings_table()
        lines += [f"- {r.path}: {r.note}" for r in self.rows if r.note]
        lines += self._history_lines()
        if self.latency:
            lat = self.latency
            lines += [
                "",
                f"End to end: {lat['tasks']:,} tasks logged at {lat['rate_target']:.0f}/s "
                f"(achieved {lat['rate_achieved']:.0f}/s, logger at most "
                f"{lat.get('schedule_lag_max_ms', 0):.0f} ms behind schedule); "
                "latency from log call to applied: "
                f"p50 {lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms, "
                f"p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms.",
            ]
        for s in self.skipped:
            lines.append(f"- not measured: **{s['path']}**: {s['reason']}")
        if self.targets:
            lines += ["", "Targets:"]
            for t in self.targets:
                got = "n/a" if t["measured"] is None else f"{t['measured']:.2f}"
                lines.append(f"- {t['target']}: {got} ({'met' if t['met'] else 'NOT met'})")
        if self.where_time_goes is not None:
            lines += ["", *self._profile_lines(self.where_time_goes)]
        lines += [
            "",
            f"Machine: {m.get('cpu_count')} CPUs ({m.get('cpu_model')}), {m.get('ram_gb')} GB RAM, "
            f"syncbus {m.get('syncbus')} (source {m.get('source') or 'n/a'}), "
            f"Python {m.get('python')}, SQLAlchemy {m.get('sqlalchemy')}, SQLite "
            f"{m.get('sqlite')}, PostgreSQL {m.get('postgresql') or 'n/a'}.",
            "Durability: " + ", ".join(f"{k}={v}" for k, v in self.durability.items()) + ".",
            f"Correctness gates passed: {len(self.gates)} "
            f"({', '.join(sorted({g['gate'] for g in self.gates}))}).",
        ]
        return "\n".join(lines)

    def _history_lines(self) -> list[str]:
        """What history costs: the process path with history on against the same drain off."""
        on, off = self.row("process"), self.row("process-history-off")
        if on is None or off is None:
            return []
        ratio = on.tasks_per_s / off.tasks_per_s
        return [
            "",
            f"History cost: process with history on (`process`, {on.tasks_per_s:,.0f} tasks/s) "
            f"runs at {ratio:.2f} of the same drain with history off (`process-history-off`, "
            f"{off.tasks_per_s:,.0f} tasks/s): history costs {100 * (1 - ratio):.1f} % of "
            "process throughput.",
        ]

    def _rows_table(self) -> list[str]:
        lines = [
            "| backend | path | tasks | seconds | tasks/s | baseline | ratio | peak RSS (MB) "
            "| SQL stmts/task |",
            "|---|---|---:|---:|---:|---|---:|---:|---:|",
        ]
        for r in self.rows:
            ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
            stmts = "" if r.statements is None else f"{r.statements / r.tasks:.2f}"
            lines.append(
                f"| {r.backend} | {r.path} | {r.tasks:,} | {r.seconds:.2f} | "
                f"{r.tasks_per_s:,.0f} | {r.baseline or ''} | {ratio} | {r.peak_rss_mb:.0f} "
                f"| {stmts} |"
            )
        return lines

    @staticmethod
    def _profile_lines(prof: dict[str, Any]) -> list[str]:
        lines = [
            f"Where the time goes: {prof['drain']}, cProfile of the worker's process_tasks "
            f"({prof['profiled_seconds']:.1f} s profiled; the drain took "
            f"{prof['drain_seconds']:.1f} s under the profiler)",
            "",
            "| cumulative s | % | self s | calls | function (top by cumulative time) |",
            "|---:|---:|---:|---:|---|",
        ]
        for r in prof["by_cumulative"]:
            lines.append(
                f"| {r['cumulative_s']:.2f} | {r['percent']:.0f} | {r['self_s']:.2f} "
                f"| {r['calls']:,} | {r['function']} |"
            )
        own = prof.get("syncbus_by_cumulative") or []
        if own:
            lines += [
                "",
                "| cumulative s | % | self s | calls | syncbus's own functions |",
                "|---:|---:|---:|---:|---|",
            ]
            lines += [
                f"| {r['cumulative_s']:.2f} | {r['percent']:.0f} | {r['self_s']:.2f} "
                f"| {r['calls']:,} | {r['function']} |"
                for r in own
            ]
        top = ", ".join(
            f"{r['function'].split('  (')[0]} {r['self_s']:.2f} s" for r in prof["by_self"]
        )
        lines += ["", f"Most self time: {top}."]
        return lines

    def _timings_table(self) -> list[str]:
        lines = [
            "| what | runs | median ms | p95 ms | p99 ms | min ms | max ms |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for t in self.timings:
            d = t.to_dict()
            lines.append(
                f"| {t.label} | {d['runs']} | {d['median_ms']:.1f} | {d['p95_ms']:.1f} | "
                f"{d['p99_ms']:.1f} | {d['min_ms']:.1f} | {d['max_ms']:.1f} |"
            )
        return lines


def draw_chart(reports: list[dict[str, Any]], path: str) -> bool:
    """tasks/s per path beside its baseline, one panel per backend. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        return False
    colors = {"syncbus": "#2b6cb0", "baseline": "#a0aec0", "peer": "#dd6b20"}
    fig, axes = plt.subplots(1, len(reports), figsize=(6.5 * len(reports), 4.8), squeeze=False)
    for ax, rep in zip(axes[0], reports, strict=True):
        rows = sorted(
            (r for r in rep["results"] if r["path"] != "end-to-end"),
            key=lambda r: _group(r["path"]),
        )
        labels = [r["path"].replace(" (", "\n(") for r in rows]
        values = [r["tasks_per_s"] for r in rows]
        bars = ax.bar(range(len(rows)), values, color=[colors[r["kind"]] for r in rows])
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
        ax.set_xticks(range(len(rows)), labels, rotation=35, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("tasks/s (log scale)")
        ax.set_title(f"{rep['backend']}, profile {rep['profile']}")
    handles = [Patch(color=c) for c in colors.values()]
    labels = ["syncbus", "raw floor (baseline)", "peer job queue"]
    fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _group(path: str) -> int:
    """Logging paths first, then processing paths, each beside its baselines."""
    return 0 if path.startswith("log") or "insert" in path or "enqueue" in path else 1


def main(argv: list[str] | None = None) -> None:
    """``python -m syncbus.bench chart OUT.png RUN.json [RUN.json ...]``: one chart of runs."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        raise SystemExit("usage: python -m syncbus.bench chart OUT.png RUN.json [RUN.json ...]")
    reports = [json.loads(Path(p).read_text(encoding="utf-8")) for p in args[1:]]
    if not draw_chart(reports, args[0]):
        raise SystemExit("matplotlib is not installed: pip install -e '.[bench]'")
