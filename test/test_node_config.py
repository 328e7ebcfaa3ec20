"""Node parameters: the YAML holds every declared parameter with the same defaults; bad values stop start-up."""

from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("alpamayo_msgs.msg", reason="alpamayo_msgs is not built (make test builds it)")

from rclpy.parameter import Parameter  # noqa: E402

from alpamayo_ros.node import _PARAMETERS, AlpamayoNode, OutputFrame  # noqa: E402
from alpamayo_ros.pipeline.outputs import Selection  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "config" / "alpamayo.yaml"


def test_yaml_declares_every_parameter_with_the_node_defaults():
    values = yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]
    assert set(values) == set(_PARAMETERS)
    for name, (default, _, _) in _PARAMETERS.items():
        assert values[name] == default, name


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def make_node(context, tiny_model, **overrides):
    params = [Parameter(k, value=v) for k, v in overrides.items()]
    return AlpamayoNode(model=tiny_model, context=context, parameter_overrides=params)


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
    ("camera_topics", ["/a", "/b"], "camera_topics has 2 topics"),
    ("dtype", "int8", "dtype='int8'"),
    ("reasoning_mode", "both", "reasoning_mode='both'"),
    ("image_preprocessing", "gpu", "image_preprocessing='gpu': expected one of \\['host', 'device'\\]"),
    ("compile_flow", "on", "compile_flow='on'"),
])
def test_bad_parameters_stop_startup_with_name_and_value(context, tiny_model, name, value, message):
    with pytest.raises(ValueError, match=message):
        make_node(context, tiny_model, **{name: value})
