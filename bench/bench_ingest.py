"""Ingestion under load: the executor's cost per message, odometry lag and the fraction of ticks published.

Two parts, one run:
1. In-process, no DDS: what the node's camera callback runs (`conversions.take_image` into the node's
   `Inputs`, public APIs) on 1920x1080 messages (raw rgb8 and JPEG), timed per call, next to what decoding
   on arrival would cost (the conversion plus `frames.decode`), as a ratio.
2. Over DDS: the synthetic publisher sends 4 x 1080p JPEG cameras at 10 Hz and odometry at 100 Hz to the
   node (tiny model, 2 Hz) for `--seconds` from its first tick, alone and then beside `--hogs` CPU-bound
   processes. Reports the node's own odometry arrival delay (its /diagnostics: node clock at the callback -
   stamp, p50/p99 over the last 500 messages) and the fraction of ticks after the warm-up that were published.

    python bench/bench_ingest.py --seconds 30
    python bench/bench_ingest.py --smoke    # tiny sizes, one short DDS run: checks that it runs (the test suite)
Prints a table and writes JSON to bench/results/bench_ingest.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from alpamayo_ros.ros_env import loopback_dds_env  # noqa: E402

loopback_dds_env()  # loopback-only DDS for this distro, before rclpy loads; children inherit it

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from PIL import Image as PILImage  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from alpamayo_msgs.msg import TickStatus  # noqa: E402
from alpamayo_ros import conversions  # noqa: E402
from alpamayo_ros.pipeline.frames import decode  # noqa: E402
from alpamayo_ros.tools.processes import stop  # noqa: E402

HEIGHT, WIDTH = 1080, 1920
WARMUP_S = 8.0  # after the node's first tick: the first 1.5 s of history and model calls are not counted
CALLS = 40
START_TIMEOUT_S = 120.0  # node start (imports, tiny model) on a loaded machine
SMOKE = {"height": 64, "width": 96, "calls": 5, "seconds": 3.0, "warmup_s": 0.0}  # --smoke: seconds, not minutes


def _messages(height: int, width: int) -> dict[str, object]:
    rng = np.random.default_rng(0)
    pixels = (rng.integers(0, 40, (height, width, 3)) + np.linspace(0, 200, width)[None, :, None]).astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    header = Header(stamp=conversions.ns_to_stamp(1_000_000_000))
    return {"raw rgb8": Image(header=header, height=height, width=width, encoding="rgb8", step=width * 3,
                              data=pixels.tobytes()),
            "JPEG": CompressedImage(header=header, format="jpeg", data=buffer.getvalue())}


def callback_costs(height: int, width: int, calls: int) -> dict[str, dict[str, float]]:
    """Per-message cost of what the node's camera callback runs (`conversions.take_image` into the node's
    `Inputs`) vs decoding on arrival (microseconds)."""
    from alpamayo_ros.parameters import from_values
    from alpamayo_ros.pipeline.inputs import Inputs

    out = {}
    for name, msg in _messages(height, width).items():
        cfg = from_values({"image_transport": "raw" if isinstance(msg, Image) else "compressed"})
        inputs = Inputs(cfg.subscribed_camera_topics, cfg.odometry_topic, cfg.sync)
        topic = cfg.subscribed_camera_topics[1]
        callback, arrival_decode = [], []
        for k in range(calls):
            now_ns = time.time_ns()
            msg.header.stamp = conversions.ns_to_stamp(now_ns - 1_000_000)  # a new frame 1 ms old, each call
            start = time.perf_counter_ns()
            refused = conversions.take_image(inputs, 1, msg, now_ns, time.monotonic())
            callback.append((time.perf_counter_ns() - start) / 1e3)
            if refused is not None:
                raise RuntimeError(f"the benchmark's frame was refused: {refused.text}")
            start = time.perf_counter_ns()
            decode(conversions.camera_frame(msg, topic).image)
            arrival_decode.append((time.perf_counter_ns() - start) / 1e3)
        p50, d50 = statistics.median(callback), statistics.median(arrival_decode)
        out[name] = {"callback_us_p50": p50, "callback_us_max": max(callback), "decode_on_arrival_us_p50": d50,
                     "ratio": d50 / p50}
    return out


def over_dds(seconds: float, hogs: int, height: int, width: int, warmup_s: float) -> dict[str, object]:
    """Publisher -> node over DDS for `seconds` after the node's first tick, with `hogs` busy loops beside;
    the node's own numbers for the ticks after `warmup_s`."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    ticks: dict[int, int] = {}
    diagnostics: list[DiagnosticArray] = []
    context = rclpy.Context()
    rclpy.init(context=context)
    listener = rclpy.create_node("bench_ingest_listener", context=context)
    listener.create_subscription(TickStatus, "/alpamayo/tick", lambda m: ticks.__setitem__(m.tick, m.outcome), 100)
    listener.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(listener)
    spinner = threading.Thread(target=executor.spin)
    spinner.start()
    hog_procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
    node = subprocess.Popen([sys.executable, "-m", "alpamayo_ros.node", "--ros-args", "-p", "device:=cpu",
                             "-p", "dtype:=float32", "-p", "model_path:=tiny-random",
                             "-p", "image_transport:=compressed", "-p", "rate_hz:=2.0",
                             "-p", "max_reasoning_tokens:=8"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    publisher = subprocess.Popen([sys.executable, "-m", "alpamayo_ros.tools.synthetic_publisher", "--transport",
                                  "compressed", "--height", str(height), "--width", str(width), "--odometry-hz", "100",
                                  "--duration", str(START_TIMEOUT_S + seconds)],
                                 cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first_tick: int | None = None
    last_tick = -1
    try:
        started = time.monotonic()
        while not ticks and node.poll() is None and time.monotonic() - started < START_TIMEOUT_S:
            time.sleep(0.2)
        if ticks:  # the node runs: warm up (history, first model calls), then count
            time.sleep(warmup_s)
            first_tick = max(ticks) + 1 if warmup_s > 0 else min(ticks)
            time.sleep(max(0.0, seconds - warmup_s))
            last_tick = max(ticks)  # ticks while the processes stop are not counted
    finally:
        stop(publisher)
        log = stop(node)
        for hog in hog_procs:
            hog.kill()
            hog.wait()
        executor.shutdown()
        spinner.join()
        listener.destroy_node()
        rclpy.try_shutdown(context=context)
    counted = {t: o for t, o in ticks.items() if first_tick is not None and first_tick <= t <= last_tick}
    inputs = {}
    for array in diagnostics:
        for status in array.status:
            if status.name.endswith(": inputs"):
                inputs = {kv.key: kv.value for kv in status.values}
    published = sum(o == TickStatus.PUBLISHED for o in counted.values())
    return {"hogs": hogs, "seconds": seconds, "ticks": len(counted), "published": published,
            "published_fraction": published / len(counted) if counted else 0.0,
            "outcomes": {str(o): list(counted.values()).count(o) for o in sorted(set(counted.values()))},
            "odometry_delay_ms_p50": inputs.get("/odom delay_ms"), "odometry_delay_ms_p99": inputs.get("/odom delay_ms_p99"),
            "odometry_rate_hz": inputs.get("/odom rate_hz"), "odometry_lost": inputs.get("/odom lost"),
            "camera_lost": inputs.get("/cameras/front_wide/image/compressed lost"),
            "node_log_tail": log[-1500:] if not counted else ""}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="per DDS run, from the node's first tick")
    parser.add_argument("--hogs", type=int, default=2, help="CPU-bound processes beside the loaded run")
    parser.add_argument("--smoke", action="store_true", help=f"a quick check that everything runs: {SMOKE}, one "
                        "DDS run without hogs; the numbers mean nothing")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "bench_ingest.json"))
    args = parser.parse_args()
    size = dict(height=HEIGHT, width=WIDTH, calls=CALLS, seconds=args.seconds, warmup_s=WARMUP_S)
    if args.smoke:
        size = dict(SMOKE)
    costs = callback_costs(size["height"], size["width"], size["calls"])
    label = f"message ({size['width']}x{size['height']})"
    print(f"{label:<22} {'callback p50 [us]':>18} {'max [us]':>10} {'decode on arrival [us]':>23} {'ratio':>7}")
    for name, c in costs.items():
        print(f"{name:<22} {c['callback_us_p50']:>18.0f} {c['callback_us_max']:>10.0f} "
              f"{c['decode_on_arrival_us_p50']:>23.0f} {c['ratio']:>6.0f}x")
    loads = [0] if args.smoke else [0, args.hogs]
    runs = [over_dds(size["seconds"], hogs, size["height"], size["width"], size["warmup_s"]) for hogs in loads]
    print(f"\n4 x {size['width']}x{size['height']} JPEG at 10 Hz + odometry at 100 Hz, tiny model at 2 Hz, "
          f"{size['seconds']:.0f} s from the first tick (ticks after {size['warmup_s']:.0f} s)")
    print(f"{'cpu hogs':>8} {'ticks':>6} {'published':>10} {'odom delay p50 [ms]':>20} {'p99 [ms]':>9} "
          f"{'odom Hz':>8} {'lost odom/cam':>14}")
    for run in runs:
        print(f"{run['hogs']:>8} {run['ticks']:>6} {run['published_fraction']:>9.0%} {run['odometry_delay_ms_p50']!s:>20} "
              f"{run['odometry_delay_ms_p99']!s:>9} {run['odometry_rate_hz']!s:>8} "
              f"{run['odometry_lost']!s:>6}/{run['camera_lost']!s:<7}")
        if run["node_log_tail"]:
            print(run["node_log_tail"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                               "python": platform.python_version(), "smoke": args.smoke, "size": size,
                               "callbacks": costs, "dds": runs}, indent=2))
    print(f"\nwrote {out}")
    return 0 if all(run["ticks"] for run in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
