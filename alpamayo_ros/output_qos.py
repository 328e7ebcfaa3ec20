"""Subscribers that cannot match an output's QoS: middleware events and the ROS graph, for /diagnostics.

Outputs are offered reliable, volatile, keep-last, without deadline, with automatic liveliness (see
`node.OUTPUT_QOS`, `node.TICK_QOS`). A subscription that asks for more (transient-local durability, a
deadline, manual liveliness) is never sent a message; the middleware reports it to the publisher as an
incompatible-QoS event. Events are counted per topic and logged as they come; the diagnostics name each
such subscriber found in the graph (its node and the policy) for as long as it is there.
"""

from __future__ import annotations

import time

from rclpy.node import Node
from rclpy.qos import QoSCompatibility, QoSProfile, qos_check_compatible, qos_policy_name_from_kind

try:  # Jazzy and later
    from rclpy.event_handler import PublisherEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks

RECENT_EVENT_S = 5.0  # an event stays in /diagnostics this long even if the graph no longer shows the subscriber
LOG_THROTTLE_S = 5.0


class OutputQosWatch:
    """Hooks the incompatible-QoS event of each output publisher made through `publisher` and reports them."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._topics: list[str] = []  # fully qualified names, in creation order
        self._events: dict[str, int] = {}  # topic -> incompatible subscriptions reported by the middleware
        self._last_event: dict[str, tuple[float, str]] = {}  # topic -> (monotonic s, the policy)

    def publisher(self, create, msg_type, topic: str, qos: QoSProfile):
        """`create(msg_type, topic, qos, event_callbacks=...)` (a node's or lifecycle node's factory), watched."""
        names: list[str] = []  # filled once the publisher exists (`~/` resolved); events come after that
        callbacks = PublisherEventCallbacks(incompatible_qos=lambda event: self._incompatible(names[0], event))
        publisher = create(msg_type, topic, qos, event_callbacks=callbacks)
        names.append(publisher.topic_name)
        if publisher.topic_name not in self._topics:
            self._topics.append(publisher.topic_name)
            self._events[publisher.topic_name] = 0
        return publisher

    def _incompatible(self, topic: str, event) -> None:
        policy = qos_policy_name_from_kind(event.last_policy_kind)
        self._events[topic] = event.total_count
        self._last_event[topic] = (time.monotonic(), policy)
        self._node.get_logger().warning(f"{topic}: a subscription requests QoS incompatible with the one offered "
                                        f"(policy {policy}); it receives nothing", throttle_duration_sec=LOG_THROTTLE_S)

    def problems(self) -> list[str]:
        """Each subscriber that cannot match, in words: from the graph, or a recent event the graph does not show."""
        problems = []
        for topic in self._topics:
            ours = [p.qos_profile for p in self._node.get_publishers_info_by_topic(topic)
                    if (p.node_name, p.node_namespace) == (self._node.get_name(), self._node.get_namespace())]
            named = False
            for subscriber in self._node.get_subscriptions_info_by_topic(topic) if ours else []:
                compatibility, reason = qos_check_compatible(ours[0], subscriber.qos_profile)
                if compatibility == QoSCompatibility.ERROR:
                    node = f"{subscriber.node_namespace.rstrip('/')}/{subscriber.node_name}"
                    problems.append(f"{topic}: subscriber {node} cannot match the offered QoS "
                                    f"({reason.removeprefix('ERROR: ').strip().rstrip(';')}); it receives nothing")
                    named = True
            event = self._last_event.get(topic)
            if not named and event is not None and time.monotonic() - event[0] <= RECENT_EVENT_S:
                problems.append(f"{topic}: a subscription requested incompatible QoS (policy {event[1]}); it receives "
                                "nothing")
        return problems

    def values(self) -> dict[str, object]:
        """Per output topic: matched subscribers and incompatible subscriptions reported since start."""
        values: dict[str, object] = {}
        for topic in self._topics:
            values[f"{topic} subscribers"] = self._node.count_subscribers(topic)
            values[f"{topic} incompatible_qos"] = self._events[topic]
        return values
