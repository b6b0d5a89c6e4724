"""Input files: natural file and frame order everywhere a folder is listed, and one image reader that returns what
an image viewer (and cv2.imread, which Ultralytics uses) shows, for every PIL mode, with clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import data_file
from PIL import Image

from masklet.data.images import as_rgb_uint8, read_image
from masklet.data.ordering import frame_order, natural_key, natural_sorted
from masklet.data.sources import VideoFrames, iter_stream, open_source

cv2 = pytest.importorskip("cv2")


def cv2_rgb(path) -> np.ndarray:
    """What Ultralytics reads: cv2.imread(path, IMREAD_COLOR), in RGB order."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"OpenCV cannot read {path}"
    return bgr[..., ::-1]


def grey(values) -> np.ndarray:
    row = np.asarray(values, np.uint8)[None, :]
    return np.repeat(row[:, :, None], 3, axis=2)


# ---------------------------------------------------------------------------------------------------
# Order
# ---------------------------------------------------------------------------------------------------

TWELVE = [f"frame_{i}.png" for i in range(1, 13)]


def numbered_folder(folder, names):
    """Images whose pixel value is their position in `names` (1-based), so a read order is checkable."""
    folder.mkdir(parents=True, exist_ok=True)
    for value, name in enumerate(names, start=1):
        Image.fromarray(np.full((4, 6, 3), value, np.uint8)).save(folder / name)
    return folder


def test_natural_key_and_sorted():
    shuffled = [TWELVE[k] for k in (9, 0, 11, 1, 10, 2, 3, 8, 4, 7, 5, 6)]
    assert natural_sorted(shuffled) == TWELVE
    assert sorted(shuffled) != TWELVE  # text order would put frame_10 after frame_1
    assert natural_key("frame_12.jpg") == ("frame_", 12, ".jpg")
    assert natural_sorted(["img10b2.png", "img10b10.png", "img9.png", "IMG10b1.png"]) == [
        "img9.png", "IMG10b1.png", "img10b2.png", "img10b10.png"]
    # names with and without digits compare without a str/int TypeError
    assert natural_sorted(["b.jpg", "10.jpg", "a2.jpg", "2.jpg"]) == ["2.jpg", "10.jpg", "a2.jpg", "b.jpg"]
    # the documented tie rule: equal under the natural key -> exact text
    assert natural_sorted(["1.jpg", "01.jpg", "B.jpg", "b.jpg"]) == ["01.jpg", "1.jpg", "B.jpg", "b.jpg"]
    # non-ASCII digits are text, not numbers
    assert natural_key("x²") == ("x²",)


def test_frame_order_is_numeric_and_errors_when_ambiguous(tmp_path):
    paths = [tmp_path / n for n in reversed(TWELVE)]
    assert [p.name for p in frame_order(paths)] == TWELVE
    assert frame_order(["frame_2.jpg", "frame_010.jpg", "frame_1.jpg"]) == ["frame_1.jpg", "frame_2.jpg",
                                                                           "frame_010.jpg"]
    assert frame_order(["00002.jpg", "00000.jpg", "00001.jpg"]) == ["00000.jpg", "00001.jpg", "00002.jpg"]
    assert frame_order(["c.jpg", "A.jpg", "b.jpg"]) == ["A.jpg", "b.jpg", "c.jpg"]  # no digits: alphabetical
    with pytest.raises(ValueError, match=r"01\.jpg and 1\.jpg carry the same frame number"):
        frame_order(["0.jpg", "1.jpg", "01.jpg", "2.jpg"])
    with pytest.raises(ValueError, match=r"7\.jpg and 7\.png carry the same frame number"):
        frame_order(["7.png", "7.jpg"])
    with pytest.raises(ValueError, match=r"2 different patterns.*'frame_#': 2 file.*'img_#': 1 file"):
        frame_order(["frame_1.jpg", "frame_2.jpg", "img_3.jpg"])
    with pytest.raises(ValueError, match=r"'cover': 1 file\(s\), e\.g\. cover\.jpg.*Move the other files"):
        frame_order(["00000.jpg", "00001.jpg", "cover.jpg"])


def test_frame_folders_read_in_natural_order(tmp_path):
    folder = numbered_folder(tmp_path / "frames", TWELVE)
    with VideoFrames(folder) as video:
        assert [int(video[i][0, 0, 0]) for i in range(len(video))] == list(range(1, 13))
        assert video.frame_name(9) == "frame_10"
    assert [int(f[0, 0, 0]) for f in iter_stream(folder)] == list(range(1, 13))


def test_ambiguous_frame_folder_is_an_error(tmp_path):
    folder = numbered_folder(tmp_path / "frames", ["1.png", "01.png", "2.png"])
    with pytest.raises(ValueError, match=r"01\.png and 1\.png carry the same frame number"):
        VideoFrames(folder)
    with pytest.raises(ValueError, match="same frame number"):
        iter_stream(folder)
    mixed = numbered_folder(tmp_path / "mixed", ["frame_1.png", "frame_2.png", "thumbnail.png"])
    with pytest.raises(ValueError, match=r"'thumbnail'.*Move the other files"):
        VideoFrames(mixed)


def test_image_folders_and_globs_in_natural_order(tmp_path):
    folder = numbered_folder(tmp_path / "images", TWELVE)
    expected = [str(folder / n) for n in TWELVE]
    assert [item.path for item in open_source(folder)] == expected
    assert [item.path for item in open_source(str(folder / "*.png"))] == expected
    assert [item.path for item in open_source(str(tmp_path / "**" / "frame_*.png"))] == expected
    nested = tmp_path / "nested"
    for sub, name in (("a", "2.png"), ("b", "1.png"), ("a", "10.png"), ("A10", "3.png"), ("a2", "1.png")):
        numbered_folder(nested / sub, [name])
    assert [Path(item.path).relative_to(nested).as_posix() for item in open_source(str(nested / "**" / "*.png"))] == [
        "a/2.png", "a/10.png", "a2/1.png", "A10/3.png", "b/1.png"]
    # independent images: the same number twice is not an error, it follows the tie rule
    dup = numbered_folder(tmp_path / "dup", ["1.png", "01.png", "10.png"])
    assert [item.path for item in open_source(dup)] == [str(dup / n) for n in ("01.png", "1.png", "10.png")]


def test_val_datasets_list_in_natural_order(tmp_path):
    from masklet.val.datasets import InteractiveDataset, VOSDataset, write_palette_png

    root = tmp_path / "vos"
    videos = ["clip2", "clip10", "clip1"]
    for name in videos:
        numbered_folder(root / "JPEGImages" / name, TWELVE)
        label = np.zeros((4, 6), np.uint8)
        label[1:3, 2:4] = 1
        write_palette_png(root / "Annotations" / name / "frame_1.png", label)
    data = VOSDataset(root)
    assert data.names == ["clip1", "clip2", "clip10"]
    video = data["clip10"]
    assert [p.name for p in video.frame_paths] == TWELVE
    assert [int(video.read_frame(i)[0, 0, 0]) for i in range(12)] == list(range(1, 13))
    assert video.annotated_frames == [0]

    inter = tmp_path / "inter"
    numbered_folder(inter / "images", TWELVE)
    for name in TWELVE:
        mask = np.zeros((4, 6), np.uint8)
        mask[1:3, 1:3] = 1
        write_palette_png(inter / "masks" / name, mask)
    assert [p.name for p, _ in InteractiveDataset(inter)] == TWELVE


def test_auto_annotate_reads_a_folder_in_natural_order(tmp_path):
    import warnings

    import torch
    from conftest import tiny_sam2

    from masklet.api.annotate import auto_annotate

    folder = numbered_folder(tmp_path / "images", [n.replace("frame", "img") for n in TWELVE])
    seen = []

    def detector(image):
        seen.append(int(image[0, 0, 0]))
        return torch.zeros((0, 4)), torch.zeros(0, dtype=torch.long)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no boxes anywhere: warned about, not the point here
        auto_annotate(folder, det_model=detector, sam_model=tiny_sam2(), verbose=False, output_dir=tmp_path / "out")
    assert seen == list(range(1, 13))


# ---------------------------------------------------------------------------------------------------
# Reading: every PIL mode, bit depth, orientation
# ---------------------------------------------------------------------------------------------------

SIXTEEN = [0, 1, 255, 256, 257, 32767, 32768, 65279, 65280, 65535]
SIXTEEN_HIGH_BYTE = [0, 0, 0, 1, 1, 127, 128, 254, 255, 255]


def test_16bit_grey_png_is_scaled_like_opencv(tmp_path):
    path = tmp_path / "depth.png"
    Image.fromarray(np.asarray([SIXTEEN], np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (1, 10, 3)
    np.testing.assert_array_equal(image, grey(SIXTEEN_HIGH_BYTE))
    np.testing.assert_array_equal(image, cv2_rgb(path))


def test_16bit_issue_case_is_not_clipped(tmp_path):
    """The reported case: a 16-bit grey PNG spanning 0..65535 used to come out 255 in ~99% of the pixels."""
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp).save(path)
    image = read_image(path)
    assert (image == 255).mean() < 0.01
    np.testing.assert_array_equal(image[..., 0], (ramp >> 8).astype(np.uint8))
    np.testing.assert_array_equal(image, cv2_rgb(path))


def test_16bit_big_endian_and_colour(tmp_path):
    values = np.asarray([[1000, 50000, 65535]], np.uint16)
    big = Image.frombytes("I;16B", (3, 1), values.astype(">u2").tobytes())
    tif = tmp_path / "big.tif"
    big.save(tif)
    assert Image.open(tif).mode == "I;16B"
    np.testing.assert_array_equal(read_image(tif), grey([3, 195, 255]))
    np.testing.assert_array_equal(read_image(tif), cv2_rgb(tif))
    np.testing.assert_array_equal(as_rgb_uint8(big), grey([3, 195, 255]))  # in-memory PIL images too

    rgb16 = np.zeros((1, 3, 3), np.uint16)
    rgb16[0, :, 0] = [0, 40000, 65535]
    rgb16[0, :, 1] = [65535, 300, 1000]
    png = tmp_path / "rgb16.png"
    cv2.imwrite(str(png), rgb16[..., ::-1])  # OpenCV writes BGR
    np.testing.assert_array_equal(read_image(png), (rgb16 >> 8).astype(np.uint8))
    np.testing.assert_array_equal(read_image(png), cv2_rgb(png))


def test_32bit_int_and_float_images(tmp_path):
    ints = tmp_path / "int.tif"
    Image.fromarray(np.asarray([[-5, 0, 255, 256, 32768, 65535, 70000]], np.int32)).save(ints)
    assert Image.open(ints).mode == "I"
    np.testing.assert_array_equal(read_image(ints), grey([0, 0, 0, 1, 128, 255, 255]))

    floats = tmp_path / "float.tif"
    values = np.asarray([[-0.5, 0.0, 0.25, 0.5, 0.999, 1.0, 2.0, np.nan]], np.float32)
    Image.fromarray(values).save(floats)
    assert Image.open(floats).mode == "F"
    with pytest.warns(UserWarning, match="values up to 2: float images are read as 0..1"):
        np.testing.assert_array_equal(read_image(floats), grey([0, 0, 64, 128, 255, 255, 255, 0]))


def test_bilevel_grey_palette_and_alpha_modes(tmp_path):
    bits = tmp_path / "bits.png"
    Image.fromarray(np.asarray([[False, True, False, True]])).save(bits)
    assert Image.open(bits).mode == "1"
    np.testing.assert_array_equal(read_image(bits), grey([0, 255, 0, 255]))
    np.testing.assert_array_equal(read_image(bits), cv2_rgb(bits))

    lum = tmp_path / "l.png"
    Image.fromarray(np.asarray([[0, 7, 128, 255]], np.uint8)).save(lum)
    np.testing.assert_array_equal(read_image(lum), grey([0, 7, 128, 255]))

    palette = Image.new("P", (3, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 30] + [0] * 759)
    palette.putdata([0, 1, 2])
    pal = tmp_path / "p.png"
    palette.save(pal, transparency=1)  # index 1 transparent: alpha is dropped, its colour kept
    assert Image.open(pal).mode == "P"
    expected = np.asarray([[[255, 0, 0], [0, 255, 0], [10, 20, 30]]], np.uint8)
    np.testing.assert_array_equal(read_image(pal), expected)
    np.testing.assert_array_equal(read_image(pal), cv2_rgb(pal))

    pa = Image.new("PA", (2, 1))
    pa.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pa.putdata([(0, 255), (1, 0)])
    np.testing.assert_array_equal(as_rgb_uint8(pa), expected[:, :2])

    la = tmp_path / "la.png"
    Image.fromarray(np.asarray([[[10, 0], [200, 128], [90, 255]]], np.uint8), "LA").save(la)
    assert Image.open(la).mode == "LA"
    np.testing.assert_array_equal(read_image(la), grey([10, 200, 90]))
    np.testing.assert_array_equal(read_image(la), cv2_rgb(la))

    rgba = np.asarray([[[10, 20, 30, 0], [200, 100, 50, 128], [1, 2, 3, 255]]], np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    np.testing.assert_array_equal(read_image(path), rgba[..., :3])  # not composited on any background
    np.testing.assert_array_equal(read_image(path), cv2_rgb(path))

    rgb = np.asarray([[[1, 2, 3], [250, 128, 0]]], np.uint8)
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(path)
    np.testing.assert_array_equal(read_image(path), rgb)


def test_premultiplied_and_other_colour_modes(tmp_path):
    # premultiplied alpha is undone (100 * 255 / 128 = 199.2), then alpha dropped
    np.testing.assert_array_equal(as_rgb_uint8(Image.new("RGBa", (1, 1), (100, 50, 20, 128))), [[[199, 99, 39]]])
    np.testing.assert_array_equal(as_rgb_uint8(Image.new("La", (1, 1), (100, 128))), [[[199, 199, 199]]])
    np.testing.assert_array_equal(as_rgb_uint8(Image.new("HSV", (1, 1), (0, 255, 255))), [[[255, 0, 0]]])
    np.testing.assert_array_equal(as_rgb_uint8(Image.new("RGBX", (1, 1), (9, 8, 7, 0))), [[[9, 8, 7]]])

    cmyk = tmp_path / "cmyk.tif"
    Image.new("CMYK", (2, 2), (20, 60, 100, 40)).save(cmyk)
    assert Image.open(cmyk).mode == "CMYK"
    # (255 - c) * (255 - k) / 255, rounded: 235 * 215 / 255 = 198.1, 195 * 215 / 255 = 164.4, 155 * 215 / 255 = 130.7
    np.testing.assert_array_equal(read_image(cmyk)[0, 0], [198, 164, 131])
    assert np.abs(read_image(cmyk).astype(int) - cv2_rgb(cmyk)).max() <= 1  # OpenCV/libtiff floors instead

    ycc = tmp_path / "ycc.tif"
    Image.new("YCbCr", (2, 2), (100, 90, 200)).save(ycc)
    assert Image.open(ycc).mode == "YCbCr"
    got = read_image(ycc)[0, 0].astype(int)
    np.testing.assert_array_equal(got, [200, 61, 32])  # Pillow's fixed-point BT.601 (full range), truncated
    bt601 = [100 + 1.402 * 72, 100 - 0.344136 * -38 - 0.714136 * 72, 100 + 1.772 * -38]
    assert np.abs(got - np.asarray(bt601)).max() < 1


def test_rgb_jpeg_is_decoded_as_opencv_decodes_it():
    for name in ("images/truck.jpg", "images/groceries.jpg", "videos/bedroom_frames/00000.jpg"):
        path = data_file(name)
        np.testing.assert_array_equal(read_image(path), cv2_rgb(path))


def orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """The EXIF 2.3 meaning of each Orientation value, applied to the stored pixels."""
    return {1: a, 2: a[:, ::-1], 3: a[::-1, ::-1], 4: a[::-1], 5: a.transpose(1, 0, 2),
            6: np.rot90(a, -1), 7: np.rot90(a, 2).transpose(1, 0, 2), 8: np.rot90(a, 1)}[orientation]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    stored = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 14  # asymmetric, 3 wide 2 tall
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"
    image.save(path, exif=exif)
    got = read_image(path)
    np.testing.assert_array_equal(got, orient(stored, orientation))
    np.testing.assert_array_equal(got, cv2_rgb(path))


def test_exif_orientation_on_jpeg_matches_opencv(tmp_path):
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:8, :16] = (255, 0, 0)
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif, quality=95)
    got = read_image(path)
    assert got.shape == (32, 16, 3)  # shown upright: portrait
    np.testing.assert_array_equal(got, cv2_rgb(path))
    assert got[0, -1, 0] > 200 and got[-1, 0, 0] < 50  # the red corner turned to the top right
    # an in-memory PIL image is taken as its pixels (no rotation), as Ultralytics takes it
    assert as_rgb_uint8(Image.open(path)).shape == (16, 32, 3)


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------


def test_unreadable_files_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image file not found: .*missing\.png"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        read_image(tmp_path)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.jpg: the file is empty \(0 bytes\)"):
        read_image(empty)
    text = tmp_path / "notes.png"
    text.write_text("just some text")
    with pytest.raises(ValueError, match=r"notes\.png: not an image file \(it starts with bytes b'just som'\)"):
        read_image(text)

    ok = tmp_path / "ok.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(ok, quality=90)
    data = ok.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated\.jpg: the file is truncated or corrupt"):
        read_image(truncated)

    png = tmp_path / "ok.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(png)
    data = bytearray(png.read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 20: idat + 40] = b"\x00" * 20  # damaged compressed data, CRC now wrong
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"corrupt\.png: the file is truncated or corrupt"):
        read_image(corrupt)

    # the same errors reach every path input: a folder of frames, a source list
    folder = numbered_folder(tmp_path / "frames", ["00000.png", "00001.png"])
    (folder / "00001.png").write_bytes(data[: len(data) // 3])
    with VideoFrames(folder, prefetch=0) as video, pytest.raises(ValueError, match=r"00001\.png: the file is"):
        video[1]
    with pytest.raises(ValueError, match=r"notes\.png: not an image file"):
        open_source(text.with_suffix(".png"))[0].read()


def test_val_frame_size_follows_exif_orientation(tmp_path):
    """val's cheap size probe agrees with read_image on a rotated JPEG (EXIF orientation 6 turns it 90 degrees)."""
    from masklet.val.datasets import _frame_size

    path = tmp_path / "rotated.jpg"
    image = Image.fromarray(np.zeros((40, 60, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, exif=exif)
    assert _frame_size(path) == read_image(path).shape[:2] == (60, 40)
