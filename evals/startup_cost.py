"""What the lm-eval start-up hook costs every Python program in the environment.

Runs fresh interpreters with the hook on and off (RELAYGEN_LM_EVAL_HOOK=0), interleaved, and reports
median wall time for an empty program and for a heavy import (numpy: hundreds of modules, each one
passing the hook's finder), plus the interpreter's own import-time figure for the hook module.

    python evals/startup_cost.py --runs 40
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

PROGRAMS = {"empty program": "pass", "import numpy": "import numpy"}
FINDER_TIMING = """
import sys, timeit
finder = next(f for f in sys.meta_path if type(f).__name__ == "LmEvalModelsFinder")
n = 200000
print(f"{timeit.timeit(lambda: finder.find_spec('numpy.linalg'), number=n) / n * 1e6:.2f}")
before = len(sys.modules)
import numpy
print(len(sys.modules) - before)
"""


def wall(code: str, hook: bool) -> float:
    env = dict(os.environ, RELAYGEN_LM_EVAL_HOOK="1" if hook else "0")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.perf_counter() - t0


def hook_import_us() -> int | None:
    """Cumulative microseconds the interpreter reports for importing the hook module."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True,
                       env=dict(os.environ, RELAYGEN_LM_EVAL_HOOK="1"))
    m = re.search(r"\|\s*(\d+)\s*\|\s*_relaygen_lm_eval_hook\s*$", p.stderr, re.M)
    return int(m.group(1)) if m else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()
    if hook_import_us() is None:
        sys.exit("the start-up hook is not installed in this environment (pip install -e . installs it)")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.runs} runs each, hook on/off interleaved, order alternating\n")
    print("| program | hook off (ms, median) | hook on (ms, median) | difference (ms) | on/off |")
    print("|---|---|---|---|---|")
    for name, code in PROGRAMS.items():
        wall(code, True)  # warm the file cache
        on, off = [], []
        for i in range(args.runs):  # alternate which goes first, so neither always follows the other
            for hook in ((False, True) if i % 2 else (True, False)):
                (on if hook else off).append(wall(code, hook))
        m_on, m_off = statistics.median(on) * 1e3, statistics.median(off) * 1e3
        print(f"| {name} | {m_off:.1f} | {m_on:.1f} | {m_on - m_off:+.2f} | {m_on / m_off:.3f} |")
    per_call, numpy_modules = subprocess.run([sys.executable, "-c", FINDER_TIMING], capture_output=True, text=True,
                                             env=dict(os.environ, RELAYGEN_LM_EVAL_HOOK="1")).stdout.split()
    print(f"\nthe finder's cost per import statement that misses sys.modules: {per_call} us "
          f"(import numpy loads {numpy_modules} modules: {float(per_call) * int(numpy_modules):.0f} us)")
    imports = sorted(hook_import_us() for _ in range(args.runs))
    print(f"import of _relaygen_lm_eval_hook (python -X importtime): median {imports[len(imports) // 2]} us, "
          f"range {imports[0]}-{imports[-1]} us")


if __name__ == "__main__":
    main()
