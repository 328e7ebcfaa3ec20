"""The managed node: configure loads, activate subscribes and ticks, deactivate stops, cleanup frees."""

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("alpamayo_msgs.msg", reason="alpamayo_msgs is not built (make test builds it)")

from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from alpamayo_ros.node import AlpamayoNode  # noqa: E402


def subscribed_topics(node) -> set[str]:
    return {name for name, _ in node.get_topic_names_and_types() if node.count_subscribers(name)}


def test_transitions_load_subscribe_stop_and_free(context, tiny_model):
    node = AlpamayoNode(model=tiny_model, context=context,
                                 parameter_overrides=[Parameter("image_transport", value="compressed")])
    try:
        assert node.model is None and node.engine is None  # nothing loaded before configure
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.model is tiny_model and node._input_subscriptions == [] and node._tick_timer is None
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        topics = {s.topic_name for s in node.subscriptions}
        assert {"/cameras/front_wide/image/compressed", "/odom"} <= topics and node._tick_timer is not None
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert not {"/cameras/front_wide/image/compressed", "/odom"} & {s.topic_name for s in node.subscriptions}
        assert node._tick_timer is None and node.engine is not None
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.model is None and node.engine is None
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS  # and again, from scratch
    finally:
        node.trigger_shutdown()
        node.destroy_node()


def test_bad_parameter_fails_configure_naming_it(context, tiny_model):
    node = AlpamayoNode(model=tiny_model, context=context,
                                 parameter_overrides=[Parameter("selection", value="best")])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert "selection='best'" in node._config_error
    finally:
        node.destroy_node()


def test_unexpected_error_in_configure_fails_it_loudly_and_diagnostics_say_why(context, tmp_path):
    (tmp_path / "config.json").write_text("[]")  # not a config: loading raises something other than ValueError
    node = AlpamayoNode(context=context, parameter_overrides=[
        Parameter("model_path", value=str(tmp_path)), Parameter("device", value="cpu"),
        Parameter("dtype", value="float32")])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node._config_error  # named, not swallowed by rclpy
        seen = []
        listener = rclpy.create_node("lifecycle_diagnostics_listener", context=context)
        from diagnostic_msgs.msg import DiagnosticArray

        listener.create_subscription(DiagnosticArray, "/diagnostics", seen.append, 10)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        executor.add_node(listener)
        for _ in range(50):
            executor.spin_once(timeout_sec=0.1)
            if seen:
                break
        executor.shutdown()
        listener.destroy_node()
        status = seen[-1].status[0]
        assert status.level == b"\x02" and status.message.startswith("cannot configure: ")
    finally:
        node.destroy_node()


def test_cleanup_lets_the_model_go(context):
    import gc
    import weakref

    from alpamayo_ros.model.loading import tiny

    model = tiny(seed=0)
    node = AlpamayoNode(model=model, context=context)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        node._injected_model = None
        ref = weakref.ref(model)
        del model
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        gc.collect()
        assert ref() is None  # nothing (ticker, inputs, closures) keeps a 10B model alive after cleanup
    finally:
        node.destroy_node()
