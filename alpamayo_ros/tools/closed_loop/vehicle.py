"""A kinematic bicycle model of the simulated car, with the limits of an ordinary passenger car.

State in the world (`odom`) frame at base_link, the rear axle (as the world and the odometry have it):
position m, yaw rad (+ left), speed m/s, road-wheel steering angle rad and the acceleration the
actuators deliver m/s^2. Commands are a curvature 1/m and an acceleration m/s^2; the model turns them
into a steering angle (atan(wheelbase * curvature)) and clips and rate-limits them. Acceleration
reaches its command through a first-order lag, as brakes and throttle do, so jerk stays finite.
No reverse: speed stops at zero. Exact for constant inputs over a step (arc of constant curvature).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class VehicleLimits:
    """What the car can do (SI units)."""

    wheelbase_m: float = 2.8  # a mid-size sedan (2.7-2.9 m); the world's front bumper is 3.6 m ahead of the rear axle
    max_steer_rad: float = 0.55  # road-wheel angle, about 31 degrees: a 4.5 m turning radius at this wheelbase
    max_steer_rate_radps: float = 0.7  # road wheel; about 500 deg/s at the steering wheel with a 14:1 ratio
    max_accel_mps2: float = 3.0  # full throttle of an ordinary car at city speeds
    max_decel_mps2: float = 8.0  # full braking on dry asphalt, about 0.8 g
    max_speed_mps: float = 30.0  # 108 km/h: the world's roads allow at most 14 m/s
    accel_lag_s: float = 0.2  # first-order time constant from commanded to delivered acceleration

    def __post_init__(self) -> None:
        for name in ("wheelbase_m", "max_steer_rad", "max_steer_rate_radps", "max_accel_mps2", "max_decel_mps2",
                     "max_speed_mps"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"VehicleLimits.{name}={getattr(self, name)}: expected a positive value")
        if not 0.0 <= self.accel_lag_s:
            raise ValueError(f"VehicleLimits.accel_lag_s={self.accel_lag_s}: expected >= 0")
        if self.max_steer_rad >= math.pi / 2:
            raise ValueError(f"VehicleLimits.max_steer_rad={self.max_steer_rad}: expected < pi/2")


LIMITS = VehicleLimits()


@dataclass(frozen=True, slots=True)
class VehicleState:
    """The car at one instant: world frame, base_link (rear axle)."""

    x: float
    y: float
    yaw: float
    speed: float = 0.0  # m/s, >= 0
    steer: float = 0.0  # road-wheel angle, rad, + left
    accel: float = 0.0  # delivered longitudinal acceleration, m/s^2

    def curvature(self, limits: VehicleLimits = LIMITS) -> float:
        """1/m the car is turning at (+ left)."""
        return math.tan(self.steer) / limits.wheelbase_m

    def yaw_rate(self, limits: VehicleLimits = LIMITS) -> float:
        """rad/s."""
        return self.speed * self.curvature(limits)


@dataclass(frozen=True, slots=True)
class Command:
    """What the controller asks for: path curvature 1/m (+ left) and longitudinal acceleration m/s^2."""

    curvature: float
    accel: float


def steer_for(curvature: float, limits: VehicleLimits = LIMITS) -> float:
    """The road-wheel angle that turns at `curvature` (unclipped)."""
    return math.atan(limits.wheelbase_m * curvature)


def step(state: VehicleState, command: Command, dt_s: float, limits: VehicleLimits = LIMITS) -> VehicleState:
    """The state `dt_s` later under `command`, within the limits.

    The steering angle moves towards its target at most max_steer_rate * dt and stays within
    +-max_steer; the delivered acceleration follows the clipped command through the lag; speed stays in
    [0, max_speed]. Position integrates the arc of the step's curvature at the step's mean speed.
    """
    if not dt_s > 0.0:
        raise ValueError(f"dt_s={dt_s}: expected > 0")
    if not (math.isfinite(command.curvature) and math.isfinite(command.accel)):
        raise ValueError(f"command {command}: expected finite curvature and acceleration")
    target_steer = min(max(steer_for(command.curvature, limits), -limits.max_steer_rad), limits.max_steer_rad)
    max_change = limits.max_steer_rate_radps * dt_s
    steer = state.steer + min(max(target_steer - state.steer, -max_change), max_change)
    target_accel = min(max(command.accel, -limits.max_decel_mps2), limits.max_accel_mps2)
    blend = 1.0 if limits.accel_lag_s == 0.0 else 1.0 - math.exp(-dt_s / limits.accel_lag_s)
    accel = state.accel + blend * (target_accel - state.accel)
    speed = min(max(state.speed + accel * dt_s, 0.0), limits.max_speed_mps)
    if speed == 0.0 and accel < 0.0:
        accel = 0.0  # standing on the brake: no motion, no deceleration (the brake holds the car)
    distance = 0.5 * (state.speed + speed) * dt_s
    kappa = math.tan(steer) / limits.wheelbase_m
    turn = kappa * distance
    if abs(turn) < 1e-9:
        dx, dy = distance, 0.0
    else:  # the arc's chord in the heading frame at the step's start
        dx, dy = math.sin(turn) / kappa, (1.0 - math.cos(turn)) / kappa
    c, s = math.cos(state.yaw), math.sin(state.yaw)
    yaw = (state.yaw + turn + math.pi) % (2 * math.pi) - math.pi
    return replace(state, x=state.x + c * dx - s * dy, y=state.y + s * dx + c * dy, yaw=yaw, speed=speed,
                   steer=steer, accel=accel)
