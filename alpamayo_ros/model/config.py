"""AlpamayoR1 / Alpamayo 1.5 configuration read from the release's `config.json`, without hydra.

The release stores each component as a hydra-style dict with a `_target_` naming the upstream class
(see NVlabs/alpamayo `config.py`, `models/base_model.py`). Each such dict becomes one frozen dataclass
here, with field names equal to the release's keys. Unknown keys and unexpected `_target_`s are
rejected by name, so a checkpoint from a different architecture fails at load time, not at run time.
Alpamayo 1.5 (NVlabs/alpamayo1.5) has the same architecture under `model_type` "alpamayo1_5", its
`_target_`s in the package `alpamayo1_5`, and a few keys of its own (`include_camera_ids`, ...).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Keys every transformers `PretrainedConfig.to_dict()` writes; they carry no AlpamayoR1 meaning.
_GENERIC_HF_KEYS = frozenset(
    {"architectures", "model_type", "transformers_version", "_name_or_path", "torch_dtype", "dtype",
     "attn_implementation", "vlm_backend", "auto_map", "return_dict", "output_hidden_states",
     "output_attentions", "use_cache"}
)


def _check_keys(section: str, given: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"config.json `{section}`: unknown keys {unknown}; expected a subset of {sorted(known)}")


ALPAMAYO_R1 = "alpamayo_r1"
ALPAMAYO1_5 = "alpamayo1_5"
MODEL_TYPES = {ALPAMAYO_R1: "AlpamayoR1", ALPAMAYO1_5: "Alpamayo1_5"}  # model_type -> `architectures` entry
# Keys only Alpamayo 1.5's config.json has (its inference never reads the first two, see prompt.py).
RELEASE_1_5_KEYS = ("include_camera_ids", "include_frame_nums")


def release_targets(targets: tuple[str, ...], model_type: str) -> tuple[str, ...]:
    """The `_target_`s of a section for `model_type`: 1.5 names the same classes in its package `alpamayo1_5`."""
    if model_type == ALPAMAYO_R1:
        return targets
    return tuple(t.replace(f"{ALPAMAYO_R1}.", f"{ALPAMAYO1_5}.", 1) for t in targets)


def _check_target(section: str, given: dict[str, Any], targets: tuple[str, ...]) -> None:
    target = given.get("_target_")
    if target is not None and target not in targets:
        raise ValueError(f"config.json `{section}._target_` is {target!r}, expected one of {list(targets)}")


def _from_section(cls: type, section: str, given: dict[str, Any] | None, targets: tuple[str, ...]):
    """Build dataclass `cls` from a hydra-style dict, checking `_target_` and keys."""
    if given is None:
        return cls()
    _check_target(section, given, targets)
    names = {f.name for f in dataclasses.fields(cls)}
    hydra_keys = {"_target_", "_recursive_", "_convert_", "_partial_"}
    _check_keys(section, given, names | hydra_keys)
    kwargs = {}
    for key, value in given.items():
        if key in hydra_keys:
            continue
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def _to_section(obj: Any, target: str) -> dict[str, Any]:
    out: dict[str, Any] = {"_target_": target}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


@dataclass(frozen=True, slots=True)
class ActionSpaceConfig:
    """Unicycle acceleration/curvature action space; values are the release's `action_space_cfg`."""

    accel_mean: float = 0.02902694707164455  # m/s^2, dataset statistic
    accel_std: float = 0.6810426736454882
    curvature_mean: float = 0.0002692167976330542  # 1/m
    curvature_std: float = 0.026148280660833106
    accel_bounds: tuple[float, float] = (-9.8, 9.8)  # m/s^2, checked, never clamped
    curvature_bounds: tuple[float, float] = (-0.33, 0.33)  # 1/m
    dt: float = 0.1  # s between waypoints
    n_waypoints: int = 64
    theta_lambda: float = 1e-6  # smoothing weights of the least-squares fits (divided by dt^k)
    theta_ridge: float = 1e-8
    v_lambda: float = 1e-6
    v_ridge: float = 1e-4
    a_lambda: float = 1e-4
    a_ridge: float = 1e-4
    kappa_lambda: float = 1e-4
    kappa_ridge: float = 1e-4

    TARGETS = ("alpamayo_r1.action_space.UnicycleAccelCurvatureActionSpace",
               "alpamayo_r1.action_space.unicycle_accel_curvature.UnicycleAccelCurvatureActionSpace")

    def __post_init__(self) -> None:
        if self.dt <= 0 or self.n_waypoints <= 0:
            raise ValueError(f"action_space_cfg: dt={self.dt} and n_waypoints={self.n_waypoints} must be > 0")
        if self.accel_std <= 0 or self.curvature_std <= 0:
            raise ValueError(f"action_space_cfg: accel_std={self.accel_std} and "
                             f"curvature_std={self.curvature_std} must be > 0")


@dataclass(frozen=True, slots=True)
class ActionInProjConfig:
    """`PerWaypointActionInProjV2`: Fourier features per action channel and time, then an MLP."""

    hidden_size: int = 512
    max_freq: float = 100.0  # highest Fourier frequency, cycles per unit input
    num_enc_layers: int = 2
    num_fourier_feats: int = 20  # sin + cos, so half of it are frequencies

    TARGETS = ("alpamayo_r1.models.action_in_proj.PerWaypointActionInProjV2",)

    def __post_init__(self) -> None:
        if self.num_fourier_feats % 2:
            raise ValueError(f"action_in_proj_cfg: num_fourier_feats={self.num_fourier_feats} must be even")
        if self.num_enc_layers < 1:
            raise ValueError(f"action_in_proj_cfg: num_enc_layers={self.num_enc_layers} must be >= 1")


@dataclass(frozen=True, slots=True)
class ExpertConfig:
    """Overrides applied to a copy of the VLM's text config to make the action expert (None = inherit)."""

    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_attention_heads: int | None = None
    head_dim: int | None = None
    num_key_value_heads: int | None = None
    num_hidden_layers: int | None = None
    dtype: str | None = None


@dataclass(frozen=True, slots=True)
class FlowMatchingConfig:
    """Flow-matching sampler; the release sets only `int_method` and leaves the step count at 10."""

    int_method: str = "euler"
    num_inference_steps: int = 10
    x_dims: Any = "???"  # filled in by the model as (n_waypoints, 2); kept for round-tripping
    # Alpamayo 1.5 writes these (false, 1.0); its inference takes the guidance from the call instead
    # (`nav_guidance_weight` here). None: absent from config.json.
    use_classifier_free_guidance: bool | None = None
    inference_guidance_weight: float | None = None

    TARGETS = ("alpamayo_r1.diffusion.flow_matching.FlowMatching",)

    def __post_init__(self) -> None:
        if self.int_method != "euler":
            raise ValueError(f"diffusion_cfg: int_method={self.int_method!r}, only 'euler' exists")
        if self.num_inference_steps < 1:
            raise ValueError(f"diffusion_cfg: num_inference_steps={self.num_inference_steps} must be >= 1")


@dataclass(frozen=True, slots=True)
class HistoryTokenizerConfig:
    """`DeltaTrajectoryTokenizer`: per-step xyz displacements binned uniformly."""

    num_bins: int = 1000
    ego_xyz_min: tuple[float, float, float] = (-4.0, -4.0, -10.0)  # metres per 0.1 s step
    ego_xyz_max: tuple[float, float, float] = (4.0, 4.0, 10.0)
    # Upstream constructor arguments for a yaw channel, which the release leaves off.
    ego_yaw_min: float = -3.141592653589793
    ego_yaw_max: float = 3.141592653589793
    predict_yaw: bool = False
    load_weights: bool = False

    TARGETS = ("alpamayo_r1.models.delta_tokenizer.DeltaTrajectoryTokenizer",)

    def __post_init__(self) -> None:
        if self.predict_yaw:
            raise ValueError("hist_traj_tokenizer_cfg.predict_yaw=true (4 tokens per pose) is not supported; "
                             "the release encodes x, y, z only")
        if any(lo >= hi for lo, hi in zip(self.ego_xyz_min, self.ego_xyz_max)):
            raise ValueError(f"hist_traj_tokenizer_cfg: ego_xyz_min={self.ego_xyz_min} must be below "
                             f"ego_xyz_max={self.ego_xyz_max}")


@dataclass(frozen=True, slots=True)
class FutureTokenizerConfig:
    """`DiscreteTrajectoryTokenizer` (training only); its `num_bins` places the history tokens after it."""

    num_bins: int = 3000
    dims_min: tuple[float, float] = (-10.0, -10.0)
    dims_max: tuple[float, float] = (10.0, 10.0)
    action_space_cfg: Any = None  # a copy of the action space, unused at inference

    TARGETS = ("alpamayo_r1.action_space.discrete_action_space.DiscreteTrajectoryTokenizer",)


@dataclass(frozen=True, slots=True)
class AlpamayoR1Config:
    """The whole model's configuration; field names are the release `config.json` keys."""

    vlm_name_or_path: str = "Qwen/Qwen3-VL-8B-Instruct"
    model_type: str = ALPAMAYO_R1  # or ALPAMAYO1_5: same weights layout, other prompt, unstored buffers
    # Defaults are the release's values. Upstream's code defaults (768 / 16 / 64) are another
    # configuration of the same code; 16 history tokens is not a whole number of xyz poses, so a
    # model built from it is rejected where the history is encoded.
    traj_vocab_size: int = 4000
    tokens_per_history_traj: int = 48  # 16 poses x (x, y, z)
    tokens_per_future_traj: int = 128  # training-only discrete future tokens; bounds nothing at inference
    add_special_tokens: bool = True
    min_pixels: int | None = None
    max_pixels: int | None = None
    model_dtype: str = "bfloat16"
    expert_non_causal_attention: bool = True
    keep_same_dtype: bool = True
    action_space_cfg: ActionSpaceConfig = field(default_factory=ActionSpaceConfig)
    action_in_proj_cfg: ActionInProjConfig = field(default_factory=ActionInProjConfig)
    expert_cfg: ExpertConfig = field(default_factory=ExpertConfig)
    diffusion_cfg: FlowMatchingConfig = field(default_factory=FlowMatchingConfig)
    hist_traj_tokenizer_cfg: HistoryTokenizerConfig = field(default_factory=HistoryTokenizerConfig)
    traj_tokenizer_cfg: FutureTokenizerConfig = field(default_factory=FutureTokenizerConfig)
    # Computed by upstream from the tokenizer and saved with the config; cross-checked when present.
    vocab_size: int | None = None
    traj_token_start_idx: int | None = None
    traj_token_ids: dict[str, int] | None = None
    # Alpamayo 1.5 only; stored, never read by its inference (the camera ids passed decide the labels).
    include_camera_ids: bool | None = None
    include_frame_nums: bool | None = None

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type={self.model_type!r}, expected one of {sorted(MODEL_TYPES)}")
        if self.model_type == ALPAMAYO_R1:
            given = [k for k in RELEASE_1_5_KEYS if getattr(self, k) is not None]
            given += [f"diffusion_cfg.{k}" for k in ("use_classifier_free_guidance", "inference_guidance_weight")
                      if getattr(self.diffusion_cfg, k) is not None]
            if given:
                raise ValueError(f"config.json has {given}, which only Alpamayo 1.5 (model_type "
                                 f"'{ALPAMAYO1_5}') writes, but model_type is '{ALPAMAYO_R1}'")
        used = self.traj_tokenizer_cfg.num_bins + self.hist_traj_tokenizer_cfg.num_bins
        if used > self.traj_vocab_size:
            raise ValueError(
                f"traj_tokenizer_cfg.num_bins ({self.traj_tokenizer_cfg.num_bins}) + "
                f"hist_traj_tokenizer_cfg.num_bins ({self.hist_traj_tokenizer_cfg.num_bins}) = {used} "
                f"exceeds traj_vocab_size={self.traj_vocab_size}")

    @property
    def num_history_poses(self) -> int:
        """Number of 0.1 s-spaced history poses the history tokens encode (16 in the release)."""
        if self.tokens_per_history_traj % 3:
            raise ValueError(
                f"tokens_per_history_traj={self.tokens_per_history_traj} must be 3 x the number of "
                "history poses (one token per x, y, z displacement)")
        return self.tokens_per_history_traj // 3

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AlpamayoR1Config:
        """Parse a release-style dict; raises ValueError naming any unknown key or `_target_`."""
        sections = {
            "action_space_cfg": ActionSpaceConfig,
            "action_in_proj_cfg": ActionInProjConfig,
            "expert_cfg": ExpertConfig,
            "diffusion_cfg": FlowMatchingConfig,
            "hist_traj_tokenizer_cfg": HistoryTokenizerConfig,
            "traj_tokenizer_cfg": FutureTokenizerConfig,
        }
        model_type = raw.get("model_type", ALPAMAYO_R1)
        if model_type not in MODEL_TYPES:
            raise ValueError(f"config.json describes model_type {model_type!r} (architectures "
                             f"{raw.get('architectures')}), neither AlpamayoR1 ('{ALPAMAYO_R1}') nor Alpamayo 1.5 "
                             f"('{ALPAMAYO1_5}'); this loader reads only those two")
        architectures = raw.get("architectures")
        if architectures is not None and list(architectures) != [MODEL_TYPES[model_type]]:
            raise ValueError(f"config.json architectures={architectures} does not match model_type "
                             f"{model_type!r} (expected {[MODEL_TYPES[model_type]]})")
        scalar_names = {f.name for f in dataclasses.fields(cls)} - set(sections)
        _check_keys("<top level>", raw, scalar_names | set(sections) | _GENERIC_HF_KEYS
                    | {"action_out_proj_cfg"})
        out_proj = raw.get("action_out_proj_cfg") or {}
        _check_target("action_out_proj_cfg", out_proj, ("torch.nn.Linear",))
        _check_keys("action_out_proj_cfg", out_proj, {"_target_", "bias"})
        kwargs: dict[str, Any] = {}
        for name, section_cls in sections.items():
            sub = raw.get(name)
            targets = release_targets(getattr(section_cls, "TARGETS", ()), model_type)
            if sub is not None and not targets:  # expert_cfg has no _target_
                _check_keys(name, sub, {f.name for f in dataclasses.fields(section_cls)})
                kwargs[name] = section_cls(**sub)
            else:
                kwargs[name] = _from_section(section_cls, name, sub, targets)
        for name in scalar_names:
            if name in raw:
                kwargs[name] = raw[name]
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | Path) -> AlpamayoR1Config:
        """Read `config.json` from a file path."""
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict[str, Any]:
        """The release's `config.json` layout, `_target_` entries included."""
        def target(cls: type) -> str:
            return release_targets(cls.TARGETS, self.model_type)[0]

        diffusion = {k: v for k, v in _to_section(self.diffusion_cfg, target(FlowMatchingConfig)).items()
                     if v is not None}
        out: dict[str, Any] = {
            "model_type": self.model_type,
            "architectures": [MODEL_TYPES[self.model_type]],
            "action_out_proj_cfg": {"_target_": "torch.nn.Linear"},
            "action_space_cfg": _to_section(self.action_space_cfg, target(ActionSpaceConfig)),
            "action_in_proj_cfg": _to_section(self.action_in_proj_cfg, target(ActionInProjConfig)),
            "diffusion_cfg": diffusion,
            "hist_traj_tokenizer_cfg": _to_section(self.hist_traj_tokenizer_cfg, target(HistoryTokenizerConfig)),
            "traj_tokenizer_cfg": {"_recursive_": False,
                                   **_to_section(self.traj_tokenizer_cfg, target(FutureTokenizerConfig))},
            "expert_cfg": {k: v for k, v in dataclasses.asdict(self.expert_cfg).items() if v is not None},
        }
        for f in dataclasses.fields(self):
            if f.name not in out and getattr(self, f.name) is not None:
                out[f.name] = getattr(self, f.name)
        return out
