"""OHIF Viewer in the tests: its static build and Orthanc's DICOMweb from one origin, driven
in Debian's headless Chromium by Playwright.

``make test`` fetches OHIF (``make viewer``: ``@ohif/app`` from the npm registry, into
``.cache/``), installs Debian's orthanc-dicomweb and chromium, and Playwright for Python
(which drives that Chromium through ``executable_path``; no browser download). WebGL runs
on SwiftShader. The page is read through OHIF's own services (``window.services``, which
OHIF sets for this purpose), the DOM and screenshots of the viewport's canvas.
"""

from __future__ import annotations

import http.server
import io
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
OHIF_VERSION = "3.13.2"
OHIF_DIST = ROOT / ".cache" / f"ohif-{OHIF_VERSION}" / "dist"
CHROMIUM = Path("/usr/bin/chromium")
#: WebGL without a GPU (the viewer's renderer needs it).
CHROMIUM_ARGS = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--no-sandbox", "--disable-dev-shm-usage"]

#: OHIF's configuration: one DICOMweb data source, the proxied Orthanc, on the same origin.
APP_CONFIG = """window.config = {
  routerBasename: null, extensions: [], modes: [], customizationService: {},
  showStudyList: true, maxNumberOfWebWorkers: 2, showLoadingIndicator: true,
  showWarningMessageForCrossOrigin: false, showCPUFallbackMessage: false,
  strictZSpacingForVolumeViewport: true, investigationalUseDialog: {option: 'never'},
  defaultDataSourceName: 'orthanc',
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'orthanc',
    configuration: {
      friendlyName: 'Orthanc', name: 'orthanc',
      wadoUriRoot: '/wado', qidoRoot: '/dicom-web', wadoRoot: '/dicom-web',
      qidoSupportsIncludeField: false, imageRendering: 'wadors', thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true, supportsFuzzyMatching: false, supportsWildcard: true,
      bulkDataURI: {enabled: true}, omitQuotationForMultipartRequest: true,
    },
  }],
};
"""

_PROXIED = ("/dicom-web/", "/wado")
#: Console errors of OHIF's viewport life cycle, not of its SEG or SR code: logged when the
#: viewport OHIF replaces to show a SEG on another series is asked to render once more
#: (seen in CI on the MR study, whose SEG opens on the copied phase, not the T2 on show;
#: on a loaded machine it comes as an uncaught error from OHIF's render loop).
BENIGN = ("The stack viewport has been destroyed and is no longer usable",)


def _handler(dist: Path, orthanc: str) -> type[http.server.SimpleHTTPRequestHandler]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(dist), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Quiet: the test reports what the page saw."""

        def _send(self, status: int, content_type: str | None, body: bytes) -> None:
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _proxy(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = urllib.request.Request(orthanc + self.path, method=self.command,
                                             data=self.rfile.read(length) if length else None)
            # Host too: Orthanc writes its absolute retrieve URLs with it.
            for name in ("Accept", "Content-Type", "Host"):
                if self.headers.get(name):
                    request.add_header(name, self.headers[name])
            try:
                with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                    self._send(response.status, response.headers.get("Content-Type"),
                               response.read())
            except urllib.error.HTTPError as exc:
                self._send(exc.code, exc.headers.get("Content-Type"), exc.read())

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path.startswith(_PROXIED):
                self._proxy()
            elif path == "/app-config.js":
                self._send(200, "application/javascript", APP_CONFIG.encode())
            else:
                if not (dist / path.lstrip("/")).is_file():
                    self.path = "/index.html"  # the app's own routes (/viewer, ...)
                super().do_GET()

        do_POST = _proxy  # noqa: N815

    return Handler


@contextmanager
def ohif_site(orthanc_http_port: int, port: int) -> Iterator[str]:
    """OHIF's build and Orthanc's ``/dicom-web`` served on ``http://127.0.0.1:port``."""
    if not (OHIF_DIST / "index.html").exists():
        pytest.fail(f"{OHIF_DIST} missing: `make test` (make viewer) fetches OHIF")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", port), _handler(OHIF_DIST, f"http://127.0.0.1:{orthanc_http_port}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


_VIEWPORT = ("(() => { const g = window.services.viewportGridService.getState();"
             " return window.services.cornerstoneViewportService"
             ".getCornerstoneViewport(g.activeViewportId); })()")


@dataclass
class OhifPage:
    """One OHIF page, with what its console and scripts reported."""

    page: Any
    base: str
    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def open_study(self, study_instance_uid: str, series: int = 1,
                   timeout_s: float = 60) -> None:
        """Open the study in the viewer; wait until OHIF lists ``series`` of its series
        (it lists them as their metadata arrive: seconds apart on a busy machine)."""
        self.page.goto(f"{self.base}/viewer?StudyInstanceUIDs={study_instance_uid}")
        self.page.wait_for_function(
            "(n) => window.services && window.services.displaySetService"
            " && new Set(window.services.displaySetService.getActiveDisplaySets()"
            ".map(d => d.SeriesInstanceUID)).size >= n", arg=series,
            timeout=timeout_s * 1000)

    def display_sets(self) -> list[dict]:
        return self.page.evaluate(
            "() => window.services.displaySetService.getActiveDisplaySets().map(d => ("
            "{uid: d.displaySetInstanceUID, modality: d.Modality,"
            " description: d.SeriesDescription, images: (d.instances || []).length}))")

    def _thumbnail(self, modality: str) -> Any:
        return self.page.locator('[data-cy="study-browser-thumbnail-no-image"]',
                                 has_text=modality).first

    def load_seg(self, modality: str = "SEG", timeout_s: float = 30) -> float:
        """Open the study's SEG (or RTSTRUCT) as a user does (double-click, accept), wait
        until the active viewport shows it; seconds it took."""
        started = time.monotonic()
        self._thumbnail(modality).dblclick()
        self.page.get_by_role("button", name="Yes").click(timeout=timeout_s * 1000)
        self.page.wait_for_function(
            "() => { const g = window.services.viewportGridService.getState();"
            " return window.services.segmentationService"
            ".getSegmentationRepresentations(g.activeViewportId).length > 0 }",
            timeout=timeout_s * 1000)
        return time.monotonic() - started

    def segments(self) -> list[dict]:
        """Label and display colour (RGBA) of each segment OHIF holds."""
        return self.page.evaluate(
            "() => { const g = window.services.viewportGridService.getState();"
            " const s = window.services.segmentationService;"
            " return s.getSegmentations().flatMap(seg =>"
            "  Object.values(seg.segments).filter(Boolean).map(x => ({index: x.segmentIndex,"
            "   label: x.label, color: s.getSegmentColor(g.activeViewportId,"
            "   seg.segmentationId, x.segmentIndex)}))) }")

    def show_image(self, sop_instance_uid: str) -> int:
        """Scroll the active viewport to the image ``sop_instance_uid``; its index."""
        index = self.page.evaluate(
            f"(uid) => {{ const vp = {_VIEWPORT}; const ids = vp.getImageIds();"
            " const i = ids.findIndex(x => x.includes(uid)); if (i >= 0) vp.setImageIdIndex(i);"
            " return i }", sop_instance_uid)
        assert index >= 0, f"image {sop_instance_uid} not in the viewport"
        self._wait_shown(index)
        return index

    def _wait_shown(self, index: int) -> None:
        """Until the active viewport is at image ``index`` and holds that image loaded (on
        a loaded machine the scroll is done long before the image is fetched and drawn)."""
        # The scroll is asked again while waiting: OHIF may replace the viewport (a new
        # display set) after the first request, which the new viewport never saw.
        self.page.wait_for_function(
            f"(i) => {{ const vp = {_VIEWPORT}; const shown = vp.getCornerstoneImage();"
            " if (vp.getCurrentImageIdIndex() !== i) vp.setImageIdIndex(i);"
            " return vp.getCurrentImageIdIndex() === i && !!shown"
            " && shown.imageId === vp.getImageIds()[i] }", arg=index, timeout=30000,
            polling=500)
        self.render()

    def reset_view(self) -> None:
        """What OHIF's "Reset View" does: fit the camera to the image, then render."""
        self.page.evaluate(f"() => {_VIEWPORT}.resetCamera()")
        self.render()

    def render(self, timeout_s: float = 10) -> bool:
        """Render the active viewport and wait (up to ``timeout_s``) for Cornerstone's
        IMAGE_RENDERED event: software WebGL on a busy machine draws seconds after the image
        is loaded. Whether the event came (it need not: a render already under way is not
        repeated); the screenshots' own settling covers the rest."""
        rendered = self.page.evaluate(
            f"(ms) => new Promise(done => {{ const vp = {_VIEWPORT};"
            " const timer = setTimeout(() => done(false), ms);"
            " vp.element.addEventListener('CORNERSTONE_IMAGE_RENDERED',"
            " () => { clearTimeout(timer); done(true) }, {once: true}); vp.render(); })",
            timeout_s * 1000)
        time.sleep(0.5)  # the frame to the screen
        return bool(rendered)

    def show_display_set(self, display_set_uid: str, timeout_s: float = 30) -> int:
        """Put a display set in the active viewport (as dragging its thumbnail does); the
        number of images the viewport then holds."""
        self.page.evaluate(
            "(uid) => { const g = window.services.viewportGridService;"
            " g.setDisplaySetsForViewport({viewportId: g.getState().activeViewportId,"
            " displaySetInstanceUIDs: [uid]}); }", display_set_uid)
        self.page.wait_for_function(
            f"(uid) => {{ try {{ const vp = {_VIEWPORT}; const ids = vp.getImageIds();"
            " const d = window.services.displaySetService.getDisplaySetByUID(uid);"
            " return ids.length > 0 && d.instances.some(i => ids[0].includes("
            "i.SOPInstanceUID)) } catch (e) { return false } }",
            arg=display_set_uid, timeout=timeout_s * 1000)
        return self.page.evaluate(f"() => {_VIEWPORT}.getImageIds().length")

    def scroll_to(self, index: int) -> None:
        """Scroll the active viewport to its image ``index``."""
        self.page.evaluate(f"(i) => {_VIEWPORT}.setImageIdIndex(i)", index)
        self._wait_shown(index)

    def set_segments_visible(self, visible: bool) -> None:
        self.page.evaluate(
            "(on) => { const g = window.services.viewportGridService.getState();"
            " const s = window.services.segmentationService;"
            " for (const seg of s.getSegmentations())"
            "  for (const x of Object.values(seg.segments).filter(Boolean))"
            "   s.setSegmentVisibility(g.activeViewportId, seg.segmentationId,"
            "    x.segmentIndex, on); }", visible)
        time.sleep(1.0)

    def shown_and_hidden(self, tries: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """Canvas screenshots with the segments shown, then hidden; taken again (up to
        ``tries`` times) until a shot with the segments shown once more matches the first,
        so that a render still under way (a scroll, a loading image: seen on a loaded CI
        machine) is not read as the overlay."""
        for _ in range(tries):
            shown = self.canvas_pixels()
            self.set_segments_visible(False)
            hidden = self.canvas_pixels()
            self.set_segments_visible(True)
            again = self.canvas_pixels()
            if (np.abs(shown - again).sum(axis=-1) > 30).sum() <= 5:
                break
        return shown, hidden

    def world_to_canvas(self, points_mm: np.ndarray, settle_s: float = 15) -> np.ndarray:
        """Canvas positions (n x 2, CSS pixels) of patient points (n x 3, mm), by the
        active viewport's own mapping, once that mapping holds still (OHIF may still be
        fitting the camera after it replaced a viewport)."""
        script = (f"(pts) => {{ const vp = {_VIEWPORT};"
                  " return pts.map(p => vp.worldToCanvas(p)) }")
        points = np.asarray(points_mm, dtype=float).tolist()
        previous = np.asarray(self.page.evaluate(script, points), dtype=float)
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            time.sleep(0.5)
            current = np.asarray(self.page.evaluate(script, points), dtype=float)
            if np.allclose(current, previous, atol=0.5):
                return current
            previous = current
        return previous

    def canvas_pixels(self, settle_s: float = 15) -> np.ndarray:
        """RGB screenshot (rows, columns, 3) of the active viewport's canvas, once the
        rendering has settled (two shots 0.3 s apart alike)."""
        from PIL import Image

        def shot() -> np.ndarray:
            box = self.page.evaluate(
                f"() => {{ const r = {_VIEWPORT}.canvas.getBoundingClientRect();"
                " return [r.x, r.y, r.width, r.height] }")
            png = self.page.screenshot(clip={"x": box[0], "y": box[1], "width": box[2],
                                             "height": box[3]})
            return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)

        previous = shot()
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            time.sleep(0.3)
            current = shot()
            if current.shape == previous.shape and (current == previous).all():
                return current
            previous = current
        return previous

    def load_sr(self, timeout_s: float = 30) -> list[dict]:
        """Open the study's SR as a user does; the measurements OHIF read from it, once all
        are placed on an image (labels, graphic type, placed or not)."""
        self._thumbnail("SR").dblclick()
        script = ("() => window.services.displaySetService.getActiveDisplaySets()"
                  ".filter(d => d.Modality === 'SR' && d.isLoaded).flatMap(d =>"
                  " (d.measurements || []).map(m => ({labels: m.labels, loaded: m.loaded,"
                  "  graphicType: m.graphicType, image: m.ReferencedSOPInstanceUID || null})))")
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.page.evaluate(script)
            if (found and all(m["loaded"] for m in found)) or time.monotonic() > deadline:
                return found
            if self.page_errors:
                return found
            time.sleep(0.5)

    def problems(self) -> list[str]:
        """What went wrong in the page: uncaught errors, console errors, and what OHIF's
        error boundary caught (it logs those at debug level, then blanks the viewer)."""
        caught = ("Error Boundary", "Something went wrong")
        found = [*self.page_errors, *(m for m in self.console
                                      if m.startswith("error:") or any(c in m for c in caught))]
        return [m for m in found if not any(b in m for b in BENIGN)]

    def wait_for_text(self, fragment: str, timeout_s: float = 30) -> str:
        """The page's text once it holds ``fragment`` (drawn annotations included)."""
        self.page.wait_for_function("(f) => document.body.innerText.includes(f)", arg=fragment,
                                    timeout=timeout_s * 1000)
        return self.page.inner_text("body")


@contextmanager
def ohif_browser(base: str) -> Iterator[OhifPage]:
    """Headless Chromium (Debian's) on ``base``, OHIF's first-visit tour marked as shown."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} missing: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.add_init_script(
                "localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']))")
            ohif = OhifPage(page, base)
            page.on("console", lambda m: ohif.console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: ohif.page_errors.append(str(e)))
            yield ohif
        finally:
            browser.close()
