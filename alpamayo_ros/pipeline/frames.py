"""Camera frames as they arrive (undecoded), and their decoding when a tick selects them.

Arrival costs O(1): a frame keeps the message's bytes (raw pixels or JPEG/PNG) and the size its header
claims, checked cheaply (encoding known, lengths consistent, compressed header readable). Only the 16
frames a tick selects are converted to (H, W, 3) uint8 RGB, on the worker thread; `FrameDecoder` keeps
each decoded frame by (camera, stamp) so the next tick that selects it again reuses it.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage

# What PIL raises on broken data besides OSError: SyntaxError ("broken PNG file"), struct.error,
# IndexError, TypeError, EOFError. All of them mean the bytes are not the image they claim to be.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, struct.error, IndexError, TypeError, EOFError,
                  PILImage.DecompressionBombError)
MAX_COMPRESSED_PIXELS = 40_000_000  # 8K is 33 Mpx; a larger header is a malformed or hostile image

# encoding -> (channels, channel order to RGB)
RAW_ENCODINGS = {"rgb8": (3, (0, 1, 2)), "bgr8": (3, (2, 1, 0)), "rgba8": (4, (0, 1, 2)),
                 "bgra8": (4, (2, 1, 0)), "mono8": (1, (0, 0, 0))}


class InvalidImage(ValueError):
    """An image that cannot be used: which field, what it held, what was expected."""

    def __init__(self, field: str, got: object, expected: str) -> None:
        super().__init__(f"{field} is {got}, expected {expected}")
        self.field, self.got, self.expected = field, got, expected


@dataclass(frozen=True, slots=True)
class RawImage:
    """sensor_msgs/Image payload: `data` is `step * height` bytes of `encoding` pixels."""

    encoding: str
    height: int
    width: int
    step: int
    data: object  # bytes-like (the message's buffer, not copied)


@dataclass(frozen=True, slots=True)
class CompressedImage:
    """sensor_msgs/CompressedImage payload: JPEG or PNG bytes; height/width read from its header."""

    format: str
    height: int
    width: int
    data: object  # bytes-like


@dataclass(frozen=True, slots=True)
class CameraFrame:
    """One camera frame as received: its header stamp and its undecoded image."""

    stamp_ns: int
    image: RawImage | CompressedImage

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) as the header states it."""
        return self.image.height, self.image.width


def raw_image(encoding: str, height: int, width: int, step: int, data: object) -> RawImage:
    """A raw image after the arrival checks (no pixel is touched)."""
    if encoding not in RAW_ENCODINGS:
        raise InvalidImage("encoding", repr(encoding), f"one of {sorted(RAW_ENCODINGS)}")
    channels = RAW_ENCODINGS[encoding][0]
    if height == 0 or width == 0:
        raise InvalidImage("height x width", f"{height} x {width}", "a non-empty image")
    if step < width * channels:
        raise InvalidImage("step", step, f">= width * {channels} = {width * channels}")
    if len(data) != step * height:
        raise InvalidImage("data length", len(data), f"step * height = {step * height}")
    return RawImage(encoding=encoding, height=height, width=width, step=step, data=data)


def compressed_image(fmt: str, data: object) -> CompressedImage:
    """A compressed image after the arrival checks: known format, a header PIL can read, a sane size.

    Reading the header does not decode the pixels (about 20 us for a 1080p JPEG).
    """
    lowered = fmt.lower()
    if "jpeg" not in lowered and "jpg" not in lowered and "png" not in lowered:
        raise InvalidImage("format", repr(fmt), "a JPEG or PNG compressed image")
    try:
        with PILImage.open(io.BytesIO(data)) as header:
            width, height = header.size
    except _DECODE_ERRORS as exc:
        raise InvalidImage("data", f"undecodable ({exc})", f"{fmt} bytes") from exc
    if width * height > MAX_COMPRESSED_PIXELS:
        raise InvalidImage("image size", f"{width}x{height}", f"at most {MAX_COMPRESSED_PIXELS} pixels")
    return CompressedImage(format=fmt, height=height, width=width, data=data)


def decode(image: RawImage | CompressedImage) -> np.ndarray:
    """(H, W, 3) uint8 RGB, read-only. Raises InvalidImage if the pixels do not decode as announced."""
    if isinstance(image, RawImage):
        channels, order = RAW_ENCODINGS[image.encoding]
        rows = np.frombuffer(image.data, dtype=np.uint8).reshape(image.height, image.step)
        pixels = rows[:, :image.width * channels].reshape(image.height, image.width, channels)
        rgb = pixels if image.encoding == "rgb8" else np.ascontiguousarray(pixels[..., list(order)])
    else:
        try:
            with PILImage.open(io.BytesIO(image.data)) as decoded:
                rgb = np.asarray(decoded.convert("RGB"))
        except _DECODE_ERRORS as exc:
            raise InvalidImage("data", f"undecodable ({exc})", f"{image.format} bytes") from exc
        if rgb.shape[:2] != (image.height, image.width):
            raise InvalidImage("decoded size", f"{rgb.shape[1]}x{rgb.shape[0]}",
                               f"the header's {image.width}x{image.height}")
    if rgb.flags.writeable:
        rgb.flags.writeable = False
    return rgb


class FrameDecodeError(ValueError):
    """A selected frame did not decode; names the camera and stamp."""

    def __init__(self, camera: int, stamp_ns: int, error: InvalidImage) -> None:
        super().__init__(str(error))
        self.camera, self.stamp_ns, self.error = camera, stamp_ns, error


class FrameDecoder:
    """Decodes selected frames, keeping each by (camera, stamp) until a tick no longer selects it.

    Frames not kept from the previous selection are decoded in parallel on `workers` threads (PIL and
    numpy release the GIL while they convert pixels: 16 JPEGs of 1080p take half the time on 2 cores).
    Used by one thread at a time (the runner's worker, or the replay's loop).
    """

    def __init__(self, workers: int = min(4, os.cpu_count() or 1)) -> None:
        self._decoded: dict[tuple[int, int], np.ndarray] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="alpamayo-decode") if workers > 1 else None
        self.decoded = 0  # frames decoded so far
        self.reused = 0  # frames served from the previous selection

    def decode(self, frames: Sequence[CameraFrame], cameras: Sequence[int]) -> tuple[np.ndarray, ...]:
        """Images of `frames` (camera `cameras[i]` each). Raises FrameDecodeError on the first bad frame."""
        keys = [(camera, frame.stamp_ns) for frame, camera in zip(frames, cameras)]
        todo = {key: frame for key, frame in zip(keys, frames) if key not in self._decoded}
        self.reused += len(set(keys)) - len(todo)
        jobs = list(todo.items())
        results = (self._pool.map(_decode_or_error, [f for _, f in jobs]) if self._pool and len(jobs) > 1
                   else map(_decode_or_error, [f for _, f in jobs]))
        fresh = dict(zip([k for k, _ in jobs], results))
        kept = {key: self._decoded.get(key, fresh.get(key)) for key in keys}
        for key in keys:  # the first bad frame in selection order
            if isinstance(kept[key], InvalidImage):
                self._decoded = {k: v for k, v in kept.items() if isinstance(v, np.ndarray)}
                raise FrameDecodeError(key[0], key[1], kept[key]) from kept[key]
        self.decoded += len(fresh)
        self._decoded = kept  # only what this selection uses: bounded by 16 frames
        return tuple(kept[key] for key in keys)

    def clear(self) -> None:
        self._decoded.clear()


def _decode_or_error(frame: CameraFrame) -> np.ndarray | InvalidImage:
    try:
        return decode(frame.image)
    except InvalidImage as exc:
        return exc


def rgb_frame(stamp_ns: int, rgb: np.ndarray) -> CameraFrame:
    """A frame holding already-decoded (H, W, 3) uint8 RGB pixels (synthetic sources, tests)."""
    pixels = np.ascontiguousarray(rgb, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise InvalidImage("shape", pixels.shape, "(H, W, 3)")
    height, width = pixels.shape[:2]
    return CameraFrame(stamp_ns, raw_image("rgb8", height, width, width * 3, memoryview(pixels.reshape(-1))))
