"""Everything the inputs have delivered: camera and odometry buffers, per-topic monitors, arrival checks.

The node's callbacks and the in-process replay feed the same object, one message at a time and in
O(1) (no decoding). A message that cannot be used is refused with a sentence naming the source, what
was wrong and what happens to it; the caller logs it. Resets (the clock jumped back, the odometry
source restarted) clear the buffers and bump `epoch`, so results from older inputs can be withheld.
An odometry pose that jumps (`pose_history.discontinuity`) or comes in other frames restarts the pose
history the same way: no history ever spans a relocalization or mixes two frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .camera_buffer import CameraBuffer
from .frames import CameraFrame
from .monitor import RECENT_FAULT_S, TopicMonitor
from .pose_history import PoseHistory, PoseSample, discontinuity
from .route import RouteInput
from .sync import CAMERA_NAMES, SyncConfig

ODOMETRY_RESTART_COUNT = 25  # this many consecutive backwards odometry stamps mean the source restarted


@dataclass(frozen=True, slots=True)
class Refused:
    """A message that was not buffered (or that restarted the odometry history), and why: a full sentence
    for the log and /diagnostics."""

    topic: str
    text: str


class Inputs:
    """Camera frames (in the model's camera order) and odometry, with one monitor per topic."""

    def __init__(self, camera_topics: Sequence[str], odometry_topic: str, sync: SyncConfig,
                 route: RouteInput | None = None, camera_names: Sequence[str] = CAMERA_NAMES) -> None:
        """`camera_topics` and `camera_names` (short names, for messages): one per camera, in the model's order;
        `sync.reference_camera` indexes them."""
        if len(camera_topics) != len(camera_names):
            raise ValueError(f"{len(camera_topics)} camera topics {list(camera_topics)} for {len(camera_names)} "
                             f"cameras {list(camera_names)}")
        if not 0 <= sync.reference_camera < len(camera_names):
            raise ValueError(f"reference_camera {sync.reference_camera} is not one of the {len(camera_names)} "
                             f"cameras {list(camera_names)}")
        self.sync = sync
        self.camera_topics, self.odometry_topic = tuple(camera_topics), odometry_topic
        self.cameras = [CameraBuffer(name) for name in camera_names]
        self.poses = PoseHistory()
        self.route = route  # Alpamayo 1.5 navigation (route text / planned path); None: no route topics
        self.monitors = {topic: TopicMonitor(topic, f"camera {name}")
                         for topic, name in zip(camera_topics, camera_names)}
        self.monitors[odometry_topic] = TopicMonitor(odometry_topic, "odometry")
        self.epoch = 0  # counts resets
        self.history_restarts = 0  # odometry histories restarted by a jump or a change of frames
        self._history_restart: tuple[float, str] | None = None  # (monotonic s, why) of the latest
        self._sizes: dict[int, tuple[int, int]] = {}  # camera -> (H, W) of its first frame
        self._camera_lag: dict[int, tuple[float, str]] = {}  # camera -> (monotonic s, what was seen)
        self._odometry_backwards = 0

    # -- arrivals ----------------------------------------------------------------------------------

    def refuse(self, topic: str, text: str, now_mono_s: float) -> Refused:
        """Count and remember a message that cannot be used."""
        self.monitors[topic].rejected(text, now_mono_s)
        return Refused(topic, text)

    def add_frame(self, camera: int, frame: CameraFrame, now_ns: int, now_mono_s: float) -> Refused | None:
        """Buffer one (undecoded, header-checked) frame of camera `camera`; None when accepted."""
        topic, name = self.camera_topics[camera], self.cameras[camera].name
        ahead = self._ahead_text(frame.stamp_ns, now_ns, topic, f"camera {name}", "frame")
        if ahead:
            return self.refuse(topic, ahead, now_mono_s)
        if self.cameras[camera].has(frame.stamp_ns):
            # Decoded frames and vision encodings are keyed by (camera, stamp): a second frame under a stamp
            # would be served the first one's pixels.
            return self.refuse(topic, f"camera {name}: {topic}: stamp {frame.stamp_ns / 1e9:.3f} s repeats a "
                                      "buffered frame's; frame dropped", now_mono_s)
        expected = self._sizes.setdefault(camera, frame.size)
        if frame.size != expected:
            return self.refuse(topic, f"camera {name}: {topic}: image is {frame.size[1]}x{frame.size[0]}, expected "
                                      f"{expected[1]}x{expected[0]} (its first frame's size); frame dropped", now_mono_s)
        self.monitors[topic].accepted(frame.stamp_ns, now_ns)
        self.cameras[camera].push(frame)
        if camera == self.sync.reference_camera:
            self._check_camera_lag(frame.stamp_ns, now_mono_s)
        return None

    def add_pose(self, sample: PoseSample, now_ns: int, now_mono_s: float, frame_id: str = "odom",
                 child_frame_id: str = "base_link") -> Refused | None:
        """Buffer one odometry pose (`sample` in `frame_id`, of `child_frame_id`); None when accepted as it is.

        25 backwards stamps in a row: the source restarted. A pose in other frames than the history's, or
        one that jumped (see `pose_history.discontinuity`), restarts the history with itself.
        """
        topic = self.odometry_topic
        ahead = self._ahead_text(sample.stamp_ns, now_ns, topic, "odometry", "message")
        if ahead:
            return self.refuse(topic, ahead, now_mono_s)
        newest = self.poses.newest_stamp_ns
        refused = None
        if newest is not None and sample.stamp_ns < newest - self.sync.max_odometry_gap_ns:
            self._odometry_backwards += 1
            back_s = (newest - sample.stamp_ns) / 1e9
            if self._odometry_backwards < ODOMETRY_RESTART_COUNT:
                return self.refuse(topic, f"odometry: {topic}: stamp went back {back_s:.2f} s; message dropped",
                                   now_mono_s)
            refused = self.refuse(topic, f"odometry: {topic}: stamp went back {back_s:.2f} s "
                                         f"{ODOMETRY_RESTART_COUNT} times in a row: the source restarted; history "
                                         "cleared", now_mono_s)
            self.poses.clear()
            self.monitors[topic].reset()
            self.epoch += 1
        self._odometry_backwards = 0
        self.monitors[topic].accepted(sample.stamp_ns, now_ns)
        frames = (frame_id, child_frame_id)
        why = self._discontinuity(sample, frames)
        if why:
            self.poses.restart(sample, frames, why)
            self.epoch += 1  # an input selected before now is withheld (`Ticker.finish`)
            self.history_restarts += 1
            text = f"odometry: {topic}: {why}; history restarted"
            self._history_restart = (now_mono_s, text)
            return Refused(topic, text)
        if len(self.poses) == 0:
            self.poses.frames = frames
        self.poses.push(sample)
        return refused

    def _discontinuity(self, sample: PoseSample, frames: tuple[str, str]) -> str:
        """Why `sample` cannot continue the stored history (other frames, or a jump), or ""."""
        neighbour = self.poses.neighbour(sample.stamp_ns)
        if neighbour is None:
            return ""
        if frames != self.poses.frames:
            changed = [f"{name} {old!r} -> {new!r}" for name, old, new in
                       zip(("frame_id", "child_frame_id"), self.poses.frames, frames) if old != new]
            return f"frame changed ({', '.join(changed)})"
        if abs(sample.stamp_ns - neighbour.stamp_ns) > self.sync.max_odometry_gap_ns:
            return ""  # a gap the history is never interpolated across: it separates histories already
        jump = discontinuity(neighbour, sample, self.sync.max_pose_jump_m, self.sync.max_yaw_jump_deg)
        return "" if jump is None else jump.text()

    def forget_frame(self, camera: int, stamp_ns: int, text: str, now_mono_s: float) -> Refused:
        """A buffered frame failed to decode: drop it so later ticks choose others, and say so."""
        self.cameras[camera].remove(stamp_ns)
        return self.refuse(self.camera_topics[camera], text, now_mono_s)

    def reset(self) -> None:
        """Clear every buffer (the clock jumped back): what is buffered lies in the new clock's future."""
        for camera in self.cameras:
            camera.clear()
        self.poses.clear()
        for monitor in self.monitors.values():
            monitor.reset()
        self._camera_lag.clear()
        self._sizes.clear()  # a restarted source may come back at another size
        if self.route is not None:
            self.route.clear()  # received on the old clock
        self.epoch += 1

    # -- checks ------------------------------------------------------------------------------------

    def _ahead_text(self, stamp_ns: int, now_ns: int, topic: str, source: str, what: str) -> str:
        ahead_ns = stamp_ns - now_ns
        if ahead_ns <= self.sync.max_input_age_ns:
            return ""
        return f"{source}: {topic}: stamp is {ahead_ns / 1e9:.2f} s ahead of the node clock; {what} dropped"

    def _check_camera_lag(self, reference_stamp_ns: int, now_mono_s: float) -> None:
        """As a reference frame arrives, note cameras that fall behind more than their own frame period allows.

        A camera's newest frame may trail the reference frame by up to one of its frame periods (its phase;
        67 ms at 15 Hz) plus `sync_tolerance`; beyond that, or when it arrives later after its stamp than the
        reference camera by more than `sync_tolerance`, ticks will miss its frames.
        """
        reference = self.sync.reference_camera
        reference_name = self.cameras[reference].name
        tolerance = self.sync.sync_tolerance_ns
        reference_delay = self.monitors[self.camera_topics[reference]].delay_ns
        for camera, buffer in enumerate(self.cameras):
            newest = buffer.newest_stamp_ns
            if camera == reference or newest is None:
                continue
            monitor = self.monitors[self.camera_topics[camera]]
            period = monitor.period_ns or 0
            lag_ns = reference_stamp_ns - newest
            delay = monitor.delay_ns
            text = ""
            if lag_ns > period + tolerance:
                text = (f"camera {buffer.name}: newest frame {lag_ns / 1e6:.0f} ms behind {reference_name} "
                        f"(its frame period {period / 1e6:.0f} ms + sync_tolerance {tolerance / 1e6:.0f} ms)")
            elif delay is not None and reference_delay is not None and delay - reference_delay > tolerance:
                text = (f"camera {buffer.name}: frames arrive {delay / 1e6:.0f} ms after their stamp, "
                        f"{(delay - reference_delay) / 1e6:.0f} ms later than {reference_name} "
                        f"(sync_tolerance {tolerance / 1e6:.0f} ms): ticks will miss its newest frames")
            if text:
                self._camera_lag[camera] = (now_mono_s, text)

    def faults(self, now_mono_s: float, now_ns: int) -> list[str]:
        """Every input problem to report now, in words."""
        faults = []
        for monitor in self.monitors.values():
            faults += monitor.faults(now_mono_s, now_ns, self.sync.max_input_age_ns)
        faults += [text for seen, text in self._camera_lag.values() if now_mono_s - seen <= RECENT_FAULT_S]
        if self._history_restart is not None and now_mono_s - self._history_restart[0] <= RECENT_FAULT_S:
            faults.append(self._history_restart[1])
        return faults

    def values(self, now_mono_s: float, now_ns: int) -> dict[str, object]:
        values: dict[str, object] = {}
        for monitor in self.monitors.values():
            values.update(monitor.values(now_mono_s, now_ns))
        values[f"{self.odometry_topic} history_restarts"] = self.history_restarts
        return values
