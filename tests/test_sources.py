"""Video sources: expansion of a source, metadata, sampling by absolute index, segments, bad inputs."""

from __future__ import annotations

import itertools
import shutil
import time

import numpy as np
import pytest
from detection_fixtures import avi_file, mjpeg_stream_url  # noqa: F401

from camtrace.detection import SegmentSpec, VideoSource, expand_source, is_sampled
from camtrace.errors import SourceError


def test_expand_source_file_folder_and_url(tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    for name in ("b.mp4", "a.AVI", "notes.txt", ".partial.mp4"):
        (folder / name).write_bytes(b"x")
    (folder / "sub").mkdir()
    assert expand_source(str(folder)) == [str(folder / "a.AVI"), str(folder / "b.mp4")]
    assert expand_source(str(folder / "b.mp4")) == [str(folder / "b.mp4")]
    for url in ("rtsp://cam.local/stream1", "http://host/live.m3u8", "https://host/clip.mp4"):
        assert expand_source(url) == [url]


def test_expand_source_names_what_was_not_found(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no videos here")
    with pytest.raises(SourceError, match="no video files") as err:
        expand_source(str(empty))
    assert str(empty) in str(err.value)
    missing = tmp_path / "nowhere"
    with pytest.raises(SourceError, match="does not exist") as err:
        expand_source(str(missing))
    assert str(missing) in str(err.value)


def test_info_and_timestamps_come_from_the_file(footage):
    camera, path = next(iter(footage.videos.items()))
    with VideoSource(str(path)) as source:
        info = source.info
        assert (info.fps, info.frame_count, info.width, info.height) == (10.0, footage.n_frames, 640, 360)
        assert info.start_ts == pytest.approx(footage.start_ts[camera])  # the file's mtime is its start
        frames = list(source.frames(sample_fps=10.0, start_frame=0, end_frame=12))
        assert [f.index for f in frames] == list(range(12))
        assert [f.ts for f in frames] == pytest.approx([footage.start_ts[camera] + i / 10.0 for i in range(12)])
        assert frames[0].image.shape == (360, 640, 3)
    with VideoSource(str(path), start_ts=1000.0) as source:
        assert source.info.start_ts == 1000.0
        assert [f.ts for f in source.frames(5.0, 20, 26)] == pytest.approx([1002.0, 1002.2, 1002.4])


def test_is_sampled_keeps_the_first_frame_of_each_bucket():
    assert [i for i in range(12) if is_sampled(i, 10.0, 5.0)] == [0, 2, 4, 6, 8, 10]
    kept_25_of_30 = [i for i in range(30) if is_sampled(i, 30.0, 7.0)]
    assert len(kept_25_of_30) == 7 and kept_25_of_30[0] == 0
    assert [i for i in range(5) if is_sampled(i, 10.0, 50.0)] == list(range(5))  # faster than the video: all


def test_a_segment_read_alone_equals_the_same_range_of_a_full_read(footage):
    path = str(next(iter(footage.videos.values())))
    sample_fps = 4.0  # not a divisor of 10 fps: buckets of 2 and 3 frames
    with VideoSource(path) as source:
        full = list(source.frames(sample_fps))
        segments = source.segments(2.7)
    assert [f.index for f in full] == [i for i in range(footage.n_frames) if is_sampled(i, 10.0, sample_fps)]
    assert len(full) == pytest.approx(footage.n_frames / 10.0 * sample_fps, abs=1)
    # Each segment in its own source (as a separate worker would), in reverse order.
    pieces = []
    for segment in reversed(segments):
        with VideoSource(path) as alone:
            pieces = list(alone.frames(sample_fps, segment.start_frame, segment.end_frame)) + pieces
    assert [f.index for f in pieces] == [f.index for f in full]
    for a, b in zip(pieces, full):
        assert a.ts == b.ts
        assert np.array_equal(a.image, b.image), f"frame {a.index} differs when read from its segment"


def test_segments_cover_the_video_without_gaps(footage):
    with VideoSource(str(next(iter(footage.videos.values())))) as source:
        segments = source.segments(3.0)
    assert segments[0] == SegmentSpec(0, 0, 30)
    assert [s.index for s in segments] == list(range(len(segments)))
    assert all(a.end_frame == b.start_frame for a, b in zip(segments, segments[1:]))
    assert segments[-1].end_frame == footage.n_frames


def test_video_id_follows_content_not_name(footage, tmp_path):
    first, second = list(footage.videos.values())[:2]
    copy = tmp_path / "renamed-elsewhere.mp4"
    shutil.copy(first, copy)
    with VideoSource(str(first)) as a, VideoSource(str(copy)) as b, VideoSource(str(second)) as c:
        assert a.video_id == b.video_id
        assert a.video_id != c.video_id


def test_seeking_back_and_forth_in_one_source_gives_the_same_frames(avi_file):
    with VideoSource(str(avi_file)) as source:
        late = list(source.frames(10.0, 40, 45))
        early = list(source.frames(10.0, 5, 8))
        again = list(source.frames(10.0, 40, 45))
    assert [f.index for f in early] == [5, 6, 7]
    assert [f.index for f in late] == [f.index for f in again] == [40, 41, 42, 43, 44]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(late, again))
    # The frame number is drawn into the top band: the seek landed on the right frame.
    assert [int(np.median(f.image[:20])) for f in early] == pytest.approx([35, 42, 49], abs=3)


def test_truncated_file_fails_naming_file_and_frame(avi_file, tmp_path):
    data = avi_file.read_bytes()
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(data[: len(data) // 2])
    with VideoSource(str(truncated)) as source:
        assert source.info.frame_count == 60  # the header still promises every frame
        with pytest.raises(SourceError) as err:
            list(source.frames(5.0))
    message = str(err.value)
    assert str(truncated) in message and "frame" in message


def test_a_few_missing_frames_at_the_end_are_tolerated(avi_file, tmp_path):
    data = avi_file.read_bytes()
    short = tmp_path / "short.avi"
    short.write_bytes(data[: len(data) - len(data) // 40])  # loses the last frame or two
    with VideoSource(str(short)) as source:
        frames = list(source.frames(10.0))
    assert 55 <= len(frames) < 60
    assert [f.index for f in frames] == list(range(len(frames)))


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("corrupt.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 16, "cannot open"),
        ("empty.mp4", b"", "empty"),
        ("notes.txt", b"camera 3 was moved on Monday\n" * 50, "text file"),
        ("random.avi", np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8).tobytes(), "cannot open"),
    ],
)
def test_unreadable_files_fail_naming_the_file(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceError, match=expected) as err:
        VideoSource(str(path))
    assert str(path) in str(err.value)


def test_missing_file_fails_naming_it(tmp_path):
    path = tmp_path / "gone.mp4"
    with pytest.raises(SourceError, match="does not exist") as err:
        VideoSource(str(path))
    assert str(path) in str(err.value)


@pytest.mark.timeout(30)
def test_dead_url_fails_quickly_naming_the_url():
    url = "http://127.0.0.1:9/x"  # discard port: nothing listens
    started = time.monotonic()
    with pytest.raises(SourceError) as err:
        VideoSource(url, open_timeout_s=3.0)
    assert url in str(err.value)
    assert time.monotonic() - started < 15


def test_closed_source_refuses_to_read(avi_file):
    source = VideoSource(str(avi_file))
    source.close()
    with pytest.raises(SourceError, match="closed"):
        next(source.frames(5.0))


@pytest.mark.timeout(60)
def test_live_stream_is_read_once_forwards_and_its_end_is_an_error(mjpeg_stream_url):
    before = time.time()
    with VideoSource(mjpeg_stream_url, open_timeout_s=10.0) as source:
        assert source.is_live and source.info.frame_count is None
        assert before <= source.info.start_ts <= time.time()  # live: the time it was opened
        assert source.segments(60.0) == [SegmentSpec(0, 0, None)]
        seen = []
        with pytest.raises(SourceError, match="stopped delivering frames") as err:
            for frame in source.frames(sample_fps=1000.0, start_frame=3):
                seen.append((frame.index, int(frame.image.mean())))
    assert mjpeg_stream_url in str(err.value)
    assert [i for i, _ in seen] == list(range(3, 20))
    assert [level for _, level in seen] == pytest.approx([10 * i for i in range(3, 20)], abs=2)
    # From the start: frame 0, read while probing the stream, is not lost.
    with VideoSource(mjpeg_stream_url, open_timeout_s=10.0) as source:
        first = list(itertools.islice(source.frames(sample_fps=1000.0), 3))
    assert [f.index for f in first] == [0, 1, 2]
    assert [float(f.image.mean()) for f in first] == pytest.approx([0, 10, 20], abs=2)


def test_a_one_frame_file_yields_its_frame(tmp_path):
    # A camera segment cut short by a drop may hold a single frame; seeking back to it fails in FFmpeg.
    from camtrace.workers.cameras import SegmentWriter

    writer = SegmentWriter(tmp_path, "gate", 1000.0, 5.0, (120, 160, 3))
    writer.write(np.full((120, 160, 3), 90, np.uint8))
    path = writer.close()
    with VideoSource(str(path), start_ts=1000.0) as video:
        frames = list(video.frames(sample_fps=5.0))
    assert [frame.index for frame in frames] == [0] and abs(frames[0].ts - 1000.0) < 1e-6
    assert abs(float(frames[0].image.mean()) - 90) < 10
