"""Notify-to-applied latency: POST tasks to a running `syncbus serve`, poll until applied.

Usage: python scripts/measure_latency.py DATABASE_URL PORT   (use an empty database)

Starts `syncbus serve` (scheduler off) in a subprocess, then 200 times: POSTs one task, polls
the database every 0.5 ms until the task's object exists, and notes the time from the start of
the POST; 20 ms pause between tasks. Prints p50/p95/p99/max.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import sqlalchemy as sa

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.seq import make_bus  # noqa: E402


def main(url: str, port: str) -> None:
    bus = make_bus(url)
    command = [sys.executable, "-m", "syncbus.cli", "serve", "--db", url, "--port", port]
    server = subprocess.Popen(
        [*command, "--scheduler-interval", "0"],
        env={**os.environ, "PYTHONPATH": ROOT},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(base + "/healthz")
            break
        except httpx.TransportError:
            time.sleep(0.1)
    latencies = []
    probe = sa.text("SELECT 1 FROM seq_counter WHERE counter_name = :k")
    try:
        with bus.reader.connect() as conn:
            for i in range(200):
                start = time.perf_counter()
                body = {"task_type": "UpdateObject", "object": {"key": f"l{i}", "n": i}}
                response = httpx.post(base + "/api/connectors/Seq/tasks", json=body)
                assert response.status_code == 201, response.text
                while conn.execute(probe, {"k": f"l{i}"}).first() is None:
                    conn.rollback()
                    time.sleep(0.0005)
                conn.rollback()
                latencies.append((time.perf_counter() - start) * 1000)
                time.sleep(0.02)
    finally:
        server.terminate()
        server.wait()
    latencies.sort()

    def q(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    print(
        f"{bus.engine.dialect.name}: n={len(latencies)} p50={q(0.5):.1f}ms "
        f"p95={q(0.95):.1f}ms p99={q(0.99):.1f}ms max={latencies[-1]:.1f}ms"
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
