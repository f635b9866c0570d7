"""The Celery peer: Celery 5 on a Redis broker, one prefork worker process, concurrency 1.

Both sides of the peer live here, so that ``celery -A syncbus.bench.celerypeer worker`` finds
the app (``app``, configured from the environment the bench gives the worker):

* the bench enqueues each job with ``apply_async`` (one Redis round trip each, timed), then
  starts the worker as a subprocess and waits until the worker's pool process reports that it
  applied the last job;
* the pool process builds its own engine (``peers.peer_engine``) and the raw floor's
  ``RawApplier`` when it starts, and applies each job in a transaction of its own, like the
  other peers' jobs.

What is timed for ``celery work``: from the moment the worker is ready (its ``worker_ready``
signal, and its pool process has built its engine: the later of the two) until the pool process
committed the last job (``time.monotonic()`` in both processes: one system-wide clock on
Linux). The worker's boot before that (interpreter, imports, broker connection) is not in the
time; the row's note gives it. The worker never writes anything per job but its own
transaction: it counts jobs in memory and writes small files to a directory of the bench's
(ready, every 1,000 jobs, done, error, and its final count when it exits).

Isolation on the Redis server: every key the run creates carries a prefix of its own (kombu's
``global_keyprefix``, which is also the queue's name), and only keys with that prefix are
deleted afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Celery, signals

import syncbus
from syncbus.bench.peers import PeerRun, Progress, Rows, peer_engine
from syncbus.bench.rawapply import RawApplier

ENV_DB = "SYNCBUS_BENCH_CELERY_DB"
ENV_BROKER = "SYNCBUS_BENCH_CELERY_BROKER"
ENV_QUEUE = "SYNCBUS_BENCH_CELERY_QUEUE"
ENV_STATE = "SYNCBUS_BENCH_CELERY_STATE"
ENV_EXPECT = "SYNCBUS_BENCH_CELERY_EXPECT"
TASK_NAME = "syncbus_bench_apply"
PROGRESS_EVERY = 1_000
# Messages the worker reserves ahead of the one running (Celery's default; with acks_late a
# reserved message stays in the broker's unacked set until its job has run).
PREFETCH = 4
STOP_SECONDS = 30.0
BOOT_SECONDS = 120.0


def make_app(broker: str, queue: str) -> Celery:
    app = Celery("syncbus_bench", broker=broker, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # a job is acknowledged once it ran, not when it is received
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=queue,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=PREFETCH,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"global_keyprefix": f"{queue}:"},
    )
    app.task(name=TASK_NAME, ignore_result=True)(_apply_job)
    return app


# -- the worker side (in the worker's pool process) -------------------------------------------
_worker: dict[str, Any] = {"applier": None, "engine": None, "executed": 0}


def _state_file(name: str) -> Path:
    return Path(os.environ[ENV_STATE]) / name


def _write(name: str, value: dict[str, Any]) -> None:
    """Atomically (rename), so the bench never reads half a file."""
    tmp = _state_file(f".{name}.tmp")
    tmp.write_text(json.dumps(value), encoding="utf-8")
    tmp.replace(_state_file(name))


def _apply_job(task_type: str, site_name: str | None, data: str) -> None:
    applier, engine = _worker["applier"], _worker["engine"]
    try:
        with engine.begin() as conn:
            applier.apply(conn, task_type, site_name, data)
    except Exception as exc:
        _write("error", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    _worker["executed"] += 1
    done = _worker["executed"]
    if done == int(os.environ[ENV_EXPECT]):
        _write("done", {"at": time.monotonic(), "executed": done})
    elif done % PROGRESS_EVERY == 0:
        _write("progress", {"executed": done})


def _pool_process_init(**_: Any) -> None:
    if ENV_STATE not in os.environ:
        return
    from syncbus.bus import IntegrationBus  # the registry of the bench's content types

    url = os.environ[ENV_DB]
    bus = IntegrationBus(url)
    try:
        engine = peer_engine(url)
        _worker["applier"] = RawApplier(engine, bus.registry)
        _worker["engine"] = engine
    finally:
        bus.close()
    _write("pool-ready", {"at": time.monotonic()})


def _pool_process_shutdown(**_: Any) -> None:
    if ENV_STATE in os.environ:
        _write("final", {"executed": _worker["executed"]})


def _worker_ready(**_: Any) -> None:
    if ENV_STATE in os.environ:
        _write("worker-ready", {"at": time.monotonic()})


signals.worker_process_init.connect(_pool_process_init)
signals.worker_process_shutdown.connect(_pool_process_shutdown)
signals.worker_ready.connect(_worker_ready)
app = make_app(
    os.environ.get(ENV_BROKER, "redis://127.0.0.1:6379/0"),
    os.environ.get(ENV_QUEUE, "syncbus-bench"),
)


# -- the bench side ------------------------------------------------------------------------------
def run_celery(
    url: str,
    broker: str,
    rows: Rows,
    enqueued: Progress,
    worked: Progress,
    before_work: Callable[[], None],
) -> PeerRun:
    """Enqueue the jobs, then run one worker subprocess until it applied all of them.
    ``before_work`` runs between the two (not timed: the bench's maintenance)."""
    queue = f"syncbus-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    bench_app = make_app(broker, queue)
    task = bench_app.tasks[TASK_NAME]
    n, enqueue_seconds = 0, 0.0
    try:
        for chunk in rows():
            start = time.perf_counter()
            for row in chunk:
                task.apply_async((row.task_type, row.site_name, row.data))
            enqueue_seconds += time.perf_counter() - start
            n += len(chunk)
            enqueued(n)
        before_work()
        with tempfile.TemporaryDirectory(prefix="syncbus-celery-") as state:
            boot, work, executed = _work(url, broker, queue, Path(state), n, worked)
        left = _left(broker, queue)
    finally:
        _clean(broker, queue)
        bench_app.close()
    run = PeerRun("celery", n, enqueue_seconds, work, executed, left)
    run.note = f"worker boot {boot:.2f} s (process start to ready), not in the time"
    return run


def _work(
    url: str, broker: str, queue: str, state: Path, n: int, worked: Progress
) -> tuple[float, float, int]:
    """(boot seconds, work seconds, jobs executed); the worker is stopped whatever happens."""
    if n == 0:
        return 0.0, 0.0, 0
    command = [sys.executable, "-m", "celery", "-A", "syncbus.bench.celerypeer", "worker"]
    command += ["--pool", "prefork", "--concurrency", "1", "--queues", queue]
    command += ["--hostname", f"{queue}@%h", "--loglevel", "WARNING"]
    command += ["--prefetch-multiplier", str(PREFETCH)]
    # Cluster chatter a lone worker does not need (documented worker options).
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    source = str(Path(syncbus.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    env = {
        **os.environ,
        "PYTHONPATH": path,
        ENV_DB: url,
        ENV_BROKER: broker,
        ENV_QUEUE: queue,
        ENV_STATE: str(state),
        ENV_EXPECT: str(n),
    }
    with tempfile.TemporaryFile() as output:
        started = time.monotonic()
        proc = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            ready = _wait_for(proc, output, state, ("worker-ready", "pool-ready"), BOOT_SECONDS)
            done = _wait_for(proc, output, state, ("done",), None, worked)
        finally:
            _stop(proc)
        final = _read(state, "final")
    begin = max(float(ready["worker-ready"]["at"]), float(ready["pool-ready"]["at"]))
    executed = int((final or done["done"])["executed"])
    worked(executed)
    return begin - started, float(done["done"]["at"]) - begin, executed


def _read(state: Path, name: str) -> dict[str, Any] | None:
    try:
        value: dict[str, Any] = json.loads((state / name).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return value


def _wait_for(
    proc: subprocess.Popen[bytes],
    output: Any,
    state: Path,
    names: tuple[str, ...],
    timeout: float | None,
    worked: Progress | None = None,
) -> dict[str, dict[str, Any]]:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        found = {name: _read(state, name) for name in names}
        error = _read(state, "error")
        if error is not None:
            raise CeleryPeerError(f"a job failed in the Celery worker: {error['error']}")
        if all(v is not None for v in found.values()):
            return {k: v for k, v in found.items() if v is not None}
        if proc.poll() is not None:
            output.seek(0)
            said = output.read().decode(errors="replace")
            raise CeleryPeerError(f"the Celery worker exited ({proc.returncode}): {said[-2000:]}")
        if deadline is not None and time.monotonic() > deadline:
            raise CeleryPeerError(f"the Celery worker was not ready within {timeout:.0f} s")
        if worked is not None:
            progress = _read(state, "progress")
            if progress is not None:
                worked(int(progress["executed"]))
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Warm shutdown (SIGTERM), then SIGKILL to the worker's own process group."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _redis(broker: str) -> Any:
    import redis  # celery[redis]

    return redis.Redis.from_url(broker, socket_timeout=5)


def _left(broker: str, queue: str) -> int:
    """Messages still in the run's queue, or reserved by the worker and never acknowledged."""
    client = _redis(broker)
    try:
        return int(client.llen(f"{queue}:{queue}")) + int(client.hlen(f"{queue}:unacked"))
    finally:
        client.close()


def _clean(broker: str, queue: str) -> None:
    """Delete the keys this run created (they all carry its prefix), and nothing else."""
    client = _redis(broker)
    try:
        keys = list(client.scan_iter(match=f"{queue}:*", count=1_000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class CeleryPeerError(RuntimeError):
    """The Celery worker failed, exited, or never got ready."""


def redis_persistence(broker: str) -> str:
    """The broker's persistence settings (how durable an enqueue is), as far as it tells."""
    client = _redis(broker)
    try:
        got: dict[str, str] = {}
        for name in ("appendonly", "appendfsync", "save"):
            got.update({str(k): str(v) for k, v in client.config_get(name).items()})
        return ", ".join(f"{k}={v!r}" if v == "" else f"{k}={v}" for k, v in got.items())
    except Exception as exc:  # CONFIG may be disabled on a managed server
        return f"unknown ({type(exc).__name__})"
    finally:
        client.close()
