"""The managed node: configure loads, activate subscribes and ticks, deactivate stops, cleanup frees."""

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("alpamayo_msgs.msg", reason="alpamayo_msgs is not built (make test builds it)")

from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from alpamayo_ros.lifecycle_node import AlpamayoLifecycleNode  # noqa: E402


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def subscribed_topics(node) -> set[str]:
    return {name for name, _ in node.get_topic_names_and_types() if node.count_subscribers(name)}


def test_transitions_load_subscribe_stop_and_free(context, tiny_model):
    node = AlpamayoLifecycleNode(model=tiny_model, context=context,
                                 parameter_overrides=[Parameter("image_transport", value="compressed")])
    try:
        assert getattr(node, "model", None) is None and node.runner is None  # nothing loaded before configure
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.model is tiny_model and node._input_subscriptions == [] and node._tick_timer is None
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        topics = {s.topic_name for s in node.subscriptions}
        assert {"/cameras/front_wide/image/compressed", "/odom"} <= topics and node._tick_timer is not None
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert not {"/cameras/front_wide/image/compressed", "/odom"} & {s.topic_name for s in node.subscriptions}
        assert node._tick_timer is None and node.runner is not None
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.model is None and node.runner is None
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS  # and again, from scratch
    finally:
        node.trigger_shutdown()
        node.destroy_node()


def test_bad_parameter_fails_configure_naming_it(context, tiny_model):
    node = AlpamayoLifecycleNode(model=tiny_model, context=context,
                                 parameter_overrides=[Parameter("selection", value="best")])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert "selection='best'" in node._config_error
    finally:
        node.destroy_node()
