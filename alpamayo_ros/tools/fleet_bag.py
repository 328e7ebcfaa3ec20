"""One bag of a fleet evaluation: the lockstep replay and the evaluation, as `tools.replay` and `tools.evaluate` run
them, with the result kept in the bag's own result folder. Ray-free: a fleet worker, a benchmark or a test calls it.

A result folder holds `replay/` (the output bag), `evaluation.json` and, written last and atomically, `result.json`:
the bag, its content hash, the parameters' hash, the status and the evaluation summary. A result is complete when its
status is `ok` or `bad_bag` (the bag's own fault: missing topics, corrupt data, nothing published); a later run
with the same bag content and parameters returns it without replaying. `error` (anything else, e.g. out of GPU
memory) and `lost` (the worker died on every attempt; written by the driver) are recorded and retried next run.
The model is loaded once per process and kept for every later bag with the same model settings.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import shutil
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from alpamayo_ros.parameters import NodeConfig
from alpamayo_ros.pipeline.settings import ModelSettings

RESULT = "result.json"
ATTEMPTS = "attempts.txt"  # one line (pid host) per attempt that started replaying: a killed worker leaves one
COMPLETE = ("ok", "bad_bag")
HASH_CHUNK_BYTES = 1 << 20

_MODELS: dict[ModelSettings, object] = {}  # this process's model, by the settings it was built with


@dataclass(frozen=True)
class BagJob:
    """What a worker needs to evaluate one bag."""

    bag: Path  # rosbag2 directory or .mcap/.db3 file, at a path every worker sees
    result_dir: Path  # this bag's folder under the run's --out
    cfg: NodeConfig
    params_sha256: str  # `params_digest` of cfg, camera topics and node
    camera_topics: tuple[str, ...] | None = None  # None: the parameters' subscribed topics
    node: str = "/alpamayo"
    rerun_failed: bool = False  # replay `bad_bag` results again too


def params_digest(cfg: NodeConfig, camera_topics: tuple[str, ...] | None, node: str) -> str:
    """sha256 of every parameter, the camera topics and the node prefix: what makes two results comparable."""
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    text = json.dumps({"parameters": values, "camera_topics": camera_topics, "node": node}, sort_keys=True,
                      default=lambda v: v.value if isinstance(v, enum.Enum) else list(v))
    return hashlib.sha256(text.encode()).hexdigest()


def bag_digest(bag: Path) -> str:
    """sha256 over the bag's files (relative name, size, bytes), in name order: the same content, the same hash."""
    bag = Path(bag)
    files = sorted(p for p in bag.rglob("*") if p.is_file()) if bag.is_dir() else [bag]
    digest = hashlib.sha256()
    for path in files:
        name = path.relative_to(bag).as_posix() if bag.is_dir() else path.name
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as stream:
            while chunk := stream.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()


def read_result(result_dir: Path) -> dict | None:
    """The result.json of a result folder, or None when there is none (or a partial one from a killed writer)."""
    try:
        return json.loads((Path(result_dir) / RESULT).read_text())
    except (OSError, ValueError):
        return None


def write_result(result_dir: Path, record: dict) -> None:
    """result.json, atomically: a reader never sees half of it."""
    partial = Path(result_dir) / f".{RESULT}.{os.getpid()}"
    partial.write_text(json.dumps(record, indent=2))
    os.replace(partial, Path(result_dir) / RESULT)


def cached_model(settings: ModelSettings):
    """The model for `settings`, built on the first call in this process. Returns (model, built_now)."""
    from alpamayo_ros.pipeline.engine import build_model

    if settings in _MODELS:
        return _MODELS[settings], False
    _MODELS.clear()  # one model per process: a new one replaces the old
    _MODELS[settings], _ = build_model(settings)
    return _MODELS[settings], True


def run_bag(job: BagJob) -> dict:
    """Replay and evaluate one bag into `job.result_dir` unless a complete result for its content is there.

    Returns the result record (also in result.json); `skipped` is True when an earlier run's result was reused.
    Never raises for a bad bag or a failing model: the record carries the error.
    """
    from alpamayo_ros.ros_env import loopback_dds_env

    loopback_dds_env()  # before this process first loads rclpy's message libraries
    started = time.perf_counter()
    record = {"bag": str(job.bag), "params_sha256": job.params_sha256, "worker": {"pid": os.getpid(),
                                                                               "host": socket.gethostname()}}
    try:
        record["content_sha256"] = bag_digest(job.bag)
    except OSError as exc:
        return _finish(job, record, "bad_bag", f"cannot read the bag's files: {exc}", started)
    previous = read_result(job.result_dir)
    complete = COMPLETE[:1] if job.rerun_failed else COMPLETE
    if (previous and previous.get("status") in complete and previous.get("content_sha256") == record["content_sha256"]
            and previous.get("params_sha256") == job.params_sha256):
        return {**previous, "skipped": True}
    _clear(job.result_dir, keep_attempts=previous is None)
    with (job.result_dir / ATTEMPTS).open("a") as attempts:
        attempts.write(f"{os.getpid()} {socket.gethostname()}\n")
    return _replay_and_evaluate(job, record, started)


def _replay_and_evaluate(job: BagJob, record: dict, started: float) -> dict:
    from alpamayo_ros.tools.bag_io import BagError
    from alpamayo_ros.tools.evaluate import evaluate
    from alpamayo_ros.tools.replay import replay_lockstep

    try:
        model, record["worker"]["model_loaded"] = cached_model(job.cfg.model_settings)
    except Exception as exc:  # noqa: BLE001 - not the bag's fault: recorded, and retried by the next run
        return _finish(job, record, "error", f"loading the model: {type(exc).__name__}: {exc}", started,
                       traceback.format_exc())
    try:
        counts, lockstep = replay_lockstep(job.bag, job.result_dir / "replay", job.cfg, model=model,
                                           camera_topics=list(job.camera_topics) if job.camera_topics else None,
                                           node=job.node)
        record["replay"] = {"summary": counts.summary(), "ticks": counts.ticks, "published": counts.published,
                            "refused": len(lockstep.refused), "model_s": lockstep.model_seconds}
        if counts.published == 0:
            raise BagError(f"no outputs were published ({counts.summary()})")
        record["evaluation"] = evaluate([job.result_dir / "replay"], odometry_topic=job.cfg.odometry_topic,
                                        output_topic=f"{job.node}/output", tick_topic=f"{job.node}/tick",
                                        json_path=job.result_dir / "evaluation.json")
    except (BagError, ValueError) as exc:  # what the replay CLI reports as the bag's or the parameters' fault
        return _finish(job, record, "bad_bag", f"{type(exc).__name__}: {exc}", started)
    except Exception as exc:  # noqa: BLE001 - recorded with its traceback, and retried by the next run
        return _finish(job, record, "error", f"{type(exc).__name__}: {exc}", started, traceback.format_exc())
    return _finish(job, record, "ok", "", started)


def _finish(job: BagJob, record: dict, status: str, error: str, started: float, trace: str = "") -> dict:
    attempts = job.result_dir / ATTEMPTS
    record.update(status=status, error=error, traceback=trace, seconds=time.perf_counter() - started, skipped=False,
                  attempts=len(attempts.read_text().splitlines()) if attempts.exists() else 0)
    job.result_dir.mkdir(parents=True, exist_ok=True)
    write_result(job.result_dir, record)
    return record


def _clear(result_dir: Path, keep_attempts: bool) -> None:
    """Remove an old or partial result (a killed attempt's half-written replay), keeping earlier attempts' record
    when no result was ever written."""
    for name in ("replay", "evaluation.json", RESULT) + (() if keep_attempts else (ATTEMPTS,)):
        path = result_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    result_dir.mkdir(parents=True, exist_ok=True)
