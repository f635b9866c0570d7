"""A separate process for the multi-process tests: ``python -m tests.proc_worker MODE URL ...``.

Modes:
- ``drain URL SECONDS OUT``: call process_tasks("Seq") in a loop for SECONDS; write each run
  that held the lease (start, end, applied) as JSON lines to OUT.
- ``run URL LEASE_SECONDS``: one process_tasks("Seq") (used to be killed mid-run).
- ``log URL KEY...``: log one task per idempotency key, print the ids as JSON.
"""

from __future__ import annotations

import json
import sys
import time

from tests.seq import SEQ_TYPE, SeqConnector, make_bus


def main(argv: list[str]) -> None:
    mode, url = argv[0], argv[1]
    if mode == "drain":
        bus = make_bus(url, batch_size=int(argv[4]))
    elif mode == "run":
        bus = make_bus(url, batch_size=50, lease_seconds=float(argv[2]))
    else:
        bus = make_bus(url)
    if mode == "drain":
        until = time.time() + float(argv[2])
        with open(argv[3], "w") as out:
            while time.time() < until:
                r = bus.process_tasks("Seq")["Seq"]
                if r.not_run_reason is None:
                    out.write(json.dumps([r.started_at, r.finished_at, r.applied]) + "\n")
                    out.flush()
                time.sleep(0.001)
    elif mode == "run":
        print(bus.process_tasks("Seq")["Seq"], flush=True)
    elif mode == "log":
        ids = [
            bus.process_external_task("Seq", {"key": "k", "n": 0}, idempotency_key=key)
            for key in argv[2:]
        ]
        print(json.dumps(ids), flush=True)
    bus.close()
    _ = (SEQ_TYPE, SeqConnector)


if __name__ == "__main__":
    main(sys.argv[1:])
