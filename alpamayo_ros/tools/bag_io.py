"""rosbag2 helpers shared by replay and evaluate (rosbags only, no ROS install needed)."""

from __future__ import annotations

from pathlib import Path

from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin
from rosbags.typesys import Stores, get_typestore, get_types_from_msg

MSG_DIR = Path(__file__).resolve().parents[2] / "alpamayo_msgs" / "msg"


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
    """An open AnyReader (mcap or sqlite3); unreadable or truncated bags raise BagError."""
    reader = AnyReader([Path(p) for p in paths], default_typestore=typestore)
    try:
        reader.open()
    except Exception as exc:  # rosbags raises several reader-specific errors
        raise BagError(f"cannot read bag {[str(p) for p in paths]}: {exc}") from exc
    return reader


def read_messages(reader: AnyReader, connections=None):
    """reader.messages(), with a damaged or truncated bag reported as BagError."""
    try:
        yield from reader.messages(connections=connections)
    except BagError:
        raise
    except Exception as exc:  # rosbags raises storage-specific errors for damaged files
        raise BagError(f"cannot read bag {[str(p) for p in reader.paths]}: {exc}") from exc


def require_topics(reader: AnyReader, required: list[str], remaps: dict[str, str] | None = None) -> None:
    """Raise BagError naming every required topic the bag lacks (after remapping)."""
    remaps = remaps or {}
    present = {remaps.get(c.topic, c.topic) for c in reader.connections}
    missing = [t for t in required if t not in present]
    if missing:
        raise BagError(f"bag {[str(p) for p in reader.paths]} lacks topics {missing}; it has {sorted(present)}"
                       + (" (use --remap /bag_topic:=/node_topic)" if remaps is not None else ""))


def storage_of(reader: AnyReader) -> StoragePlugin:
    """The storage plugin of the first bag read (to write outputs alike)."""
    path = Path(reader.paths[0])
    is_mcap = path.suffix == ".mcap" or (path.is_dir() and any(path.glob("*.mcap")))
    return StoragePlugin.MCAP if is_mcap else StoragePlugin.SQLITE3
