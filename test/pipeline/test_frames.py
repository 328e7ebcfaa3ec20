"""Frames: cheap checks on arrival, decoding only when selected, decoded frames reused by (camera, stamp)."""

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from alpamayo_ros.pipeline.frames import (
    CameraFrame,
    FrameDecodeError,
    FrameDecoder,
    InvalidImage,
    compressed_image,
    decode,
    raw_image,
    rgb_frame,
)


def jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_arrival_checks_read_only_the_header():
    data = jpeg(np.zeros((30, 40, 3), np.uint8))
    image = compressed_image("jpeg", data)
    assert (image.height, image.width) == (30, 40) and image.data is data  # kept, not copied or decoded
    assert raw_image("bgr8", 2, 3, 9, bytes(18)).data is not None
    with pytest.raises(InvalidImage, match="step is 8, expected >= width \\* 3 = 9"):
        raw_image("rgb8", 2, 3, 8, bytes(16))


def test_bgr_decodes_to_rgb_and_is_read_only():
    bgr = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    rgb = decode(raw_image("bgr8", 2, 4, 12, bgr.tobytes()))
    assert np.array_equal(rgb, bgr[..., ::-1]) and not rgb.flags.writeable


def test_decoder_reuses_frames_a_later_selection_shares_and_forgets_the_rest():
    frames = [rgb_frame(stamp, np.full((2, 2, 3), stamp, np.uint8)) for stamp in range(6)]
    decoder = FrameDecoder()
    first = decoder.decode(frames[:4], [0, 0, 0, 0])
    assert decoder.decoded == 4 and decoder.reused == 0
    second = decoder.decode(frames[2:6], [0, 0, 0, 0])
    assert decoder.decoded == 6 and decoder.reused == 2
    assert second[0] is first[2] and second[1] is first[3]  # the same arrays: no second decode
    decoder.decode(frames[:1], [1])  # another camera, same stamp: a different frame
    assert decoder.decoded == 7 and len(decoder._decoded) == 1  # only the last selection is kept


def test_undecodable_frame_names_its_camera_and_stamp():
    good = CameraFrame(5, compressed_image("jpeg", jpeg(np.zeros((16, 16, 3), np.uint8))))
    noise = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    data = jpeg(noise)
    broken = CameraFrame(7, compressed_image("jpeg", data[:len(data) // 2]))
    with pytest.raises(FrameDecodeError) as info:
        FrameDecoder().decode([good, broken], [2, 3])
    assert (info.value.camera, info.value.stamp_ns) == (3, 7) and "undecodable" in str(info.value)


def test_decoded_size_must_match_the_header():
    image = compressed_image("jpeg", jpeg(np.zeros((16, 16, 3), np.uint8)))
    lying = type(image)(format="jpeg", height=8, width=16, data=image.data)
    with pytest.raises(InvalidImage, match="decoded size is 16x16, expected the header's 16x8"):
        decode(lying)


def test_png_with_a_broken_chunk_is_an_invalid_image_not_an_escaping_error():
    buffer = io.BytesIO()
    PILImage.fromarray(np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(
        buffer, format="PNG", compress_level=0)  # 196 kB of pixels: PIL writes several IDAT chunks
    data = bytearray(buffer.getvalue())
    second = data.index(b"IDAT", data.index(b"IDAT") + 4)
    data[second:second + 4] = b"\x00\x01\x02\x03"  # a chunk type PIL cannot parse: SyntaxError inside PIL
    image = compressed_image("png", bytes(data))  # the header is fine
    with pytest.raises(InvalidImage, match="undecodable"):
        decode(image)
