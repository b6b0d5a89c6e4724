"""Frame sources: random-access videos (cache, prefetch, seeking), streams and image-level sources."""
from __future__ import annotations

import hashlib
import itertools
import shutil
import threading
import time

import numpy as np
import pytest
from conftest import data_file
from PIL import Image

from masklet.data.images import read_image
from masklet.data.sources import Frame, SourceItem, VideoFrames, iter_frames, iter_stream, open_source

cv2 = pytest.importorskip("cv2")


def digest(frame: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(frame).tobytes(), digest_size=16).hexdigest()


def sequential_digests(path) -> list[str]:
    """Digests of every RGB frame from one plain sequential OpenCV decode."""
    cap = cv2.VideoCapture(str(path))
    digests = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        digests.append(digest(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    cap.release()
    return digests


@pytest.fixture(scope="module")
def mp4():
    return data_file("videos/bedroom.mp4")


@pytest.fixture(scope="module")
def frames_dir():
    return data_file("videos/bedroom_frames")


@pytest.fixture(scope="module")
def mp4_digests(mp4):
    """Digests of every frame from one plain sequential OpenCV decode (the ground truth for seeking)."""
    return sequential_digests(mp4)


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


# ---------------------------------------------------------------------------------------------------
# VideoFrames
# ---------------------------------------------------------------------------------------------------


def test_folder_and_mp4_sizes(mp4, frames_dir, mp4_digests):
    assert len(mp4_digests) == 200
    with VideoFrames(mp4) as video, VideoFrames(frames_dir) as folder:
        assert (len(video), video.height, video.width) == (200, 540, 960)
        assert (len(folder), folder.height, folder.width) == (50, 540, 960)
        assert video.fps == pytest.approx(30.0)
        assert folder.fps is None
        assert video.name == "bedroom.mp4" and folder.name == "bedroom_frames"
        assert folder.frame_name(7) == "00007" and video.frame_name(7) == "00007"
        frame = video[0]
        assert frame.shape == (540, 960, 3) and frame.dtype == np.uint8
    with VideoFrames(frames_dir, fps=24) as folder:
        assert folder.fps == 24


def test_mp4_forward_reverse_and_jumps_match_sequential_decode(mp4, mp4_digests):
    with VideoFrames(mp4, cache_size=24) as video:
        for i in range(20):
            assert digest(video[i]) == mp4_digests[i], f"forward frame {i}"
        # Reverse, as a backward propagation reads it: a jump to the prompt frame, then step down.
        for i in range(60, 39, -1):
            assert digest(video[i]) == mp4_digests[i], f"reverse frame {i}"
            assert video.cache_info().currsize <= 24
        for i in (3, 120, 121, 10, 199, -1, 0):
            assert digest(video[i]) == mp4_digests[i], f"jump to frame {i}"
        info = video.cache_info()
        assert info.currsize <= info.maxsize == 24
        assert info.hits > 0  # the prefetch thread decoded frames before they were asked for


@pytest.fixture(scope="module")
def synthetic_video(tmp_path_factory):
    """A small MPEG-4 file with a keyframe every few frames, so seeks land between keyframes."""
    path = tmp_path_factory.mktemp("video") / "synthetic.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (96, 64))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v video")
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, (64, 192, 3), dtype=np.uint8)
    for i in range(120):
        frame = np.ascontiguousarray(background[:, i % 96:i % 96 + 96])
        frame[(i * 3) % 60:(i * 3) % 60 + 4, :, :] = 255
        writer.write(frame)
    writer.release()
    digests = sequential_digests(path)
    assert len(digests) == 120
    return path, digests


@pytest.mark.parametrize("know_keyframes", [True, False])
def test_seeking_between_keyframes_matches_sequential_decode(synthetic_video, know_keyframes):
    path, digests = synthetic_video
    rng = np.random.default_rng(1)
    with VideoFrames(path, cache_size=10, prefetch=4) as video:
        assert len(video) == 120 and (video.height, video.width) == (64, 96)
        if not know_keyframes:
            video._loader.backend.keyframes = None  # the fallback when OpenCV cannot list packets
        order = [*range(20), *range(119, -1, -1), *rng.integers(0, 120, 40).tolist(), 50, 90, 51, 89]
        for i in order:
            assert digest(video[i]) == digests[i], f"frame {i}"
            assert video.cache_info().currsize <= 10


def test_folder_random_access_matches_files(frames_dir):
    files = sorted(frames_dir.glob("*.jpg"))
    with VideoFrames(frames_dir, cache_size=8, prefetch=4) as folder:
        for i in itertools.chain(range(49, 39, -1), (0, 25, 26, 24, -50)):
            np.testing.assert_array_equal(folder[i], read_image(files[i]))


def test_cache_is_bounded_and_prefetches_in_the_direction_of_access(frames_dir):
    with VideoFrames(frames_dir, cache_size=4, prefetch=2) as folder:
        for i in range(20):
            folder[i]
            assert folder.cache_info().currsize <= 4
        before = folder.cache_info()
        assert wait_until(lambda: {20, 21} <= set(folder.cache_info().indices))
        folder[30]
        folder[29]  # now going backwards
        assert wait_until(lambda: {28, 27} <= set(folder.cache_info().indices))
        info = folder.cache_info()
        assert info.currsize <= 4 and info.maxsize == 4
        assert (info.hits + info.misses) - (before.hits + before.misses) == 2


def test_mp4_reverse_prefetch_reads_blocks(mp4):
    with VideoFrames(mp4, cache_size=12, prefetch=6) as video:
        video[30]
        video[29]
        # One block below the caller is decoded ahead (with a single seek) while it "computes".
        assert wait_until(lambda: {28, 27, 26} <= set(video.cache_info().indices))
        assert video.cache_info().currsize <= 12


def test_concurrent_readers(frames_dir):
    files = sorted(frames_dir.glob("*.jpg"))
    expected = {i: digest(read_image(files[i])) for i in range(0, 50, 7)}
    errors = []
    with VideoFrames(frames_dir, cache_size=6) as folder:
        def reader(order):
            try:
                for i in order:
                    if digest(folder[i]) != expected[i]:
                        errors.append(i)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        keys = sorted(expected)
        threads = [threading.Thread(target=reader, args=(keys[::step],)) for step in (1, -1, 2, -2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert folder.cache_info().currsize <= 6
    assert not errors


def test_close_stops_the_prefetch_thread(frames_dir):
    folder = VideoFrames(frames_dir)
    assert folder.prefetch_thread is None or folder.prefetch_thread.daemon
    folder[1]
    thread = folder.prefetch_thread
    assert thread is not None and thread.daemon and thread.is_alive()
    folder.close()
    assert not thread.is_alive()
    assert folder.closed and folder.cache_info().currsize == 0
    with pytest.raises(ValueError, match="closed"):
        folder[2]
    folder.close()  # idempotent

    with VideoFrames(frames_dir) as folder:
        folder[0]
        folder[1]
        thread = folder.prefetch_thread
    assert not thread.is_alive()


def test_no_prefetch_thread_when_disabled(frames_dir):
    with VideoFrames(frames_dir, prefetch=0) as folder:
        for i in range(5):
            folder[i]
        assert folder.prefetch_thread is None


def test_list_of_arrays(frames_dir):
    files = sorted(frames_dir.glob("*.jpg"))[:5]
    arrays = [read_image(p) for p in files]
    video = VideoFrames(arrays)
    assert (len(video), video.height, video.width, video.fps) == (5, 540, 960, None)
    assert video[4] is arrays[4] and video[-5] is arrays[0]  # in memory already: no copy, no cache
    assert video.prefetch_thread is None
    assert [digest(f) for f in video] == [digest(a) for a in arrays]
    stacked = VideoFrames(np.stack(arrays[:2]))
    assert len(stacked) == 2
    np.testing.assert_array_equal(stacked[1], arrays[1])


def test_list_of_arrays_errors():
    good = np.zeros((8, 10, 3), np.uint8)
    with pytest.raises(ValueError, match=r"frame 2 is 12x8 but frame 0 is 10x8"):
        VideoFrames([good, good, np.zeros((8, 12, 3), np.uint8)])
    with pytest.raises(ValueError, match=r"frame 1: .*uint8.*float32"):
        VideoFrames([good, good.astype(np.float32)])
    with pytest.raises(ValueError, match="empty"):
        VideoFrames([])
    with pytest.raises(TypeError, match="frame 0 is a str"):
        VideoFrames(["00000.jpg"])


def test_frame_order_is_numeric(tmp_path):
    for stem, value in (("10", 10), ("2", 2), ("1", 1)):
        Image.fromarray(np.full((4, 6, 3), value, np.uint8)).save(tmp_path / f"{stem}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "._1.png").write_bytes(b"macOS resource fork")
    with VideoFrames(tmp_path) as video:
        assert [int(video[i][0, 0, 0]) for i in range(len(video))] == [1, 2, 10]
        assert video.frame_name(2) == "10"


def test_errors(tmp_path, mp4, frames_dir):
    with pytest.raises(FileNotFoundError, match="not found"):
        VideoFrames(tmp_path / "missing.mp4")

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no frames here")
    with pytest.raises(FileNotFoundError, match=r"no image frames.*\.jpg.*\.png"):
        VideoFrames(empty)

    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    with pytest.raises(ValueError, match="empty or corrupt"):
        VideoFrames(zero)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    with pytest.raises(ValueError, match="empty or corrupt"):
        VideoFrames(garbage)

    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(frames_dir / "00000.jpg", broken / "00000.jpg")
    (broken / "00001.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    shutil.copy(frames_dir / "00002.jpg", broken / "00002.jpg")
    with VideoFrames(broken) as video:  # opening reads only frame 0
        assert len(video) == 3
        video[2]
        with pytest.raises(ValueError, match="00001.jpg"):
            video[1]

    with VideoFrames(mp4, prefetch=0) as video:
        with pytest.raises(IndexError, match=r"0 to 199"):
            video[200]
        with pytest.raises(IndexError, match=r"0 to 199"):
            video[-201]
        with pytest.raises(TypeError):
            video[1:3]

    with pytest.raises(ValueError, match="single image"):
        VideoFrames(frames_dir / "00000.jpg")
    with pytest.raises(ValueError, match="iter_stream"):
        VideoFrames(0)


# ---------------------------------------------------------------------------------------------------
# iter_stream
# ---------------------------------------------------------------------------------------------------


def test_iter_stream_generator():
    def frames():
        yield np.zeros((4, 5, 3), np.uint8)
        yield np.zeros((4, 5), np.uint8)  # grayscale is converted
        yield Image.new("RGB", (5, 4))
        yield np.zeros((4, 5, 3), np.float32)

    stream = iter_stream(frames())
    for _ in range(3):
        frame = next(stream)
        assert frame.shape == (4, 5, 3) and frame.dtype == np.uint8
    with pytest.raises(ValueError, match="frame 3 of the stream"):
        next(stream)


def test_iter_stream_mp4_matches_video_frames(mp4, mp4_digests):
    first = list(itertools.islice(iter_stream(mp4), 12))
    assert [digest(f) for f in first] == mp4_digests[:12]
    with VideoFrames(mp4) as video:
        for i, frame in enumerate(first):
            np.testing.assert_array_equal(frame, video[i])


def test_iter_stream_read_ahead_is_bounded_and_stops(mp4, mp4_digests):
    stream = iter_stream(mp4, read_ahead=3)
    got = [digest(f) for f in itertools.islice(stream, 8)]
    assert got == mp4_digests[:8]
    stream.close()
    assert wait_until(lambda: not any(t.name == "masklet-read-ahead" for t in threading.enumerate()))

    def failing():
        yield np.zeros((2, 2, 3), np.uint8)
        raise RuntimeError("camera unplugged")

    stream = iter_stream(failing(), read_ahead=2)
    next(stream)
    with pytest.raises(RuntimeError, match="unplugged"):
        next(stream)


def test_iter_stream_folder_and_errors(tmp_path, frames_dir):
    files = sorted(frames_dir.glob("*.jpg"))
    stream = iter_stream(frames_dir)
    np.testing.assert_array_equal(next(stream), read_image(files[0]))
    np.testing.assert_array_equal(next(stream), read_image(files[1]))
    with pytest.raises(FileNotFoundError):
        iter_stream(tmp_path / "nope.mp4")  # fails at the call, not at the first next()
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    with pytest.raises(ValueError, match="empty or corrupt"):
        iter_stream(zero)
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(ValueError, match=r"\.mp4"):
        iter_stream(tmp_path / "data.csv")
    with pytest.raises(ValueError, match="camera 99"):
        iter_stream(99)


# ---------------------------------------------------------------------------------------------------
# open_source
# ---------------------------------------------------------------------------------------------------


def test_open_source_glob_folder_and_files():
    images = data_file("images")
    by_glob = open_source(str(images / "*.jpg"))
    assert [item.kind for item in by_glob] == ["image"] * 3
    assert [item.path for item in by_glob] == [str(images / n) for n in ("cars.jpg", "groceries.jpg", "truck.jpg")]
    assert open_source(images) == by_glob
    frames = list(by_glob[2].frames())
    assert len(frames) == 1 and frames[0].name == str(images / "truck.jpg") and frames[0].index == 0
    assert frames[0].image.shape == (1200, 1800, 3)

    videos = open_source(data_file("videos"))  # not recursive: the frames folder is not listed
    assert {item.kind for item in videos} == {"video"} and len(videos) == 6
    video = next(item for item in videos if item.path.endswith("bedroom.mp4"))
    name, index, image = next(iter(video))
    assert (name, index, image.shape) == (video.path, 0, (540, 960, 3))
    with video.open_video() as frames:
        assert len(frames) == 200


def test_open_source_list_array_pil(frames_dir):
    first = frames_dir / "00000.jpg"
    array = np.zeros((6, 7, 3), np.uint8)
    pil = Image.new("RGB", (3, 2))
    items = open_source([str(first), array, pil, np.zeros((2, 5, 5, 3), np.uint8), 0])
    assert [item.kind for item in items] == ["image"] * 5 + ["stream"]
    assert [item.name for item in items[1:]] == ["image0", "image1", "image2", "image3", "camera0"]
    assert items[1].path is None and items[1].read() is not None
    assert items[2].read().shape == (2, 3, 3)

    single = open_source(array)
    assert len(single) == 1 and single[0].kind == "image"
    np.testing.assert_array_equal(single[0].read(), array)

    frames = list(iter_frames([array, pil]))
    assert [(f.name, f.index, f.image.shape) for f in frames] == [("image0", 0, (6, 7, 3)), ("image1", 0, (2, 3, 3))]
    assert isinstance(frames[0], Frame)

    gen = (np.zeros((3, 3, 3), np.uint8) for _ in range(4))
    (stream,) = open_source(gen)
    assert stream.kind == "stream" and len(list(stream.frames())) == 4


def test_open_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not found.*\.jpg.*\.mp4"):
        open_source(tmp_path / "missing.jpg")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"unsupported file type \.txt.*\.png.*\.webm"):
        open_source(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match=r"no images or videos in folder"):
        open_source(tmp_path)
    with pytest.raises(FileNotFoundError, match="no files match"):
        open_source(str(tmp_path / "*.jpg"))
    with pytest.raises(FileNotFoundError, match="none of them an image or video"):
        open_source(str(tmp_path / "*.txt"))
    with pytest.raises(ValueError, match="uint8"):
        open_source(np.zeros((4, 4, 3), np.float64))
    with pytest.raises(TypeError, match="unsupported source type"):
        open_source(3.5)
    item = SourceItem("video", str(tmp_path / "x.mp4"), "x.mp4")
    with pytest.raises(ValueError, match="not an image"):
        item.read()
