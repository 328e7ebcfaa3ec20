"""The synthetic world: seeded drives, the expert's limits, what the cameras show, ground truth, the bag."""

import dataclasses
import json
import math
from functools import lru_cache

import numpy as np
import pytest

from alpamayo_ros.tools.make_sample_bag import HORIZON_ROW_FRACTION
from alpamayo_ros.tools.world import (
    COC_LABELS,
    EGO_FRONT_M,
    FUTURE_OFFSETS_S,
    FUTURE_POSES,
    FUTURE_S,
    GROUND_TRUTH_FILE,
    HISTORY_POSES,
    LAMP_ON,
    LATE_LINE_MARGIN_M,
    LIMITS,
    SCENARIOS,
    SIM_DT_S,
    STEP_S,
    World,
    make_scenario,
    write_bag,
)
from alpamayo_ros.tools.world import generate as generate_world

H, W = 96, 160  # the demo's image size
FRONT_WIDE, FRONT_TELE = 1, 3
SEEDS = range(4)


@lru_cache(maxsize=None)
def generate(scenario: str, seed: int) -> World:
    """generate(), once per test module (the drives are read, never changed)."""
    return generate_world(scenario, seed)


def test_a_seed_gives_the_same_drive_and_images_and_another_seed_another_drive():
    a, b, c = generate_world("mixed", 3), generate_world("mixed", 3), generate("mixed", 0)
    assert np.array_equal(a.drive.s, b.drive.s) and np.array_equal(a.drive.lead_s, b.drive.lead_s)
    pose = a.expert_pose(12.0)
    assert np.array_equal(a.render(pose, 12.0, H, W), b.render(pose, 12.0, H, W))
    assert a.coc_label(12.0) == b.coc_label(12.0)
    assert not np.array_equal(a.drive.s[:1000], c.drive.s[:1000])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_generates_with_the_expert_within_its_limits(scenario):
    for seed in SEEDS:
        world = generate(scenario, seed)
        d = world.drive
        lateral = d.v ** 2 * np.abs(np.interp(d.s, world.road.s, world.road.kappa))
        assert lateral.max() <= LIMITS.max_lateral_accel * 1.15, (seed, lateral.max())  # tracking lag only
        assert d.a.max() <= LIMITS.max_accel + 1e-9 and d.a.min() >= -LIMITS.max_decel - 1e-9
        assert (d.v >= 0).all() and np.all(np.diff(d.s) >= 0)
        assert world.route_length_m > 20.0


def red_times(world: World) -> np.ndarray:
    return np.array([world.light_state(t) == "red" for t in world.drive.t])


@pytest.mark.parametrize("scenario", ["red_light", "mixed"])
def test_the_expert_stops_before_the_line_on_red_with_comfortable_braking(scenario):
    for seed in SEEDS:
        world = generate(scenario, seed)
        d, red = world.drive, red_times(world)
        front = d.s + EGO_FRONT_M
        assert front[red].max() < world.stop_line_s, seed  # never past the line while red
        assert (d.v[red] == 0.0).any(), seed  # it does stop
        braking = red & (d.v > 0)
        assert d.a[braking].min() >= -LIMITS.dilemma_decel, seed


def test_light_changes_within_names_the_futures_that_span_a_change():
    world = next(w for w in (generate("red_light", seed) for seed in SEEDS) if len(w._changes) > 1)
    green_at = world._changes[1][0]
    assert world.light_changes_within(green_at - 0.1, FUTURE_S) and world.light_changes_within(green_at - 6.3, 6.4)
    assert not world.light_changes_within(green_at - 6.5, 6.4) and not world.light_changes_within(green_at, 6.4)


def test_as_seen_keeps_the_light_and_the_drive_up_to_t0_and_stops_for_the_red_it_shows():
    world = generate("red_light", 1)  # it stands at red before the light turns green at 15.6 s
    green_at = world._changes[1][0]
    d = world.drive
    standing = green_at - 1.0
    assert d.v[int(round(standing / SIM_DT_S))] == 0.0
    seen = world.as_seen(standing)
    assert seen.light_state(green_at + 1.0) == "red" and world.light_state(green_at + 1.0) == "green"
    k = int(round(standing / SIM_DT_S))
    np.testing.assert_array_equal(seen.drive.s[:k + 1], d.s[:k + 1])
    # it stays before the line and stands, where the expert drove off on green
    assert seen.drive.s.max() + EGO_FRONT_M < world.stop_line_s and seen.drive.v[-1] == 0.0 < d.v[-1]
    np.testing.assert_array_equal(seen.model_sample(standing, 8, 8).images, world.model_sample(standing, 8, 8).images)
    assert world.as_seen(green_at).drive.s[-1] == d.s[-1]  # after the change there is nothing left to hide


def test_on_green_the_expert_passes_the_line():
    for seed in SEEDS:
        world = generate("green_light", seed)
        assert world.drive.s[int(world.duration_s / SIM_DT_S)] + EGO_FRONT_M > world.stop_line_s, seed


@pytest.mark.parametrize("scenario", ["lead_brake", "mixed"])
def test_the_expert_never_collides_with_the_lead_vehicle(scenario):
    for seed in SEEDS:
        world = generate(scenario, seed)
        d = world.drive
        gap = d.lead_s - (d.s + EGO_FRONT_M)
        assert np.nanmin(gap) > 1.0, (seed, np.nanmin(gap))
        assert np.nanmin(d.lead_a) < -2.0, seed  # the lead does brake
        s_lead, _ = world.lead_vehicle(5.0)
        assert s_lead == pytest.approx(np.interp(5.0, d.t, d.lead_s))


def road_pixels(image: np.ndarray) -> np.ndarray:
    """Mask of asphalt-grey pixels (grass is green, haze and sky are bright)."""
    rgb = image.astype(int)
    return (np.abs(rgb[..., 1] - rgb[..., 0]) < 15) & (rgb[..., 1] < 150)


def one_curve_world(turn: float) -> World:
    """A straight start and, 35 m ahead, a 40 m radius curve (turn: +1 left, -1 right, 0 none)."""
    base = make_scenario("curve_left", 0)
    knots = ((0.0, 0.0), (35.0, 0.0), (45.0, turn / 40.0), (90.0, turn / 40.0), (100.0, 0.0))
    return World(dataclasses.replace(base, curvature=knots, ego_v0_mps=8.0))


def test_a_curve_is_visible_in_the_front_camera_before_the_car_reaches_it():
    columns = {}
    for turn in (1.0, 0.0, -1.0):
        world = one_curve_world(turn)
        pose = world.expert_pose(0.0)
        assert pose.yaw == 0.0 and pose.yaw_rate == 0.0  # the history and the car's state say: straight
        image = world.render(pose, 0.0, H, W)[FRONT_TELE]
        horizon = int(H * HORIZON_ROW_FRACTION)
        far = slice(horizon + 4, horizon + 12)  # the ground 40-100 m ahead
        _, cols = np.nonzero(road_pixels(image[far]))
        columns[turn] = cols.mean()
    # The far road bends: the tele camera's road pixels lie left of straight for a left curve, right for a right.
    assert columns[1.0] < columns[0.0] - 5 and columns[-1.0] > columns[0.0] + 5, columns


def lamp_pixels(image: np.ndarray, colour: str) -> int:
    return int((np.abs(image.astype(int) - np.array(LAMP_ON[colour])).max(axis=-1) < 30).sum())


def test_red_and_green_lamps_differ_in_the_front_cameras_from_braking_distance_to_the_stop():
    base = make_scenario("red_light", 0)
    for state in ("red", "green"):
        world = World(dataclasses.replace(base, stop_line_s=45.0, light_changes=((0.0, state),), ego_v0_mps=0.0,
                                          curvature=((0.0, 0.0),)))
        images = world.render(world.expert_pose(0.0), 0.0, H, W)
        other = "green" if state == "red" else "red"
        for cam in (FRONT_WIDE, FRONT_TELE):
            assert lamp_pixels(images[cam], state) >= 1 and lamp_pixels(images[cam], other) == 0, (state, cam)

        def seen_with_the_bumper(before_m: float) -> np.ndarray:
            x, y, _ = world.road.at(world.stop_line_s - before_m - EGO_FRONT_M)
            return world.render(dataclasses.replace(world.expert_pose(0.0), x=float(x), y=float(y)), 0.0, H, W)

        # it stays in view at the stop point; the head across the junction keeps it in the tele camera's view
        # there and 15 m out, where the near head has left it
        at_stop = seen_with_the_bumper(LIMITS.stop_margin_m)
        assert lamp_pixels(at_stop[FRONT_WIDE], state) >= 4, state
        for before_m, seen in ((15.0, seen_with_the_bumper(15.0)), (LIMITS.stop_margin_m, at_stop)):
            assert lamp_pixels(seen[FRONT_TELE], state) >= 4, (state, before_m)


def test_the_lead_vehicle_is_seen_ahead_with_brake_lights_when_it_brakes():
    world = generate("lead_brake", 0)
    braking_at = float(world.drive.t[np.argmax(world.drive.lead_a < -1.0)]) + 0.2
    before = world.render(world.expert_pose(1.0), 1.0, H, W)[FRONT_TELE]
    during = world.render(world.expert_pose(braking_at), braking_at, H, W)[FRONT_TELE]
    blue = lambda img: int(((img[..., 2] > 120) & (img[..., 0] < 60)).sum())  # noqa: E731  (sky: red 95)
    bright_red = lambda img: int(((img[..., 0] > 230) & (img[..., 1] < 60)).sum())  # noqa: E731
    assert blue(before) > 10 and blue(during) > 10
    assert bright_red(before) == 0 and bright_red(during) > 0
    assert world.brake_lights(1.0) is False and world.brake_lights(braking_at) is True
    assert generate("straight", 0).brake_lights(1.0) is None  # no lead vehicle


def test_model_sample_history_and_future_follow_the_ego_frame_conventions():
    world = generate("curve_left", 2)
    t0 = 4.0
    sample = world.model_sample(t0, H, W)
    assert sample.images.shape == (4, 4, H, W, 3) and sample.images.dtype == np.uint8
    assert sample.ego_history_xyz.shape == (HISTORY_POSES, 3) and sample.future_xyz.shape == (FUTURE_POSES, 3)
    assert sample.ego_history_xyz.dtype == np.float32 and sample.future_rot.dtype == np.float32
    np.testing.assert_allclose(sample.ego_history_xyz[-1], 0.0, atol=1e-6)
    np.testing.assert_allclose(sample.ego_history_rot[-1], np.eye(3), atol=1e-6)
    v0 = world.expert_pose(t0).speed
    assert sample.future_xyz[0, 0] == pytest.approx(v0 * STEP_S, abs=0.05)  # x forward
    assert sample.ego_history_xyz[0, 0] < -v0 * 1.2  # the past lies behind
    assert abs(sample.future_xyz[0, 1]) < 0.05
    # rotations match the path's heading: the left curve turns the future left (positive yaw, y > 0)
    yaw = np.arctan2(sample.future_rot[:, 1, 0], sample.future_rot[:, 0, 0])
    step = np.diff(np.concatenate([[[0.0, 0.0]], sample.future_xyz[:, :2]]), axis=0)
    np.testing.assert_allclose(yaw[1:], np.arctan2(step[1:, 1], step[1:, 0]), atol=0.02)
    assert sample.future_xyz[-1, 1] > 5.0
    # the last frame is the render at t0, the first at t0 - 0.3 s
    np.testing.assert_array_equal(sample.images[:, -1], world.render(world.expert_pose(t0), t0, H, W))
    np.testing.assert_array_equal(sample.images[:, 0], world.render(world.expert_pose(t0 - 0.3), t0 - 0.3, H, W))
    with pytest.raises(ValueError, match="history"):
        world.model_sample(1.0, H, W)


def test_labels_come_from_the_closed_set_name_their_cause_and_follow_the_drive():
    world = generate("mixed", 1)
    seen, first = set(), {}
    for t0 in np.arange(1.5, world.duration_s, 0.5):
        coc, cause = world.coc_label(float(t0))
        assert COC_LABELS[coc] == cause and cause in coc
        seen.add(cause)
        first.setdefault(coc, float(t0))
    assert {"red", "green", "lead vehicle"} <= seen and {"left curve", "right curve"} & seen, seen
    # a curve, a red light, green, then the lead vehicle brakes
    order = [first[label] for label in ("Decelerate to a stop because the traffic light ahead is red.",
                                        "Accelerate because the traffic light turned green.",
                                        "Decelerate because the lead vehicle ahead is braking.")]
    assert order == sorted(order), first
    red_at = next(at for at, state in world._changes if state == "red")
    stopped = float(world.drive.t[np.argmax((world.drive.t > red_at) & (world.drive.v == 0.0))])
    assert world.coc_label(stopped + 0.5)[0] == "Stay stopped because the traffic light is red."


def test_interesting_marks_futures_the_history_does_not_tell():
    world = generate("red_light", 1)
    flags = [world.model_sample(t0, 16, 16).interesting for t0 in (1.5, 3.0)]
    straight = generate("straight", 1)  # constant speed: nothing to see
    assert not straight.model_sample(5.0, 16, 16).interesting
    assert any(flags)


def test_lane_offset_measures_from_the_ego_lane_centre():
    world = generate("curve_right", 1)
    pose = world.expert_pose(8.0)
    s, d = world.lane_offset(pose.x, pose.y)
    assert s == pytest.approx(np.interp(8.0, world.drive.t, world.drive.s), abs=0.01) and abs(d) < 0.01
    left = world.lane_offset(pose.x - np.sin(pose.yaw), pose.y + np.cos(pose.yaw))
    assert left[1] == pytest.approx(1.0, abs=0.01)
    # the closed loop may put the car anywhere: far off the road the cameras see grass and sky only
    lost = dataclasses.replace(pose, x=pose.x + 300.0, y=pose.y - 300.0, yaw=pose.yaw + 2.0)
    assert not road_pixels(world.render(lost, 8.0, H, W)).any()


def short_world(seconds: float = 3.0) -> World:
    return World(dataclasses.replace(make_scenario("red_light", 1), duration_s=seconds))


def test_the_bag_reads_back_with_ground_truth_beside_it(tmp_path):
    from alpamayo_ros.tools.bag_io import alpamayo_typestore, open_bag
    from alpamayo_ros.tools.make_sample_bag import camera_topics_of

    world = short_world()
    bag = write_bag(world, tmp_path / "bag", H, W)
    reader = open_bag([bag], alpamayo_typestore())
    try:
        counts = {c.topic: c.msgcount for c in reader.connections}
        odom = [c for c in reader.connections if c.topic == "/odom"]
        _, stamp, raw = next(iter(reader.messages(connections=odom)))
        msg = reader.deserialize(raw, odom[0].msgtype)
    finally:
        reader.close()
    assert all(counts[topic] == 31 for topic in camera_topics_of(raw=False))  # 3 s at 10 Hz
    assert counts["/odom"] == 151 and counts["/tf"] == 151 and counts["/tf_static"] == 1
    assert (msg.header.frame_id, msg.child_frame_id) == ("odom", "base_link")
    assert msg.twist.twist.linear.x == pytest.approx(world.expert_pose(0.0).speed)
    truth = json.loads((bag / GROUND_TRUTH_FILE).read_text())
    assert len(truth["ticks"]) == 31 and truth["scenario"] == "red_light"
    tick = truth["ticks"][20]
    sample_future = world.trajectory_in_ego(2.0, 2.0 + FUTURE_OFFSETS_S)[0]
    np.testing.assert_allclose(tick["future_xyz"], sample_future[:, :2], atol=1e-3)
    assert tick["coc"] == world.coc_label(2.0)[0] and tick["t0_ns"] - truth["ticks"][0]["t0_ns"] == 2_000_000_000


def test_the_lockstep_replay_accepts_the_bag(tmp_path, tiny_model):
    pytest.importorskip("rclpy", reason="rclpy is not installed")
    pytest.importorskip("alpamayo_msgs.msg", reason="alpamayo_msgs is not built (make test builds it)")
    from alpamayo_ros import parameters
    from alpamayo_ros.tools.replay import replay_lockstep

    bag = write_bag(short_world(2.5), tmp_path / "bag", H, W)
    cfg = parameters.from_values({"device": "cpu", "dtype": "float32", "image_transport": "compressed",
                                  "max_reasoning_tokens": 4, "num_samples": 1, "rate_hz": 2.0})
    counts, _ = replay_lockstep(bag, tmp_path / "out", cfg, model=tiny_model)
    # inputs need 1.5 s of history: t0 of 1.5, 2.0 and 2.5 s
    assert counts.published == 3 and counts.dropped == 0, counts.summary()


def test_unknown_scenarios_and_existing_output_directories_are_refused(tmp_path, capsys):
    from alpamayo_ros.tools.world import main

    with pytest.raises(ValueError, match="unknown scenario 'snow'"):
        make_scenario("snow", 0)
    with pytest.raises(SystemExit):
        main(["straight", "--seed", "1", str(tmp_path)])
    assert "exists" in capsys.readouterr().err


def test_an_off_centre_sample_drives_parallel_then_returns_to_the_lane_centre():
    from alpamayo_ros.tools.world import RECOVERY_M

    world = generate_world("straight", 5)
    centre, off = world.model_sample(5.0, H, W), world.model_sample(5.0, H, W, offset_m=1.2)
    np.testing.assert_allclose(off.ego_history_xyz, centre.ego_history_xyz, atol=1e-4)  # parallel to the lane
    np.testing.assert_allclose(off.future_xyz[:, 0], centre.future_xyz[:, 0], atol=1e-3)
    back = np.cumsum(np.linalg.norm(np.diff(centre.future_xyz[:, :2], axis=0), axis=1)) >= RECOVERY_M
    assert back.any() and np.allclose(off.future_xyz[1:][back, 1], -1.2, atol=1e-3)  # on the centre, 1.2 m right
    assert np.all(np.diff(off.future_xyz[:, 1]) <= 1e-6)  # one smooth move to the right
    assert off.coc == centre.coc and not np.array_equal(off.images, centre.images)
    assert np.array_equal(world.model_sample(5.0, H, W, offset_m=0.0).images, centre.images)


def test_a_late_ego_arrives_faster_and_still_stops_before_the_line_braking_harder_than_the_expert():
    world = generate("red_light", 1000)  # the expert stops for red within 6.4 s of t0
    t0 = 6.0
    late = world.late(t0, ahead_m=5.0, fast_mps=3.0)
    expert, driver = world.model_sample(t0, 8, 8), late.model_sample(t0, 8, 8)
    assert (late.late_m, late.late_mps) == (5.0, 3.0) and (world.late_m, world.late_mps) == (0.0, 0.0)
    speed = lambda xyz: np.linalg.norm(xyz[-1, :2] - xyz[-2, :2]) / STEP_S  # noqa: E731
    assert speed(driver.ego_history_xyz) == pytest.approx(speed(expert.ego_history_xyz) + 3.0, abs=0.05)
    # both stop at the expert's stop point: the late ego, 5 m further along, has 5 m less to go
    assert driver.future_xyz[-1, 0] == pytest.approx(expert.future_xyz[-1, 0] - 5.0, abs=0.05)
    assert late.drive.a.min() < -LIMITS.light_decel - 1.0 <= world.drive.a[world.drive.t <= world.duration_s].min()
    assert driver.coc == expert.coc and not np.array_equal(driver.images, expert.images)
    # the light, the lead and the expert's own drive are untouched; the late world renders the late ego
    assert late.light_changes == world.light_changes and world.drive.s[0] == 0.0
    assert np.array_equal(world.model_sample(t0, 8, 8).future_xyz, expert.future_xyz)


def test_a_ramped_late_ego_arrives_at_the_same_state_with_another_history_acceleration():
    world = generate("red_light", 1)
    t0 = 6.0
    plain, ramped = world.late(t0, 2.0, 1.0), world.late(t0, 2.0, 1.0, ramp_mps2=-1.5)
    assert (ramped.late_m, ramped.late_mps, ramped.late_mps2) == (2.0, 1.0, -1.5) and plain.late_mps2 == 0.0
    a, b = plain.model_sample(t0, 8, 8), ramped.model_sample(t0, 8, 8)
    np.testing.assert_allclose(b.future_xyz, a.future_xyz, atol=1e-5)  # the same state at t0, the same future
    speed = lambda xyz: np.linalg.norm(np.diff(xyz[:, :2], axis=0), axis=1) / STEP_S  # noqa: E731
    # at the history's start (1.45 s before t0, mid-step) it was 1.45 x 1.5 m/s faster: it braked 1.5 m/s^2 harder since
    assert speed(b.ego_history_xyz)[0] - speed(a.ego_history_xyz)[0] == pytest.approx(1.5 * 1.4, abs=0.1)
    assert speed(b.ego_history_xyz)[-1] == pytest.approx(speed(a.ego_history_xyz)[-1], abs=0.1)
    # a ramp that would make the ego stand still or reverse in its history is cut where its speed reaches zero
    assert 0.0 < world.late(t0, 0.0, 0.0, ramp_mps2=100.0).late_mps2 < 100.0


def test_a_late_ego_never_starts_inside_the_lead_or_beyond_the_point_where_it_could_stop():
    lead = generate("lead_brake", 1)
    t0 = 8.0
    gap = lead.lead_vehicle(t0)[0] - lead.expert_pose(t0).x - EGO_FRONT_M  # straight road along +x
    late = lead.late(t0, ahead_m=1000.0, fast_mps=2.0)
    assert late.late_m == pytest.approx(gap - LIMITS.standstill_gap_m, abs=0.5)
    red = generate("red_light", 0)
    k = int(round(6.0 / SIM_DT_S))
    late = red.late(6.0, ahead_m=1000.0, fast_mps=2.0)
    front = red.drive.s[k] + late.late_m + EGO_FRONT_M
    v = red.drive.v[k] + 2.0
    assert front + v * v / (2 * LIMITS.max_decel) == pytest.approx(red.stop_line_s - LIMITS.stop_margin_m, abs=1e-6)
    while_red = [late.light_state(float(tk)) == "red" for tk in late.drive.t]
    assert late.drive.s[while_red].max() + EGO_FRONT_M <= red.stop_line_s - LIMITS.stop_margin_m + 0.01  # 10 ms steps
    assert red.late(6.0, 0.0, -100.0).late_mps == -red.drive.v[k - int(round(1.5 / SIM_DT_S)):k + 1].min()


def test_a_late_ego_at_the_stop_point_still_moving_stops_before_the_red_line():
    # The expert stands at its stop point; a late ego there still moving must brake, not roll over the line (it
    # used to keep its speed past the stop point, and the examples taught running the light from a metre short).
    world = generate("red_light", 1).as_seen(13.2)  # standing at red from 9.3 s; the light stays red after t0
    k = int(round(13.2 / SIM_DT_S))
    front = world.drive.s[k] + EGO_FRONT_M
    assert world.drive.v[k] == 0.0 and front == pytest.approx(world.stop_line_s - LIMITS.stop_margin_m, abs=0.01)
    for fast in (0.7, 3.0, 10.0):
        late = world.late(13.2, ahead_m=5.0, fast_mps=fast)
        assert late.late_m == 0.0  # no room left before the stop point
        reach = world.stop_line_s - LATE_LINE_MARGIN_M - front  # the fastest it may arrive stops there at max_decel
        assert late.late_mps == pytest.approx(min(fast, math.sqrt(2 * LIMITS.max_decel * reach)), abs=1e-9)
        after = late.drive.t >= 13.2
        assert late.drive.s[after].max() + EGO_FRONT_M <= world.stop_line_s - LATE_LINE_MARGIN_M + 0.01
        assert late.drive.v[-1] == 0.0 and late.drive.a[after].min() == -LIMITS.max_decel
    # every late ego of a red-light drive, at every t0 where the light is red and the expert before the line, stays
    # before it while the light is red
    red = generate("red_light", 0)
    while_red = np.array([red.light_state(float(tk)) == "red" for tk in red.drive.t])  # late keeps the light
    for t0 in np.arange(2.0, red.duration_s, 0.5):
        k = int(round(t0 / SIM_DT_S))
        if not while_red[k] or red.drive.s[k] + EGO_FRONT_M >= red.stop_line_s:
            continue
        for ahead, fast in ((0.0, 1.0), (0.0, 4.0), (20.0, 4.0), (0.0, -1.0)):
            late = red.late(float(t0), ahead, fast, ramp_mps2=0.5)
            assert late.drive.s[while_red & (late.drive.t >= t0)].max() + EGO_FRONT_M < red.stop_line_s, (t0, ahead, fast)


def test_a_drifting_sample_arrives_off_the_lane_heading_away_and_bends_back_onto_the_centre():
    from alpamayo_ros.tools.world import RECOVERY_M

    world = generate_world("straight", 5)  # a straight road along +x: the ego frame's y is the lateral offset
    heading, curvature = 0.04, 0.004  # drifting left, and turning left
    centre, drift = world.model_sample(5.0, 8, 8), world.model_sample(5.0, 8, 8, offset_m=0.5,
                                                                      drift=(heading, curvature))
    x = centre.ego_history_xyz[:, 0].astype(float)  # arc length from t0 (negative) along the lane
    lateral = 0.5 + np.tan(heading) * x + 0.5 * curvature * x * x  # the history's offset, in the lane's frame
    yaw = np.arctan(np.tan(heading) + curvature * x)
    expected_y = np.cos(yaw[-1]) * (lateral - 0.5) - np.sin(yaw[-1]) * x  # the ego frame at t0 is rotated by yaw(t0)
    np.testing.assert_allclose(drift.ego_history_xyz[:, 1], expected_y, atol=2e-3)
    # after RECOVERY_M of road it is back on the centre (0.5 m to its right in the t0 frame, rotated), heading along
    along = np.cumsum(np.linalg.norm(np.diff(drift.future_xyz[:, :2], axis=0), axis=1))
    back = np.flatnonzero(along >= RECOVERY_M + 1.0) + 1
    assert len(back) and np.allclose(np.arctan2(drift.future_rot[back, 1, 0], drift.future_rot[back, 0, 0]),
                                     -yaw[-1], atol=1e-3)
    assert drift.coc == centre.coc and not np.array_equal(drift.images, centre.images)
    assert np.array_equal(world.model_sample(5.0, 8, 8, offset_m=0.5, drift=(0.0, 0.0)).future_xyz,
                          world.model_sample(5.0, 8, 8, offset_m=0.5).future_xyz)


def test_the_lane_ahead_is_where_the_road_bends_seen_from_the_car():
    curve = generate("curve_right", 1001)  # a right curve from 47 m
    before, inside = (curve.lane_ahead(curve.expert_pose(t0), [10.0, 40.0]) for t0 in (0.0, 5.8))
    assert before == pytest.approx([0.0, 0.0], abs=1e-6)  # 40 m of straight road ahead
    assert inside[1] < inside[0] < 0.0  # bending right, more the farther ahead
    pose = curve.expert_pose(0.0)
    moved = dataclasses.replace(pose, y=pose.y + 0.7)  # the car 0.7 m left of the centre: the lane is to its right
    assert curve.lane_ahead(moved, [10.0]) == pytest.approx([-0.7], abs=1e-6)


def test_the_far_lane_bearing_shows_a_curve_before_it_begins():
    curve = generate("curve_right", 1001)  # a right curve from 47 m
    pose = curve.expert_pose(0.0)
    near, far = curve.lane_bearing(pose, [40.0, 80.0])
    assert near == pytest.approx(0.0, abs=1e-6)  # 40 m of straight road ahead ...
    assert far < -0.04  # ... and the bend shows at 80 m (its clothoid begins at 47 m)
    x, y, _ = curve.road.at(curve.lane_offset(pose.x, pose.y)[0] + 80.0)
    seen = math.atan2(y - pose.y, x - pose.x) - pose.yaw  # the same point, bearing from the world frame
    assert far == pytest.approx(seen, abs=1e-6)
    inside = curve.expert_pose(5.8)  # turned right already: the bearing is measured from the car's heading
    x, y, _ = curve.road.at(curve.lane_offset(inside.x, inside.y)[0] + 60.0)
    turned = math.atan2(y - inside.y, x - inside.x) - inside.yaw
    assert inside.yaw < -0.05
    assert curve.lane_bearing(inside, [60.0])[0] == pytest.approx(math.remainder(turned, math.tau), abs=1e-6)
    straight = generate("straight", 0)
    assert straight.lane_bearing(straight.expert_pose(3.0), [60.0, 80.0]) == pytest.approx([0.0, 0.0], abs=1e-6)


def test_the_distances_ahead_are_road_from_the_front_bumper_to_the_stop_line_and_the_lead():
    light, lead = generate("red_light", 1000), generate("lead_brake", 1000)
    pose = light.expert_pose(2.0)
    s, _ = light.lane_offset(pose.x, pose.y)
    line, none = light.distances_ahead(pose, 2.0, 200.0)
    assert line == pytest.approx(light.stop_line_s - s - EGO_FRONT_M, abs=1e-6) and math.isnan(none)
    assert math.isnan(light.distances_ahead(pose, 2.0, line - 1.0)[0])  # beyond the range
    past = light.expert_pose(light.duration_s)  # the line behind the car
    assert light.road.project(np.array([past.x]), np.array([past.y]))[0][0] > light.stop_line_s
    assert math.isnan(light.distances_ahead(past, light.duration_s, 200.0)[0])
    pose = lead.expert_pose(4.0)
    no_line, gap = lead.distances_ahead(pose, 4.0, 200.0)
    assert math.isnan(no_line)
    assert gap == pytest.approx(lead.lead_vehicle(4.0)[0] - lead.lane_offset(pose.x, pose.y)[0] - EGO_FRONT_M, abs=1e-6)
