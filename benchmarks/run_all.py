"""Run every benchmark in turn (each starts its own redis-server and workers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_session_work.py", "bench_sweep.py", "bench_persistence.py", "bench_async.py",
           "bench_recovery.py", "bench_fairness.py", "bench_reach.py", "bench_memory.py",
           "bench_state_size.py"]


def main() -> int:
    failed = 0
    for script in SCRIPTS:
        print(f"== {script}", flush=True)
        failed += subprocess.call([sys.executable, str(HERE / script)]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
