"""Soak: the node (tiny model) fed by the synthetic publisher for N minutes; memory growth and latency drift.

Samples the node process's resident memory every 10 s and records every DrivingOutput's latency and
model time; compares the first and last minute. Loopback-only DDS on its own domain. Prints a summary
and writes JSON to bench/results/.

    python bench/bench_soak.py --minutes 10 --rate-hz 2
    python bench/bench_soak.py --smoke    # 6 s, memory every second: checks that it runs (the test suite)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE_EVERY_S = 10.0
START_TIMEOUT_S = 180.0  # node start and the first output (imports, tiny model, 1.5 s of history) when loaded
SMOKE = {"minutes": 0.1, "samples": 1, "sample_every_s": 1.0}  # --smoke: seconds, not minutes


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate-hz", type=float, default=2.0)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help=f"a quick check that everything runs: {SMOKE}; "
                        "the numbers mean nothing")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "bench_soak.json"))
    args = parser.parse_args()
    sample_every_s = SAMPLE_EVERY_S
    if args.smoke:
        args.minutes, args.samples, sample_every_s = SMOKE["minutes"], SMOKE["samples"], SMOKE["sample_every_s"]
    sys.path.insert(0, str(REPO))
    from alpamayo_ros.ros_env import loopback_dds_env

    loopback_dds_env()  # before rclpy loads here; the node and publisher inherit it
    env = dict(os.environ, PYTHONPATH=str(REPO))
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from alpamayo_msgs.msg import DrivingOutput, TickStatus
    from alpamayo_ros.tools.processes import stop

    node = subprocess.Popen([sys.executable, "-m", "alpamayo_ros.node", "--ros-args", "-p", "device:=cpu",
                             "-p", "dtype:=float32", "-p", "model_path:=tiny-random",
                             "-p", f"rate_hz:={args.rate_hz}", "-p", f"num_samples:={args.samples}",
                             "-p", "max_reasoning_tokens:=16"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    publisher = subprocess.Popen([sys.executable, "-m", "alpamayo_ros.tools.synthetic_publisher"], cwd=REPO, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    outputs: list[tuple[float, float, float]] = []  # (monotonic s, latency ms, model ms)
    outcomes: list[int] = []
    context = rclpy.Context()
    rclpy.init(context=context)
    listener = rclpy.create_node("alpamayo_soak", context=context)
    listener.create_subscription(DrivingOutput, "/alpamayo/output", lambda m: outputs.append(
        (time.monotonic(), m.timings.latency_ms, m.timings.total_ms)), 100)
    listener.create_subscription(TickStatus, "/alpamayo/tick", lambda m: outcomes.append(m.outcome), 100)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(listener)
    spinner = threading.Thread(target=executor.spin)
    spinner.start()
    memory: list[tuple[float, float]] = []
    try:
        waiting = time.monotonic()
        while not outputs and node.poll() is None:  # warm-up: until the first output
            if time.monotonic() - waiting > START_TIMEOUT_S:
                raise SystemExit(f"no output from the node within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.5)
        if node.poll() is not None:
            raise SystemExit(f"the node exited with code {node.returncode} before its first output")
        start = time.monotonic()
        end = start + args.minutes * 60
        while time.monotonic() < end and node.poll() is None:
            memory.append((time.monotonic() - start, rss_mb(node.pid)))
            time.sleep(sample_every_s)
        memory.append((time.monotonic() - start, rss_mb(node.pid)))
        alive = node.poll() is None
    finally:
        executor.shutdown()
        spinner.join()
        listener.destroy_node()
        rclpy.try_shutdown(context=context)
        for proc in (publisher, node):
            stop(proc)

    def window(lo: float, hi: float, index: int) -> list[float]:
        return sorted(o[index] for o in outputs if lo <= o[0] - start < hi)

    def p50(values: list[float]) -> float:
        return values[len(values) // 2] if values else float("nan")

    duration = args.minutes * 60
    first_lat, last_lat = window(0, 60, 1), window(duration - 60, duration + 1, 1)
    first_model, last_model = window(0, 60, 2), window(duration - 60, duration + 1, 2)
    rss_after_1min = next((m for t, m in memory if t >= 60), memory[-1][1])
    report = {
        "minutes": args.minutes, "rate_hz": args.rate_hz, "samples": args.samples, "node_alive": alive,
        "outputs": len([o for o in outputs if o[0] >= start]),
        "ticks": {"published": outcomes.count(3), "not_ready": outcomes.count(0), "dropped_busy": outcomes.count(2),
                  "model_error": outcomes.count(5), "rejected": outcomes.count(4)},
        "rss_mb": {"start": memory[0][1], "after_1_min": rss_after_1min, "end": memory[-1][1],
                   "growth_after_1_min": memory[-1][1] - rss_after_1min},
        "latency_ms_p50": {"first_min": p50(first_lat), "last_min": p50(last_lat)},
        "model_ms_p50": {"first_min": p50(first_model), "last_min": p50(last_model)},
        "memory_samples": memory,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "memory_samples"}, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return 0 if alive else 1


if __name__ == "__main__":
    raise SystemExit(main())
