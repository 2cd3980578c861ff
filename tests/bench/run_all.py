"""`make bench`: every benchmark, one JSON line per measurement (ratios measured side by side)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

if __name__ == "__main__":
    from tests.bench import bench_cold_start, bench_events, bench_serving

    bench_cold_start.main()
    bench_events.main()
    bench_serving.main()
    trainer = HERE / "bench_trainer.py"
    if trainer.exists():
        runpy.run_path(str(trainer), run_name="__main__")
