"""Measure every tolerance-checked comparison of the model tests (test/model/tolerances.py).

    python test/model/measure_tolerances.py                 # this environment's code paths
    python test/model/measure_tolerances.py --variants      # MKL_CBWR x ATEN_CPU_CAPABILITY x 1, 2 threads
    python test/model/measure_tolerances.py -- -k reference # extra pytest arguments

Runs pytest on test/model with ALPAMAYO_NUMERICS_LOG set, then prints per comparison (test, what was
compared, digits folded to N) the worst error: absolute, relative to the magnitude, in float32 ulps of the
magnitude, and the ulps allowed. With --variants, one ulps column per code-path variant and each run's
pytest result. Exit status: non-zero if any run failed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The code paths README.md ("Conformance and tests") asks the suite to pass under; None leaves the variable
# unset (the library's own choice for this CPU). ATEN_CPU_CAPABILITY=default: torch's kernels without SIMD.
VARIANTS = [{"MKL_CBWR": mkl, "ATEN_CPU_CAPABILITY": aten, "OMP_NUM_THREADS": threads}
            for threads in ("1", "2")
            for mkl, aten in ((None, None), ("COMPATIBLE", None), ("AVX2", None), (None, "avx2"), (None, "default"))]


def name_of(variant: dict[str, str | None]) -> str:
    return "/".join(variant[key] or "-" for key in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS"))


def run(variant: dict[str, str | None], pytest_args: list[str]) -> tuple[int, str, dict]:
    """One pytest run of test/model; returns (exit status, summary line, worst record per comparison)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false",
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    for key, value in variant.items():
        env.pop(key, None)
        if value is not None:
            env[key] = value
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as log:
        env["ALPAMAYO_NUMERICS_LOG"] = log.name
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test/model", *pytest_args]
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        lines = Path(log.name).read_text().splitlines()
    worst: dict[tuple[str, str], dict] = {}
    for line in lines:
        rec = json.loads(line)
        key = (rec["test"].split("::", 1)[-1], re.sub(r"\b\d+\b", "N", rec["what"]))
        if key not in worst or not rec["ulps"] <= worst[key]["ulps"]:
            worst[key] = rec
    out = proc.stdout.strip().splitlines() or ["(no output)"]
    summary = "; ".join([out[-1], *(line[:110] for line in out if line.startswith("FAILED"))])
    return proc.returncode, summary, worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", action="store_true", help="run every code-path variant, one column each")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    if not args.variants:  # this environment as it is
        status, summary, worst = run({}, args.pytest_args)
        print(f"{'comparison':<100} {'max abs':>9} {'magnitude':>9} {'rel':>9} {'ulps':>7} {'allowed':>7}")
        for (test, what), rec in sorted(worst.items()):
            print(f"{(test + ': ' + what)[:100]:<100} {rec['error']:9.2e} {rec['magnitude']:9.3g} "
                  f"{rec['error'] / rec['magnitude'] if rec['magnitude'] else 0:9.2e} {rec['ulps']:7.1f} "
                  f"{rec['allowed']:7.0f}")
        print(summary)
        return status
    results = collections.OrderedDict()
    failed = 0
    for variant in VARIANTS:
        status, summary, worst = run(variant, args.pytest_args)
        failed |= status
        results[name_of(variant)] = (summary, worst)
        print(f"{name_of(variant)}: {summary}", file=sys.stderr, flush=True)
    keys = sorted({key for _, worst in results.values() for key in worst})
    print("ulps of the magnitude per variant (MKL_CBWR / ATEN_CPU_CAPABILITY / threads); last: allowed")
    print(" | ".join(["comparison", *results, "max abs (worst)", "allowed"]))
    for key in keys:
        recs = [worst.get(key) for _, worst in results.values()]
        cells = [f"{rec['ulps']:.1f}" if rec else "-" for rec in recs]
        worst_abs = max(rec["error"] for rec in recs if rec)
        allowed = next(rec["allowed"] for rec in recs if rec)
        print(" | ".join([f"{key[0]}: {key[1]}", *cells, f"{worst_abs:.2e}", f"{allowed:.0f}"]))
    for name, (summary, _) in results.items():
        print(f"{name}: {summary}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
