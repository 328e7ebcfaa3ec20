"""Sample bag, evaluation on known predictions, and named errors for unusable bags."""

import math
import shutil

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from alpamayo_ros.tools.bag_io import BagError, alpamayo_typestore, open_bag
from alpamayo_ros.tools.evaluate import evaluate
from alpamayo_ros.tools.make_sample_bag import START_NS, camera_topics_of, drive, write_bag

NS = 1_000_000_000
CAMERA_TOPICS = list(camera_topics_of(raw=False))
EXACT_TOL_M = 1e-6


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def sample_bag(request, tmp_path_factory):
    return write_bag(tmp_path_factory.mktemp(request.param) / "bag", duration_s=10.0, storage=request.param)


def test_sample_bag_has_cameras_odometry_and_tf(sample_bag):
    reader = open_bag([sample_bag], alpamayo_typestore())
    try:
        counts = {c.topic: c.msgcount for c in reader.connections}
        frames = set()
        for connection, _, raw in reader.messages(connections=[c for c in reader.connections if c.topic == "/odom"]):
            msg = reader.deserialize(raw, connection.msgtype)
            frames.add((msg.header.frame_id, msg.child_frame_id))
    finally:
        reader.close()
    assert all(counts[t] == 101 for t in CAMERA_TOPICS)  # 10 s at 10 Hz
    assert counts["/odom"] == 501 and counts["/tf"] == 501 and counts["/tf_static"] == 1
    assert frames == {("odom", "base_link")}  # REP-105


def test_sample_drive_goes_straight_curves_stops_and_restarts():
    path = drive(16.0)
    at = {t: path.at(t) for t in (2.0, 6.0, 12.0, 15.5)}
    assert at[2.0][3] == pytest.approx(8.0) and at[2.0][2] == pytest.approx(0.0)  # straight at 8 m/s
    assert at[6.0][4] == pytest.approx(0.2)  # turning left
    assert at[12.0][3] == pytest.approx(0.0, abs=1e-9)  # standing
    assert at[15.5][3] > 2.0  # driving off


def write_outputs(bag_dir, odometry_bag, lateral_offset_m):
    """A bag with the sample drive's odometry and outputs whose trajectory is the true future + an offset."""
    typestore = alpamayo_typestore()
    t = typestore.types
    path = drive(10.0)
    reader = open_bag([odometry_bag], typestore)
    with Writer(bag_dir, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        odom = writer.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=typestore)
        for connection, stamp, raw in reader.messages(connections=[c for c in reader.connections if c.topic == "/odom"]):
            writer.write(odom, stamp, raw)
        out = writer.add_connection("/alpamayo/output", "alpamayo_msgs/msg/DrivingOutput", typestore=typestore)
        for t0_s in (2.0, 2.5, 3.0):
            x0, y0, yaw0, _, _ = path.at(t0_s)
            poses = []
            for k in range(1, 65):
                x, y, _, _, _ = path.at(t0_s + 0.1 * k)
                # offset to the left of the heading at t0, in the odom frame
                x += -math.sin(yaw0) * lateral_offset_m
                y += math.cos(yaw0) * lateral_offset_m
                poses.append(t["geometry_msgs/msg/PoseStamped"](
                    header=t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="odom"),
                    pose=t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=x, y=y, z=0.0),
                                                     orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))))
            stamp_ns = START_NS + round(t0_s * NS)
            header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=stamp_ns // NS, nanosec=stamp_ns % NS),
                                              frame_id="odom")
            trajectory = t["nav_msgs/msg/Path"](header=header, poses=poses)
            msg = t["alpamayo_msgs/msg/DrivingOutput"](
                header=header, trajectories=[trajectory, trajectory], reasoning=["a", "b"], partial_reasoning=["a", "b"],
                reasoning_closed=np.array([True, True]), reasoning_complete=np.array([True, True]),
                selected=0, selection="first",
                timings=t["alpamayo_msgs/msg/StageTimings"](vision_ms=1.0, prefill_ms=1.0, decode_ms=1.0, expert_ms=1.0,
                                                            trajectory_ms=1.0, total_ms=5.0, latency_ms=40.0,
                                                            decode_tokens=3),
                tick=1, camera_stamps=[], camera_topics=[], history_start=header.stamp, history_end=header.stamp,
                route="", route_source="")
            writer.write(out, stamp_ns, typestore.serialize_cdr(msg, "alpamayo_msgs/msg/DrivingOutput"))
    reader.close()
    return bag_dir


@pytest.mark.parametrize("offset_m", [0.0, 1.0])
def test_evaluation_of_known_predictions_equals_the_hand_computation(tmp_path, offset_m):
    source = write_bag(tmp_path / "drive", duration_s=10.0)
    bag = write_outputs(tmp_path / "outputs", source, offset_m)
    summary = evaluate([bag], json_path=tmp_path / "eval.json", plot_path=tmp_path / "eval.png")
    assert summary["outputs"] == 3
    for horizon in ("1s", "3s", "5s", "6.4s"):
        m = summary["metrics"][horizon]
        assert m["n"] == 3
        # The drive turns, but the offset is a rigid shift of the whole path: every waypoint is off by it.
        assert m["ade_m"] == pytest.approx(offset_m, abs=EXACT_TOL_M)
        assert m["fde_m"] == pytest.approx(offset_m, abs=EXACT_TOL_M)
        assert m["min_ade_m"] == pytest.approx(offset_m, abs=EXACT_TOL_M)
    assert summary["latency_ms"]["p50"] == pytest.approx(40.0)
    assert (tmp_path / "eval.png").stat().st_size > 10_000 and (tmp_path / "eval.json").is_file()


def test_missing_topics_are_named(tmp_path):
    source = write_bag(tmp_path / "drive", duration_s=3.0)
    with pytest.raises(BagError, match=r"lacks topics \['/alpamayo/output'\]"):
        evaluate([source])


def test_truncated_bag_is_a_named_error(tmp_path):
    source = write_bag(tmp_path / "drive", duration_s=3.0, storage="sqlite3")
    damaged = tmp_path / "damaged"
    shutil.copytree(source, damaged)
    db = next(damaged.glob("*.db3"))
    db.write_bytes(db.read_bytes()[:4096])
    with pytest.raises(BagError, match="cannot read bag"):
        evaluate([damaged])
