"""How ticks run, as frozen dataclasses the parameters fill: sampling, tick rules, output limits, the model to load.

No torch here: the parameter schema (and through it `--help` and the launch file's helper) imports this module.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .sync import InputLimits


@dataclass(frozen=True, slots=True)
class OutputLimits:
    """Physical plausibility of a sampled trajectory (ego frame at t0)."""

    max_first_pose_error_m: float = 0.5  # |x_1 - v0 dt|; the accel bound alone allows 0.05 m
    max_reverse_m: float = 1.0  # no reversing further behind the t0 position than this before the first cusp


class Selection(enum.Enum):
    """How the published sample is chosen among the valid ones."""

    FIRST = "first"
    MEDOID = "medoid"  # the sample with the least total ADE to the others


@dataclass(frozen=True, slots=True)
class SamplingSettings:
    """How each tick samples the model."""

    num_samples: int = 1
    diffusion_steps: int = 10
    max_reasoning_tokens: int = 256
    temperature: float = 0.6  # 0 = greedy reasoning
    top_p: float = 0.98
    seed: int = 0  # tick k uses seed + k: reproducible under replay, different across ticks
    reasoning: str = "per_sample"  # or "shared": one reasoning for all samples
    # Alpamayo 1.5 only (an R1 model is called without them):
    camera_ids: tuple[int, ...] | None = None  # NVIDIA camera indices of the cameras, in order: labelled prompt
    nav_guidance_weight: float = 1.0  # with a route: 1 = plain, else 1.5's classifier-free guidance weight
    noise_temperature: float = 1.0  # scales the flow's initial noise (1.5's diffusion `temperature`)


@dataclass(frozen=True, slots=True)
class TickSettings:
    """The rules of a tick (everything but the sampling settings, which belong to the model call)."""

    rate_hz: float
    input_limits: InputLimits = InputLimits()
    output_limits: OutputLimits = OutputLimits()
    selection: Selection = Selection.FIRST


# `model_path` naming the tiny random model (2 layers, 64 x 96 images): the tests and code-path benchmarks run it
TINY_RANDOM = "tiny-random"


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """Which model to load and how to run it (`engine.build_model`)."""

    model_path: str = ""  # empty: the embedded driver; TINY_RANDOM: the tiny random model
    base_model_dir: str = ""
    device: str = "cuda"
    dtype: str = "bfloat16"
    seed: int = 0  # the tiny model's weights
    image_preprocessing: str = "host"  # or "device"
    compile_flow: str = "off"  # or a torch.compile mode
    torch_threads: int = 1
