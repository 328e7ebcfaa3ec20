"""The README's demo prints a full 64-pose trajectory, reasoning text and timings."""

import re

from alpamayo_ros.tools.demo import main


def test_demo_prints_trajectory_reasoning_and_timings(capsys):
    assert main(["--model-only", "--num-samples", "2", "--max-reasoning-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "2 samples x 64 poses (6.4 s at 10 Hz)" in out
    assert len(re.findall(r"\d\.\d: +-?\d+\.\d\d +-?\d+\.\d\d", out)) == 64  # every pose of sample 0
    assert out.count("reasoning: ") == 2
    assert re.search(r"timings \[ms\]: vision [\d.]+, prefill [\d.]+, decode [\d.]+ \(\d+ tokens\)", out)
