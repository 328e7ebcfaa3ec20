"""What becomes of a tick: its status (alpamayo_msgs/TickStatus's values), the diagnostics level, counts.

No torch here (the prediction is only referred to), so the ROS side can read outcomes without the model stack.
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .sync import ModelInput

if TYPE_CHECKING:
    from alpamayo_ros.model.alpamayo_r1 import Prediction

    from .inputs import Refused


class Status(enum.IntEnum):
    """What became of a tick; the values are alpamayo_msgs/TickStatus's (test_conversions checks them)."""

    NOT_READY = 0
    SUBMITTED = 1
    DROPPED_BUSY = 2
    PUBLISHED = 3
    REJECTED = 4
    MODEL_ERROR = 5


class Level(enum.IntEnum):
    """How bad an outcome is; the values are diagnostic_msgs/DiagnosticStatus's levels."""

    OK = 0
    WARN = 1
    ERROR = 2


LEVELS = {Status.NOT_READY: Level.WARN, Status.SUBMITTED: Level.OK, Status.DROPPED_BUSY: Level.WARN,
          Status.PUBLISHED: Level.OK, Status.REJECTED: Level.WARN, Status.MODEL_ERROR: Level.ERROR}


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of a tick that reached the model: published (with the valid samples), rejected or failed."""

    tick: int
    status: Status
    model_input: ModelInput
    prediction: Prediction | None = None
    valid: tuple[int, ...] = ()  # samples that passed the output checks
    selected: int = -1  # the published sample (an index into the prediction)
    reason: str = ""  # REJECTED / MODEL_ERROR: why, one line
    error: str = ""  # MODEL_ERROR: the traceback
    bad_frame: tuple[int, int, str] | None = None  # (camera, stamp_ns, what was wrong) of an undecodable frame
    epoch: int = 0


@dataclass
class TickCounts:
    """Ticks by outcome; not-ready ticks grouped by what was missing."""

    ticks: int = 0
    published: int = 0
    not_ready: collections.Counter = field(default_factory=collections.Counter)
    dropped: int = 0
    rejected: int = 0
    model_errors: int = 0

    def summary(self) -> str:
        """One line: '33 ticks: 30 published, 3 not ready (stale input: 3), 0 dropped, 0 rejected, 0 model errors'."""
        waiting = sum(self.not_ready.values())
        groups = ", ".join(f"{kind.value}: {n}" for kind, n in self.not_ready.most_common())
        return (f"{self.ticks} ticks: {self.published} published, {waiting} not ready"
                f"{f' ({groups})' if groups else ''}, {self.dropped} dropped (model busy), {self.rejected} rejected, "
                f"{self.model_errors} model errors")


@dataclass(frozen=True, slots=True)
class TickReport:
    """A state a tick reached: what goes on `~/tick`, into the log and, when PUBLISHED, into the outputs."""

    tick: int
    status: Status
    reason: str = ""  # why (not ready, dropped, rejected, model error), one line
    t0_ns: int = 0  # the input's time, once one was selected
    outcome: Outcome | None = None  # the model's result (PUBLISHED: the samples to publish)
    latency_ms: float = 0.0  # PUBLISHED: the clock at settling minus t0
    refused: Refused | None = None  # an undecodable frame this tick found and forgot

    @property
    def level(self) -> Level:
        return LEVELS[self.status]


@dataclass(frozen=True, slots=True)
class ClockJump:
    """The clock went back (inputs cleared) or leapt forward (buffered data ages out)."""

    text: str
