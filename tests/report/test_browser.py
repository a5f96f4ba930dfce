"""The report page in a real browser: Debian's Chromium, headless, loads it and every image decodes.

A copy of the page gets a small script that, on the `load` event (after every image has loaded or failed),
writes each image's `complete` and natural size into the DOM; `--dump-dom` prints the DOM after that. A
broken image has natural width 0. Skipped where Chromium is not installed (`apt-get install -y chromium`);
under CI (`CI=true`, where .ci/run installs it) a missing Chromium is a failure, not a skip.
"""

import html.parser
import json
import os
import shutil
import subprocess

import pytest


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Headless without a sandbox (root in a container) and without any network use: the network is closed here,
# and Chromium otherwise waits on its background connections.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--virtual-time-budget=20000")
PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = JSON.stringify(Array.from(document.images, (img) => (
      {complete: img.complete, width: img.naturalWidth, height: img.naturalHeight, alt: img.alt})));
  document.body.appendChild(out);
});
</script>"""


class _Probe(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.inside, self.text, self.h1 = False, "", ""
    self._in_h1 = False

  def handle_starttag(self, tag, attrs):
    self.inside = self.inside or (tag == "pre" and dict(attrs).get("id") == "image-check")
    self._in_h1 = tag == "h1"

  def handle_endtag(self, tag):
    if tag == "pre":
      self.inside = False
    self._in_h1 = False

  def handle_data(self, data):
    if self.inside:
      self.text += data
    if self._in_h1:
      self.h1 += data


def test_the_page_renders_with_every_image_loaded(report_run, tmp_path, check_png):
  if CHROMIUM is None:
    if os.environ.get("CI") == "true":
      pytest.fail("chromium is not installed; .ci/run installs it (apt-get install -y chromium)")
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium): no headless browser")
  _, workdir, _, _ = report_run
  page = (workdir / "report" / "index.html").read_text(encoding="utf-8")
  assert page.count("</body>") == 1
  probe = tmp_path / "probe.html"
  probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
  profile = tmp_path / "profile"
  profile.mkdir()
  proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", probe.as_uri()],
                        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
  assert proc.returncode == 0, proc.stderr[-2000:]
  parsed = _Probe()
  parsed.feed(proc.stdout)
  assert parsed.h1 == "asd_jax report"
  assert parsed.text, f"the load handler did not run; chromium printed: {proc.stdout[:500]!r} {proc.stderr[-500:]!r}"
  images = json.loads(parsed.text)
  figures = sorted((workdir / "report" / "figures").iterdir())
  assert len(images) == len(figures) > 0
  # Each image decoded by the browser to the size of the PNG file the report wrote.
  sizes = sorted(check_png(f.read_bytes(), f.name).shape[1::-1] for f in figures)
  assert all(img["complete"] and img["width"] > 0 for img in images), images
  assert sorted((img["width"], img["height"]) for img in images) == [tuple(s) for s in sizes]
