"""Loopback-only DDS settings per distro (alpamayo_ros.ros_env), and the installed ROS 2 starting with them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alpamayo_ros import ros_env
from conftest import REPO

PROFILE = REPO / "config" / "fastdds_profile.xml"
CHILD_TIMEOUT_S = 60


def _prefix_with_rclpy(root: Path, version: str) -> Path:
    share = root / "share" / "rclpy"
    share.mkdir(parents=True)
    (share / "package.xml").write_text(f"<package format='3'><name>rclpy</name><version>{version}</version></package>")
    return root


@pytest.mark.parametrize(("version", "localhost_only", "fast_dds_2"),
                         [("3.3.16", True, True), ("7.1.6", False, True), ("9.1.2", False, False)])
def test_each_distro_gets_the_variables_it_reads(tmp_path, version, localhost_only, fast_dds_2):
    """Humble 3.x, Jazzy 7.x, Kilted 9.x; inherited values of the variables a distro does not read are removed."""
    env = {"AMENT_PREFIX_PATH": str(_prefix_with_rclpy(tmp_path, version)), "ROS_LOCALHOST_ONLY": "0",
           "FASTRTPS_DEFAULT_PROFILES_FILE": "/elsewhere.xml"}
    ros_env.loopback_dds_env(env)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert env.get("ROS_LOCALHOST_ONLY") == ("1" if localhost_only else None)
    assert Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]) == PROFILE
    assert env.get("FASTRTPS_DEFAULT_PROFILES_FILE") == (str(PROFILE) if fast_dds_2 else None)


def test_distro_name_is_used_when_no_rclpy_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert ros_env.rclpy_major_version({"ROS_DISTRO": "humble"}) == 3
    assert ros_env.rclpy_major_version({"ROS_DISTRO": "jazzy"}) == 7
    env = ros_env.loopback_dds_env({})  # nothing tells the distro: old and new variables, loopback either way
    assert env["ROS_LOCALHOST_ONLY"] == "1" and env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert Path(env["FASTRTPS_DEFAULT_PROFILES_FILE"]) == Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]) == PROFILE


def test_domain_id_is_kept_given_or_chosen():
    assert ros_env.loopback_dds_env({"ROS_DOMAIN_ID": "42"})["ROS_DOMAIN_ID"] == "42"
    assert ros_env.loopback_dds_env({"ROS_DOMAIN_ID": "42"}, domain_id=7)["ROS_DOMAIN_ID"] == "7"
    for inherited in ({}, {"ROS_DOMAIN_ID": "230"}, {"ROS_DOMAIN_ID": "x"}):
        assert 1 <= int(ros_env.loopback_dds_env(inherited)["ROS_DOMAIN_ID"]) <= ros_env.MAX_DOMAIN_ID


def test_bad_domain_id_or_profile_is_refused(tmp_path):
    with pytest.raises(ValueError, match="domain_id 102"):
        ros_env.loopback_dds_env({}, domain_id=102)
    with pytest.raises(FileNotFoundError, match="missing.xml"):
        ros_env.loopback_dds_env({}, profile=tmp_path / "missing.xml")


def test_os_environ_is_the_default_target(monkeypatch):
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    assert ros_env.loopback_dds_env() is os.environ
    assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] == str(PROFILE)


def test_ros_env_does_not_import_rclpy():
    code = "import sys, alpamayo_ros.ros_env as e; e.loopback_dds_env({}); print('rclpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), check=True)
    assert result.stdout.strip() == "False"


def test_conftest_set_the_loopback_environment_for_this_run():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] == str(PROFILE)


PROBE = """
import rclpy
from nav_msgs.msg import Path
rclpy.init()
try:
    node = rclpy.create_node("alpamayo_env_probe")
    node.create_publisher(Path, "probe_path", 10).publish(Path())
    node.destroy_node()
finally:
    rclpy.try_shutdown()
print("probe ok")
"""


def test_installed_rclpy_starts_with_these_settings_and_says_nothing():
    """No deprecation warning (Jazzy: ROS_LOCALHOST_ONLY, Kilted: FASTRTPS_*), no XML parser error from Fast DDS."""
    pytest.importorskip("rclpy", reason="rclpy is not installed (pip ros-rclpy==9.1.2, see README)")
    env = ros_env.loopback_dds_env(dict(os.environ))
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env,
                            timeout=CHILD_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "probe ok"
    assert result.stderr.strip() == "", result.stderr


def test_dds_env_keeps_the_domain_and_leaves_profiles_when_none(tmp_path):
    env = {"AMENT_PREFIX_PATH": str(_prefix_with_rclpy(tmp_path, "3.3.16")), "ROS_LOCALHOST_ONLY": "1",
           "FASTDDS_DEFAULT_PROFILES_FILE": "/vehicle.xml"}
    ros_env.dds_env(env, discovery_range="SUBNET", profile=None)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"
    assert "ROS_LOCALHOST_ONLY" not in env and "ROS_DOMAIN_ID" not in env
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == "/vehicle.xml"
    with pytest.raises(ValueError, match="'LAN'"):
        ros_env.dds_env(env, discovery_range="LAN", profile=None)


def test_installed_fast_dds_reads_the_profile_it_is_given(tmp_path):
    """A broken profile must be reported: proof that the variable set is the one this Fast DDS reads.

    Fast DDS 2.14 (Jazzy) ignores FASTDDS_DEFAULT_PROFILES_FILE; with it alone, Jazzy ran on defaults and lost
    1080p images.
    """
    pytest.importorskip("rclpy", reason="rclpy is not installed (pip ros-rclpy==9.1.2, see README)")
    broken = tmp_path / "broken_profile.xml"
    broken.write_text("<dds><profiles><unterminated>")
    env = dict(os.environ)
    for variable in (ros_env.FASTDDS_PROFILE, ros_env.FASTRTPS_PROFILE):
        env.pop(variable, None)
    ros_env.loopback_dds_env(env, profile=broken)
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env,
                            timeout=CHILD_TIMEOUT_S)
    assert f"Error parsing '{broken}'" in result.stdout + result.stderr
