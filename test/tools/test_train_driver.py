"""Training on the synthetic world: a few steps lower both losses; the scene probe; the learning-rate schedule;
late, early, drifting and mirrored examples; ordinal trajectory-token rows."""

import dataclasses
import types

import numpy as np
import pytest
import torch
from safetensors import safe_open

from alpamayo_ros.model.loading import save_pretrained, tiny
from alpamayo_ros.model.training import flow_matching_loss, make_batch, training_losses
from alpamayo_ros.tools import world
from alpamayo_ros.tools.driver_data import DISTANCE_RANGE_M, TRAIN_SEEDS, drive_examples, t0_grid
from alpamayo_ros.tools.train_driver import SceneProbe, latest_frames_embeds, learning_rate

STEPS = 6  # enough to fit one fixed batch; each step is a full VLM + expert pass (CI budget)
LR = 2e-3


def test_a_few_steps_lower_both_losses():
    """The tiny random model, one fixed batch of two world samples, fixed flow draws: both losses fall."""
    model = tiny(seed=0).train()
    drive = world.generate("red_light", TRAIN_SEEDS[0])
    examples = [e.training_example() for e in drive_examples(drive, [3.0, 6.0], height=64, width=96)]
    with torch.no_grad():
        action_shape = make_batch(model, examples).action.shape
    generator = torch.Generator().manual_seed(0)
    t = torch.rand(action_shape[0], 1, 1, generator=generator)
    noise = torch.randn(action_shape, generator=generator)
    optimiser = torch.optim.AdamW(model.parameters(), lr=LR)
    history = []
    for _ in range(STEPS):
        losses = training_losses(model, make_batch(model, examples), t=t, noise=noise)
        optimiser.zero_grad()
        (losses.vlm + losses.flow).backward()
        optimiser.step()
        history.append((losses.vlm.item(), losses.flow.item()))
    (vlm_first, flow_first), (vlm_last, flow_last) = history[0], history[-1]
    assert vlm_last < 0.8 * vlm_first, history
    assert flow_last < 0.8 * flow_first, history


def test_learning_rate_warms_up_then_decays_to_the_minimum():
    assert learning_rate(0, 100, 1e-3, 10, 1e-5) == 1e-4
    assert learning_rate(9, 100, 1e-3, 10, 1e-5) == 1e-3
    assert abs(learning_rate(100, 100, 1e-3, 10, 1e-5) - 1e-5) < 1e-12


def _train_arguments(monkeypatch, tmp_path, *flags: str) -> dict:
    """The keyword arguments `train_driver.main` gives `train` for `flags` (train itself not run)."""
    from alpamayo_ros.tools import train_driver

    seen = {}
    monkeypatch.setattr(train_driver, "train", lambda *a, **k: seen.update(k) or
                        {"log": [], "examples": 0, "render_s": 0.0, "steps": 0, "train_s": 0.0})
    train_driver.main([str(tmp_path / "out"), *flags])
    return seen


@pytest.mark.parametrize("pooling", ["attention", "mean", "per-head"])
def test_the_scene_probe_learns_from_the_vision_tower_and_is_not_saved(tmp_path, pooling):
    """Stage 0 (`--scene-steps`): the vision tower and the probe (either `--scene-pooling`) fit a fixed batch's
    causes, lane offsets, (`--scene-lane`) the lane ahead, (`--scene-far-lane`) its bearing beyond and
    (`--scene-distances`) the stop line's distance (no lead vehicle here: that target and `--scene-brake-lights`'
    are absent, NaN, and cost nothing); the probe is a training aid, so the written
    checkpoint holds exactly the model's own tensors."""
    model = tiny(seed=0).train()
    drive = world.generate("red_light", TRAIN_SEEDS[0])
    examples = list(drive_examples(drive, [3.0, 9.0], height=64, width=96, offsets=[0.0, 1.0]))
    assert {e.cause for e in examples} == {"road ahead is clear", "red"}, [e.coc for e in examples]
    probe = SceneProbe(model.vlm.config.text_config.hidden_size, lane=True, pooling=pooling, distances=True,
                       far=True, brakes=True)
    assert all(len(e.far_bearing) == 2 and np.isnan(e.brake_lights) for e in examples)  # no lead: no brake target
    assert examples[1].lane_ahead == pytest.approx([-1.0] * 4, abs=1e-6)  # 1 m left of the centre of a straight
    travelled = np.interp(9.0, drive.drive.t, drive.drive.s) - np.interp(3.0, drive.drive.t, drive.drive.s)
    (line_before, no_lead), (line_after, _) = (e.distances for e in examples)
    assert line_before - line_after == pytest.approx(travelled, abs=1e-3) and np.isnan(no_lead)
    parameters = [*model.vlm.model.visual.parameters(), *probe.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=LR)
    history = []
    for _ in range(STEPS):
        loss, _ = probe.loss(latest_frames_embeds(model, examples), examples)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(loss.item())
    assert history[-1] < 0.8 * history[0], history
    save_pretrained(model.eval(), tmp_path)
    with safe_open(tmp_path / "model-00001-of-00001.safetensors", "pt") as saved:
        assert set(saved.keys()) == set(model.state_dict())


def test_the_scene_distance_range_and_scale_set_the_probes_distance_target(tmp_path, monkeypatch):
    """`--scene-distance-range M`: the probe's distance target is the stop line's distance up to M and M beyond
    it; `--scene-distance-scale U`: in units of U metres. The defaults (DISTANCE_RANGE_M, every distance
    recorded; DISTANCE_SCALE_M) leave the target as it was; both options reach `train` (a range outside (0,
    DISTANCE_RANGE_M] and a scale not above 0 are refused: below)."""
    from alpamayo_ros.tools import train_driver

    drive = world.generate("red_light", TRAIN_SEEDS[0])
    examples = list(drive_examples(drive, [1.5, 9.0], height=64, width=96))
    (far, _), (near, _) = (e.distances for e in examples)
    assert near < far < DISTANCE_RANGE_M
    tokens = torch.zeros(len(examples) * 8, 128)

    def distance_loss(**range_m) -> float:  # heads all zero: the distance term is the targets' mean square
        probe = SceneProbe(128, distances=True, **range_m)
        for head in (probe.cause, probe.offset, probe.distances):
            torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
        without = SceneProbe(128)
        for head in (without.cause, without.offset):
            torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
        with torch.no_grad():
            return (probe.loss(tokens, examples)[0] - without.loss(tokens, examples)[0]).item()

    scale, middle = train_driver.DISTANCE_SCALE_M, (near + far) / 2
    assert distance_loss() == pytest.approx(((near / scale) ** 2 + (far / scale) ** 2) / 2, rel=1e-5)
    assert distance_loss(distance_range=middle) == pytest.approx(((near / scale) ** 2 + (middle / scale) ** 2) / 2,
                                                                 rel=1e-5)
    assert distance_loss(distance_range=middle, distance_scale=5.0) == pytest.approx(
        ((near / 5.0) ** 2 + (middle / 5.0) ** 2) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="distance range"):
        SceneProbe(128, distances=True, distance_range=0.0)
    with pytest.raises(ValueError, match="distance scale"):
        SceneProbe(128, distances=True, distance_scale=0.0)

    defaults = _train_arguments(monkeypatch, tmp_path)
    assert (defaults["scene_distance_range"], defaults["scene_distance_scale"]) == (DISTANCE_RANGE_M, scale)
    assert _train_arguments(monkeypatch, tmp_path, "--scene-distance-range", "60")["scene_distance_range"] == 60.0
    assert _train_arguments(monkeypatch, tmp_path, "--scene-distance-scale", "10")["scene_distance_scale"] == 10.0


def _examples_as_tuples(monkeypatch) -> None:
    """`build_examples` without rendering: each example is (scenario, t0, offset, late, drift)."""
    from alpamayo_ros.tools import train_driver

    monkeypatch.setattr(train_driver, "drive_examples", lambda drive, t0s, height=None, width=None, **kw:
                        [(drive.scenario, t0, *args) for t0, *args in zip(t0s, kw["offsets"], kw["lates"],
                                                                           kw["drifts"], strict=True)])


def _stride_and_dense(monkeypatch, **dense_option) -> tuple[list, list]:
    """(the stride's examples, the ones a --dense-* option adds) of one drive per scenario; asserts that the
    stride's examples stay as they are, in order, and that the added ones are centred (no offset, lateness or
    drift)."""
    from alpamayo_ros.tools import train_driver

    _examples_as_tuples(monkeypatch)
    options = dict(offset_share=0.4, max_offset_m=1.5, late_share=0.3, max_drift=(0.05, 0.006))
    plain = train_driver.build_examples(1, 4, **options)
    dense = train_driver.build_examples(1, 4, **dense_option, **options)
    extra = [e for e in dense if e not in plain]
    assert [e for e in dense if e in plain] == plain and len(dense) == len(plain) + len(extra)
    assert all(e[2:] == (0.0, (0.0, 0.0), (0.0, 0.0)) for e in extra)
    return plain, extra


def test_the_examples_add_late_early_and_drifting_egos_from_their_own_streams(monkeypatch):
    """Late and drifting examples come from their own random streams: without them the examples are those of
    before; with them, a share of the centred ones is late (a share of those early instead: slower and further
    along) and every off-centre one drifts, within the bounds."""
    from alpamayo_ros.tools import train_driver

    _examples_as_tuples(monkeypatch)
    monkeypatch.setattr(world, "generate", _NoImages)
    plain = train_driver.build_examples(3, 4, offset_share=0.25, max_offset_m=1.5)
    more = train_driver.build_examples(3, 4, offset_share=0.25, max_offset_m=1.5, late_share=0.3,
                                       max_drift=(0.05, 0.006))
    assert [e[:3] for e in plain] == [e[:3] for e in more]  # the same t0s and offsets
    assert all(e[3] == (0.0, 0.0) and e[4] == [0.0, 0.0] for e in plain)
    late = [e for e in more if e[3] != (0.0, 0.0)]
    assert all(e[2] == 0.0 for e in late) and 0.15 < len(late) / sum(e[2] == 0.0 for e in more) < 0.45
    for _, _, _, (ahead, fast), _ in late:
        assert train_driver.LATE_MPS[0] <= fast <= train_driver.LATE_MPS[1]
        assert min(train_driver.LATE_S) * abs(fast) - 1e-9 <= abs(ahead) <= max(train_driver.LATE_S) * abs(fast) + 1e-9
    drifting = [e for e in more if e[2] != 0.0]
    assert drifting and all(e[4] != [0.0, 0.0] and abs(e[4][0]) <= 0.05 and abs(e[4][1]) <= 0.006 for e in drifting)
    ramped = train_driver.build_examples(3, 4, offset_share=0.25, max_offset_m=1.5, late_share=0.3,
                                         max_drift=(0.05, 0.006), late_ramp=1.5)
    assert [e[3] for e in more] == [e[3][:2] for e in ramped]  # the same late egos, each with its ramp
    assert all((abs(e[3][2]) <= 1.5) and (e[3][2] != 0.0) == (e[3][:2] != (0.0, 0.0)) for e in ramped)
    early = train_driver.build_examples(3, 4, offset_share=0.25, max_offset_m=1.5, late_share=0.3,
                                        max_drift=(0.05, 0.006), early_share=0.5)
    assert [e[:3] + e[4:] for e in more] == [e[:3] + e[4:] for e in early]  # only late egos turn early
    turned = [(e[3], m[3]) for e, m in zip(early, more) if e[3] != m[3]]
    assert all(m != (0.0, 0.0) for _, m in turned) and 0.3 < len(turned) / len(late) < 0.7
    for ahead, fast in (e for e, _ in turned):  # slower than the expert (10 m/s here) and further along
        assert -_NoImages.SPEED_MPS <= fast <= (max(train_driver.EARLY_SPEED) - 1.0) * _NoImages.SPEED_MPS + 1e-9
        assert min(train_driver.EARLY_AHEAD_M) <= ahead <= max(train_driver.EARLY_AHEAD_M)


def test_dense_stops_add_the_centred_moments_braking_for_or_standing_at_a_light_or_a_lead(monkeypatch):
    """`--dense-stops K`: the stride's examples stay as they are, and each drive adds its every K-th grid t0 where
    the expert brakes for or stands at a light or a lead below DENSE_STOP_MPS, centred, once."""
    from alpamayo_ros.tools import train_driver

    plain, extra = _stride_and_dense(monkeypatch, dense_stops=2)
    assert {e[0] for e in extra} == {"red_light", "lead_brake", "mixed"}
    speeds = []
    for name in ("red_light", "lead_brake", "mixed"):
        drive = world.generate(name, TRAIN_SEEDS[0])
        t0s = [e[1] for e in extra if e[0] == name]
        assert len(set(t0s)) == len(t0s) and not set(t0s) & {e[1] for e in plain if e[0] == name}
        assert set(t0s) <= set(t0_grid(drive, 2, phase=world.SCENARIOS.index(name) % 2))  # every 2nd grid step
        steps = [int(round(t0 / world.SIM_DT_S)) for t0 in t0s]
        assert all(drive.drive.binding[k] in ("light", "lead") for k in steps)
        speeds += [drive.drive.v[k] for k in steps]
    assert max(speeds) < train_driver.DENSE_STOP_MPS and min(speeds) == 0.0 and np.mean(np.array(speeds) > 1.0) > 0.3


def test_dense_late_stops_reach_the_last_metres_still_moving(monkeypatch):
    """`--dense-late SHARE`: that share of the dense stops has a late ego, drawn as the stride's late ones are, from
    its own stream (the other examples and the dense curves stay as they were); on a red light the late egos reach
    the last metres before the line still moving, and none crosses it on red."""
    from alpamayo_ros.tools import train_driver

    monkeypatch.setattr(train_driver, "drive_examples", lambda drive, t0s, height=None, width=None, **kw:
                        [(drive.scenario, drive.seed, t0, late) for t0, late in zip(t0s, kw["lates"], strict=True)])
    options = dict(offset_share=0.4, max_offset_m=1.5, late_share=0.3, max_drift=(0.05, 0.006), dense_stops=2,
                   dense_curves=2)
    centred, late, ramped, half = (train_driver.build_examples(2, 4, dense_late=share, late_ramp=ramp, **options)
                                   for share, ramp in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (0.5, 1.0)))
    without = train_driver.build_examples(2, 4, **{**options, "dense_stops": 0})
    drives = [(name, TRAIN_SEEDS[i]) for i in range(2) for name in world.SCENARIOS]
    stops = {(name, seed, t0) for k, (name, seed) in enumerate(drives)
             for t0 in train_driver.stop_t0s(world.generate(name, seed), 2, phase=k % 2)}
    dense_stops = [e for e in centred if e not in without and e[:3] in stops]
    assert dense_stops and all(e[3] == (0.0, 0.0) for e in dense_stops)
    assert [e[:3] for e in centred] == [e[:3] for e in late] == [e[:3] for e in half]
    changed = [(c, e) for c, e in zip(centred, late) if c != e]
    assert [c for c, _ in changed] == dense_stops  # every dense stop, and nothing else
    for _, (_, _, _, (ahead, fast)) in changed:
        assert train_driver.LATE_MPS[0] <= fast <= train_driver.LATE_MPS[1]
        assert min(train_driver.LATE_S) * abs(fast) - 1e-9 <= abs(ahead) <= max(train_driver.LATE_S) * abs(fast) + 1e-9
    halved = [h for c, e, h in zip(centred, late, half) if c != e and h[3][:2] == e[3]]
    assert all(abs(h[3][2]) <= 1.0 for h in halved) and 0.25 < len(halved) / len(changed) < 0.75
    assert all(h == r for r, h in zip(ramped, half) if h not in halved)  # the others as without the option
    drive = world.generate("red_light", TRAIN_SEEDS[1])
    moving_near = 0
    for _, _, t0, (ahead, fast) in (e for _, e in changed if e[:2] == ("red_light", TRAIN_SEEDS[1])):
        if drive.light_state(t0) != "red":
            continue
        d = drive.late(t0, ahead, fast).drive
        k0 = int(round(t0 / world.SIM_DT_S))
        gap = drive.stop_line_s - d.s[k0] - world.EGO_FRONT_M
        moving_near += bool(0.0 < gap < 8.0 and d.v[k0] > 0.05)
        red = [k for k in range(k0, len(d.t)) if drive.light_state(float(d.t[k])) == "red"]
        assert all(d.s[k] + world.EGO_FRONT_M < drive.stop_line_s for k in red), f"t0={t0}: crosses on red"
    assert moving_near >= 5


def test_rolling_stops_add_a_car_still_rolling_where_the_expert_stands_and_it_stops_before_the_line(monkeypatch):
    """`--rolling-stops K`: the other examples stay as they are, and each drive adds its every K-th grid t0 where the
    expert stands held by a light or a lead, with an ego still rolling there at walking pace a little behind it (its
    own stream); at a red light that ego is moving at t0, slows (mostly to rest within the 6.4 s) and never crosses on red."""
    from alpamayo_ros.tools import train_driver

    monkeypatch.setattr(train_driver, "drive_examples", lambda drive, t0s, height=None, width=None, **kw:
                        [(drive.scenario, drive.seed, t0, late) for t0, late in zip(t0s, kw["lates"], strict=True)])
    options = dict(offset_share=0.4, max_offset_m=1.5, late_share=0.3, max_drift=(0.05, 0.006), late_ramp=1.0,
                   light_futures="as-seen")
    plain = train_driver.build_examples(2, 4, **options)
    rolled = train_driver.build_examples(2, 4, rolling_stops=2, **options)
    assert [e for e in rolled if e in plain] == plain  # the others, in their order
    extra = [e for e in rolled if e not in plain]
    drives = [(name, TRAIN_SEEDS[i]) for i in range(2) for name in world.SCENARIOS]
    standing = {(name, seed, t0) for k, (name, seed) in enumerate(drives)
                for t0 in train_driver.stop_t0s(world.generate(name, seed), 2, phase=k % 2,
                                                below_mps=train_driver.STANDING_MPS)}
    assert len(extra) == len(standing) and {e[:3] for e in extra} == standing
    assert {e[0] for e in extra} >= {"red_light", "mixed"} and "straight" not in {e[0] for e in extra}
    moving_red = resting = 0
    for name, seed, t0, (ahead, fast, ramp) in extra:
        assert train_driver.ROLLING_MPS[0] <= fast <= train_driver.ROLLING_MPS[1] and abs(ramp) <= 1.0
        assert -train_driver.ROLLING_BACK_M[1] <= ahead <= -train_driver.ROLLING_BACK_M[0]
        drive = world.generate(name, seed)
        k0 = int(round(t0 / world.SIM_DT_S))
        assert drive.drive.v[k0] < train_driver.STANDING_MPS and drive.drive.binding[k0] in ("light", "lead")
        if name != "red_light":
            continue
        seen = train_driver._light_world(drive, t0, "as-seen")
        d = seen.late(t0, ahead, fast, ramp).drive
        red = [k for k in range(k0, len(d.t)) if seen.light_state(float(d.t[k])) == "red"]
        assert all(d.s[k] + world.EGO_FRONT_M < seen.stop_line_s for k in red), f"{seed} t0={t0}: crosses on red"
        end = k0 + int(round(world.FUTURE_S / world.SIM_DT_S))
        if seen.light_state(t0) == "red" and red[-1] >= end:  # red through the whole future
            assert d.v[k0] >= train_driver.ROLLING_MPS[0] - 1e-9 and d.v[end] <= d.v[k0]
            moving_red += 1
            resting += d.v[end] == 0.0
    assert moving_red >= 10 and resting >= moving_red / 2


def test_the_expert_margins_reach_every_training_drive_and_its_stops(monkeypatch, tmp_path):
    """`--stop-margin`, `--standstill-gap` and `--time-gap` set the limits every training drive's expert drives with
    (the world's by default): it then rests that far before a red line and stays at least that far behind the lead."""
    from alpamayo_ros.tools import train_driver

    monkeypatch.setattr(train_driver, "drive_examples", lambda drive, t0s, height=None, width=None, **kw:
                        [(drive.scenario, drive.seed, t0, drive.limits) for t0 in t0s])
    wide = dataclasses.replace(world.LIMITS, stop_margin_m=3.0, standstill_gap_m=4.0, time_gap_s=2.0)
    plain = train_driver.build_examples(1, 8, late_share=0.3, rolling_stops=2)
    wider = train_driver.build_examples(1, 8, late_share=0.3, rolling_stops=2, limits=wide)
    assert {e[3] for e in plain} == {world.LIMITS} and {e[3] for e in wider} == {wide}
    for limits in (world.LIMITS, wide):
        red_light = world.generate("red_light", TRAIN_SEEDS[1], limits)  # seed 0's light turns green first
        red = red_light.drive
        held = np.flatnonzero((red.v < 0.01) & (red.binding == "light"))  # at rest, held by the light
        assert held.size, "this drive stops for red"
        rest = red.s[held[0]] + world.EGO_FRONT_M
        assert red_light.stop_line_s - rest == pytest.approx(limits.stop_margin_m, abs=0.01)
        lead = world.generate("lead_brake", TRAIN_SEEDS[0], limits).drive
        assert np.min(lead.lead_s - lead.s - world.EGO_FRONT_M) >= limits.standstill_gap_m
    assert _train_arguments(monkeypatch, tmp_path, "--stop-margin", "3", "--standstill-gap", "4", "--time-gap",
                            "2")["limits"] == wide


def test_dense_curves_add_the_centred_moments_whose_future_enters_or_leaves_a_curve(monkeypatch):
    """`--dense-curves K`: the stride's examples stay as they are, and each drive adds its every K-th grid t0 whose
    6.4 s future enters or leaves a curve of the road, centred, once: on a curve drive the moments before its entry
    and its exit, never on a straight drive or in the middle of a long arc."""

    plain, extra = _stride_and_dense(monkeypatch, dense_curves=2)
    assert {"curve_left", "curve_right", "mixed"} <= {e[0] for e in extra} and "straight" not in {e[0] for e in extra}
    drive = world.generate("curve_left", TRAIN_SEEDS[0])
    t0s = [e[1] for e in extra if e[0] == "curve_left"]
    assert len(set(t0s)) == len(t0s) and not set(t0s) & {e[1] for e in plain if e[0] == "curve_left"}
    assert set(t0s) <= set(t0_grid(drive, 2, phase=world.SCENARIOS.index("curve_left") % 2))  # every 2nd grid step
    (start, _), (arc_start, _), (arc_end, _), (end, _) = drive.scenario_params.curvature  # entry, arc, exit
    s0 = np.interp(t0s, drive.drive.t, drive.drive.s)
    s1 = np.interp(np.array(t0s) + world.FUTURE_S, drive.drive.t, drive.drive.s)
    before_entry = (s0 < arc_start) & (s1 > start)  # the future reaches into the entry's transition
    before_exit = (s0 > start) & (s0 < end) & (s1 > arc_end)  # ... or into the exit's
    assert s0.min() < start and s0.max() > arc_start  # from before the entry, and inside the curve before its exit
    assert np.all(before_entry | before_exit) and before_entry.any() and before_exit.any()


def test_a_future_that_spans_a_light_change_no_camera_shows_is_the_true_one_dropped_or_the_light_as_seen(monkeypatch):
    """`light_futures`: a t0 whose 6.4 s future spans the light's change (here: red turning green at 8 s) keeps the
    world's future ("true"), is left out ("drop") or learns the world with the light kept as seen at t0
    ("as-seen"); every other t0 of every drive is the same in all three."""
    from alpamayo_ros.tools import train_driver

    monkeypatch.setattr(train_driver, "drive_examples", lambda drive, t0s, height=None, width=None, **kw:
                        [(drive.scenario, drive.seed, t0) for t0 in t0s])
    monkeypatch.setattr(world, "generate", _NoImages)
    every = train_driver.build_examples(3, 4)
    spans = [e for e in every if e[0] == "red_light" and 8.0 - world.FUTURE_S <= e[2] < 8.0]
    assert spans and train_driver.build_examples(3, 4, light_futures="drop") == [e for e in every if e not in spans]
    seen = train_driver.build_examples(3, 4, light_futures="as-seen")
    assert seen == [("red_light as seen", *e[1:]) if e in spans else e for e in every]


def test_the_drives_render_alike_in_worker_processes():
    """`build_examples(workers=2)` (train_driver renders on every core it trains on): each drive draws from its own
    streams, so two spawned workers give the same examples, in the same order, as one process."""
    from alpamayo_ros.tools import train_driver

    options = dict(offset_share=0.4, max_offset_m=1.5, late_share=0.3, max_drift=(0.05, 0.006), late_ramp=1.0)
    alone, pooled = (train_driver.build_examples(1, 24, workers=n, **options) for n in (1, 2))
    assert len(alone) == len(pooled) > 0
    for a, b in zip(alone, pooled):
        for field in dataclasses.fields(a):  # every field, arrays and NaN targets included
            np.testing.assert_equal(getattr(a, field.name), getattr(b, field.name), err_msg=field.name)


def test_stage_0_alone_also_sees_the_training_seeds_after_the_joint_stage_s(monkeypatch):
    """`--scene-drives N`: stage 0's examples are the joint stage's and those of N more drives per scenario, the
    training seeds after the joint stage's, at their own t0 stride and rendered with the same options; without
    it, the joint stage's list itself (the batches of before)."""
    from alpamayo_ros.tools import train_driver

    rendered = []

    def render(job, *, t0_stride, **options):  # one marker example per drive, with what it was asked for
        _, name, seed = job
        rendered.append((name, seed, t0_stride, options["offset_share"]))
        return [types.SimpleNamespace(scenario=name, seed=seed)]

    monkeypatch.setattr(train_driver, "_render_drive", render)
    options = dict(offset_share=0.4, max_offset_m=1.5, late_share=0.3, max_drift=(0.05, 0.006), late_ramp=1.0)
    joint = train_driver.build_examples(2, 4, **options)
    assert train_driver.scene_examples(joint, 2, 0, 16, **options) is joint
    seen = train_driver.scene_examples(joint, 2, 3, 16, **options)
    assert seen[:len(joint)] == joint
    extra = seen[len(joint):]
    assert sorted((e.scenario, e.seed) for e in extra) == sorted(
        (name, TRAIN_SEEDS[seed]) for name in world.SCENARIOS for seed in (2, 3, 4))
    assert {(stride, share) for _, seed, stride, share in rendered if seed >= 2} == {(16, 0.4)}


def test_the_brake_light_target_is_the_lead_s_lamps_where_a_lead_is_in_range():
    """`--scene-brake-lights`: 0 while the lead cruises, 1 once it brakes (as the cameras show its lamps), no target
    without a lead; the probe's loss on a batch mixing both is finite and reaches the brake head."""
    drive = world.generate("lead_brake", TRAIN_SEEDS[0])  # the lead brakes from 5.2 s
    cruising, braking = drive_examples(drive, [3.0, 6.0], height=32, width=48)
    assert (cruising.brake_lights, braking.brake_lights) == (0.0, 1.0)
    assert (drive.brake_lights(3.0), drive.brake_lights(6.0)) == (False, True)
    none = next(drive_examples(world.generate("straight", TRAIN_SEEDS[0]), [3.0], height=32, width=48))
    assert np.isnan(none.brake_lights)
    model = tiny(seed=0)
    probe = SceneProbe(model.vlm.config.text_config.hidden_size, brakes=True)
    batch = [cruising, braking, none]
    loss, _ = probe.loss(latest_frames_embeds(model, batch), batch)
    loss.backward()
    assert torch.isfinite(loss) and probe.brakes.weight.grad.abs().sum() > 0


def test_the_curve_speed_target_is_the_lowest_speed_the_curves_ahead_allow():
    """`--scene-curve-speed`: the tightest curve within 60 m of road ahead sets it (sqrt(2.0 m/s^2 x radius)); with the
    curve further, the cap (14 m/s); the probe's loss reaches its head."""
    drive = world.generate("curve_right", TRAIN_SEEDS[0])  # a 60 m radius, at full curvature from 73 m
    (start, _), (full, kappa), *_ = drive.scenario_params.curvature
    assert kappa == pytest.approx(-1 / 60)
    d = drive.drive
    early, late = 1.5, float(np.interp(full - 50.0, d.s, d.t))  # full curvature 50 m ahead at `late`
    assert np.interp(early, d.t, d.s) + 60.0 < start + 1.0  # at most 1 m of the 12 m ramp: |kappa| < 1/720 1/m
    before, entering = drive_examples(drive, [early, late], height=32, width=48)
    assert before.curve_speed == world.CURVE_SPEED_CAP_MPS == 14.0
    assert entering.curve_speed == pytest.approx(np.sqrt(2.0 * 60.0), rel=1e-3)
    model = tiny(seed=0)
    probe = SceneProbe(model.vlm.config.text_config.hidden_size, curves=True)
    assert probe.heads[-1] == "curves"  # created last: the other heads' draws from the seed are unchanged
    batch = [before, entering]
    loss, _ = probe.loss(latest_frames_embeds(model, batch), batch)
    loss.backward()
    assert torch.isfinite(loss) and probe.curves.weight.grad.abs().sum() > 0


def test_per_head_pooling_gives_each_target_its_own_query():
    """`--scene-pooling per-head`: each head pools the image tokens with its own query, so the cause can be read
    off one token while the lane is read off another; the one shared query could only mix them."""
    probe = SceneProbe(4, lane=True, pooling="per-head")
    assert probe.heads == ["cause", "offset", "lane"]
    tokens = 10.0 * torch.eye(4)[:3]  # three image tokens, each on its own axis
    with torch.no_grad():
        probe.queries.copy_(tokens)  # head h looks for token h
    pooled = probe(tokens, batch_size=1)
    assert pooled.shape == (1, 3, 4)
    torch.testing.assert_close(pooled[0], tokens, atol=1e-3, rtol=0)
    torch.testing.assert_close(probe.read(pooled, "lane"), probe.lane(tokens[2:3]), atol=1e-3, rtol=0)


class _NoImages:
    """A generated drive's timing without its simulation (build_examples reads only these); red_light's light
    turns green at 8 s."""

    light_changes_within = world.World.light_changes_within
    SPEED_MPS = 10.0  # the expert's, throughout

    def __init__(self, name: str, seed: int, limits: world.ExpertLimits = world.LIMITS) -> None:
        self.scenario, self.seed, self.duration_s = name, seed, 12.0
        self.drive = types.SimpleNamespace(t=np.array([0.0, 30.0]), v=np.array([self.SPEED_MPS] * 2))
        self._changes = ((0.0, "red"), (8.0, "green")) if name == "red_light" else ()

    def as_seen(self, t0_s: float) -> "_NoImages":
        seen = _NoImages(self.scenario, self.seed)
        seen.scenario += " as seen"
        return seen


def test_a_mirrored_example_is_the_same_moment_left_for_right():
    """`--mirror-share`: the rig is symmetric, so the mirror flips each image, swaps the cross cameras, negates
    every y and yaw and swaps left and right in the labels; twice is the example itself."""
    drive = world.generate("curve_left", TRAIN_SEEDS[0])
    t0 = next(t for t in t0_grid(drive) if drive.model_sample(t, 8, 8).cause == "left curve")
    example = next(drive_examples(drive, [t0], height=32, width=48, offsets=[0.5]))
    mirrored = example.mirror()
    assert mirrored.cause == "right curve" and "right curve" in mirrored.coc and "left" not in mirrored.coc
    assert mirrored.offset_m == -0.5 and example.far_bearing[1] > 0.0  # the far road bends left ...
    assert mirrored.far_bearing == tuple(-b for b in example.far_bearing)  # ... and mirrored, right
    assert mirrored.lane_ahead == tuple(-y for y in example.lane_ahead)
    np.testing.assert_array_equal(mirrored.future_xyz[:, 1], -example.future_xyz[:, 1])
    np.testing.assert_array_equal(mirrored.future_xyz[:, [0, 2]], example.future_xyz[:, [0, 2]])
    yaw = np.arctan2(example.future_rot[:, 1, 0], example.future_rot[:, 0, 0])
    np.testing.assert_allclose(np.arctan2(mirrored.future_rot[:, 1, 0], mirrored.future_rot[:, 0, 0]), -yaw, atol=1e-6)
    assert np.all(np.abs(np.linalg.det(mirrored.future_rot) - 1.0) < 1e-5)  # still rotations
    assert mirrored.future_xyz.dtype == example.future_xyz.dtype == np.float32
    images, flipped = example.images(), mirrored.images()
    np.testing.assert_array_equal(flipped[0], images[2, :, :, ::-1])  # cross-left sees what cross-right saw
    np.testing.assert_array_equal(flipped[1], images[1, :, :, ::-1])
    np.testing.assert_array_equal(flipped[3], images[3, :, :, ::-1])
    twice = mirrored.mirror()
    assert (twice.coc, twice.cause, twice.offset_m, twice.mirrored) == (example.coc, example.cause, 0.5, False)
    np.testing.assert_array_equal(twice.images(), images)
    for e in (example, mirrored):  # stage 0 decodes only each camera's latest frame
        np.testing.assert_array_equal(e.latest_images(), e.images()[:, -1])
    np.testing.assert_array_equal(twice.ego_history_rot, example.ego_history_rot)


def test_expert_width_widens_only_the_expert():
    """`--expert-width`: the expert's hidden size and MLP change; the VLM, the heads that read its cache and the
    default (the shipped driver's layout) do not."""
    from alpamayo_ros.model.loading import driver_config, random_model

    (plain, plain_vlm), (wide, wide_vlm) = driver_config(), driver_config(expert_width=160)
    assert plain_vlm.to_dict() == wide_vlm.to_dict()
    assert (plain.expert_cfg.hidden_size, plain.expert_cfg.intermediate_size) == (96, 192)
    assert (wide.expert_cfg.hidden_size, wide.expert_cfg.intermediate_size) == (160, 320)
    assert (wide.expert_cfg.num_attention_heads, wide.expert_cfg.head_dim) == (plain.expert_cfg.num_attention_heads,
                                                                            plain.expert_cfg.head_dim)
    model = random_model(wide, wide_vlm, seed=0)
    assert model.expert.config.hidden_size == 160 and model.vlm.config.text_config.hidden_size == 128


def test_vision_width_widens_only_the_vision_tower():
    """`--vision-width`: the vision tower's hidden size and MLP change; what it hands the LM (128 wide), the LM, the
    expert and the default (the shipped driver's layout) do not."""
    from alpamayo_ros.model.loading import driver_config, random_model

    (plain, plain_vlm), (wide, wide_vlm) = driver_config(), driver_config(vision_width=128)
    assert plain == wide
    assert plain_vlm.text_config.to_dict() == wide_vlm.text_config.to_dict()
    assert (plain_vlm.vision_config.hidden_size, plain_vlm.vision_config.intermediate_size) == (96, 192)
    assert (wide_vlm.vision_config.hidden_size, wide_vlm.vision_config.intermediate_size) == (128, 256)
    assert wide_vlm.vision_config.out_hidden_size == plain_vlm.vision_config.out_hidden_size == 128
    model = random_model(wide, wide_vlm, seed=0)
    assert model.vlm.config.vision_config.hidden_size == 128 and model.expert.config.hidden_size == 96


def test_text_layers_deepen_the_language_model_and_the_expert_with_it(monkeypatch, tmp_path):
    """`--text-layers`: the LM gets that many layers and the expert one per LM layer (it reads each layer's cache);
    widths, the vision tower and the default (the shipped driver's three) do not change; the option reaches `train`."""
    from alpamayo_ros.model.loading import driver_config, random_model

    (plain, plain_vlm), (deep, deep_vlm) = driver_config(), driver_config(text_layers=4)
    assert plain == deep and plain_vlm.vision_config.to_dict() == deep_vlm.vision_config.to_dict()
    assert (plain_vlm.text_config.num_hidden_layers, deep_vlm.text_config.num_hidden_layers) == (3, 4)
    assert plain_vlm.text_config.hidden_size == deep_vlm.text_config.hidden_size == 128
    model = random_model(deep, deep_vlm, seed=0)
    assert len(model.vlm.model.language_model.layers) == len(model.expert.layers) == 4

    assert _train_arguments(monkeypatch, tmp_path)["text_layers"] == 3
    assert _train_arguments(monkeypatch, tmp_path, "--text-layers", "4")["text_layers"] == 4


def test_ordinal_tokens_order_only_the_trajectory_bins_rows():
    """`--ordinal-tokens`: the future and history bins' input rows and the future bins' output rows start near
    their neighbours and far from distant bins, at the initial scale; every other row is the model's own draw."""
    from alpamayo_ros.tools.train_driver import ordinal_tokens

    model = tiny(seed=0)
    ids, cfg = model.token_ids, model.config
    embed, head = model.vlm.get_input_embeddings().weight, model.vlm.get_output_embeddings().weight
    embed_before, head_before = embed.detach().clone(), head.detach().clone()
    ordinal_tokens(model, seed=0)
    future = slice(ids.traj_token_start_idx, ids.traj_token_start_idx + cfg.traj_tokenizer_cfg.num_bins)
    history = slice(ids.hist_token_start_idx, ids.hist_token_start_idx + cfg.hist_traj_tokenizer_cfg.num_bins)

    def similarity(rows: torch.Tensor, apart: int) -> float:
        return float(torch.nn.functional.cosine_similarity(rows[:-apart], rows[apart:]).mean())

    for rows, before in ((embed[future], embed_before[future]), (embed[history], embed_before[history]),
                         (head[future], head_before[future])):
        rows = rows.detach()
        assert similarity(rows, 1) > 0.95 and similarity(rows, len(rows) // 10) < 0.4  # a tenth of the range apart
        assert similarity(before, 1) < 0.3  # independent noise before
        assert float(rows.std()) == pytest.approx(float(before.std()), rel=0.1)
    others = torch.ones(embed.shape[0], dtype=torch.bool)
    others[future], others[history] = False, False
    assert torch.equal(embed.detach()[others], embed_before[others])
    head_others = torch.ones(head.shape[0], dtype=torch.bool)
    head_others[future] = False
    assert torch.equal(head.detach()[head_others], head_before[head_others])
    again = tiny(seed=0)
    ordinal_tokens(again, seed=0)
    assert torch.equal(again.vlm.get_input_embeddings().weight, embed)


def arc_example(speed: float, radius_m: float | None = None, accel: float = 0.0) -> types.SimpleNamespace:
    """The poses `action_rarity` / `action_statistics` read: a straight 1.5 s history at `speed`, then a future along
    a circle of `radius_m` (left; negative: right; None: straight on) at a constant `accel`, floored at standstill."""
    history_t, future_t = np.arange(-15, 1) * 0.1, np.arange(1, 65) * 0.1
    s = np.maximum(speed * future_t + 0.5 * accel * future_t ** 2, 0.0)
    yaw = s / radius_m if radius_m else 0 * s
    future = (np.stack([radius_m * np.sin(yaw), radius_m * (1 - np.cos(yaw)), 0 * yaw], 1) if radius_m else
              np.stack([s, 0 * s, 0 * s], 1))
    rot = np.zeros((64, 3, 3))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = (np.cos(yaw), -np.sin(yaw), np.sin(yaw),
                                                                            np.cos(yaw), 1.0)
    return types.SimpleNamespace(
        ego_history_xyz=np.stack([history_t * speed, 0 * history_t, 0 * history_t], 1).astype(np.float32),
        ego_history_rot=np.tile(np.eye(3, dtype=np.float32), (16, 1, 1)),
        future_xyz=future.astype(np.float32), future_rot=rot.astype(np.float32))


def test_rarity_scores_a_tight_curve_by_its_standard_deviations_and_cruising_as_one():
    """`--rare-weight`: an example's rarity is its future's largest |normalised action| (at least 1). With the
    shipped driver's statistics a 30 m curve at 10 m/s is about (1/30) / 0.0079 = 4.2 standard deviations out;
    cruising straight on is 1."""
    import dataclasses
    import json
    from pathlib import Path

    from alpamayo_ros.model.loading import driver_config
    from alpamayo_ros.tools.train_driver import action_rarity

    shipped = json.loads((Path(__file__).parents[2] / "alpamayo_ros/driver/config.json").read_text())["action_space_cfg"]
    config = dataclasses.replace(driver_config()[0].action_space_cfg,
                                 **{k: shipped[k] for k in ("accel_mean", "accel_std", "curvature_mean", "curvature_std")})

    straight, curve, gentle = action_rarity([arc_example(10.0), arc_example(10.0, 30.0), arc_example(10.0, 200.0)],
                                            config)
    assert straight == 1.0 and gentle == 1.0  # within one standard deviation: the floor
    expected = (1 / 30 - shipped["curvature_mean"]) / shipped["curvature_std"]
    assert abs(curve - expected) < 0.1 * expected, (curve, expected)


def test_the_spread_options_scale_only_the_measured_spreads():
    """`--accel-spread` / `--curvature-spread`: the stored standard deviations are the measured ones times the
    factor; the means, and the other spread, stay as measured."""
    from alpamayo_ros.model.loading import driver_config
    from alpamayo_ros.tools.train_driver import action_statistics

    rng = np.random.default_rng(0)
    examples = [arc_example(rng.uniform(5, 12), rng.choice([-1, 1]) / rng.uniform(0.002, 0.03), rng.uniform(-1.0, 0.5))
                for _ in range(32)]
    config = driver_config()[0].action_space_cfg
    measured = action_statistics(examples, config)
    assert measured["accel_std"] > 0.1 and measured["curvature_std"] > 0.003, measured
    for accel_spread, curvature_spread in ((0.5, 1.0), (1.0, 1.5), (0.5, 0.5)):
        scaled = action_statistics(examples, config, curvature_spread=curvature_spread, accel_spread=accel_spread)
        assert scaled["accel_mean"] == measured["accel_mean"]
        assert scaled["curvature_mean"] == measured["curvature_mean"]
        assert scaled["accel_std"] == pytest.approx(measured["accel_std"] * accel_spread, rel=1e-12)
        assert scaled["curvature_std"] == pytest.approx(measured["curvature_std"] * curvature_spread, rel=1e-12)


def test_action_max_freq_moves_only_the_action_features_lowest_frequency():
    """`--action-max-freq`: the action and flow-time Fourier features end at that frequency, whose (sin, cos) pair is
    one-to-one over +-1 / (2 x it): with the default 0.1 a brake 9 units out reads as +1 does at the lowest frequency
    (one period, 10 units, apart); with 0.05 it does not. Nothing else in the layout moves."""
    from alpamayo_ros.model.action_projection import FourierEncoder, fourier_frequencies
    from alpamayo_ros.model.loading import driver_config

    (plain, plain_vlm), (low, low_vlm) = driver_config(), driver_config(action_max_freq=0.05)
    assert plain_vlm.to_dict() == low_vlm.to_dict()
    assert dataclasses.replace(low, action_in_proj_cfg=plain.action_in_proj_cfg) == plain
    assert (plain.action_in_proj_cfg.max_freq, low.action_in_proj_cfg.max_freq) == (0.1, 0.05)
    for max_freq, aliased in ((0.1, True), (0.05, False)):
        lowest = float(fourier_frequencies(plain.action_in_proj_cfg.num_fourier_feats, max_freq)[0, -1])
        assert lowest == pytest.approx(max_freq, rel=1e-6)
        half = plain.action_in_proj_cfg.num_fourier_feats // 2
        features = FourierEncoder(2 * half, max_freq)(torch.tensor([-9.0, 1.0]))
        pair = features[:, [half - 1, 2 * half - 1]]  # (sin, cos) at the lowest frequency
        assert (float((pair[0] - pair[1]).abs().sum()) < 1e-5) == aliased


def test_the_expert_stage_reads_the_same_prefix_as_the_joint_pass_and_learns_from_it():
    """`--expert-steps`: the stored prefixes, padded into one batch, give the expert the loss the joint pass's
    cropped cache gives it (same draws; prefixes of different lengths in one batch); then a few expert-only steps
    lower it and leave the VLM untouched."""
    from alpamayo_ros.tools.train_driver import frozen_encodings, frozen_prefixes, prefix_batch, train_expert

    model = tiny(seed=0).eval()
    drive = world.generate("red_light", TRAIN_SEEDS[0])
    stored = list(drive_examples(drive, [3.0, 6.0], height=64, width=96))  # accelerate; stop for the red light
    examples = [e.training_example() for e in stored]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        batch = make_batch(model, examples)
        assert batch.crop[0] != batch.crop[1]  # different reasoning lengths: the padding is exercised
        t = torch.rand(2, 1, 1, generator=generator)
        noise = torch.randn(batch.action.shape, generator=generator)
        joint = training_losses(model, batch, t=t, noise=noise).flow
        prefixes = frozen_prefixes(model, stored, batch_size=1)  # one at a time: no padding in the VLM pass either
        reused = frozen_prefixes(model, stored, batch_size=1, encodings=frozen_encodings(model, stored))
        for fresh, kept in zip(prefixes, reused, strict=True):  # the stored encodings give the same caches, bitwise
            assert all(map(torch.equal, [*fresh.keys, *fresh.values], [*kept.keys, *kept.values]))
        cache, crop, rope_delta, x = prefix_batch(prefixes)
        alone, _ = flow_matching_loss(model, cache, crop, rope_delta, x, t, noise, causal=False)
    torch.testing.assert_close(alone, joint, rtol=1e-4, atol=1e-6)

    vlm_before = {k: v.clone() for k, v in model.vlm.state_dict().items()}
    torch.manual_seed(0)
    with torch.no_grad():
        before = flow_matching_loss(model, cache, crop, rope_delta, x, t, noise, causal=False)[0].item()
    train_expert(model, prefixes, steps=30, batch_size=2, flow_draws=4, lr=3e-3, seed=0, started=0.0)
    with torch.no_grad():
        after = flow_matching_loss(model, cache, crop, rope_delta, x, t, noise, causal=False)[0].item()
    assert after < 0.8 * before, (before, after)
    assert all(torch.equal(v, model.vlm.state_dict()[k]) for k, v in vlm_before.items())


def test_frozen_vision_encodes_once_what_each_batch_would_encode():
    """`--frozen-vision`: a batch built from the stored encodings is the batch encoding the images again gives,
    bitwise (the same tower, the same per-example vision call), and the stored examples' images are not read."""
    from alpamayo_ros.model.training import linear_patch_embedding
    from alpamayo_ros.tools.train_driver import frozen_encodings

    model = tiny(seed=0).eval()
    drive = world.generate("curve_left", TRAIN_SEEDS[0])
    stored = list(drive_examples(drive, [2.0, 5.0], height=64, width=96))
    encodings = frozen_encodings(model, stored)
    with torch.no_grad(), linear_patch_embedding(model):
        fresh = make_batch(model, [e.training_example() for e in stored])
        kept = make_batch(model, [e.training_example(images=False) for e in stored], encoded=encodings)
    for name in ("input_ids", "labels", "crop", "image_grid_thw", "image_embeds", "action"):
        assert torch.equal(getattr(fresh, name), getattr(kept, name)), name
    assert all(map(torch.equal, fresh.deepstack, kept.deepstack))
    with pytest.raises(ValueError, match="1 encodings for 2 examples"):
        make_batch(model, [e.training_example(images=False) for e in stored], encoded=encodings[:1])


def test_the_timestep_sampler_reaches_the_joint_and_the_expert_stage_s_draws(monkeypatch, tmp_path):
    """`--timestep-sampler uniform` reaches `train`, and both places that draw (t, noise) draw with it."""
    from alpamayo_ros.model import training
    from alpamayo_ros.tools import train_driver

    assert _train_arguments(monkeypatch, tmp_path)["timestep_sampler"] == "beta"
    assert _train_arguments(monkeypatch, tmp_path, "--timestep-sampler", "uniform")["timestep_sampler"] == "uniform"

    samplers = []
    original = training.flow_training_data

    def recording(x, sampler="beta"):
        samplers.append(sampler)
        return original(x, sampler)

    monkeypatch.setattr(training, "flow_training_data", recording)
    monkeypatch.setattr(train_driver, "flow_training_data", recording)
    model = tiny(seed=0).eval()
    stored = list(drive_examples(world.generate("red_light", TRAIN_SEEDS[0]), [3.0], height=64, width=96))
    with torch.no_grad():
        training_losses(model, make_batch(model, [e.training_example() for e in stored]), timestep_sampler="uniform")
        prefixes = train_driver.frozen_prefixes(model, stored, batch_size=1)
    train_driver.train_expert(model, prefixes, steps=1, batch_size=1, flow_draws=2, lr=1e-4, seed=0, started=0.0,
                              timestep_sampler="uniform")
    assert samplers == ["uniform", "uniform"]


def test_the_integral_term_weighs_an_error_that_keeps_its_sign_by_the_horizon_s_length(monkeypatch, tmp_path):
    """`--integral-weight`, `--curvature-integral-weight`: the velocity error summed along the horizon weighs a
    constant error (W + 1)(2W + 1) / 6W times its square, white errors about half theirs, each channel by its own
    weight; `training_losses` hands out the error flow matching squares; the options reach `train` and the expert
    stage, whose gradient they then change."""
    from alpamayo_ros.tools import train_driver

    horizon = 64
    constant = torch.full((3, horizon, 2), 0.5)
    expected = 0.25 * (horizon + 1) * (2 * horizon + 1) / (6 * horizon)  # mean over k of (k c)^2 / W
    torch.testing.assert_close(train_driver.integral_loss(constant), torch.tensor(expected))
    accel_only = constant.clone()
    accel_only[..., 1] = 7.0  # a curvature error weighted zero
    torch.testing.assert_close(train_driver.integral_loss(accel_only, (3.0, 0.0)), torch.tensor(1.5 * expected))
    white = torch.randn(4096, horizon, 2, generator=torch.Generator().manual_seed(0))
    assert abs(train_driver.integral_loss(white).item() - (horizon + 1) / (2 * horizon)) < 0.03

    model = tiny(seed=0).eval()
    stored = list(drive_examples(world.generate("red_light", TRAIN_SEEDS[0]), [3.0, 6.0], height=64, width=96))
    batch = make_batch(model, [e.training_example() for e in stored])
    generator = torch.Generator().manual_seed(0)
    t = torch.rand(2, 1, 1, generator=generator)
    noise = torch.randn(batch.action.shape, generator=generator)
    with torch.no_grad():
        losses = training_losses(model, batch, t=t, noise=noise)
    assert losses.flow_error.shape == batch.action.shape
    torch.testing.assert_close(losses.flow_error.square().mean(), losses.flow)

    assert _train_arguments(monkeypatch, tmp_path)["integral_weights"] == (0.0, 0.0)
    assert _train_arguments(monkeypatch, tmp_path, "--integral-weight", "2",
                            "--curvature-integral-weight", "0.5")["integral_weights"] == (2.0, 0.5)
    with torch.no_grad():
        prefixes = train_driver.frozen_prefixes(model, stored, batch_size=1)
    trained = {}
    for weights in ((0.0, 0.0), (1.0, 0.0)):
        copy = tiny(seed=0).eval()
        torch.manual_seed(0)
        train_driver.train_expert(copy, prefixes, steps=1, batch_size=2, flow_draws=1, lr=1e-3, seed=0, started=0.0,
                                  integral_weights=weights)
        trained[weights] = copy.action_out_proj.state_dict()
    plain, summed = trained.values()
    assert any(not torch.equal(plain[k], summed[k]) for k in plain)


@pytest.mark.parametrize("flags", [
    ["--curvature-spread", "0"], ["--curvature-spread", "1.5", "--no-own-statistics"],
    ["--accel-spread", "-0.5"], ["--accel-spread", "0.5", "--no-own-statistics"],
    ["--scene-drives", "-1"], ["--scene-drives", "4", "--scene-t0-stride", "0"],
    ["--scene-drives", "4", "--scene-steps", "0"], ["--scene-drives", "4", "--rare-weight", "2"],
    ["--visited", "no-such-states.json"], ["--stop-margin", "0"], ["--time-gap", "-1"], ["--text-layers", "1"],
    ["--scene-distance-range", "150"], ["--scene-distance-range", "60", "--no-scene-distances"],
    ["--scene-distance-scale", "0"], ["--scene-distance-scale", "10", "--no-scene-distances"],
    ["--integral-weight", "-1"], ["--curvature-integral-weight", "-0.1"],
])
def test_options_that_cannot_do_what_they_say_are_refused_before_anything_renders(flags, tmp_path, monkeypatch, capsys):
    """A usage error (exit 2, the reason on stderr) before any drive is rendered or any step is taken."""
    from alpamayo_ros.tools import train_driver

    monkeypatch.setattr(train_driver, "train", lambda *a, **k: pytest.fail("train() ran"))
    with pytest.raises(SystemExit) as usage_error:
        train_driver.main([str(tmp_path / "out"), *flags])
    assert usage_error.value.code == 2 and flags[0] in capsys.readouterr().err
