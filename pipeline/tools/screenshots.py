"""`python -m pipeline.tools.screenshots PAGE[#SECTION] PNG [...]`: each report page as headless Chromium
draws it, from its top (or from a section's heading), scaled down to a small PNG for the docs
(`make report-screenshots`)."""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Optional, Sequence

from PIL import Image

WINDOW = (1200, 2400)  # the browser's window: the top of the page, as a reader first sees it
WIDTH = 800  # of the PNG written
COLOURS = 128  # a palette PNG: a fraction of the size of a full-colour one, for text and charts


# Removes the blocks of the page before the one that holds the section's heading; for a part within a
# section (an id outside its folding heading), also what comes before that part in the section.
FROM_SECTION = """<script>
var target = document.getElementById('SECTION');
var start = target;
while (start && start.parentElement !== document.body) { start = start.parentElement; }
var block = document.body.firstElementChild;
while (start && block && block !== start) { var next = block.nextElementSibling; block.remove(); block = next; }
for (var node = target; target && !target.closest('summary') && node && node !== start; node = node.parentElement) {
  for (var before = node.previousElementSibling; before;) {
    var earlier = before.previousElementSibling;
    if (before.tagName !== 'SUMMARY') { before.remove(); }
    before = earlier;
  }
}
</script>"""


def chromium() -> str:
    found = shutil.which('chromium') or shutil.which('chromium-browser')
    if not found:
        raise SystemExit('error: no chromium on PATH (Debian: apt-get install chromium)')
    return found


def screenshot(page: str, png: str, browser: Optional[str] = None) -> None:
    """Draws `page` (a local HTML file, with #section to start there) in headless Chromium and writes
    what the window shows to `png`."""
    path, _, section = page.partition('#')
    with tempfile.TemporaryDirectory() as scratch:
        raw = os.path.join(scratch, 'page.png')
        if section:  # headless Chromium draws a page from its top: the part above the section leaves
            with open(path, encoding='utf-8') as handle:
                text = handle.read()
            path = os.path.join(scratch, 'page.html')
            with open(path, 'w', encoding='utf-8') as handle:
                handle.write(text.replace('</body>', FROM_SECTION.replace('SECTION', section) + '</body>'))
        subprocess.run([browser or chromium(), '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                        f'--window-size={WINDOW[0]},{WINDOW[1]}', f'--screenshot={raw}',
                        'file://' + os.path.abspath(path)],
                       check=True, capture_output=True, timeout=120)
        with Image.open(raw) as drawn:
            height = round(drawn.height * WIDTH / drawn.width)
            small = drawn.convert('RGB').resize((WIDTH, height), Image.Resampling.LANCZOS)
            small.quantize(COLOURS).save(png, optimize=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('pairs', nargs='+', metavar='PAGE PNG')
    args = parser.parse_args(argv)
    if len(args.pairs) % 2:
        parser.error('give pages and PNGs in pairs: PAGE PNG [PAGE PNG ...]')
    browser = chromium()
    for page, png in zip(args.pairs[::2], args.pairs[1::2]):
        screenshot(page, png, browser)
        print(f'{png}: {os.path.getsize(png):,} bytes')
    return 0


if __name__ == '__main__':
    sys.exit(main())
