"""``Solo``: a process's batches in flight, many at once or a suspect's alone (poison
quarantine narrows down to one task only if nothing else of the process is in flight)."""

from __future__ import annotations

import threading
import time

from syncbus.engine import Solo


def test_alone_waits_for_the_shared_batches_and_holds_new_ones_back() -> None:
    solo = Solo()
    events: list[str] = []
    first_in = threading.Event()
    release_first = threading.Event()

    def shared(name: str, hold: threading.Event | None = None) -> None:
        with solo.shared():
            events.append(f"{name} in")
            if hold is not None:
                first_in.set()
                hold.wait(5)
            events.append(f"{name} out")

    def alone() -> None:
        with solo.alone():
            events.append("alone in")
            time.sleep(0.05)
            events.append("alone out")

    a = threading.Thread(target=shared, args=("a", release_first))
    a.start()
    assert first_in.wait(5)
    b = threading.Thread(target=alone)
    b.start()
    while not solo.awaited:  # the suspect is waiting for "a" to finish
        time.sleep(0.001)
    c = threading.Thread(target=shared, args=("c",))
    c.start()
    time.sleep(0.05)
    assert events == ["a in"]  # neither the suspect nor a new batch started meanwhile
    release_first.set()
    for t in (a, b, c):
        t.join(5)
    assert events == ["a in", "a out", "alone in", "alone out", "c in", "c out"]
    assert not solo.awaited


def test_shared_batches_run_together() -> None:
    solo = Solo()
    inside = threading.Barrier(3, timeout=5)  # all three inside at once, or it times out

    def shared() -> None:
        with solo.shared():
            inside.wait()

    threads = [threading.Thread(target=shared) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert not inside.broken
