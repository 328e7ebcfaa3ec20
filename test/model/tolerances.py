"""Float32 tolerances for comparisons with NVIDIA's reference vectors and between two computational paths.

An error is counted in float32 ulps of the compared quantity's magnitude M = max|expected|:

    ulps = max|actual - expected| / (EPS * M),    EPS = 2**-23 (the float32 spacing at 1.0)

so one ulp here is the spacing of the largest expected value (within a factor 2). Counting relative to the
magnitude, not per element, is what float32 arithmetic bounds: a sum or dot product of n terms is off by
at most ~n/2 ulps of the largest partial sum (sqrt(n) is typical), whatever the size of the one element
compared, and positions that reach 40 m carry errors in ulps of 40 m. Each tolerance below is such a count
derived from the arithmetic that produced the quantity; beside it, the worst case measured across the code
paths README.md ("Conformance and tests") names: MKL_CBWR=COMPATIBLE / AVX2 / default,
ATEN_CPU_CAPABILITY=default / avx2, 1 and 2 threads, on an AMD EPYC (AVX2); re-measure with
`python test/model/measure_tolerances.py`.

ALPAMAYO_NUMERICS_LOG=<file> appends each comparison's error to that file as one JSON line (the
measurement script sets it).
"""

from __future__ import annotations

import json
import os

import torch

EPS = torch.finfo(torch.float32).eps  # 2**-23


def ulps_of(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float, float]:
    """(max |actual - expected|, max |expected|, the former in ulps of the latter)."""
    error = (actual.double() - expected.double()).abs().max().item() if expected.numel() else 0.0
    magnitude = expected.double().abs().max().item() if expected.numel() else 0.0
    return error, magnitude, (error / (EPS * magnitude) if magnitude else float("inf") if error else 0.0)


def close(actual: torch.Tensor, expected: torch.Tensor, ulps: float, what: str) -> None:
    """Assert `actual` is within `ulps` float32 ulps of `expected`'s magnitude, naming what was compared."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    error, magnitude, measured = ulps_of(actual, expected)
    log = os.environ.get("ALPAMAYO_NUMERICS_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0], "what": what,
                                "error": error, "magnitude": magnitude, "ulps": measured, "allowed": ulps}) + "\n")
    if not measured <= ulps:  # also fails on NaN
        raise AssertionError(f"{what}: max error {error:.3g} is {measured:.1f} ulps of the magnitude "
                             f"{magnitude:.3g} (float32), allowed {ulps}")


# How the counts are derived. Two code paths (another summation order: MKL's CPU-specific kernels, SIMD
# width, threads; another sin/exp library) differ by the rounding errors each makes. Each rounding is an
# error of at most half an ulp of its result (standard deviation 0.29 ulp); N of them along a path add up
# to ~0.29 sqrt(N) ulps (Higham & Mary, "A new approach to probabilistic rounding error analysis", 2019),
# the difference of two paths to ~0.41 sqrt(N). We allow about 5 standard deviations, 2 sqrt(N), rounded
# up to a power of two. N counts the terms of every reduction along the longest chain: a dot product of
# length n adds n, an attention over L tokens adds head_dim + L, a cumulative sum of W steps adds W.
# Solves multiply their backward error by the system's condition number. The worst case measured over
# the 10 code-path variants (ulps of the magnitude) is given beside each constant; the tolerances are far
# above them, yet orders of magnitude below a real defect (a wrong token, mask, position or op moves
# these values by 1e-3 relative or more, i.e. ~10^4 ulps).

# Pixels: (x * 1/255 - mean) / std, in either operation order: N = 6 elementary ops -> 2 sqrt(6) = 4.9.
PIXELS_ULPS = 8  # measured worst 2.0
# Fourier features sqrt(2) sin/cos(2 pi f x), same operation order as upstream, so the angles are bitwise
# equal and only sin/cos differ (<= 1 ulp in SLEEF's u10 and in glibc): 2 x 1 ulp.
FOURIER_ULPS = 4  # measured 0 (bitwise)
# The action-in MLP (60 -> 32 -> 32 -> 64 features, LayerNorm) over those features: N ~ 60 + 32 + 32 + 64.
ACTION_IN_ULPS = 32  # measured worst 2.5 (MKL_CBWR=COMPATIBLE)
# Vision tower: patch embedding n = 3*2*16*16 = 1536; 2 blocks of qkv 64, attention 32 + 96 tokens,
# proj 64, MLP 64 + 128; merger 256 + 256: N ~ 2950 -> 2 sqrt(N) = 109.
VISION_ULPS = 128  # measured worst 4.1 (deepstack, MKL_CBWR=COMPATIBLE)
# Text model over the vision output: vision N ~ 2950 plus 2 layers of qkv 128, attention 32 + 403 tokens,
# o_proj 128, MLP 128 + 256, and lm_head 128: N ~ 5200 -> 144.
TEXT_ULPS = 256  # measured worst 5.0 (KV cache keys, MKL_CBWR=COMPATIBLE, 2 threads), logits 3.9
# The expert's velocity at a given (x, t) over a given VLM cache: action-in projection (~190), 2 layers of
# qkv 64, attention 32 + 467 tokens, o_proj 128, MLP 64 + 96, action_out_proj 64: N ~ 2100 -> 92.
EXPERT_ULPS = 128  # measured worst 2.9 (MKL_CBWR=COMPATIBLE)
# Speeds from the 16-pose history: normal equations of 16 unknowns solved by Cholesky. Forward error <=
# condition x backward error: the entries of A^T A are 30-term dot products (sqrt(30)/2 ~ 3 ulps each;
# the factorisation adds less), and the speeds' componentwise (Skeel) condition number for the
# reference's history is 21-24 (the smoothing prior's; 44 normwise): 24 x 2.7 = 65 -> 64 (the condition
# number is already the worst case over the errors' signs). Float32 v0 is 2.3 ulps from float64 in the
# vectors; issue 17 saw 7 ulps between two CPUs.
SPEED_ULPS = 64  # measured worst 0.5 (history speeds), v0 0
# Positions from actions: v0's relative error (SPEED_ULPS) reaches every position (x ~ v0 t), then three
# cumulative sums of 64 steps (speed, heading, position: N = 192 -> 28) and cos/sin (1 ulp each) -> 32.
TRAJECTORY_ULPS = SPEED_ULPS + 32  # measured worst 0.5 (issue 17's Xeon: 3.6 in pred_xyz)
# traj_to_action: four chained smoothed 64-unknown solves (heading, speed, acceleration, curvature) with
# normwise condition numbers 65, ~65, 17 and 26: condition x sqrt(N)/2 for N ~ 192 terms per entry is
# 65 x 7 ~ 450 ulps for each float32 path, two paths -> 1024. The vectors' own float32 result is 255 ulps
# from their float64 one, as this predicts.
INVERSE_ULPS = 1024  # measured worst 104 (MKL_CBWR=COMPATIBLE and AVX2)
