"""The bag's route through the lockstep replay, and the three-way comparison (route, none, left/right swapped)."""

import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("alpamayo_msgs.msg", reason="alpamayo_msgs is not built (make test builds it)")

from alpamayo_ros import parameters  # noqa: E402
from alpamayo_ros.tools.make_sample_bag import ROUTE_TOPIC, write_bag  # noqa: E402
from alpamayo_ros.tools.replay import replay_lockstep  # noqa: E402
from alpamayo_ros.tools.route_compare import compare_routes  # noqa: E402

BAG_S = 2.5  # t0 at 1.5, 2.0 and 2.5 s: three inputs per replay
SETTINGS = {"device": "cpu", "dtype": "float32", "image_transport": "compressed", "max_reasoning_tokens": 2,
            "diffusion_steps": 2, "rate_hz": 2.0, "route_topic": ROUTE_TOPIC}


@pytest.fixture(scope="module")
def model15(conformance_dir):
    from alpamayo_ros.model.loading import from_pretrained

    return from_pretrained(conformance_dir / "alpamayo1_5" / "checkpoint", dtype="float32")


def test_replay_feeds_the_bags_route_and_the_comparison_scores_three_variants(tmp_path, model15, monkeypatch):
    bag = write_bag(tmp_path / "drive", duration_s=BAG_S, storage="sqlite3", route_text="Turn left in 40m")
    routes = []
    sample = model15.sample
    monkeypatch.setattr(model15, "sample", lambda *a, **k: routes.append(k["route"]) or sample(*a, **k))
    cfg = parameters.from_values(SETTINGS)
    counts, lockstep = replay_lockstep(bag, tmp_path / "one", cfg, model15)
    assert counts.published == 3 and routes == ["Turn left in 40m"] * 3
    assert lockstep.engine.status().values["route_source"] == "route_topic"
    routes.clear()
    summaries = compare_routes(bag, tmp_path / "compare", cfg, model15)
    assert routes == ["Turn left in 40m"] * 3 + [None] * 3 + ["Turn right in 40m"] * 3
    assert set(summaries) == {"as_recorded", "none", "swapped"}
    assert all(summary["outputs"] == 3 and summary["metrics"]["1s"]["ade_m"] is not None
               for summary in summaries.values())
    # The route of each output, as its DrivingOutput carries it in the output bag:
    assert [summaries[v]["routes"] for v in ("as_recorded", "none", "swapped")] == [
        {"Turn left in 40m": 3}, {}, {"Turn right in 40m": 3}]
