"""The drain subprocess of the drain-1m profile: drain every queued task, print figures as JSON.

Run as ``python -m syncbus.bench.drainchild URL BATCH_SIZE``; it needs no connector code (the
tasks carry their translation records), and its ``VmHWM`` is the drain's own peak RSS.
Progress goes to stderr as ``applied N`` lines.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

from syncbus.bench.workload import CONNECTOR_NAME
from syncbus.bus import IntegrationBus
from syncbus.model import ProcessResult

_PROGRESS_EVERY = 10_000
_SAMPLES = 10


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def _rss_now_kb() -> int:
    return _status_kb("VmRSS")


def _peak_rss_kb() -> int:
    """This process's own peak resident memory (``VmHWM``).

    Not ``getrusage().ru_maxrss``: Linux carries the parent's high-water mark over a fork/vfork
    and ``exec`` into the child's ``ru_maxrss``, so a child of a bench process that had just
    filled a large queue reported the parent's peak (a 300 MB parent gives a 13 MB child an
    ``ru_maxrss`` of 313 MB). ``VmHWM`` belongs to the address space ``exec`` created."""
    return _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_main(url: str, batch_size: int) -> dict[str, Any]:
    """Drain every queued task and return the figures (runs in the subprocess)."""
    bus = IntegrationBus(url, batch_size=batch_size)
    total = bus.queue_size()
    rss_start = _rss_now_kb()
    applied = failed = 0
    shown = 0
    # Resident memory after each tenth of the queue: flat means it does not grow with the queue.
    samples: list[tuple[int, int]] = []

    def on_progress(result: ProcessResult) -> None:
        nonlocal shown
        done = applied + result.applied
        if done - shown >= _PROGRESS_EVERY:
            shown = done
            print(f"applied {done}", file=sys.stderr, flush=True)
        if total and done * _SAMPLES >= total * (len(samples) + 1):
            samples.append((done, _rss_now_kb()))

    start = time.perf_counter()
    while True:
        result = bus.process_tasks(on_progress=on_progress).get(CONNECTOR_NAME)
        if result is None:
            break
        applied, failed = applied + result.applied, failed + result.failed
        if result.stopped or not result.ran or result.applied + result.failed == 0:
            break
    seconds = time.perf_counter() - start
    bus.close()
    return {
        "seconds": seconds,
        "applied": applied,
        "failed": failed,
        "rss_start_kb": rss_start,
        "rss_samples_kb": samples,
        "maxrss_kb": _peak_rss_kb(),
    }


if __name__ == "__main__":
    print(json.dumps(child_main(sys.argv[1], int(sys.argv[2]))))
