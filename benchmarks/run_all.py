"""Run every benchmark in turn (each starts its own redis-servers and workers).

    python benchmarks/run_all.py            # full sizes
    python benchmarks/run_all.py --quick    # the stock-Celery comparisons only, small sizes
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_session_work.py", "bench_sweep.py", "bench_persistence.py", "bench_async.py",
           "bench_recovery.py", "bench_fairness.py", "bench_reach.py", "bench_memory.py",
           "bench_state_size.py"]
QUICK = ["bench_session_work.py", "bench_reach.py", "bench_memory.py"]
"""The scripts with a `--quick` check (small sizes, one round)."""


def main() -> int:
    quick = "--quick" in sys.argv[1:]
    failed = 0
    for script in QUICK if quick else SCRIPTS:
        print(f"== {script}", flush=True)
        argv = [sys.executable, str(HERE / script), *(["--quick"] if quick else [])]
        failed += subprocess.call(argv) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
