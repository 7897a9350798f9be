"""The web page in a real headless browser: Debian's chromium driven by Playwright.

Skipped when chromium or playwright is not installed (`apt-get install chromium`; playwright is in
the `test` extra and drives the system's chromium, no browser download).
"""

from __future__ import annotations

import csv
import shutil

import pytest

from crowdjax import serve
from tests import test_serve
from tests.test_serve import Running, half_zones, synthetic_png

counter = test_serve.counter  # The tiny model's fixture.

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

# Drops a file of `size` zero bytes named `name` on the page, as a person dragging it there.
DROP = """({name, size}) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([new Uint8Array(size)], name, {type: "image/png"}));
  const drop = new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true});
  document.getElementById("drop").dispatchEvent(drop);
}"""


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


def test_the_page_counts_an_image_and_names_a_corrupt_and_an_oversized_file(
    tmp_path, counter, browser
):
    data, rgb = synthetic_png(1)
    (tmp_path / "street scene.png").write_bytes(data)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    expected = counter.count_rgb(rgb)  # The model called directly on the same pixels.
    running = Running(serve.CountService(counter, max_upload_bytes=100_000, extras=[half_zones]))
    try:
        page = browser.new_page(viewport={"width": 900, "height": 700}, accept_downloads=True)
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(running.url + "/")
        sync_api.expect(page.locator("#model")).to_have_text(
            "Model: uot. Up to 98 kB and 268 megapixels per image."
        )
        page.set_input_files("#files", [tmp_path / "street scene.png", tmp_path / "broken.jpg"])
        sync_api.expect(page.locator("#progress-text")).to_have_text("Done: 2 of 2 image(s).")

        counted = page.locator(".result:not(.failed)")
        assert counted.locator(".file").inner_text() == "street scene.png"
        assert counted.locator(".count").inner_text() == f"{expected.count:.1f}"
        assert counted.locator(".zones td").nth(0).inner_text() == "left half"
        assert "interval" in counted.locator(".interval").inner_text()
        assert counted.locator("img.overlay").evaluate("img => img.naturalWidth") == 160
        error = page.locator(".result.failed .error").inner_text()
        assert error == "broken.jpg: corrupt or unreadable image"
        assert page.locator("#summary").inner_text() == "1 counted, 1 refused"

        # A file dropped on the page, over the upload limit: refused before it is sent.
        page.evaluate(DROP, {"name": "huge.png", "size": 100_001})
        sync_api.expect(page.locator("#progress-text")).to_have_text("Done: 1 of 1 image(s).")
        error = page.locator(".result.failed .error").nth(1).inner_text()
        assert error == (
            "huge.png: file of 100001 bytes is over the upload limit of 100000 bytes "
            "(the server's --max_upload_bytes)"
        )

        with page.expect_download() as download:
            page.click("#download-csv")
        download.value.save_as(tmp_path / "counts.csv")
        with open(tmp_path / "counts.csv", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [(r["file"], r["height"], r["width"], r["error"]) for r in rows] == [
            ("street scene.png", "128", "160", ""),
            ("broken.jpg", "", "", "broken.jpg: corrupt or unreadable image"),
            ("huge.png", "", "", error),
        ]
        assert float(rows[0]["count"]) == pytest.approx(expected.count, abs=5e-4)
        assert float(rows[0]["zone:left half"]) > 0 and rows[0]["disagree"] == "false"

        page.screenshot(path=tmp_path / "page.png", full_page=True)
        assert (tmp_path / "page.png").stat().st_size > 0
        assert errors == []
    finally:
        running.close()
