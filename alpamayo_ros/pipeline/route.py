"""Navigation text for Alpamayo 1.5's route span: given as text, or derived from the planned path at t0.

The release words an instruction as "Turn left in 40m" / "Turn right in 30m" (NVlabs/alpamayo1.5
`notebooks/nav_demo_samples.json`: a manoeuvre and its distance in whole metres, e.g. 3.8 m -> "4m",
29.8 m -> "30m", 15.7 m -> "16m"). From a planned path (x, y in the odometry frame) the next manoeuvre
at t0 is found by these rules (`next_manoeuvre`):

1. Start at the path point nearest the vehicle's position at t0; measure distances along the path from there.
2. The reference heading is the path's direction over its first HEADING_BASE_M metres from that point.
3. A turn is the first place within LOOKAHEAD_M metres where the path's direction differs from the reference
   heading by more than TURN_ANGLE_DEG (left if the change is counter-clockwise, seen from above, x forward
   and y left; right otherwise).
4. Its distance is measured to where that heading change begins: the last path point before it whose
   direction is still within TURN_START_DEG of the reference heading; rounded to whole metres, halves up.
5. No turn within LOOKAHEAD_M gives no instruction (the release's examples word only turns): the plain prompt.

Ages: a text or path older than `max_route_age_ns` (counted from its reception; std_msgs/String carries no
stamp) is not used. A text, when fresh, takes precedence over the path. No route means no route span.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

TURN_ANGLE_DEG = 45.0  # a heading change beyond this is a turn (an intersection turn is ~90 deg; lane changes ~5-15)
TURN_START_DEG = 10.0  # where a turn's heading change begins
LOOKAHEAD_M = 200.0  # how far along the path a turn is looked for
HEADING_BASE_M = 5.0  # the path's direction over this distance from the vehicle is "straight ahead"
MIN_SEGMENT_M = 1e-3  # shorter path segments carry no direction (duplicate poses)


@dataclass(frozen=True, slots=True)
class Manoeuvre:
    """The next turn along the path."""

    direction: str  # "left" or "right"
    distance_m: float  # along the path from the vehicle to where the turn begins

    @property
    def text(self) -> str:
        """The release's wording, e.g. "Turn left in 40m"."""
        return f"Turn {self.direction} in {math.floor(self.distance_m + 0.5)}m"


def next_manoeuvre(path_xy: np.ndarray, position_xy: np.ndarray) -> Manoeuvre | None:
    """The next turn along `path_xy` (N, 2) metres for a vehicle at `position_xy` (2,), same frame; None if none.

    Rules in the module docstring. Raises ValueError for a path of fewer than 2 points or non-finite values.
    """
    path = np.asarray(path_xy, dtype=np.float64)
    if path.ndim != 2 or path.shape[0] < 2 or path.shape[1] != 2:
        raise ValueError(f"path has shape {path.shape}, expected (N >= 2, 2)")
    if not np.isfinite(path).all() or not np.isfinite(position_xy).all():
        raise ValueError("path or position contains NaN or inf")
    nearest = int(np.argmin(np.linalg.norm(path - np.asarray(position_xy, dtype=np.float64), axis=1)))
    ahead = path[nearest:]
    steps = np.diff(ahead, axis=0)
    lengths = np.linalg.norm(steps, axis=1)
    keep = lengths > MIN_SEGMENT_M
    steps, lengths = steps[keep], lengths[keep]
    if len(lengths) == 0:
        return None
    start_s = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])  # distance to each segment's start
    headings = np.unwrap(np.arctan2(steps[:, 1], steps[:, 0]))
    base = start_s < HEADING_BASE_M
    base[0] = True
    reference = math.atan2(np.sum(steps[base, 1]), np.sum(steps[base, 0]))
    change = headings - reference
    change -= 2 * np.pi * np.round(change[0] / (2 * np.pi))  # the first segment's change within (-pi, pi]
    turning = np.nonzero((np.abs(change) > math.radians(TURN_ANGLE_DEG)) & (start_s <= LOOKAHEAD_M))[0]
    if len(turning) == 0:
        return None
    turn = int(turning[0])
    straight = np.nonzero(np.abs(change[:turn]) <= math.radians(TURN_START_DEG))[0]
    begin = int(straight[-1]) + 1 if len(straight) else 0  # the segment after the last straight one
    return Manoeuvre("left" if change[turn] > 0 else "right", float(start_s[begin]))


def swap_direction(text: str) -> str:
    """"Turn left in 40m" <-> "Turn right in 40m": every whole word left/right swapped, case kept for the first
    letter (the release's counterfactual check, `nav_utils.swap_direction`)."""
    def swap(match: re.Match) -> str:
        word = match.group(0)
        other = "right" if word.lower() == "left" else "left"
        return other.capitalize() if word[0].isupper() else other

    return re.sub(r"\b(left|right)\b", swap, text, flags=re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RouteChoice:
    """The route text a tick puts in the prompt (None: the plain prompt) and where it came from, or why none."""

    text: str | None
    note: str  # "route_topic", "route_path_topic: ..." or the reason for no route


NO_ROUTE = RouteChoice(None, "no route topic configured")


class RouteInput:
    """The latest route text and planned path, as received; `choose` picks what a tick at t0 uses."""

    def __init__(self, max_route_age_ns: int, swap_left_right: bool = False) -> None:
        """`swap_left_right`: every chosen text with left and right swapped (the release's counterfactual check)."""
        if max_route_age_ns <= 0:
            raise ValueError(f"max_route_age_ns={max_route_age_ns} must be > 0")
        self.max_route_age_ns = max_route_age_ns
        self.swap_left_right = swap_left_right
        self._text: tuple[str, int] | None = None  # (text, received_ns)
        self._path: tuple[np.ndarray, str, int] | None = None  # ((N, 2) xy, frame_id, received_ns)

    def set_text(self, text: str, received_ns: int) -> None:
        """A route instruction ("Turn left in 40m"); an empty text clears it (the route is finished)."""
        self._text = (text, received_ns) if text.strip() else None

    def set_path(self, path_xy: np.ndarray, frame_id: str, received_ns: int) -> None:
        """A planned path (N, 2) metres in `frame_id`; an empty path clears it."""
        self._path = (np.asarray(path_xy, dtype=np.float64), frame_id, received_ns) if len(path_xy) else None

    def clear(self) -> None:
        self._text = self._path = None

    def choose(self, now_ns: int, odom_frame: str, position_xy: np.ndarray) -> RouteChoice:
        """The route for a tick at clock `now_ns` whose vehicle sits at `position_xy` in `odom_frame` at t0."""
        choice = self._choose(now_ns, odom_frame, position_xy)
        if self.swap_left_right and choice.text is not None:
            return RouteChoice(swap_direction(choice.text), choice.note + " (left and right swapped)")
        return choice

    def _choose(self, now_ns: int, odom_frame: str, position_xy: np.ndarray) -> RouteChoice:
        notes = []
        if self._text is not None:
            text, received_ns = self._text
            age_s = (now_ns - received_ns) / 1e9
            if now_ns - received_ns <= self.max_route_age_ns:
                return RouteChoice(text, "route_topic")
            notes.append(f"route text {age_s:.1f} s old (max_route_age {self.max_route_age_ns / 1e9:g} s)")
        if self._path is not None:
            path, frame_id, received_ns = self._path
            if now_ns - received_ns > self.max_route_age_ns:
                notes.append(f"route path {(now_ns - received_ns) / 1e9:.1f} s old "
                             f"(max_route_age {self.max_route_age_ns / 1e9:g} s)")
            elif frame_id != odom_frame:
                notes.append(f"route path in frame '{frame_id}', odometry in '{odom_frame}': not used")
            elif len(path) < 2:
                notes.append("route path has fewer than 2 poses")
            else:
                manoeuvre = next_manoeuvre(path, position_xy)
                if manoeuvre is not None:
                    return RouteChoice(manoeuvre.text, f"route_path_topic: {manoeuvre.direction} turn "
                                                       f"{manoeuvre.distance_m:.1f} m ahead")
                notes.append(f"no turn within {LOOKAHEAD_M:g} m along the route path")
        return RouteChoice(None, "; ".join(notes) or "no route received")
