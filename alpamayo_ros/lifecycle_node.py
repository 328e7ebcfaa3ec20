"""`alpamayo_lifecycle_node`: the driving node (`alpamayo_ros.node.AlpamayoNode`) left unconfigured for a lifecycle
manager, for vehicle stacks that bring nodes up in order. `alpamayo_node` is the same class brought to active at start.

    ros2 run alpamayo_ros alpamayo_lifecycle_node --ros-args --params-file config/alpamayo.yaml
    ros2 lifecycle set /alpamayo configure && ros2 lifecycle set /alpamayo activate
"""

from __future__ import annotations

from alpamayo_ros import node


def main(args: list[str] | None = None) -> int:
    """Entry point for `ros2 run alpamayo_ros alpamayo_lifecycle_node` and `python -m alpamayo_ros.lifecycle_node`."""
    return node.main(args, managed=True)


if __name__ == "__main__":
    raise SystemExit(main())
