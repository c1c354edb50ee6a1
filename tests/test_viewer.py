"""The timeline viewer in a real headless browser: Debian's chromium, driven by Playwright.

The pages are opened from file:// as a user opens them; the test video is a real H.264 mp4
(``tests/media.py``), which Debian's chromium plays. ``make browser`` installs chromium when it is
missing; without it these tests skip, saying so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from media import write_video

from pipeline import GENRES
from pipeline.core.config import TimelineConfig
from pipeline.core.timeline import SegmentRule, config_rules, genre_segments
from pipeline.predict.outputs import write_summary
from pipeline.views.viewer import PALETTE, ViewerEntry, write_index, write_viewer

pytestmark = pytest.mark.xdist_group("browser")
"""One chromium per run: the viewer tests run in one xdist worker."""

FPS = 8.0
DURATION_S = 4.0
FRAMES = int(DURATION_S * FPS)
VIDEO_RATE = 25
THRESHOLD = 0.5
MIN_SEGMENT_S = 0.2  # drops one-sample runs (0.125 s), so the page must apply it too
HOSTILE_NAME = "<img src=x onerror=alert(1)>.mp4"
VIEWPORT = {"width": 1280, "height": 900}
RULES = config_rules(TimelineConfig(threshold=THRESHOLD))


@dataclass
class Site:
    """Pages written by the viewer over one real video, with the timeline they show."""

    root: Path
    video: Path
    probabilities: np.ndarray
    truth: np.ndarray

    def page(self, name: str) -> Path:
        return self.root / "pages" / name


@dataclass
class Visit:
    """An open page and what it did: console errors, uncaught errors, requests, dialogs."""

    page: object
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    root = tmp_path_factory.mktemp("viewer")
    (root / "videos").mkdir()
    video = write_video(
        root / "videos" / HOSTILE_NAME, frames=int(DURATION_S * VIDEO_RATE), rate=VIDEO_RATE
    )
    rng = np.random.default_rng(18)
    probabilities = rng.random((FRAMES, len(GENRES))).astype(np.float32)
    truth = (rng.random((FRAMES, len(GENRES))) > 0.6).astype(np.uint8)
    site = Site(root, video, probabilities, truth)
    common = dict(fps=FPS, duration_s=DURATION_S, probabilities=probabilities)
    labelled = config_rules(TimelineConfig(threshold=THRESHOLD, min_segment_s=MIN_SEGMENT_S))
    write_viewer(site.page("labelled.html"), video, rules=labelled, truth=truth, **common)
    write_viewer(
        site.page("plain.html"),
        video,
        rules=config_rules(TimelineConfig(threshold=THRESHOLD)),
        title="</script><script>alert(2)</script>",
        **common,
    )
    return site


@pytest.fixture
def visit(browser: object) -> Iterator:
    """``visit(path)`` opens a page from file:// and waits until its video (if any) can show a
    frame."""
    context = browser.new_context(viewport=VIEWPORT)

    def open_page(path: Path, video: bool = True) -> Visit:
        page = context.new_page()
        visit = Visit(page)
        page.on("console", lambda m: m.type == "error" and visit.errors.append(m.text))
        page.on("pageerror", lambda error: visit.errors.append(str(error)))
        page.on("request", lambda request: visit.requests.append(request.url))
        page.on("dialog", lambda dialog: (visit.dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(path.as_uri())
        if video:
            page.wait_for_function("document.getElementById('video').readyState >= 2")
        return visit

    yield open_page
    context.close()


def seek(page: object, time_s: float) -> None:
    """Set ``video.currentTime`` as a script would, and wait for the seek to finish."""
    page.evaluate(
        """(time) => new Promise((done) => {
            const video = document.getElementById('video');
            video.addEventListener('seeked', () => requestAnimationFrame(done), { once: true });
            video.currentTime = time;
        })""",
        time_s,
    )


def wait_for_time(page: object, time_s: float) -> None:
    page.wait_for_function(
        "(time) => { const v = document.getElementById('video');"
        " return !v.seeking && Math.abs(v.currentTime - time) < 1e-3; }",
        arg=time_s,
    )


def lane_box(page: object, genre: str) -> dict:
    return page.locator(f'canvas.lane[data-genre="{genre}"]').bounding_box()


def test_page_loads_from_file_with_no_error_and_no_network(site: Site, visit) -> None:
    for name in ("labelled.html", "plain.html"):
        loaded = visit(site.page(name))
        assert loaded.errors == []
        assert loaded.requests and all(url.startswith("file://") for url in loaded.requests)
        assert loaded.page.evaluate("document.getElementById('video').error") is None


def test_lanes_hold_one_column_per_sampled_frame(site: Site, visit) -> None:
    page = visit(site.page("labelled.html")).page
    assert page.evaluate("viewer.columns()") == FRAMES
    order = page.eval_on_selector_all("canvas.lane", "lanes => lanes.map(l => l.dataset.genre)")
    assert order == list(GENRES)
    assert page.locator("canvas.truth").count() == len(GENRES)
    genre = GENRES.index("horror")
    columns = page.evaluate(
        """([genre, frames]) => {
            const canvas = document.querySelector(`canvas.lane[data-genre="${genre}"]`);
            const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
            return Array.from({ length: frames }, (_, k) => {
                const x = Math.floor((k + 0.5) * canvas.width / frames);
                return Array.from({ length: canvas.height }, (_, y) => {
                    const offset = (y * canvas.width + x) * 4;
                    return Array.from(pixels.data.slice(offset, offset + 3));
                });
            });
        }""",
        ["horror", FRAMES],
    )
    full = np.array([int(PALETTE["horror"][i : i + 2], 16) for i in (1, 3, 5)])
    tint = full + (255 - full) * 0.55
    for probability, rows in zip(site.probabilities[:, genre], columns, strict=True):
        height = len(rows)
        bar = round(float(probability) * height)
        threshold_row = round(height - THRESHOLD * height)
        background = [row == [244, 244, 244] for row in rows]
        expected = [y < height - bar for y in range(height)]
        assert [b for y, b in enumerate(background) if y != threshold_row] == [
            e for y, e in enumerate(expected) if y != threshold_row
        ]
        if bar > 1:
            colour = full if probability > THRESHOLD else tint
            assert np.abs(np.array(rows[-1]) - colour).max() <= 1


def test_setting_current_time_moves_the_playhead_to_its_column(site: Site, visit) -> None:
    page = visit(site.page("labelled.html")).page
    box = lane_box(page, "comedy")
    column_width = box["width"] / FRAMES
    for time_s in (0.0, 0.3, 1.25, 2.6, 3.99):
        seek(page, time_s)
        column = math.floor(time_s * FPS)
        assert page.evaluate("viewer.playheadColumn()") == column
        head = page.locator("#playhead").bounding_box()
        assert head["x"] == pytest.approx(box["x"] + column * column_width, abs=1)
        assert head["width"] == pytest.approx(column_width, abs=1)


def test_a_click_on_a_lane_seeks_to_that_column(site: Site, visit) -> None:
    page = visit(site.page("labelled.html")).page
    box = lane_box(page, "action")
    for column in (5, 20, 0, FRAMES - 1):
        x = (column + 0.5) * box["width"] / FRAMES
        page.locator('canvas.lane[data-genre="action"]').click(position={"x": x, "y": 10})
        wait_for_time(page, column / FPS)
        assert page.evaluate("viewer.playheadColumn()") == column


def shown_segments(page: object) -> list[tuple[str, float, float]]:
    return [
        (s["genre"], round(s["start_s"], 3), round(s["end_s"], 3))
        for s in page.evaluate("viewer.segments()")
    ]


def expected_segments(rows: list[dict]) -> list[tuple[str, float, float]]:
    return [(row["genre"], row["start_s"], row["end_s"]) for row in rows]


def test_threshold_slider_changes_the_segment_list(site: Site, visit) -> None:
    page = visit(site.page("labelled.html")).page
    assert page.evaluate("viewer.sliderStart()") == THRESHOLD
    rule = SegmentRule(onset=THRESHOLD, offset=THRESHOLD, min_segment_s=MIN_SEGMENT_S)
    for threshold in (THRESHOLD, 0.8):
        page.locator("#threshold").fill(str(threshold))
        shifted = rule.shifted(threshold - THRESHOLD)
        expected = genre_segments(
            site.probabilities, FPS, DURATION_S, {genre: shifted for genre in GENRES}
        )
        assert shown_segments(page) == expected_segments(expected)
        means = [s["mean_probability"] for s in page.evaluate("viewer.segments()")]
        assert means == pytest.approx([row["mean_probability"] for row in expected], abs=1e-4)
        first_rows = page.locator("#segment-list button").all_text_contents()[:3]
        assert [text.split("0:")[0] for text in first_rows] == [r["genre"] for r in expected[:3]]
        assert page.locator("#segment-count").text_content().startswith(f"{len(expected)} ")
    assert len(expected) < len(
        genre_segments(site.probabilities, FPS, DURATION_S, config_rules(TimelineConfig()))
    )
    page.locator("#segment-list button").nth(2).click()
    wait_for_time(page, expected[2]["start_s"])


TUNED = {
    "comedy": SegmentRule(onset=0.6, offset=0.6, min_gap_s=0.375),
    "action": SegmentRule(onset=0.55, offset=0.55, min_segment_s=0.375),
    "horror": SegmentRule(onset=0.6, offset=0.35),
    "suspense": SegmentRule(onset=0.45, offset=0.45, smoothing="viterbi", switch_cost=1.0),
    "musical": SegmentRule(onset=0.5, offset=0.5, smoothing="median", median_window_s=0.375),
    "other": SegmentRule(
        onset=0.6,
        offset=0.4,
        min_segment_s=0.25,
        min_gap_s=0.25,
        smoothing="median",
        median_window_s=0.625,
    ),
}
"""One step of the rules per genre (gaps, minimum, hysteresis, Viterbi, median), then all of them,
as evaluate tunes them."""


def test_predicts_json_and_the_page_give_the_same_segments(site: Site, visit, tmp_path) -> None:
    # A smoother track than the site's noise (a random walk), so each rule has segments to find
    # and flicker to bridge; float32, as the model writes it and the page holds it.
    rng = np.random.default_rng(19)  # a walk whose every genre its rule changes (asserted)
    walk = np.cumsum(rng.normal(0, 0.5, (FRAMES, len(GENRES))), axis=0)
    probabilities = (1 / (1 + np.exp(-walk))).astype(np.float32)
    summary, page_path = tmp_path / "walk.json", tmp_path / "walk.html"
    write_summary(
        summary,
        video=site.video,
        model="models/classifier",
        decode={"fps": FPS},
        decoder="decord",
        missing_s=0.0,
        probabilities=probabilities,
        duration_s=DURATION_S,
        timeline=TimelineConfig(),
        rules=TUNED,
        trailer_id="walk",
    )
    write_viewer(page_path, site.video, FPS, DURATION_S, probabilities, TUNED)
    predicted = json.loads(summary.read_text())
    plain = {genre: SegmentRule(rule.onset, rule.onset) for genre, rule in TUNED.items()}
    thresholded = genre_segments(probabilities, FPS, DURATION_S, plain)
    for genre in GENRES:  # every genre has segments, and its rule changes them
        rows = [row for row in predicted["segments"] if row["genre"] == genre]
        assert rows and rows != [row for row in thresholded if row["genre"] == genre], genre
    page = visit(page_path).page
    assert shown_segments(page) == expected_segments(predicted["segments"])
    start = page.evaluate("viewer.sliderStart()")
    assert start == round(np.mean([rule.onset for rule in TUNED.values()]), 2)
    for value in (0.3, 0.75):
        page.locator("#threshold").fill(str(value))
        shifted = {genre: rule.shifted(value - start) for genre, rule in TUNED.items()}
        expected = genre_segments(probabilities, FPS, DURATION_S, shifted)
        assert shown_segments(page) == expected_segments(expected)


def test_keys_play_pause_and_step_one_sample_and_playback_moves_the_playhead(
    site: Site, visit
) -> None:
    page = visit(site.page("plain.html")).page
    seek(page, 1.0)
    page.keyboard.press("ArrowRight")
    wait_for_time(page, 1.0 + 1 / FPS)
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    wait_for_time(page, 1.0 - 1 / FPS)
    page.keyboard.press(" ")
    # The playhead follows playback frame by frame (requestVideoFrameCallback), not only seeks.
    page.wait_for_function(
        "(column) => !document.getElementById('video').paused && viewer.playheadColumn() >= column",
        arg=round(1.5 * FPS),
    )
    page.keyboard.press(" ")
    page.wait_for_function("document.getElementById('video').paused")
    paused_at = page.evaluate("document.getElementById('video').currentTime")
    assert page.evaluate("viewer.playheadColumn()") == math.floor(paused_at * FPS)


def test_zoom_and_pan_keep_columns_under_the_pointer(site: Site, visit) -> None:
    page = visit(site.page("plain.html")).page
    box = lane_box(page, "musical")
    page.mouse.move(box["x"] + box["width"] * 0.75, box["y"] + 5)
    page.mouse.wheel(0, -400)
    view = page.evaluate("viewer.view()")
    assert view["count"] < FRAMES
    pointer_column = view["first"] + 0.75 * view["count"]
    one_pixel = FRAMES / box["width"]
    assert pointer_column == pytest.approx(0.75 * FRAMES, abs=one_pixel)
    page.mouse.wheel(300, 0)
    assert page.evaluate("viewer.view().first") > view["first"]
    page.keyboard.press("0")
    assert page.evaluate("viewer.view()") == {"first": 0, "count": FRAMES}


def test_html_in_names_shows_as_text_and_runs_nothing(site: Site, visit) -> None:
    labelled = visit(site.page("labelled.html"))
    assert labelled.page.locator("#title").text_content() == HOSTILE_NAME
    assert labelled.page.title().startswith(HOSTILE_NAME)
    plain = visit(site.page("plain.html"))
    assert plain.page.locator("#title").text_content() == "</script><script>alert(2)</script>"
    for visited in (labelled, plain):
        assert visited.page.locator("img").count() == 0
        assert visited.page.locator("script").count() == 2
        assert visited.dialogs == [] and visited.errors == []


def test_index_lists_viewers_worst_first_with_relative_links(site: Site, visit) -> None:
    index = site.root / "index" / "index.html"
    entries = [
        ViewerEntry("good", site.page("plain.html"), 0.9),
        ViewerEntry("unscored", site.page("plain.html"), None),
        ViewerEntry(HOSTILE_NAME, site.page("labelled.html"), 0.2),
        ViewerEntry("middling", site.page("plain.html"), 0.5),
        ViewerEntry("no positives", site.page("plain.html"), math.nan),
    ]
    write_index(index, entries)
    assert "../pages/labelled.html" in index.read_text()
    visited = visit(index, video=False)
    assert visited.errors == [] and all(url.startswith("file://") for url in visited.requests)
    page = visited.page
    links = page.eval_on_selector_all("a", "links => links.map(a => [a.textContent, a.href])")
    assert [name for name, _ in links] == [
        HOSTILE_NAME,
        "middling",
        "good",
        "no positives",
        "unscored",
    ]
    assert links[0][1] == site.page("labelled.html").as_uri()
    page.locator("a").first.click()
    page.wait_for_url(site.page("labelled.html").as_uri())


def test_bad_timelines_are_refused_with_their_shape(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    with pytest.raises(ValueError, match=r"probabilities has shape \(4, 5\)"):
        write_viewer(tmp_path / "p.html", video, FPS, DURATION_S, np.zeros((4, 5)), RULES)
    with pytest.raises(ValueError, match=r"truth has shape \(3, 6\), probabilities \(4, 6\)"):
        write_viewer(
            tmp_path / "p.html",
            video,
            FPS,
            DURATION_S,
            np.zeros((4, 6)),
            RULES,
            np.zeros((3, 6)),
        )
    assert not (tmp_path / "p.html").exists()
