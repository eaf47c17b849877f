"""The Dagster UI in a real browser: `dagster dev` on a free loopback port, opened in headless Chromium
(Debian's, driven by Playwright), shows the contract assets and their lineage, launches the data
assets' job, and sees the run succeed. Screenshots are saved beside the test's home."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from sessionbert_assets.instance import prepare

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CONTRACT = ["raw_sessions", "quarantined_events", "session_splits", "tokenizer", "pretrained_model", "finetuned_model",
            "session_embeddings", "cluster_centroids", "persona_mapping", "user_personas", "recommendation_table",
            "model_evaluation", "hit_at_k_evaluation"]
LINEAGE = [("raw_sessions", "session_splits"), ("session_splits", "tokenizer"), ("tokenizer", "pretrained_model"),
           ("pretrained_model", "finetuned_model"), ("finetuned_model", "model_evaluation"),
           ("pretrained_model", "session_embeddings"), ("session_embeddings", "cluster_centroids"),
           ("cluster_centroids", "persona_mapping"), ("persona_mapping", "user_personas"),
           ("finetuned_model", "recommendation_table"), ("recommendation_table", "hit_at_k_evaluation")]
ASSET_GRAPH_QUERY = "{ assetNodes { assetKey { path } dependencyKeys { path } } }"

# CI installs chromium (.ci/run), so there a missing browser fails the test instead of skipping it
pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                reason="Debian's chromium is not installed (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _readable(output: str) -> None:
    """`sessionbert run` as a person reads it: a line per asset and today's summary, under 80 lines on tiny; no
    Dagster event, third-party warning or load report; every event in the log file it names."""
    lines = output.splitlines()
    assert len(lines) < 80, output
    for noise in ("DEBUG", "WARNING", "Warning", "LOAD REPORT", "UNEXPECTED", "Downloading artifacts", "Traceback",
                  "[transformers]"):
        assert noise not in output, f"{noise!r} in the run's output:\n{output}"
    assert "\n\n\n" not in output  # a progress bar of another library, on a pipe, prints blank lines
    assert sum("✓ " in line for line in lines) >= 15 and "quality gates: " in output
    log = Path(next(line for line in lines if line.startswith("every event of the run: ")).split(": ", 1)[1])
    assert "STEP_SUCCESS" in log.read_text() and "pretrained_model" in log.read_text()


def _dagster_dev(tmp_path: Path, train_first: bool):
    """`dagster dev` (webserver and daemon, as `make ui` starts them) on tiny, in its own process group;
    with `train_first`, after `sessionbert run` has materialized the main job into the same instance."""
    port = _free_port()
    dagster_home = prepare(tmp_path / "home")  # the instance `make ui` would use: $SESSIONBERT_HOME/dagster
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONBERT_", "DAGSTER_", "MLFLOW_"))}
    env |= {"SESSIONBERT_HOME": str(tmp_path / "home"), "SESSIONBERT_PROFILE": "tiny",
            "DAGSTER_HOME": str(dagster_home)}
    bin_dir = Path(sys.executable).parent
    if train_first:
        trained = subprocess.run([str(bin_dir / "sessionbert"), "run"], cwd=ROOT, env=env, capture_output=True,
                                 text=True)
        assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
        _readable(trained.stdout + trained.stderr)
    log = (tmp_path / "dagster-dev.log").open("w")
    process = subprocess.Popen([str(bin_dir / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port), "-w",
                                "workspace.yaml"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url, process, tmp_path / "dagster-dev.log")
        yield url, tmp_path
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _wait_for(url: str, process: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"dagster dev did not start: {log.read_text()[-3000:]}")
        time.sleep(1)


@pytest.fixture
def dagster_ui(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # restored after the test; prepare() sets it
    yield from _dagster_dev(tmp_path, train_first=False)


@pytest.fixture
def trained_ui(monkeypatch):
    """The UI over a trained home whose path is as long as a usual one (`/tmp/sb-1a2b3c4d/home`, not pytest's
    80 characters): the UI does not break a path, so a long home widens every metadata table."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    yield from _dagster_dev(Path(tempfile.mkdtemp(prefix="sb-")), train_first=True)


def _shown(name: str, labels: set[str]) -> bool:
    """A node label is the name, or the name shortened in the middle (`recommendat…_table`)."""
    return name in labels or any("…" in label and name.startswith(label.split("…")[0])
                                 and name.endswith(label.split("…")[-1]) for label in labels)


def test_the_ui_shows_the_lineage_and_runs_the_data_assets(dagster_ui):
    from playwright.sync_api import expect, sync_playwright

    url, folder = dagster_ui
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 2000, "height": 1200})
        page.set_default_timeout(60_000)
        # the first-visit newsletter dialog may cover any page: dismiss it whenever it shows
        page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())

        # the lineage of the last asset: every contract asset upstream of it, drawn as a graph
        page.goto(f"{url}/assets/hit_at_k_evaluation?view=lineage&lineageScope=upstream&lineageDepth=20")
        expect(page.get_by_text("session_splits", exact=True).first).to_be_visible()
        page.wait_for_timeout(1500)
        page.get_by_text("Graph depth").hover()  # an action, so the handler dismisses a dialog shown after load
        expect(page.get_by_role("button", name="Skip")).to_be_hidden()
        labels = {line.strip() for line in page.inner_text("body").splitlines()}
        upstream = [name for name in CONTRACT if name != "quarantined_events"]  # a sibling output, not upstream
        assert [name for name in upstream if not _shown(name, labels)] == []
        page.screenshot(path=str(folder / "lineage.png"))
        # the edges the UI draws come from its own GraphQL: the contract's lineage is there
        graph = page.evaluate("""async (query) => {
            const response = await fetch('/graphql', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                      body: JSON.stringify({query})});
            return await response.json(); }""", ASSET_GRAPH_QUERY)
        nodes = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]}
                 for n in graph["data"]["assetNodes"]}
        assert set(CONTRACT) <= set(nodes)
        assert [(a, b) for a, b in LINEAGE if a not in nodes[b]] == []

        # as a user would: materialize landing_folder (it registers each file as a landing_files partition),
        # then launch the data assets' job over every file from its page, and follow the backfill to success
        page.goto(f"{url}/assets/landing_folder")
        page.get_by_role("button", name="Materialize").first.click()
        toast = page.locator("a[href*='/runs/']", has_text="View").first  # "Launched run ... View"
        expect(toast).to_be_visible()
        page.goto(url + toast.get_attribute("href"))
        expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=180_000)
        page.goto(f"{url}/locations/sessionbert/jobs/read_new_files")
        page.get_by_role("button", name="Materialize all").click()
        page.get_by_role("button", name="All", exact=True).click()  # every registered file
        expect(page.get_by_role("dialog").get_by_text("2 partitions")).to_be_visible()  # the world's 2 files
        page.get_by_role("button", name="Launch backfill").click()
        backfill = page.locator("a[href*='/runs/b/']", has_text="View").first
        expect(backfill).to_be_visible()
        page.goto(url + backfill.get_attribute("href"))
        expect(page.get_by_text("100% completed")).to_be_visible(timeout=300_000)  # ("Succeeded" heads a column)
        page.screenshot(path=str(folder / "run.png"))
        if os.environ.get("SESSIONBERT_SCREENSHOTS"):  # e.g. docs/ui, to refresh the README's pictures
            for name in ("lineage.png", "run.png"):
                shutil.copy(folder / name, Path(os.environ["SESSIONBERT_SCREENSHOTS"]) / name)
        browser.close()
    home = folder / "home"
    # the daemon takes it from there: the new-days sensor asks for the files' days of raw_sessions, and the
    # days' sessions, the quarantine and the drift follow by declarative automation
    deadline = time.monotonic() + 420
    while not (home / "vocabulary_drift.json").exists() and time.monotonic() < deadline:
        time.sleep(5)
    assert (home / "raw_sessions.parquet").exists() and (home / "session_splits.parquet").exists()
    assert len(list((home / "session_splits.parquet").glob("*.parquet"))) == 45  # every day of the tiny world
    drift = json.loads((home / "vocabulary_drift.json").read_text())
    assert drift["needs_pretraining"] is True  # nothing trained yet in this home
    print(f"screenshots: {folder / 'lineage.png'}, {folder / 'run.png'}")


VIEWPORT = {"width": 1600, "height": 1000}  # the width the UI is read at


# the extent of an element's own text inside every box that clips it (a table that scrolls sideways, the
# page): text cut off at the right of a metadata table, or below the window, is not in view
_IN_VIEW = """element => {
    const text = {left: Infinity, top: Infinity, right: -Infinity, bottom: -Infinity, width: 0};
    const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const range = document.createRange();
        range.selectNodeContents(node);
        for (const line of range.getClientRects()) {
            [text.left, text.top] = [Math.min(text.left, line.left), Math.min(text.top, line.top)];
            [text.right, text.bottom] = [Math.max(text.right, line.right), Math.max(text.bottom, line.bottom)];
            text.width = text.right - text.left;
        }
    }
    let [left, top, right, bottom] = [0, 0, window.innerWidth, window.innerHeight];
    for (let box = element.parentElement; box; box = box.parentElement) {
        const style = getComputedStyle(box);
        if (/auto|scroll|hidden|clip/.test(style.overflowX + ' ' + style.overflowY)) {
            const clip = box.getBoundingClientRect();
            [left, top] = [Math.max(left, clip.left), Math.max(top, clip.top)];
            [right, bottom] = [Math.min(right, clip.right), Math.min(bottom, clip.bottom)];
        }
    }
    return text.width > 0 && text.left >= left - 1 && text.top >= top - 1 && text.right <= right + 1
        && text.bottom <= bottom + 1;
}"""


# the metadata cells whose right edge passes the box that clips them: a table wider than the page's pane
_CUT_CELLS = """() => [...document.querySelectorAll('td')].filter(cell => {
    let right = window.innerWidth;
    for (let box = cell.parentElement; box; box = box.parentElement) {
        if (/auto|scroll|hidden|clip/.test(getComputedStyle(box).overflowX))
            right = Math.min(right, box.getBoundingClientRect().right);
    }
    return cell.getBoundingClientRect().right > right + 1;
}).map(cell => cell.innerText.slice(0, 40))"""


# the charts an asset page draws in place (an SVG in its metadata, not a PNG behind *Show Markdown*)
INLINE_CHARTS = {"pretrained_model": 1, "finetuned_model": 2, "cluster_sweep": 1, "persona_mapping": 1,
                 "hit_at_k_evaluation": 1}
_INLINE_CHARTS = """() => [...document.querySelectorAll('img[src^="data:image/svg+xml"]')]
    .filter(img => img.complete && img.naturalWidth > 0 && img.getBoundingClientRect().width > 0).length"""


def _in_view(locator) -> bool:
    """The element's text lies wholly inside the window as the page opens, cut by no scrolling box."""
    return locator.evaluate(_IN_VIEW)


def test_the_evaluation_pages_open_with_their_answer_in_view(trained_ui):
    """After `sessionbert run`, the asset pages of model_evaluation and hit_at_k_evaluation show, without
    scrolling at 1,600 px, the headline their artifacts give and (Hit@k) the Hit@5 column of a D table; no
    asset page's metadata runs past the right of its pane; and the curves and the heat map are drawn in place."""
    from playwright.sync_api import expect, sync_playwright

    from sessionbert_assets import headlines, metadata

    url, folder = trained_ui
    home = folder / "home"
    expected = {"model_evaluation": headlines.next_activity(json.loads((home / "model_evaluation.json").read_text())),
                "hit_at_k_evaluation": headlines.hit_at_k(json.loads((home / "hit_at_k_evaluation.json").read_text()))}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(60_000)
        page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())
        hidden = []
        for asset, headline in expected.items():
            page.goto(f"{url}/assets/{asset}")
            key = page.get_by_role("cell", name="headline", exact=True).first
            shown = page.get_by_role("row").filter(has=key).first.get_by_role("cell").last
            expect(shown).to_be_visible()
            page.wait_for_timeout(1000)  # the page settles (plots load below the tables)
            lines = [line.strip() for line in shown.inner_text().splitlines()]
            assert lines == metadata.headline(headline).md_str.split("  \n"), asset  # as the asset wrote them
            hidden += [] if _in_view(shown) else [f"{asset}: headline"]
            if asset == "hit_at_k_evaluation":
                column = page.get_by_text("hit@5", exact=True).first
                expect(column).to_be_visible()
                hidden += [] if _in_view(column) else [f"{asset}: hit@5 column"]
            page.screenshot(path=str(folder / f"{asset}.png"))
        cut, unseen = {}, {}
        for asset in [*CONTRACT, "cluster_sweep", "tokenizer", "serving_model", "persona_evaluation"]:
            page.goto(f"{url}/assets/{asset}")
            expect(page.get_by_role("cell", name="path", exact=True).first).to_be_visible()
            page.wait_for_timeout(500)
            cut |= {asset: cells} if (cells := page.evaluate(_CUT_CELLS)) else {}
            drawn = page.evaluate(_INLINE_CHARTS)
            unseen |= {asset: drawn} if drawn < INLINE_CHARTS.get(asset, 0) else {}
        if os.environ.get("SESSIONBERT_SCREENSHOTS"):
            for asset in expected:
                shutil.copy(folder / f"{asset}.png", Path(os.environ["SESSIONBERT_SCREENSHOTS"]) / f"{asset}.png")
        browser.close()
    assert hidden == [], f"out of view at {VIEWPORT['width']} px: {hidden} (screenshots in {folder})"
    assert cut == {}, f"metadata cut off at the right at {VIEWPORT['width']} px: {cut}"
    assert unseen == {}, f"inline charts drawn (of {INLINE_CHARTS}): {unseen}"
