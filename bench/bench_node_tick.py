"""Node overhead per tick at 4 x 1920x1080 rgb8 cameras, against the tiny model's inference on the same input.

Times the node's own work without DDS: converting and buffering every message that arrives between two
ticks at `--rate-hz` (cameras at 10 Hz, odometry at 50 Hz), `select_inputs`, and building the outputs
(Paths, markers, DrivingOutput). Prints a table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alpamayo_msgs.msg import DrivingOutput  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from alpamayo_ros import conversions  # noqa: E402
from alpamayo_ros.model.loading import tiny  # noqa: E402
from alpamayo_ros.pipeline.sync import CAMERA_NAMES  # noqa: E402
from alpamayo_ros.pipeline.camera_buffer import CameraBuffer  # noqa: E402
from alpamayo_ros.pipeline.pose_history import PoseHistory  # noqa: E402
from alpamayo_ros.pipeline.sync import ModelInput, select_inputs  # noqa: E402
from alpamayo_ros.tools.synthetic_publisher import arc_pose  # noqa: E402

HEIGHT, WIDTH = 1080, 1920
CAMERA_HZ, ODOMETRY_HZ = 10, 50
NS = 1_000_000_000


def image_msg(stamp_ns: int, pixels: bytes) -> Image:
    return Image(header=Header(stamp=conversions.ns_to_stamp(stamp_ns)), height=HEIGHT, width=WIDTH,
                 encoding="rgb8", step=WIDTH * 3, data=pixels)


def odometry_msg(stamp_ns: int) -> Odometry:
    position, yaw = arc_pose(stamp_ns / NS, 8.0, 0.1)
    msg = Odometry(header=Header(stamp=conversions.ns_to_stamp(stamp_ns), frame_id="odom"))
    msg.pose.pose.position.x, msg.pose.pose.position.y = float(position[0]), float(position[1])
    msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = float(np.sin(yaw / 2)), float(np.cos(yaw / 2))
    return msg


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"mean": statistics.fmean(values), "p50": statistics.median(values),
            "p90": ordered[round(0.9 * (len(ordered) - 1))], "max": ordered[-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--rate-hz", type=float, default=2.0)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_node_tick.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 255, HEIGHT * WIDTH * 3, dtype=np.uint8).tobytes() for _ in CAMERA_NAMES]
    cameras = [CameraBuffer(name) for name in CAMERA_NAMES]
    poses = PoseHistory()
    tick_ns = round(NS / args.rate_hz)
    clock_ns = 2 * NS  # stream time; messages are made ahead, only the node's handling is timed
    next_camera, next_odom = 0, 0
    model = tiny(seed=0)
    stages: dict[str, list[float]] = {"convert_in_ms": [], "select_ms": [], "convert_out_ms": []}
    model_ms: list[float] = []
    for tick in range(args.ticks + 3):
        end_ns = clock_ns + tick_ns
        images = [(t, c) for t in range(next_camera, end_ns + 1, NS // CAMERA_HZ) for c in range(4)]
        odoms = list(range(next_odom, end_ns + 1, NS // ODOMETRY_HZ))
        next_camera = images[-1][0] + NS // CAMERA_HZ if images else next_camera
        next_odom = odoms[-1] + NS // ODOMETRY_HZ if odoms else next_odom
        image_msgs = [(c, image_msg(t, pixels[c])) for t, c in images]
        odom_msgs = [odometry_msg(t) for t in odoms]
        start = time.perf_counter_ns()
        for c, msg in image_msgs:
            cameras[c].push(conversions.image_from_msg(msg, CAMERA_NAMES[c]))
        for msg in odom_msgs:
            poses.push(conversions.pose_from_odometry(msg, "/odom"))
        converted = time.perf_counter_ns()
        selected = select_inputs(cameras, poses, end_ns + 10_000_000)
        chosen = time.perf_counter_ns()
        clock_ns = end_ns
        if not isinstance(selected, ModelInput):
            continue  # the first ticks only fill the 1.5 s history
        pred = model.sample(list(selected.images), selected.ego_history_xyz, selected.ego_history_rot,
                            num_samples=args.samples, max_reasoning_tokens=16, greedy=True)
        out_start = time.perf_counter_ns()
        xyz, rot = pred.xyz.numpy(), pred.rot.numpy()
        paths = [conversions.path_msg(*conversions.to_output_frame(xyz[i], rot[i], selected.t0_position,
                                                                   selected.t0_rotation), selected.t0_ns, "odom")
                 for i in range(args.samples)]
        conversions.candidate_markers(paths, 0, pred.reasoning[0], "odom", selected.t0_ns)
        DrivingOutput(trajectories=paths, reasoning=pred.reasoning,
                      camera_stamps=[conversions.ns_to_stamp(s) for s in selected.frame_stamps_ns.reshape(-1)])
        out_end = time.perf_counter_ns()
        stages["convert_in_ms"].append((converted - start) / 1e6)
        stages["select_ms"].append((chosen - converted) / 1e6)
        stages["convert_out_ms"].append((out_end - out_start) / 1e6)
        model_ms.append(pred.timings.total_ms)
    total = [sum(v) for v in zip(*stages.values())]
    report = {"cameras": f"4 x {WIDTH}x{HEIGHT} rgb8", "rate_hz": args.rate_hz, "samples": args.samples,
              "ticks": len(total), "torch_threads": torch.get_num_threads(),
              "stages": {k: percentiles(v) for k, v in stages.items()}, "node_total_ms": percentiles(total),
              "tiny_model_ms": percentiles(model_ms)}
    report["node_over_model_p50"] = report["node_total_ms"]["p50"] / report["tiny_model_ms"]["p50"]
    print(f"node overhead per tick ({report['cameras']}, {args.rate_hz} Hz ticks, n={len(total)}), ms:")
    print(f"{'stage':<16}{'p50':>8}{'p90':>8}{'max':>8}")
    for name, stats in [*report["stages"].items(), ("node total", report["node_total_ms"]),
                        ("tiny model", report["tiny_model_ms"])]:
        print(f"{name:<16}{stats['p50']:>8.2f}{stats['p90']:>8.2f}{stats['max']:>8.2f}")
    print(f"node / tiny model (p50): {report['node_over_model_p50']:.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
