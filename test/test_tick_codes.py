"""The pipeline's tick statuses and diagnostics levels are the messages' own values (no copy drifts)."""

import pytest

from alpamayo_ros.pipeline.outcome import Level, Status

try:
    from diagnostic_msgs.msg import DiagnosticStatus

    from alpamayo_msgs.msg import TickStatus
except ImportError as missing:  # skip these tests only, never at import (test_suite_guards)
    TickStatus = DiagnosticStatus = None
    MISSING = f"{missing} (make test builds alpamayo_msgs)"
pytestmark = pytest.mark.skipif(TickStatus is None, reason=MISSING if TickStatus is None else "")


def test_every_tick_status_is_the_message_constant_of_the_same_name():
    constants = {name: getattr(TickStatus, name) for name in dir(TickStatus)
                 if name.isupper() and isinstance(getattr(TickStatus, name), int)}
    assert {status.name: int(status) for status in Status} == constants


def test_levels_are_diagnostic_status_levels():
    for level in Level:
        assert bytes([level]) == getattr(DiagnosticStatus, level.name)
