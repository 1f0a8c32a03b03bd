"""Run ``python -m MODULE ARGS...`` as a child of this small process and write its wall time and
resource usage (user, system, peak RSS, as ``/usr/bin/time -v`` reports them) to a JSON file.

    python -m bench.programs.launch RESULT.json MODULE ARGS...

Why a launcher: on Linux a process's peak RSS counts the memory of the process it was forked
from, so a program started straight from the benchmark (which holds MNIST and more) would
report the benchmark's peak. Started from this launcher, both programs of the pair start from
the same few MiB.
"""

import json
import os
import sys
import time


def main(result: str, module: str, args: list[str]) -> int:
    start = time.perf_counter()
    pid = os.posix_spawn(sys.executable, [sys.executable, "-m", module, *args], os.environ)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    with open(result, "w", encoding="utf-8") as f:
        json.dump({"wall_seconds": wall, "user_seconds": usage.ru_utime,
                   "sys_seconds": usage.ru_stime, "peak_rss_bytes": rss}, f)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
