"""Loopback-only DDS settings for whichever ROS 2 distro is installed, without importing rclpy.

Set before rclpy initialises (in this process, or in a child's environment). What each distro reads:
Humble's rcl only `ROS_LOCALHOST_ONLY`; Jazzy and Kilted `ROS_AUTOMATIC_DISCOVERY_RANGE` (Jazzy warns when
`ROS_LOCALHOST_ONLY` is set as well, Kilted ignores it). Fast DDS 2.x (Humble, Jazzy) loads the profile named by
`FASTRTPS_DEFAULT_PROFILES_FILE` only (measured on Jazzy: `FASTDDS_...` is ignored); Kilted's rmw reads
`FASTDDS_DEFAULT_PROFILES_FILE`, and the old name too but with a deprecation warning.
"""

from __future__ import annotations

import os
import random
import re
import sys
from collections.abc import MutableMapping
from pathlib import Path

PROFILE_NAME = "fastdds_profile.xml"
MAX_DOMAIN_ID = 101  # 0-101 keep Fast DDS's default ports below Linux's ephemeral range
FASTDDS_PROFILE = "FASTDDS_DEFAULT_PROFILES_FILE"  # Fast DDS 3 (Kilted and later)
FASTRTPS_PROFILE = "FASTRTPS_DEFAULT_PROFILES_FILE"  # Fast DDS 2.x (Humble, Jazzy)
# rclpy's major version per distro (share/rclpy/package.xml): Humble 3, Iron 4, Jazzy 7, Kilted 9, Rolling 10.
FIRST_RCLPY_WITH_DISCOVERY_RANGE = 4  # Iron
FIRST_RCLPY_WITH_FAST_DDS_3 = 9  # Kilted
DISTRO_RCLPY_MAJOR = {"humble": 3, "iron": 4, "jazzy": 7, "kilted": 9, "rolling": 10}
_VERSION = re.compile(r"<version>\s*(\d+)\.")


def _default_profile() -> Path:
    checkout = Path(__file__).resolve().parents[1] / "config" / PROFILE_NAME
    if checkout.is_file():
        return checkout
    from ament_index_python.packages import get_package_share_directory  # installed package (colcon)

    return Path(get_package_share_directory("alpamayo_ros")) / "config" / PROFILE_NAME


def rclpy_major_version(env: MutableMapping[str, str] | None = None) -> int | None:
    """Major version of the rclpy this interpreter would load, or None when none is found.

    Read from `share/rclpy/package.xml` in the ament prefixes (`AMENT_PREFIX_PATH`, then this interpreter's
    prefix, where the PyPI wheels install), else from `ROS_DISTRO`.
    """
    env = os.environ if env is None else env
    prefixes = [p for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        package_xml = Path(prefix) / "share" / "rclpy" / "package.xml"
        if package_xml.is_file():
            match = _VERSION.search(package_xml.read_text(errors="replace"))
            if match:
                return int(match.group(1))
    return DISTRO_RCLPY_MAJOR.get(env.get("ROS_DISTRO", "").lower())


DISCOVERY_RANGES = ("SYSTEM_DEFAULT", "LOCALHOST", "SUBNET", "OFF")  # rmw's ROS_AUTOMATIC_DISCOVERY_RANGE values


def loopback_dds_env(env: MutableMapping[str, str] | None = None, *, domain_id: int | None = None,
                     profile: Path | str | None = None) -> MutableMapping[str, str]:
    """Set loopback-only DDS variables in `env` (default: `os.environ`) for the installed distro; return `env`.

    Args:
        env: the environment to change in place, e.g. `dict(os.environ)` for a child process.
        domain_id: `ROS_DOMAIN_ID` to set (0-101). None keeps a valid one already in `env`, else picks one
            from this process id (1-101), so parallel runs do not cross-talk.
        profile: Fast DDS XML profile; None: the package's `config/fastdds_profile.xml` (128 MB shared
            memory for camera images, UDP on 127.0.0.1 only).

    `ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST` and `FASTDDS_DEFAULT_PROFILES_FILE` are always set.
    `ROS_LOCALHOST_ONLY=1` is set where rclpy is Humble's, and removed elsewhere (Jazzy warns about it);
    `FASTRTPS_DEFAULT_PROFILES_FILE` is set before Kilted, and removed from Kilted on (it warns about it).
    Where no rclpy is found, both old variables are set: a warning beats multicast or lost images.
    Raises ValueError for a domain id out of range, FileNotFoundError for a missing profile.
    """
    env = os.environ if env is None else env
    if domain_id is not None and not 0 <= domain_id <= MAX_DOMAIN_ID:
        raise ValueError(f"domain_id {domain_id}: expected 0-{MAX_DOMAIN_ID}")
    dds_env(env, discovery_range="LOCALHOST", profile=profile if profile is not None else _default_profile())
    if domain_id is None:
        current = env.get("ROS_DOMAIN_ID", "")
        if current.isdigit() and int(current) <= MAX_DOMAIN_ID:
            domain_id = int(current)
        else:
            domain_id = random.Random(os.getpid()).randint(1, MAX_DOMAIN_ID)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    return env


def dds_env(env: MutableMapping[str, str], *, discovery_range: str, profile: Path | str | None) -> MutableMapping[str, str]:
    """Set a discovery range and a Fast DDS profile in `env` as the installed distro reads them; return `env`.

    The launch file's building block (it keeps the user's `ROS_DOMAIN_ID`); `loopback_dds_env` is the
    loopback-only case. `profile` None leaves the profile variables as they are. Humble has no discovery
    range, only localhost-or-not: LOCALHOST sets `ROS_LOCALHOST_ONLY=1`, any other range removes it.
    """
    if discovery_range not in DISCOVERY_RANGES:
        raise ValueError(f"discovery range {discovery_range!r}: expected one of {', '.join(DISCOVERY_RANGES)}")
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = discovery_range
    major = rclpy_major_version(env)
    if discovery_range == "LOCALHOST" and (major is None or major < FIRST_RCLPY_WITH_DISCOVERY_RANGE):
        env["ROS_LOCALHOST_ONLY"] = "1"
    else:
        env.pop("ROS_LOCALHOST_ONLY", None)
    if profile is None:
        return env
    profile_path = Path(profile)
    if not profile_path.is_file():  # Fast DDS would log an error and carry on with its defaults
        raise FileNotFoundError(f"Fast DDS profile {profile_path} not found")
    env[FASTDDS_PROFILE] = str(profile_path)
    if major is None or major < FIRST_RCLPY_WITH_FAST_DDS_3:
        env[FASTRTPS_PROFILE] = str(profile_path)
    else:
        env.pop(FASTRTPS_PROFILE, None)
    return env
