"""The node's parameters, declared once: one frozen dataclass whose fields carry name, default, description, range.

The node declares its ROS parameters from these fields (`node.py`); the in-process replay reads the
same YAML and `NAME:=VALUE` overrides through `from_values`; the launch file's helper reads names and defaults
here. No rclpy, torch or transformers here. Values are checked once, stopping with the name, the value and what
was expected.
"""

from __future__ import annotations

import enum
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import yaml

from alpamayo_ros.devices import device_problem
from alpamayo_ros.model.cameras import FRONT_WIDE, NVIDIA_CAMERA_IDS, RELEASE_CAMERAS, camera_ids_of, camera_name
from alpamayo_ros.pipeline.settings import (
    TINY_RANDOM,
    ModelSettings,
    OutputLimits,
    SamplingSettings,
    Selection,
    TickSettings,
)
from alpamayo_ros.pipeline.sync import InputLimits, SyncConfig
from alpamayo_ros.units import NS_PER_S

NODE_NAME = "alpamayo"  # the node's default name: its topics are ~/trajectory = /alpamayo/trajectory
# Cameras a rig may have: the release's four, or (Alpamayo 1.5, whose prompt names each camera) 1 or 2, the
# smaller rigs issue 22 asks for; the prompt, the sync and the ticks are tested with each.
CAMERA_COUNTS = (1, 2, 4)


class OutputFrame(enum.Enum):
    """`odom`: transformed by the odometry pose at t0; `base_link`: the ego frame at t0."""

    ODOM = "odom"
    BASE_LINK = "base_link"


class ImageTransport(enum.Enum):
    """image_transport's names: `raw` subscribes to the base topic, `compressed` to `<base>/compressed`."""

    RAW = "raw"
    COMPRESSED = "compressed"


def _param(default: object, description: str, *, name: str = "", low: float | None = None,
           high: float | None = None, choices: tuple[str, ...] = ()) -> object:
    """A NodeConfig field: `name` is the ROS parameter's when it differs from the field's (units in field names)."""
    metadata = {"description": description, "name": name, "range": (low, high), "choices": choices}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Every parameter, read once at start-up and checked."""

    model_path: str = _param("", f"Local AlpamayoR1 or Alpamayo 1.5 checkpoint directory (its config.json says "
                                 f"which); empty runs the embedded driver (a small R1 trained on the synthetic world), "
                                 f"'{TINY_RANDOM}' the tiny random model")
    base_model_dir: str = _param("", "Local base Qwen3-VL directory (config.json, processor files); empty: "
                                     "resolve the checkpoint's vlm_name_or_path locally")
    device: str = _param("cuda", "torch device: cuda, cuda:1, cpu")
    dtype: str = _param("bfloat16", "Model dtype", choices=("bfloat16", "float16", "float32"))
    camera_topics: tuple[str, ...] = _param(
        ("/cameras/cross_left/image", "/cameras/front_wide/image", "/cameras/cross_right/image",
         "/cameras/front_tele/image"),
        "Base image topics, one per camera in the model's order (camera_ids names their cameras): the release's "
        "4, cross-left, front-wide, cross-right, front-tele; or 1 or 2 with an Alpamayo 1.5 checkpoint "
        "(image_transport compressed subscribes to <base>/compressed)")
    image_transport: ImageTransport = _param(ImageTransport.RAW, "raw (sensor_msgs/Image on the base topic) or "
                                             "compressed (sensor_msgs/CompressedImage on <base>/compressed)")
    odometry_topic: str = _param("/odom", "nav_msgs/Odometry of the vehicle (base frame in the odometry frame)")
    camera_ids: tuple[str, ...] = _param(
        RELEASE_CAMERAS, "NVIDIA's name of each camera_topics camera, in the same order, sorted by NVIDIA's camera "
        "index as its loader sorts them (cross_left 0, front_wide 1, cross_right 2, rear_left 3, rear_tele 4, "
        "rear_right 5, front_tele 6); Alpamayo 1.5's prompt labels each camera's frames with it. AlpamayoR1 takes "
        "only the release's four (the default)")
    route_topic: str = _param("", "Alpamayo 1.5: std_msgs/String navigation instruction in the release's wording "
                                  "('Turn left in 40m'; '' clears it), subscribed transient-local (the publisher must "
                                  "be transient-local too; a late joiner gets the last one); empty: none")
    route_path_topic: str = _param("", "Alpamayo 1.5: nav_msgs/Path planned route in the odometry frame; each tick "
                                       "words its next turn at t0 ('Turn right in 30m', rules in pipeline/route.py); "
                                       "route_topic wins while fresh; empty: none")
    max_route_age_s: float = _param(5.0, "Seconds after its reception a route text or path is too old to use (then "
                                         "the plain prompt)", name="max_route_age", low=0.1, high=3600.0)
    nav_guidance_weight: float = _param(1.0, "Alpamayo 1.5 with a route: 1 = the plain call; otherwise classifier-free "
                                             "guidance (0 ignores the route, > 1 follows it harder; the release "
                                             "notebook uses 1.5), at the cost of a second prefill and expert pass",
                                        low=0.0, high=5.0)
    noise_temperature: float = _param(1.0, "Scale of the flow's initial noise (Alpamayo 1.5's diffusion temperature; "
                                           "< 1: steadier, less diverse trajectories)", low=0.01, high=2.0)
    rate_hz: float = _param(2.0, "Inference ticks per second", low=0.05, high=50.0)
    num_samples: int = _param(1, "Reasoning/trajectory samples per tick", low=1, high=16)
    diffusion_steps: int = _param(10, "Euler steps of the flow-matching expert", low=1, high=100)
    max_reasoning_tokens: int = _param(256, "Chain-of-Causation token limit", low=1, high=4096)
    temperature: float = _param(0.6, "Reasoning sampling temperature; 0 = greedy", low=0.0, high=5.0)
    top_p: float = _param(0.98, "Nucleus sampling mass", low=0.01, high=1.0)
    seed: int = _param(0, "Base seed; tick k uses seed + k")
    sync_tolerance_s: float = _param(0.05, "Seconds a camera frame may be from its target time",
                                     name="sync_tolerance", low=0.001, high=0.05)
    max_input_age_s: float = _param(0.5, "Seconds t0 may lag the node clock", name="max_input_age", low=0.01, high=10.0)
    max_odometry_gap_s: float = _param(0.25, "Seconds between odometry messages beyond which the history is "
                                             "refused", name="max_odometry_gap", low=0.01, high=2.0)
    max_pose_jump_m: float = _param(1.0, "m an odometry pose may lie from where the previous pose and the twist put "
                                         "it (plus half the speed times the time between them) before the history "
                                         "restarts", name="max_pose_jump", low=0.05, high=100.0)
    max_yaw_jump_deg: float = _param(5.0, "deg an odometry pose may be turned from where the previous pose and the "
                                          "twist put it (plus 30 deg/s times the time between them) before the "
                                          "history restarts", name="max_yaw_jump", low=0.1, high=180.0)
    output_frame: OutputFrame = _param(OutputFrame.ODOM, "odom (transform by the pose at t0) or base_link "
                                                         "(ego frame at t0)")
    selection: Selection = _param(Selection.FIRST, "Published sample: first, or medoid of the valid samples")
    reasoning_mode: str = _param("per_sample", "per_sample: every sample writes its own reasoning (the reference); "
                                 "shared: one reasoning for all samples, which then differ only in the flow's noise "
                                 "(faster)", choices=("per_sample", "shared"))
    image_preprocessing: str = _param("host", "host: the transformers processor (PIL) on the CPU, the reference's "
                                      "pixels; device: raw frames uploaded and resized/normalised on the model's "
                                      "device (faster; within 2 uint8 levels of PIL on a few pixels)",
                                      choices=("host", "device"))
    torch_threads: int = _param(1, "torch intra-op CPU threads for the model. More than 1 speeds an idle CPU, but "
                                   "beside other busy processes each parallel op waits for a descheduled thread: "
                                   "the tiny model at 1080p took 1.4 s per tick with 1 thread and 6-11 s with 2 beside "
                                   "two CPU hogs", low=1, high=256)
    compile_flow: str = _param("off", "torch.compile the expert's Euler loop (reduce-overhead replays CUDA graphs on "
                               "a GPU); the first tick compiles, which takes seconds",
                               choices=("off", "default", "reduce-overhead"))
    max_speed_mismatch_mps: float = _param(2.0, "m/s the history-implied speed may differ from the odometry twist "
                                                "before the tick is skipped", name="max_speed_mismatch",
                                           low=0.1, high=50.0)
    max_first_pose_error_m: float = _param(0.5, "m the first pose may be from v0 * 0.1 s ahead before the sample "
                                                "is withheld", name="max_first_pose_error", low=0.05, high=10.0)
    max_reverse_m: float = _param(1.0, "m a sample may reverse behind the vehicle before its path first turns back "
                                       "(else: withheld; running back after braking to a stop is a stop)",
                                  name="max_reverse", low=0.0, high=100.0)

    def __post_init__(self) -> None:
        if device_problem(self.device):
            raise ValueError(device_problem(self.device))
        self._check_cameras()
        if self.route_topic and self.route_topic == self.route_path_topic:
            raise ValueError(f"parameters route_topic and route_path_topic are both {self.route_topic!r}")

    def _check_cameras(self) -> None:
        topics, names = list(self.camera_topics), list(self.camera_ids)
        if len(topics) not in CAMERA_COUNTS:
            raise ValueError(f"parameter camera_topics has {len(topics)} topics {topics}, expected 4 (the release's "
                             "cameras) or, with an Alpamayo 1.5 checkpoint, 1 or 2")
        if len(set(topics)) != len(topics):
            raise ValueError(f"parameter camera_topics {topics} names a topic twice")
        if len(names) != len(topics):
            raise ValueError(f"parameters camera_topics {topics} and camera_ids {names} differ in length: camera_ids "
                             "names the camera of each camera_topics entry, in the same order")
        if len(set(names)) != len(names):
            raise ValueError(f"parameter camera_ids {names} names a camera twice (camera_topics {topics})")
        try:
            ids = camera_ids_of(names)
        except ValueError as exc:
            raise ValueError(f"parameter camera_ids {names} (for camera_topics {topics}): {exc}") from None
        if list(ids) != sorted(ids):  # NVIDIA's loader sorts the cameras by index: the order the model was fed
            order = sorted(names, key=NVIDIA_CAMERA_IDS.__getitem__)
            raise ValueError(f"parameters camera_ids {names} and camera_topics {topics}: list the cameras by NVIDIA "
                             f"camera index, as its loader orders the model's images ({order}); reorder both lists")

    @property
    def camera_names(self) -> tuple[str, ...]:
        """Each camera's short name (front_wide) for logs, diagnostics and the input buffers."""
        return tuple(camera_name(name) for name in self.camera_ids)

    @property
    def max_route_age_ns(self) -> int:
        """`max_route_age` in nanoseconds, as the route input keeps time."""
        return round(self.max_route_age_s * NS_PER_S)

    @property
    def has_route(self) -> bool:
        """A route topic is configured (Alpamayo 1.5 navigation)."""
        return bool(self.route_topic or self.route_path_topic)

    @property
    def subscribed_camera_topics(self) -> tuple[str, ...]:
        """The topics actually subscribed: the base topics, or `<base>/compressed` (image_transport's rule)."""
        if self.image_transport is ImageTransport.COMPRESSED:
            return tuple(f"{topic.rstrip('/')}/compressed" for topic in self.camera_topics)
        return self.camera_topics

    @property
    def sync(self) -> SyncConfig:
        return SyncConfig(sync_tolerance_ns=round(self.sync_tolerance_s * NS_PER_S),
                          max_input_age_ns=round(self.max_input_age_s * NS_PER_S),
                          max_odometry_gap_ns=round(self.max_odometry_gap_s * NS_PER_S),
                          max_pose_jump_m=self.max_pose_jump_m, max_yaw_jump_deg=self.max_yaw_jump_deg,
                          reference_camera=self.camera_ids.index(FRONT_WIDE) if FRONT_WIDE in self.camera_ids else 0)

    @property
    def sampling(self) -> SamplingSettings:
        return SamplingSettings(num_samples=self.num_samples, diffusion_steps=self.diffusion_steps,
                                max_reasoning_tokens=self.max_reasoning_tokens, temperature=self.temperature,
                                top_p=self.top_p, seed=self.seed, reasoning=self.reasoning_mode,
                                camera_ids=camera_ids_of(self.camera_ids), nav_guidance_weight=self.nav_guidance_weight,
                                noise_temperature=self.noise_temperature)

    @property
    def model_settings(self) -> ModelSettings:
        return ModelSettings(model_path=self.model_path, base_model_dir=self.base_model_dir, device=self.device,
                             dtype=self.dtype, seed=self.seed, image_preprocessing=self.image_preprocessing,
                             compile_flow=self.compile_flow, torch_threads=self.torch_threads)

    @property
    def tick_settings(self) -> TickSettings:
        return TickSettings(rate_hz=self.rate_hz,
                            input_limits=InputLimits(max_speed_mismatch_mps=self.max_speed_mismatch_mps),
                            output_limits=OutputLimits(max_first_pose_error_m=self.max_first_pose_error_m,
                                                       max_reverse_m=self.max_reverse_m),
                            selection=self.selection)


@dataclass(frozen=True, slots=True)
class ParameterSpec:
    """One ROS parameter as the node declares it."""

    name: str  # the ROS name
    field_name: str
    default: object  # as ROS holds it: str, int, float, list[str]
    description: str
    low: float | None
    high: float | None
    choices: tuple[str, ...]
    enum_type: type[enum.Enum] | None = None  # the field holds this Enum of the value


def parameter_specs() -> list[ParameterSpec]:
    """Every parameter, in declaration order."""
    specs = []
    for f in fields(NodeConfig):
        meta = f.metadata
        default = f.default if f.default is not MISSING else None
        choices, enum_type = meta["choices"], None
        if isinstance(default, enum.Enum):
            enum_type = type(default)
            choices = tuple(member.value for member in type(default))
            default = default.value
        elif isinstance(default, tuple):
            default = list(default)
        specs.append(ParameterSpec(name=meta["name"] or f.name, field_name=f.name, default=default,
                                   description=meta["description"], low=meta["range"][0], high=meta["range"][1],
                                   choices=choices, enum_type=enum_type))
    return specs


def from_values(values: dict[str, object]) -> NodeConfig:
    """A NodeConfig from ROS-named values (missing ones take their default); raises ValueError naming the problem."""
    specs = parameter_specs()
    known = {spec.name for spec in specs} | {"use_sim_time"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; known: {sorted(known)}")
    kwargs = {}
    for spec in specs:
        value = values.get(spec.name, spec.default)
        kwargs[spec.field_name] = _checked(spec, value)
    return NodeConfig(**kwargs)


def _checked(spec: ParameterSpec, value: object) -> object:
    expected_type = type(spec.default)
    if expected_type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # `-p rate_hz:=2` is an integer to ROS
    if expected_type is list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"parameter {spec.name}={value!r}: expected a list of strings")
        value = tuple(value)
    elif not isinstance(value, expected_type) or isinstance(value, bool) != isinstance(spec.default, bool):
        raise ValueError(f"parameter {spec.name}={value!r}: expected type {expected_type.__name__}")
    if spec.choices and value not in spec.choices:
        raise ValueError(f"parameter {spec.name}={value!r}: expected one of {list(spec.choices)}")
    if (spec.low is not None and value < spec.low) or (spec.high is not None and value > spec.high):
        raise ValueError(f"parameter {spec.name}={value!r}: expected a value in [{spec.low}, {spec.high}]")
    return spec.enum_type(value) if spec.enum_type is not None else value


def read_params_file(path: Path, node_name: str = NODE_NAME) -> dict[str, object]:
    """The `ros__parameters` a YAML parameter file gives this node (`/**`, `name` or `/name` sections, merged)."""
    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"parameter file {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"parameter file {path}: expected a mapping of node names to ros__parameters")
    values: dict[str, object] = {}
    for key in ("/**", node_name, f"/{node_name}"):
        section = document.get(key)
        if isinstance(section, dict):
            values.update(section.get("ros__parameters") or {})
    return values


def parse_override(text: str) -> tuple[str, object]:
    """'name:=value' -> (name, value), the value read as YAML as ROS does ('2' -> 2, '[a, b]' -> list)."""
    name, sep, raw = text.partition(":=")
    if not sep or not name:
        raise ValueError(f"--param {text!r}: expected NAME:=VALUE")
    return name, yaml.safe_load(raw) if raw else ""
