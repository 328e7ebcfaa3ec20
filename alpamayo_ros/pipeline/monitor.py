"""What one input topic is doing, for /diagnostics: rate, age, frame period, losses, invalid messages.

A monitor sees every arrival (its monotonic time, the message's stamp, the node clock then) and every
rejection. It measures the source's own frame period from its stamps (median spacing), so a 15 Hz
camera's 67 ms steps are normal, and counts frames lost to queue overwrites from stamp gaps longer
than 1.5 periods. It never decides anything about ticks; it only describes.
"""

from __future__ import annotations

import collections
import statistics

RATE_WINDOW_S = 5.0  # input rates: messages per second between the first and last arrival in this window
PERIOD_WINDOW = 21  # stamps whose median spacing is the measured frame period
DELAY_WINDOW = 500  # arrival delays kept for the p50/p99 (5 s of 100 Hz odometry)
GAP_FACTOR = 1.5  # a stamp step longer than this many periods means frames were lost...
OUTAGE_PERIODS = 10  # ...unless it is this long: an outage (reported by age) or a clock jump, not losses
RECENT_FAULT_S = 5.0  # an invalid message keeps its topic flagged in /diagnostics this long


class TopicMonitor:
    """Arrivals and rejections on one topic; `label` names the source in messages ("camera front_wide")."""

    def __init__(self, topic: str, label: str) -> None:
        self.topic, self.label = topic, label
        self._arrivals: collections.deque[float] = collections.deque(maxlen=1000)  # monotonic s
        self._stamps: collections.deque[int] = collections.deque(maxlen=PERIOD_WINDOW)
        self._delays_ns: collections.deque[int] = collections.deque(maxlen=DELAY_WINDOW)  # clock - stamp
        self.last_stamp_ns: int | None = None
        self.invalid = 0
        self.lost_events = 0  # reported by the middleware (QoS message-lost events)
        self.lost_gaps = 0  # inferred from stamp gaps against the measured period
        self._last_invalid: tuple[float, str] | None = None
        self.type_problem = ""  # e.g. a publisher of another message type on this topic

    def arrived(self, now_mono_s: float) -> None:
        """A message came in (valid or not)."""
        self._arrivals.append(now_mono_s)

    def accepted(self, stamp_ns: int, now_ns: int) -> None:
        """A valid message with this stamp was buffered; `now_ns` is the node clock at arrival."""
        period = self.period_ns
        gap = None if self.last_stamp_ns is None else stamp_ns - self.last_stamp_ns
        if period and gap is not None and GAP_FACTOR * period < gap <= OUTAGE_PERIODS * period:
            self.lost_gaps += round(gap / period) - 1
        if self.last_stamp_ns is None or stamp_ns > self.last_stamp_ns:
            self._stamps.append(stamp_ns)
            self.last_stamp_ns = stamp_ns
        self._delays_ns.append(now_ns - stamp_ns)

    def rejected(self, text: str, now_mono_s: float) -> None:
        self.invalid += 1
        self._last_invalid = (now_mono_s, text)

    def reset(self) -> None:
        """Forget the stamps (the clock jumped); counts stay."""
        self._stamps.clear()
        self._delays_ns.clear()
        self.last_stamp_ns = None

    @property
    def period_ns(self) -> int | None:
        """Median spacing of recent stamps; None until three stamps are seen."""
        if len(self._stamps) < 3:
            return None
        stamps = list(self._stamps)
        return int(statistics.median(b - a for a, b in zip(stamps, stamps[1:])))

    @property
    def delay_ns(self) -> int | None:
        """Median of (node clock at arrival - stamp) over the last 21 messages: how late they arrive now."""
        if not self._delays_ns:
            return None
        return int(statistics.median(list(self._delays_ns)[-PERIOD_WINDOW:]))

    def delay_percentile_ns(self, q: float) -> int | None:
        """Percentile `q` (0-100) of the arrival delay over the last DELAY_WINDOW messages."""
        if not self._delays_ns:
            return None
        ordered = sorted(self._delays_ns)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    def rate_hz(self, now_mono_s: float) -> float:
        recent = [a for a in self._arrivals if now_mono_s - a <= RATE_WINDOW_S]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def faults(self, now_mono_s: float, now_ns: int, max_age_ns: int) -> list[str]:
        """What is wrong with this input right now, in words."""
        faults = []
        if self.type_problem:
            faults.append(f"{self.label}: {self.topic}: {self.type_problem}")
        if self.last_stamp_ns is None:
            faults.append(f"{self.label}: no valid message on {self.topic}")
        elif now_ns - self.last_stamp_ns > max_age_ns:
            faults.append(f"{self.label}: last valid message on {self.topic} is "
                          f"{(now_ns - self.last_stamp_ns) / 1e9:.1f} s old")
        if self._last_invalid and now_mono_s - self._last_invalid[0] <= RECENT_FAULT_S:
            faults.append(self._last_invalid[1])
        return faults

    def values(self, now_mono_s: float, now_ns: int) -> dict[str, object]:
        """The numbers /diagnostics shows for this topic."""
        period, delay = self.period_ns, self.delay_ns
        t = self.topic
        return {f"{t} rate_hz": f"{self.rate_hz(now_mono_s):.1f}",
                f"{t} period_ms": "-" if period is None else f"{period / 1e6:.1f}",
                f"{t} age_ms": "never" if self.last_stamp_ns is None else f"{(now_ns - self.last_stamp_ns) / 1e6:.0f}",
                f"{t} delay_ms": "-" if delay is None else f"{delay / 1e6:.0f}",
                f"{t} delay_ms_p99": "-" if delay is None else f"{self.delay_percentile_ns(99) / 1e6:.0f}",
                f"{t} invalid": self.invalid,
                f"{t} lost": self.lost_events + self.lost_gaps}
