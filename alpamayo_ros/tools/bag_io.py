"""rosbag2 helpers shared by replay and evaluate (rosbags only, no ROS install needed)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rosbags.highlevel import AnyReader
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

MSG_DIR = Path(__file__).resolve().parents[2] / "alpamayo_msgs" / "msg"
BAG_VERSION = 8  # rosbag2 metadata version Humble's `ros2 bag` reads (9 needs Iron or later)
# rosbag2 writes an infinite duration (RMW_DURATION_INFINITE) into metadata as this pair.
INFINITE = QosTime(sec=2147483647, nsec=4294967295)


def offered_qos(reliability: QosReliability, depth: int,
                durability: QosDurability = QosDurability.VOLATILE) -> list[Qos]:
    """One publisher's offered QoS as rosbag2 records it, so `ros2 bag play` offers the same (not its default)."""
    return [Qos(history=QosHistory.KEEP_LAST, depth=depth, reliability=reliability, durability=durability,
                deadline=INFINITE, lifespan=INFINITE, liveliness=QosLiveliness.AUTOMATIC,
                liveliness_lease_duration=INFINITE, avoid_ros_namespace_conventions=False)]


# The node's outputs: reliable, depth 10 (design §4). Cameras and odometry: rclpy's qos_profile_sensor_data.
OUTPUT_QOS = offered_qos(QosReliability.RELIABLE, depth=10)
SENSOR_QOS = offered_qos(QosReliability.BEST_EFFORT, depth=5)
TF_QOS = offered_qos(QosReliability.RELIABLE, depth=100)  # tf2_ros's TransformBroadcaster
TF_STATIC_QOS = offered_qos(QosReliability.RELIABLE, depth=1, durability=QosDurability.TRANSIENT_LOCAL)


class BagError(RuntimeError):
    """A bag that cannot serve the request; the message names what is missing."""


def alpamayo_typestore():
    """rosbags typestore: the standard ROS 2 types plus alpamayo_msgs, read from its .msg files."""
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    msg_dir = MSG_DIR
    if not msg_dir.is_dir():  # installed package: the messages' share directory
        from ament_index_python.packages import get_package_share_directory

        msg_dir = Path(get_package_share_directory("alpamayo_msgs")) / "msg"
    types = {}
    for path in sorted(msg_dir.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"alpamayo_msgs/msg/{path.stem}"))
    typestore.register(types)
    return typestore


def open_bag(paths: list[Path], typestore) -> AnyReader:
    """An open AnyReader (mcap or sqlite3); missing, unreadable or truncated bags raise BagError."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise BagError(f"no bag at {', '.join(missing)}: expected a rosbag2 directory or a .mcap/.db3 file")
    try:
        reader = AnyReader([Path(p) for p in paths], default_typestore=typestore)
        reader.open()
    except Exception as exc:  # rosbags raises several reader-specific errors
        raise BagError(f"cannot read bag {[str(p) for p in paths]}: {exc}") from exc
    return reader


@contextmanager
def new_bag(path: Path, storage_plugin: StoragePlugin) -> Iterator[Writer]:
    """An open Writer for a new bag at `path`; if the body raises, the partial bag is removed.

    So a failed run can be rerun with the same output path. An existing `path` raises BagError at once.
    """
    path = Path(path)
    if path.exists():
        raise BagError(f"{path} exists: rosbag2 writes a new directory; remove it or choose another output")
    try:
        with Writer(path, version=BAG_VERSION, storage_plugin=storage_plugin) as writer:
            yield writer
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def read_messages(reader: AnyReader, connections=None):
    """reader.messages(), with a damaged or truncated bag reported as BagError."""
    try:
        yield from reader.messages(connections=connections)
    except BagError:
        raise
    except Exception as exc:  # rosbags raises storage-specific errors for damaged files
        raise BagError(f"cannot read bag {[str(p) for p in reader.paths]}: {exc}") from exc


def require_topics(reader: AnyReader, required: list[str], remaps: dict[str, str] | None = None,
                   hint: str | None = None) -> None:
    """Raise BagError naming every required topic the bag lacks (after remapping), then `hint` if given.

    Without a hint, a caller passing `remaps` (even empty) is told about --remap.
    """
    present = {(remaps or {}).get(c.topic, c.topic) for c in reader.connections}
    missing = [t for t in required if t not in present]
    if missing:
        if hint is None and remaps is not None:
            hint = "use --remap /bag_topic:=/node_topic"
        raise BagError(f"bag {[str(p) for p in reader.paths]} lacks topics {missing}; it has {sorted(present)}"
                       + (f" ({hint})" if hint else ""))


def storage_of(reader: AnyReader) -> StoragePlugin:
    """The storage plugin of the first bag read (to write outputs alike)."""
    path = Path(reader.paths[0])
    is_mcap = path.suffix == ".mcap" or (path.is_dir() and any(path.glob("*.mcap")))
    return StoragePlugin.MCAP if is_mcap else StoragePlugin.SQLITE3
