"""The visual run report: built from the outputs, valid HTML, right figures, boxes at the right pixels,
and rendered by a real browser."""
import html.parser
import json
import re
import shutil
import subprocess
import sys
from typing import Dict, List

import apache_beam
import pyarrow.parquet as pq
import pytest
from coco_testing import coco_ground_truth, generated_set, legacy_line, vertex_line
from conftest import ROOT, SAMPLE
from PIL import Image

import pipeline
from pipeline.config.options import OPTIONS_BY_NAME
from pipeline.tools import report, screenshots
from pipeline.tools.evaluation_report import most_confused

MIRRORS = ('gs://migration-ucaip-trainingaip-20210301091741/openimage/=' + str(SAMPLE / 'images' / 'legacy')
           + '/,gs://migration-ucaip-trainingaip-20210226015226/=' + str(SAMPLE / 'images' / 'vertex') + '/')


def row(**values):
    base = {'image_uri': 'u', 'source_file': 'f', 'label': 'A', 'score': 0.9, 'rank': 0,
            'x_min': 0.25, 'y_min': 0.2, 'x_max': 0.45, 'y_max': 0.6,
            'px_x_min': 50.0, 'px_y_min': 20.0, 'px_x_max': 90.0, 'px_y_max': 60.0}
    base.update(values)
    return base


def test_boxes_are_placed_at_the_written_pixels():
    # px (50, 20)-(90, 60) of a 200 x 100 image: 25% and 20% from its corner, 20% wide and 40% high.
    (box,) = report.box_overlays([row()], (200, 100))
    assert (box.left, box.top, box.width, box.height) == pytest.approx((0.25, 0.2, 0.2, 0.4))
    assert (box.label, box.score, box.caption) == ('A', 0.9, 'A 0.90')
    # The same pixels of a 2000 x 1000 image shown on a 480 x 240 canvas: fractions of the full size.
    (scaled,) = report.box_overlays([row(px_x_min=500.0, px_y_min=250.0, px_x_max=1000.0, px_y_max=750.0)],
                                    (480, 240), full_size=(2000, 1000))
    assert (scaled.left, scaled.top, scaled.width, scaled.height) == pytest.approx((0.25, 0.25, 0.25, 0.5))
    html_boxes = report.overlay_html([box], ['A'])
    assert 'left:25.0000%;top:20.0000%;width:20.0000%;height:40.0000%' in html_boxes
    assert f'border-color:rgb{report.PALETTE[0]}' in html_boxes and '>A 0.90</span>' in html_boxes


def test_rows_without_a_size_are_placed_by_their_normalized_box():
    (box,) = report.box_overlays([row(px_x_min=None, px_y_min=None, px_x_max=None, px_y_max=None)], (200, 100))
    assert (box.left, box.top, box.width, box.height) == pytest.approx((0.25, 0.2, 0.2, 0.4))


def test_gallery_is_deterministic_and_spread_across_labels():
    rows = [row(image_uri=f'gs://b/{label}{i}.jpg', label=label, score=i / 10)
            for label in 'ABC' for i in range(10)] + [row(image_uri='gs://b/A9.jpg', label='C', score=0.5)]
    chosen = report.choose_gallery(rows, 6)
    assert chosen == report.choose_gallery(list(reversed(rows)), 6)
    assert len(chosen) == len(set(chosen)) == 6
    assert {uri[7] for _, uri in chosen} == {'A', 'B', 'C'}
    assert (None, 'gs://b/A9.jpg') in chosen and (None, 'gs://b/A0.jpg') in chosen  # best and worst of a label


def test_gallery_takes_images_of_every_run():
    rows = [row(image_uri=f'gs://b/{i}.jpg', label='A', score=i / 10, prediction_run=run)
            for run in ('run-a', 'run-b') for i in range(10)]
    chosen = report.choose_gallery(rows, 4)
    assert sorted(run for run, _ in chosen) == ['run-a', 'run-a', 'run-b', 'run-b']
    assert ('run-a', 'gs://b/9.jpg') in chosen and ('run-b', 'gs://b/9.jpg') in chosen


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells, self.images, self.unreadable, self.stack = [], [], 0, []

    VOID = {'meta', 'img', 'br', 'hr', 'link', 'input'}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag == 'img':
            self.images.append(attrs)
        if tag == 'figure' and attrs.get('class') == 'unreadable':
            self.unreadable += 1

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (self.stack[-3:], tag)  # well nested
        self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] == 'td':
            self.cells.append(data)


@pytest.fixture(scope='module')
def sample_report(tmp_path_factory):
    out = tmp_path_factory.mktemp('report') / 'out'
    result = subprocess.run([sys.executable, '-m', 'pipeline', '--input', SAMPLE / 'input', '--output', out,
                             '--image_sizes', SAMPLE / 'image_sizes.csv', '--score_threshold', '0.7',
                             '--report_image_mirror', MIRRORS],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f'Report: {out}/report/index.html' in result.stdout
    return out


def parsed_page(out):
    """(the report's text, the parsed page), the page checked well nested."""
    text = (out / 'report' / 'index.html').read_text()
    page = Page()
    page.feed(text)
    page.close()
    assert page.stack == []
    return text, page


def test_report_is_valid_html_naming_every_summary_figure(sample_report):
    text, page = parsed_page(sample_report)
    summary = json.loads((sample_report / 'summary.json').read_text())
    figures = dict(zip(page.cells[::2], page.cells[1::2]))
    assert figures['images written'] == f"{summary['images_written']:,}"
    assert figures['detections in'] == f"{summary['detections']['in']:,}"
    assert figures['detections kept'] == f"{summary['detections']['kept']:,}"
    assert figures['removed by threshold'] == f"{summary['detections']['removed_by']['threshold']:,}"
    assert figures['lines read'] == f"{summary['lines']['read']:,}"
    assert figures['dead letters: prediction_error'] == '3'
    assert figures['image sizes unknown'] == f"{summary['image_sizes']['unknown']:,}"
    assert figures['duplicate image URIs'] == f"{summary['duplicate_image_uris']:,}"
    assert 'Reconciliation holds: 15 non-blank lines read == 12 images + 3 line dead letters' in text
    photos = [img for img in page.images if img['src'].startswith('data:image/jpeg')]
    charts = [img for img in page.images if img['src'].startswith('data:image/png')]
    assert len(photos) == 3 and len(charts) == 2  # three distinct images; label and score charts
    assert text.count('<li><code>') == 3 and 'Unable to decode image.' in text  # the dead letters
    assert 'http://' not in text and 'https://' not in text  # self-contained: nothing to fetch


def test_the_header_says_what_ran_when_with_which_options_and_the_figures_of_the_summary(sample_report):
    text, _ = parsed_page(sample_report)
    summary = json.loads((sample_report / 'summary.json').read_text())
    run = summary['run']
    shown = dict(re.findall(r'data-key="([^"]+)">([^<]*)<', text))
    assert shown['run.tool'] == f'prediction-tables {run["version"]}' and run['version'] == pipeline.__version__
    assert shown['run.Apache Beam'] == run['beam_version'] == apache_beam.__version__
    assert shown['run.started'] == run['started'] and run['started'] < run['finished']
    assert shown['run.duration'] == f'{run["duration_s"]:,.1f} s' and run['duration_s'] > 0
    assert shown['lines.read'] == f'{summary["lines"]["read"]:,}'
    assert shown['images_written'] == f'{summary["images_written"]:,}'
    assert shown['detections.kept'] == f'{summary["detections"]["kept"]:,}'
    assert shown['dead_letters.total'] == f'{summary["dead_letters"]["total"]:,}' == '3'
    assert run['options']['score_threshold'] == '0.7' and '--score_threshold' in run['command_line']
    assert '<div class="given"><dt>--score_threshold</dt><dd>0.7</dd></div>' in text  # given: highlighted
    assert '<div><dt>--max_dets</dt><dd>1,10,100</dd></div>' in text  # the others at their defaults
    options = text.split('<dl class="options">')[1].split('</dl>')[0]
    assert options.count('<dt>--') == len(OPTIONS_BY_NAME) and options.count('class="given"') == len(run['options'])
    nav = re.search(r'<nav id="toc">(.*?)</nav>', text).group(1)
    anchors = re.findall(r'href="#([^"]+)"', nav)
    assert anchors == ['run', 'summary-section', 'labels', 'gallery', 'dead-letters']  # no evaluation here
    assert all(f'id="{anchor}"' in text for anchor in anchors)


def test_report_after_the_fact_lists_unreadable_images_with_the_reason(sample_report, tmp_path):
    copy = tmp_path / 'out'
    shutil.copytree(sample_report, copy)
    subprocess.run([sys.executable, '-m', 'pipeline.report', '--output', str(copy)], cwd=ROOT,
                   check=True, capture_output=True)
    page = Page()
    page.feed((copy / 'report' / 'index.html').read_text())
    assert page.unreadable == 3  # gs:// images on a local run: never opened
    assert 'outside what this run may open' in (copy / 'report' / 'index.html').read_text()


def test_report_renders_in_headless_chromium(sample_report, tmp_path):
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    assert chromium, 'make test installs Debian\'s chromium package'
    shot = tmp_path / 'report.png'
    subprocess.run([chromium, '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                    f'--screenshot={shot}', '--window-size=1200,2400',
                    (sample_report / 'report' / 'index.html').as_uri()],
                   check=True, capture_output=True, timeout=120)
    image = Image.open(shot).convert('RGB')
    assert image.size == (1200, 2400)
    colours = image.resize((60, 120)).getcolors(maxcolors=60 * 120)
    assert len(colours) > 50  # text, charts and photos rendered, not a blank page


def test_gallery_images_follow_the_probe_allowlist(tmp_path):
    allowed, other = tmp_path / 'allowed', tmp_path / 'other'
    allowed.mkdir()
    other.mkdir()
    Image.new('RGB', (40, 30), (10, 200, 10)).save(allowed / 'a.png')
    Image.new('RGB', (40, 30), (10, 200, 10)).save(other / 'b.png')
    image, full_size = report.load_image(str(allowed / 'a.png'), 'file', {}, [f'{allowed}/'])
    assert image.size == full_size == (40, 30)
    with pytest.raises(PermissionError):
        report.load_image(str(other / 'b.png'), 'file', {}, [f'{allowed}/'])
    with pytest.raises(PermissionError):
        report.load_image('/etc/passwd', 'gs', {})


@pytest.fixture(scope='module')
def evaluation_report(tmp_path_factory, run):
    """A run with ground truth over two prediction runs whose images the report cannot open (gs://)."""
    tmp = tmp_path_factory.mktemp('evaluation-report')
    sizes, truth, detections = generated_set(5, images=24)
    uris = [f'gs://bucket/images/{i}.jpg' for i in range(len(sizes))]
    for run_name, line, shard in (('prediction-a-2026-11-30T10:00:00Z', vertex_line, 'predictions_00001.jsonl'),
                             ('prediction-b-2026-11-30T11:00:00Z', legacy_line, 'image_object_detection_1.jsonl')):
        folder = tmp / 'in' / run_name
        folder.mkdir(parents=True)
        dets = detections if run_name.startswith('prediction-a') else [d[::2] for d in detections]
        (folder / shard).write_bytes(b'\n'.join(line(u, s, d) for u, s, d in zip(uris, sizes, dets)) + b'\n')
    (tmp / 'truth.json').write_text(json.dumps(coco_ground_truth(sizes, truth)))
    out = tmp / 'out'
    run('--input', tmp / 'in', '--output', out, '--ground_truth', tmp / 'truth.json',
        '--ground_truth_image_prefix', 'gs://bucket/images/')
    return out


def test_the_evaluation_section_shows_metrics_json_and_both_galleries(evaluation_report):
    text, page = parsed_page(evaluation_report)
    metrics = json.loads((evaluation_report / 'evaluation' / 'metrics.json').read_text())
    shown = dict(re.findall(r'data-run="([^"]+)" data-key="map">([^<]+)<', text))
    assert shown == {run['prediction_run']: f'{run["map"]:.4f}' for run in metrics['runs']}
    shown = set(re.findall(r'data-run="([^"]+)" data-label="([^"]+)" data-key="threshold"[^>]*>([^<]+)<', text))
    assert shown and shown == {(run['prediction_run'], entry['label'], f'{entry["operating_threshold"]["threshold"]:.4g}')
                               for run in metrics['runs'] for entry in run['labels']
                               if (entry['operating_threshold'] or {}).get('threshold') is not None}
    for name in ('ap_small', 'ar_1', 'ar_large'):  # the twelve COCO numbers, per run
        shown = dict(re.findall(rf'data-run="([^"]+)" data-key="stats.{name}">([^<]+)<', text))
        assert shown == {run['prediction_run']: 'n/a' if run['stats'][name] is None else f'{run["stats"][name]:.4f}'
                         for run in metrics['runs']}, name
    for run in metrics['runs']:  # where the AP goes: each error type's dAP and count, per run
        for name, dap in run['errors']['dap'].items():
            shown = re.search(rf'data-run="{re.escape(run["prediction_run"])}" data-key="errors.dap.{name}">([^<]+)<',
                              text)
            assert shown and shown[1] == f'{dap:+.4f} ({run["errors"]["counts"][name]:,})', name
    # Two galleries per run, each under a heading that names the run.
    galleries = re.findall(r'<h3>([^<]+): (highest-scored false positives|missed boxes)[^<]*</h3>.*?'
                           r'<div class="gallery" id="gallery-(fp|fn)-(\d)" data-run="([^"]+)" data-kind="(fp|fn)">'
                           r'(.*?)(?=<h3>|<h2)', text, flags=re.S)
    runs = [run['prediction_run'] for run in metrics['runs']]
    assert [(name, kind, index) for name, _, kind, index, _, _, _ in galleries] == [
        (run, kind, str(i)) for i, run in enumerate(runs) for kind in ('fp', 'fn')]
    assert all(name == data_run and kind == data_kind for name, _, kind, _, data_run, data_kind, _ in galleries)
    false_positives = ''.join(body for _, _, kind, _, _, _, body in galleries if kind == 'fp')
    assert 'data-error-type="cls"' in false_positives
    # A class confusion says which box it is on and by how much, as `matches` has it.
    told = set(re.findall(r' on a (cat|dog|bird) box, IoU (\d\.\d\d)', false_positives))
    matches = pq.read_table(evaluation_report / 'evaluation' / 'matches').to_pylist()
    cls_errors = {(row['error_label'], f'{row["error_iou"]:.2f}') for row in matches if row['error_type'] == 'cls'}
    assert told and told <= cls_errors
    assert all(row['error_iou'] >= 0.5 for row in matches if row['error_type'] == 'cls')
    for kind in ('fp', 'fn'):
        shown = ''.join(body for _, _, found, _, _, _, body in galleries if found == kind)
        assert shown.count('<figure class="unreadable"><div class="frame"><img') >= 2  # boxes on a canvas, the reason
    # The boxes are drawn over the pictures, each saying its outcome for the filters.
    outcomes = set(re.findall(r'<div class="box" data-outcome="(tp|fp|gt|fn)"', text))
    assert {'fp', 'fn'} <= outcomes
    assert 'outside what this run may open' in text and 'PermissionError' not in text
    alts = {img.get('alt') for img in page.images}
    assert {'AP per label', 'Precision-recall and F1 against confidence'} <= alts
    assert sum(1 for alt in alts if alt and alt.startswith('Confusion matrix of')) == 2


def test_the_evaluation_report_renders_in_headless_chromium_without_console_errors(evaluation_report):
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    assert chromium, 'make test installs Debian\'s chromium package'
    result = subprocess.run([chromium, '--headless', '--no-sandbox', '--disable-gpu', '--enable-logging=stderr',
                             '--v=0', '--dump-dom', (evaluation_report / 'report' / 'index.html').as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert 'id="evaluation"' in result.stdout and 'data-key="map_50"' in result.stdout
    assert 'CONSOLE' not in result.stderr and 'Uncaught' not in result.stderr, result.stderr[-2000:]


def test_an_image_that_cannot_be_opened_shows_its_boxes_on_a_canvas_of_its_shape():
    canvas = report.blank_canvas((2000, 1000))
    assert canvas.size == (480, 240)  # the boxes are placed over it in fractions of the full size
    assert report.blank_canvas(None).size == (480, 480)
    assert 'PermissionError' not in report.why_not_shown(PermissionError('x'))


def test_the_per_label_table_and_the_change_in_ap_between_runs_follow_metrics_json(evaluation_report):
    text, _ = parsed_page(evaluation_report)
    metrics = json.loads((evaluation_report / 'evaluation' / 'metrics.json').read_text())
    shown = {(run, label): value for run, label, value in
             re.findall(r'data-run="([^"]+)" data-label="([^"]+)">([^<]+)<', text)}
    expected = {(run['prediction_run'], e['label']): figure(e['ap'])
                for run in metrics['runs'] for e in run['labels'] if e['ground_truth_boxes']}
    assert shown == expected and expected
    first, second = metrics['runs']
    before = {e['label']: e['ap'] for e in first['labels'] if e['ap'] is not None}
    changes = [(e['ap'] - before[e['label']], e['label']) for e in second['labels']
               if e['ap'] is not None and e['label'] in before]
    table = text.split('class="ap-change sortable"')[1].split('</table>')[0]
    rows = re.findall(r'<tr><td>([^<]+)</td><td class="n" data-sort="([^"]+)">', table)
    assert [label for label, _ in rows] == [label for _, label in sorted(changes, key=lambda c: (-c[0], c[1]))]
    assert [float(value) for _, value in rows] == pytest.approx([c for c, _ in sorted(changes, reverse=True)])
    cells = [cell for path in (evaluation_report / 'evaluation' / 'confusion_matrix').glob('*.parquet')
             for cell in pq.read_table(path).to_pylist()]
    for run in metrics['runs']:  # the most confused pairs listed are the confusion matrix's
        listed = re.search(rf'<ol class="confused" data-run="{re.escape(run["prediction_run"])}">(.*?)</ol>', text)
        expected = [f'{true} taken for {predicted}: ' for true, predicted, _, _ in
                    most_confused(cells, run['prediction_run'])]
        assert (re.findall(r'<li>(\w+ taken for \w+: )', listed[1]) if listed else []) == expected


def figure(value):
    return 'n/a' if value is None else f'{value:.4f}'


def test_clicking_a_heading_sorts_the_table_in_headless_chromium(evaluation_report, tmp_path):
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    page = (evaluation_report / 'report' / 'index.html').read_text()
    # Under the runs' names, the third heading is the first run's AP: click it once (largest first).
    click = ('<script>document.querySelector("#evaluation-labels thead tr:last-child th:nth-child(3)").click();'
             '</script></body>')
    clicked = tmp_path / 'clicked.html'
    clicked.write_text(page.replace('</body>', click))
    result = subprocess.run([chromium, '--headless', '--no-sandbox', '--disable-gpu', '--dump-dom', clicked.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    values = first_run_ap_column(result.stdout)
    numbers = [v for v in values if v is not None]
    assert numbers == sorted(numbers, reverse=True) and len(numbers) >= 2
    assert values[:len(numbers)] == numbers  # cells without a value last
    assert first_run_ap_column(page) != values  # the page did not come sorted that way already


def first_run_ap_column(page):
    body = page.split('id="evaluation-labels"')[1].split('</tbody>')[0].split('<tbody>')[1]
    cells = [re.findall(r'<td[^>]*>', row)[2] for row in body.split('</tr>') if '<td' in row]
    return [float(m[1]) if (m := re.search(r'data-sort="([^"]+)"', cell)) else None for cell in cells]


def test_a_screenshot_starts_at_the_section_asked_for(tmp_path):
    page = tmp_path / 'page.html'
    page.write_text('<!DOCTYPE html><html><body><h2 style="height:3000px;background:#fff">top</h2>'
                    '<details open><summary><h2 id="later">later</h2></summary>'  # a section, as the report's
                    '<div style="height:3000px;background:#000"></div></details></body></html>')
    top, later = tmp_path / 'top.png', tmp_path / 'later.png'
    screenshots.main([str(page), str(top), f'{page}#later', str(later)])
    with Image.open(top) as first, Image.open(later) as second:
        assert first.width == second.width == screenshots.WIDTH
        middle = (first.width // 2, first.height // 2)
        assert first.convert('L').getpixel(middle) == 255  # the white block fills the window
        assert second.convert('L').getpixel(middle) == 0  # the black one, from the section on


def after_actions_in_chromium(page_path, tmp_path, actions):
    """The page's DOM once `actions` (a script) ran after its own, as headless Chromium has it."""
    page = tmp_path / 'acted.html'
    page.write_text(page_path.read_text().replace('</body>', f'<script>{actions}</script></body>'))
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    result = subprocess.run([chromium, '--headless', '--no-sandbox', '--disable-gpu', '--dump-dom', page.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    return result.stdout


def test_the_gallery_filters_by_label_and_score_and_an_image_enlarges(sample_report, tmp_path):
    index = sample_report / 'report' / 'index.html'
    text = index.read_text()
    figures = re.findall(r'<figure[^>]* data-labels="([^"]*)"[^>]* data-best="([^"]+)">', text)
    labels = sorted({label for found, _ in figures for label in found.split('|') if label})
    legend = re.findall(r'<span class="swatch"[^>]*>([^<]*)</span>', text)
    assert figures and labels and set(labels) <= set(legend)  # every box colour in the legend
    wanted = next(label for label in labels if sum(label in found.split('|') for found, _ in figures) < len(figures))
    dom = after_actions_in_chromium(index, tmp_path, (
        f'var pick = document.getElementById("filter-label"); pick.value = "{wanted}";'
        'pick.dispatchEvent(new Event("change"));'
        'document.querySelector("#gallery-plain figure img").click();'))
    shown = re.findall(r'<figure(?![^>]*hidden)[^>]* data-labels="([^"]*)"', dom.split('id="gallery-plain"')[1])
    assert shown and all(wanted in found.split('|') for found in shown)
    assert len(shown) == sum(wanted in found.split('|') for found, _ in figures) < len(figures)
    assert f'{len(shown)} of {len(figures)} shown' in dom
    # Click a label: only its boxes remain.
    gallery_dom = dom.split('id="gallery-plain"')[1].split('id="dead-letters"')[0]
    visible = re.findall(r'<div class="box" data-label="([^"]*)"(?![^>]*hidden)', gallery_dom)
    hidden = re.findall(r'<div class="box" data-label="([^"]*)"[^>]*hidden', gallery_dom)
    assert visible and set(visible) == {wanted} and hidden and wanted not in hidden
    assert re.search(r'<div id="lightbox"( hidden(="")?)?>', dom)[1] is None  # the click opened it
    least = max(float(best) for _, best in figures)
    dom = after_actions_in_chromium(index, tmp_path, (
        f'var score = document.getElementById("filter-score"); score.value = "{least}";'
        'score.dispatchEvent(new Event("input"));'))
    assert f'{sum(float(best) >= least for _, best in figures)} of {len(figures)} shown' in dom


def boxes_of(dom: str) -> List[Dict[str, str]]:
    """Each box drawn over a picture in this part of a page, as its attributes ('hidden' when hidden)."""
    return [dict(re.findall(r'([\w-]+)(?:="([^"]*)")?', attributes))
            for attributes in re.findall(r'<div class="box"([^>]*)>', dom)]


def test_pictures_show_at_their_natural_size_when_asked(sample_report, tmp_path):
    index = sample_report / 'report' / 'index.html'
    measure = ('document.body.dataset.width = '
               'document.querySelector("#gallery-plain figure img").clientWidth;')
    before = after_actions_in_chromium(index, tmp_path, measure)
    after = after_actions_in_chromium(index, tmp_path, 'document.querySelector("input.natural-size").click();' + measure)
    width = [float(re.search(r'<body[^>]* data-width="([^"]+)"', dom)[1]) for dom in (before, after)]
    assert width[0] <= 480 < width[1]
    assert re.search(r'<body[^>]* class="natural"', after) and not re.search(r'<body[^>]* class="natural"', before)


def test_the_evaluation_galleries_filter_their_boxes_by_outcome_and_error_type(evaluation_report, tmp_path):
    index = evaluation_report / 'report' / 'index.html'
    dom = after_actions_in_chromium(index, tmp_path, (
        'document.querySelectorAll("#outcome-filters input[type=checkbox]").forEach(function (box) {'
        '  box.checked = box.dataset.outcome === "fp"; });'
        'var type = document.getElementById("filter-error-type"); type.value = "cls";'
        'type.dispatchEvent(new Event("change"));'))
    boxes = boxes_of(dom.split('id="outcome-filters"')[1])
    visible = [(box['data-outcome'], box['data-error-type']) for box in boxes if 'hidden' not in box]
    assert visible and set(visible) == {('fp', 'cls')}
    assert any('hidden' in box for box in boxes if box['data-outcome'] != 'fp')  # the others hidden


def test_the_evaluation_galleries_filter_by_label_score_and_run(evaluation_report, tmp_path):
    index = evaluation_report / 'report' / 'index.html'
    boxes = boxes_of(index.read_text().split('id="outcome-filters"')[1])
    scores = sorted({float(box['data-score']) for box in boxes if box['data-label'] == 'cat' and 'data-score' in box})
    least = scores[len(scores) // 2]
    dom = after_actions_in_chromium(index, tmp_path, (
        'var label = document.getElementById("filter-eval-label"); label.value = "cat";'
        'label.dispatchEvent(new Event("change"));'
        f'var score = document.getElementById("filter-eval-score"); score.value = "{least}";'
        'score.dispatchEvent(new Event("input"));'
        'var run = document.getElementById("filter-eval-run"); run.value = run.options[2].value;'
        'run.dispatchEvent(new Event("change"));'))
    after = boxes_of(dom.split('id="outcome-filters"')[1])
    visible = [box for box in after if 'hidden' not in box]
    assert visible and all(box['data-label'] == 'cat' for box in visible)
    assert all(float(box['data-score']) >= least for box in visible if 'data-score' in box)
    assert any('data-score' not in box for box in visible)  # ground truth has no score: the score leaves it
    assert any(box['data-label'] == 'cat' and float(box['data-score']) < least and 'hidden' in box
               for box in after if 'data-score' in box)
    # The run chosen (the second): the first run's galleries are hidden, the second's shown.
    runs = re.findall(r'<div class="run-galleries" data-run="([^"]+)"( hidden(?:="")?)?>', dom)
    assert [bool(hidden) for _, hidden in runs] == [True, False]


def test_the_plain_gallery_filters_by_run(evaluation_report, tmp_path):
    index = evaluation_report / 'report' / 'index.html'
    text = index.read_text()
    runs = re.findall(r'<select id="filter-run">(.*?)</select>', text)
    chosen = re.findall(r'<option value="([^"*]+)">', runs[0])
    figures = re.findall(r'<figure[^>]* data-run="([^"]*)"', text.split('id="gallery-plain"')[1])
    assert len(chosen) == 2 and set(figures) <= set(chosen)
    dom = after_actions_in_chromium(index, tmp_path, (
        f'var run = document.getElementById("filter-run"); run.value = "{chosen[1]}";'
        'run.dispatchEvent(new Event("change"));'))
    shown = re.findall(r'<figure(?![^>]*hidden)[^>]* data-run="([^"]*)"', dom.split('id="gallery-plain"')[1])
    assert set(shown) == {chosen[1]} and len(shown) == figures.count(chosen[1])


def test_sections_fold_and_the_table_of_contents_opens_them(evaluation_report, tmp_path):
    index = evaluation_report / 'report' / 'index.html'
    text = index.read_text()
    headings = re.findall(r'<details class="section" open><summary><h2 id="([^"]+)">', text)
    assert headings == ['summary-section', 'labels', 'gallery', 'evaluation', 'dead-letters']
    assert len(re.findall(r'<h2[ >]', text)) == len(headings)  # every section folds
    assert set(re.findall(r'<a href="#([^"]+)">', text.split('id="toc"')[1].split('</nav>')[0])) <= set(headings) | {'run'}
    dom = after_actions_in_chromium(index, tmp_path, (
        'document.querySelectorAll("details.section").forEach(function (d) { d.open = false; });'
        'document.querySelector("#toc a[href=\'#evaluation\']").click();'))
    folded = re.findall(r'<details class="section"( open(?:="")?)?><summary><h2 id="([^"]+)">', dom)
    assert {anchor: bool(state) for state, anchor in folded} == {
        'summary-section': False, 'labels': False, 'gallery': False, 'evaluation': True, 'dead-letters': False}


