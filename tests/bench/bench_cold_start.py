"""Cold start of each service (process start to first 200 on /healthz) next to a bare FastAPI app.

Runs alternate service and baseline so both see the same machine state. Goal: ratio <= 1.5.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: `python tests/bench/...`

from ctflow.ledger import Ledger  # noqa: E402
from ctflow.topology import SERVICES  # noqa: E402
from tests.support import start_service, stop  # noqa: E402

ROUNDS = 7


def main(rounds: int = ROUNDS) -> list[dict]:
    home = Path(tempfile.mkdtemp(prefix="ctflow-bench-"))
    Ledger(f"sqlite:///{home / 'ledger.db'}").migrate()  # a deployed service finds its schema in place
    env = {"CTFLOW_HOME": str(home)}
    results = []
    for service in SERVICES:
        module = service.replace("-", "_") + ".app:app"
        ours, bare = [], []
        for _ in range(rounds):
            for target, sink in ((module, ours), ("tests.bench.bare_app:app", bare)):
                proc, seconds, _ = start_service(target, env)
                sink.append(seconds)
                stop(proc)
        result = {
            "benchmark": "cold_start",
            "service": service,
            "median_s": round(statistics.median(ours), 3),
            "bare_fastapi_median_s": round(statistics.median(bare), 3),
            "ratio": round(statistics.median(ours) / statistics.median(bare), 2),
            "goal": "<= 1.5",
        }
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS)
