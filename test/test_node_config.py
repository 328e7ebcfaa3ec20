"""Node parameters: declared once from NodeConfig; the YAML holds every one with the same defaults; bad values
stop start-up naming the parameter, the value and what was expected."""

from pathlib import Path

import pytest
import yaml

from alpamayo_ros import parameters
from alpamayo_ros.parameters import OutputFrame
from alpamayo_ros.pipeline.outputs import Selection

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("alpamayo_msgs.msg", reason="alpamayo_msgs is not built (make test builds it)")

from rclpy.parameter import Parameter  # noqa: E402

from alpamayo_ros.node import start_node, usage  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "config" / "alpamayo.yaml"


def test_yaml_declares_every_parameter_with_the_node_defaults():
    values = yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]
    specs = parameters.parameter_specs()
    assert set(values) == {spec.name for spec in specs}
    for spec in specs:
        assert values[spec.name] == spec.default, spec.name
    assert parameters.from_values(values) == parameters.NodeConfig()


def test_params_file_and_overrides_read_as_ros_reads_them(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    rate_hz: 4\n    num_samples: 2\nalpamayo:\n  ros__parameters:\n"
                    "    selection: medoid\nother_node:\n  ros__parameters:\n    num_samples: 9\n")
    values = parameters.read_params_file(path)
    values.update([parameters.parse_override("image_transport:=compressed")])
    cfg = parameters.from_values(values)
    assert (cfg.rate_hz, cfg.num_samples, cfg.selection) == (4.0, 2, Selection.MEDOID)
    assert cfg.subscribed_camera_topics[1] == "/cameras/front_wide/image/compressed"  # image_transport's rule
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['rate'\]"):
        parameters.from_values({"rate": 2.0})


def make_node(context, tiny_model, **overrides):
    params = [Parameter(k, value=v) for k, v in overrides.items()]
    return start_node(tiny_model, context=context, parameter_overrides=params)


def test_parameters_become_a_typed_config(context, tiny_model):
    node = make_node(context, tiny_model, selection="medoid", output_frame="base_link", rate_hz=5.0, num_samples=2)
    try:
        assert node.cfg.selection is Selection.MEDOID and node.cfg.output_frame is OutputFrame.BASE_LINK
        assert node.cfg.sync.sync_tolerance_ns == 50_000_000 and node.cfg.sampling.num_samples == 2
        descriptor = node.describe_parameter("sync_tolerance")
        assert descriptor.read_only and "camera frame" in descriptor.description
    finally:
        node.shutdown()
        node.destroy_node()


def test_model_options_reach_the_model(context):
    from alpamayo_ros.model.loading import tiny

    model = tiny(seed=0)
    node = make_node(context, model, image_preprocessing="device", compile_flow="default")
    try:
        assert model.image_preprocessing == "device" and model.flow_compiled
    finally:
        node.shutdown()
        node.destroy_node()


@pytest.mark.parametrize("name,value,message", [
    ("selection", "best", "selection='best': expected one of \\['first', 'medoid'\\]"),
    ("output_frame", "map", "output_frame='map'"),
    ("camera_topics", ["/a", "/b"], "camera_topics \\['/a', '/b'\\] and camera_ids .* differ in length"),
    ("dtype", "int8", "dtype='int8'"),
    ("reasoning_mode", "both", "reasoning_mode='both'"),
    ("image_preprocessing", "gpu", "image_preprocessing='gpu': expected one of \\['host', 'device'\\]"),
    ("compile_flow", "on", "compile_flow='on'"),
    ("device", "nonsense", "device 'nonsense': expected cpu, cuda or cuda:N"),
    ("device", "cuda:", "device 'cuda:': expected cpu, cuda or cuda:N"),
    ("camera_ids", ["camera_front_wide_120fov"], "camera_ids \\['camera_front_wide_120fov'\\] differ in length"),
    ("camera_ids", ["camera_a", "camera_b", "camera_c", "camera_d"], "unknown NVIDIA camera name"),
    ("route_topic", "/route", "need an Alpamayo 1.5 checkpoint"),  # the tiny model is an R1
])
def test_bad_parameters_stop_startup_with_name_and_value(context, tiny_model, name, value, message):
    with pytest.raises(ValueError, match=message):
        make_node(context, tiny_model, **{name: value})


@pytest.mark.parametrize("name,value", [("rate_hz", 0.0), ("num_samples", 17)])
def test_out_of_range_parameters_stop_startup(context, tiny_model, name, value):
    from rclpy.exceptions import ParameterException  # main() reports it as "cannot start: ..."

    with pytest.raises(ParameterException, match=f"{name} out of range"):
        make_node(context, tiny_model, **{name: value})
    with pytest.raises(ValueError, match=f"{name}={value!r}: expected a value in"):  # the same rule off ROS (replay)
        parameters.from_values({name: value})


def test_integer_for_a_float_parameter_is_accepted(context, tiny_model):
    node = make_node(context, tiny_model, rate_hz=2)  # `-p rate_hz:=2` arrives as an integer
    try:
        assert node.cfg.rate_hz == 2.0 and isinstance(node.cfg.rate_hz, float)
    finally:
        node.shutdown()
        node.destroy_node()


def test_help_lists_every_parameter_without_starting_ros():
    text = usage()
    assert all(f"  {spec.name} (default" in text for spec in parameters.parameter_specs())


def test_invalid_topic_name_stops_startup_without_leaving_the_runner_thread(context, tiny_model):
    import threading

    from rclpy.exceptions import NameValidationException  # main() reports it as "cannot start: ..."

    before = {t for t in threading.enumerate() if t.name == "alpamayo-runner"}
    with pytest.raises(NameValidationException):
        make_node(context, tiny_model, camera_topics=["/a", "b c", "/d", "/e"])
    assert {t for t in threading.enumerate() if t.name == "alpamayo-runner"} == before  # or the process hangs


@pytest.mark.parametrize(("ros_args", "message"), [
    (["--log-level", "verbose"], "cannot start: failed to initialize rcl: Couldn't parse log level"),
    (["-p", "device:=nonsense"], "cannot start: device 'nonsense': expected cpu, cuda or cuda:N"),
])
def test_start_up_errors_end_main_with_code_1_and_one_line(capfd, ros_args, message):
    """rcl's own argument parsing fails like a bad parameter: `cannot start: ...`, no traceback, exit code 1."""
    from alpamayo_ros.node import main

    assert main(["alpamayo_node", "--ros-args", *ros_args]) == 1
    output = "".join(capfd.readouterr())
    assert message in output and "Traceback" not in output, output
