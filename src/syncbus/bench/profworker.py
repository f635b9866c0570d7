"""``python -m syncbus.bench.profworker OUT.prof worker --db URL --workers 1 ...``: ``syncbus
worker`` with every ``IntegrationBus.process_tasks`` call profiled by cProfile, the stats
written to ``OUT.prof`` when the worker exits (the lanes profile's "where the time goes").

cProfile sees only the thread that enabled it, and a worker runs its connector runs on pool
threads, so the profiler is switched on around each run, in the run's own thread. One
``cProfile.Profile`` cannot be enabled in two threads at once: the runs are serialised by a
lock, so use it with ``--workers 1`` (where they are serial anyway).
"""

from __future__ import annotations

import cProfile
import sys
import threading
from typing import Any

from syncbus import cli
from syncbus.bus import IntegrationBus


def main(argv: list[str]) -> None:
    out, args = argv[0], argv[1:]
    profiler = cProfile.Profile()
    lock = threading.Lock()
    original = IntegrationBus.process_tasks

    def profiled(self: IntegrationBus, *a: Any, **kw: Any) -> Any:
        with lock:
            profiler.enable()
            try:
                return original(self, *a, **kw)
            finally:
                profiler.disable()

    IntegrationBus.process_tasks = profiled  # type: ignore[method-assign]
    try:
        cli.app(args=args, prog_name="syncbus")
    finally:
        with lock:
            profiler.dump_stats(out)


if __name__ == "__main__":
    main(sys.argv[1:])
