"""Wrong options and odd inputs fail fast and clearly; nothing hangs, nothing escapes the allow-list;
the report never takes the run down; hostile shapes stay bounded (issue 14, parts 3 to 6)."""
import base64
import gzip
import io
import json
import os
import re
import struct
import zlib

import numpy as np
import orjson
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import GOOD, GOOD_LINE, SAMPLE
from PIL import Image

from pipeline.config.options import OPTION_GROUPS, OPTIONS
from pipeline.core import geometry
from pipeline.core.formats import Rejection, parse_line
from pipeline.io import sources
from pipeline.io.sizes import SizeResolver
from pipeline.tools import report

INPUT = SAMPLE / 'input'


def shards(folder, lines, name='image_object_detection_1.jsonl'):
    run_dir = folder / 'prediction-m-1'
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / name).write_bytes(b''.join(line + b'\n' for line in lines))
    return run_dir


def outcome(out):
    """(images rows, dead letters by kind) of a finished run."""
    images = ds.dataset(str(out / 'images')).to_table().num_rows if (out / 'images').exists() else 0
    kinds = {}
    for path in (out / 'dead_letter').glob('*.jsonl'):
        for line in path.read_text().splitlines():
            kind = json.loads(line)['kind']
            kinds[kind] = kinds.get(kind, 0) + 1
    return images, kinds


# 3. Wrong input and options --------------------------------------------------------------------

@pytest.mark.parametrize('args, expected', [
    (['--score_treshold', '0.5'], 'did you mean --score_threshold?'),
    (['--score', '0.9'], '--score'),
    (['--keep', 'Salad'], '--keep'),
    (['--output_tabel=p:d.t'], 'did you mean --output_table?'),
])
def test_unknown_or_abbreviated_arguments_stop_the_run(run, tmp_path, args, expected):
    result = run('--input', INPUT, '--output', tmp_path / 'o', *args, check=False)
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert not (tmp_path / 'o').exists()


def test_beams_own_options_are_still_accepted(run, tmp_path):
    run('--input', INPUT, '--output', tmp_path / 'o', '--direct_num_workers=1', '--report=false')


def test_help_lists_every_option_by_concern_and_version_answers(run):
    result = run('--help')
    for option in OPTIONS:
        assert f'--{option.name}' in result.stdout
    for title, _ in OPTION_GROUPS:
        assert f'\n{title}:\n' in result.stdout
    assert '(default: 24)' in result.stdout and "Beam's own options" in result.stdout
    assert sorted(name for _, names in OPTION_GROUPS for name in names) == sorted(o.name for o in OPTIONS)
    assert re.match(r'prediction-tables \d+\.\d+\.\d+ \(Apache Beam \d', run('--version').stdout)


@pytest.mark.parametrize('rows, fragment', [
    ('a.jpg,-5,10\n', 'line 2: width must be a positive integer'),
    ('a.jpg,0,10\n', 'line 2: width'),
    ('a.jpg,1e3,10\n', "got '1e3'"),
    ('a.jpg,10.0,10\n', "got '10.0'"),
    ('a.jpg,10,10\nb.jpg,5,5\na.jpg,11,10\n', 'line 4: a.jpg is listed twice with different sizes'),
    ('a.jpg,10\n', 'line 2: height'),
    ('a.jpg,2147483648,10\n', 'must be at most 2147483647'),
])
def test_a_wrong_manifest_row_fails_at_launch_and_keeps_the_previous_run(run, tmp_path, rows, fragment):
    out = tmp_path / 'o'
    run('--input', INPUT, '--output', out, '--report=false')
    manifest = tmp_path / 'sizes.csv'
    manifest.write_text('image_uri,width,height\n' + rows)
    result = run('--input', INPUT, '--output', out, '--image_sizes', manifest, '--overwrite', check=False)
    assert result.returncode == 2 and fragment in result.stderr, result.stderr
    assert 'Traceback' not in result.stderr
    assert json.loads((out / 'summary.json').read_text())['images_written'] == 12  # untouched


def test_sizes_beyond_int32_are_refused_or_unknown(run, tmp_path):
    result = run('--input', INPUT, '--output', tmp_path / 'o', '--image_size', '2147483648x10', check=False)
    assert result.returncode == 2 and 'at most 2147483647' in result.stderr
    # A PNG header claiming 2^31 pixels of width: the probe leaves the size unknown and counts it.
    header = b'\x89PNG\r\n\x1a\n' + struct.pack('>I', 13) + b'IHDR' + struct.pack('>IIBBBBB', 2 ** 31, 10, 8, 2, 0, 0, 0)
    huge = tmp_path / 'huge.png'
    huge.write_bytes(header + struct.pack('>I', zlib.crc32(header[12:29])) + b'\0' * 100)
    resolver = SizeResolver(None, True, None, 'file')
    assert resolver.resolve(str(huge)) is None
    assert sum(resolver.probe_failures.values()) == 1


def test_input_that_names_nothing_readable_gets_a_clear_message(run, tmp_path):
    (tmp_path / 'empty').mkdir()
    result = run('--input', tmp_path / 'empty', '--output', tmp_path / 'o', check=False)
    assert result.returncode == 2 and 'holds no file' in result.stderr and 'Traceback' not in result.stderr
    loop = tmp_path / 'op.json'
    loop.write_text(json.dumps({'outputInfo': {'gcsOutputDirectory': str(loop)}}))
    result = run('--input', loop, '--output', tmp_path / 'o', check=False)
    assert result.returncode == 2 and 'leads back to itself' in result.stderr


def test_a_folder_glob_and_literal_glob_characters_read_everything(run, tmp_path):
    for name in ('prediction-a-1', 'prediction-b-2'):
        shards(tmp_path / 'root' / name, [GOOD_LINE])
    out = run('--input', f'{tmp_path}/root/prediction-*', '--output', tmp_path / 'o', '--report=false')
    assert re.search(r'lines read +2 ', out.stdout)
    odd = tmp_path / 'runs[1]?*'
    shards(odd, [GOOD_LINE, GOOD_LINE])
    run('--input', odd, '--output', tmp_path / 'p', '--report=false')
    assert pq.read_table(tmp_path / 'p' / 'images').num_rows == 2


@pytest.mark.parametrize('where', ['file', 'proc'])
def test_an_output_that_cannot_be_a_folder_fails_before_any_work(run, tmp_path, where):
    target = tmp_path / 'afile' if where == 'file' else '/proc/prediction-tables-out'
    if where == 'file':
        target.write_text('x')
    result = run('--input', INPUT, '--output', target, check=False)
    assert result.returncode == 2 and 'cannot write to' in result.stderr and 'Traceback' not in result.stderr


@pytest.mark.parametrize('args, fragment', [
    (['--label_thresholds', 'Salad=0.5,Salad=0.7'], "'Salad' is given twice"),
    (['--label_thresholds', '{"Salad": 0.5, "Salad": 0.7}'], "'Salad' is given twice"),
    (['--roi', 'POLYGON ((2 2, 3 2, 3 3, 2 3, 2 2))'], 'wholly outside the image'),
])
def test_ambiguous_or_empty_filters_are_refused(run, tmp_path, args, fragment):
    result = run('--input', INPUT, '--output', tmp_path / 'o', *args, check=False)
    assert result.returncode == 2 and fragment in result.stderr


# 4. Nothing hangs, nothing is skipped, nothing escapes -----------------------------------------

def test_a_fifo_named_like_a_shard_and_fifo_images_never_block(run, tmp_path):
    run_dir = shards(tmp_path / 'in', [orjson.dumps(dict(GOOD, ID=uri)) for uri in
                                       (str(tmp_path / 'image.fifo'), '/dev/stdin')])
    os.mkfifo(run_dir / 'image_object_detection_2.jsonl')
    os.mkfifo(tmp_path / 'image.fifo')
    out = tmp_path / 'o'
    run('--input', tmp_path / 'in', '--output', out, '--probe_image_sizes', '--report=false',
        stdin=open(os.devnull, 'rb'))
    images, kinds = outcome(out)
    assert images == 2 and kinds == {'unreadable_file': 1}
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['image_sizes']['probe_failures'] == {'failed_not_a_file': 2}


def test_links_under_the_input_are_followed_and_broken_ones_are_dead_letters(run, tmp_path):
    real = shards(tmp_path / 'elsewhere', [GOOD_LINE, GOOD_LINE])
    root = tmp_path / 'in'
    root.mkdir()
    (root / 'prediction-linked').symlink_to(real)
    (root / 'prediction-linked-again').symlink_to(real)  # the same folder twice: read once
    (root / 'image_object_detection_3.jsonl').symlink_to(tmp_path / 'missing.jsonl')
    (root / 'image_object_detection_4.jsonl').symlink_to(root / 'image_object_detection_4.jsonl')
    (root / 'loop').symlink_to(root)
    out = tmp_path / 'o'
    run('--input', root, '--output', out, '--report=false')
    images, kinds = outcome(out)
    assert images == 2 and kinds == {'unreadable_file': 2}
    messages = [json.loads(line)['error_message'] for line in
                next((out / 'dead_letter').glob('*.jsonl')).read_text().splitlines()]
    assert any('loops' in message for message in messages)
    assert any('missing.jsonl' in message for message in messages)


def test_the_probe_and_the_report_judge_the_real_path(tmp_path):
    allowed, secret = tmp_path / 'allowed', tmp_path / 'x' / 'secret'
    allowed.mkdir()
    (secret / 'deep').mkdir(parents=True)
    Image.new('RGB', (7, 9)).save(secret / 'private.png')
    (allowed / 'cur').symlink_to(secret / 'deep')
    sneaky = f'{allowed}/cur/../private.png'
    resolver = SizeResolver(None, True, None, 'file', (f'{allowed}/',))
    assert resolver.resolve(sneaky) is None
    assert resolver.probe_failures == {'skipped_not_allowed': 1}
    with pytest.raises(PermissionError):
        report.load_image(sneaky, 'file', {}, [f'{allowed}/'])
    mirror = tmp_path / 'mirror' / 'imgs'
    mirror.mkdir(parents=True)
    Image.new('RGB', (5, 5)).save(tmp_path / 'mirror' / 'private.png')
    with pytest.raises(PermissionError, match='outside the mirror'):
        report.load_image('gs://bkt/imgs/../private.png', 'gs', {'gs://bkt/imgs/': f'{mirror}/'})
    assert report.image_path('gs://bkt/imgs/a.png', 'gs', {'gs://bkt/imgs/': f'{mirror}/'}) == f'{mirror}/a.png'


def test_the_allowed_scheme_is_the_resolved_inputs(tmp_path):
    from pipeline import cli
    folder = shards(tmp_path / 'in', [GOOD_LINE]).parent
    operation = tmp_path / 'operation.json'
    operation.write_text(json.dumps({'outputInfo': {'gcsOutputDirectory': str(folder)}}))
    plan = cli.prepare(['--input', str(operation), '--output', str(tmp_path / 'o')])
    assert plan.settings.sizes.allowed_scheme == 'file' and plan.pattern.endswith('/**')
    assert sources.scheme_of('gs://b/prediction-1/**') == 'gs'


def damaged_gzip(lines: int, at: float) -> bytes:
    data = bytearray(gzip.compress(b''.join(orjson.dumps(dict(GOOD, ID=f'gs://b/{i}.jpg')) + b'\n'
                                           for i in range(lines)), compresslevel=1))
    position = int(len(data) * at)
    data[position:position + 16] = b'\xff' * 16  # an invalid block mid-stream
    return bytes(data)


def decodable_lines(data: bytes) -> int:
    """The reference: complete lines zlib yields byte by byte before it stops."""
    decoder, out = zlib.decompressobj(wbits=31), []
    for index in range(len(data)):
        try:
            out.append(decoder.decompress(data[index:index + 1]))
        except zlib.error:
            break
    return b''.join(out).count(b'\n')


def test_every_complete_line_before_gzip_damage_is_kept():
    data = damaged_gzip(20_000, 0.5)
    expected = decodable_lines(data)
    with sources.GzipLineSafeReader(io.BytesIO(data)) as handle:
        got = 0
        with pytest.raises(Exception):
            for _ in sources.read_range_lines(handle, 0, None):
                got += 1
    assert 0 < expected < 20_000 and got == expected


def test_an_empty_gz_is_unreadable(run, tmp_path):
    run_dir = shards(tmp_path / 'in', [GOOD_LINE])
    (run_dir / 'errors_1.jsonl.gz').write_bytes(b'')
    out = tmp_path / 'o'
    run('--input', tmp_path / 'in', '--output', out, '--report=false')
    assert outcome(out) == (1, {'unreadable_file': 1})


# 5. The report never takes the run down ---------------------------------------------------------

def test_labels_are_plain_text_and_bounded_in_charts(run, tmp_path):
    labels = ['$\\foo$', '$x^$', 'L' * 3000, 'a_b$c']
    annotations = [dict(GOOD['annotations'][0], display_name=label) for label in labels]
    shards(tmp_path / 'in', [orjson.dumps(dict(GOOD, annotations=annotations))])
    out = tmp_path / 'o'
    run('--input', tmp_path / 'in', '--output', out, '--label_thresholds',
        json.dumps({'$x^$': 0.5, 'L' * 3000: 0.5}))
    page = (out / 'report' / 'index.html').read_text()
    charts = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    widths = [Image.open(io.BytesIO(base64.b64decode(chart))).size[0] for chart in charts]
    assert len(widths) == 2 and max(widths) < 1500


def test_a_decompression_bomb_is_not_decoded(tmp_path):
    bomb = tmp_path / 'bomb.png'
    Image.MAX_IMAGE_PIXELS = None
    try:
        Image.new('1', (13_300, 13_300)).save(bomb, optimize=True)
    finally:
        Image.MAX_IMAGE_PIXELS = 89_478_485
    assert bomb.stat().st_size < 2_000_000
    with pytest.raises(ValueError, match='too large to decode'):
        report.load_image(str(bomb), 'file', {})
    big = tmp_path / 'big.jpg'
    Image.new('RGB', (4000, 3000), (200, 10, 10)).save(big)
    image, full = report.load_image(str(big), 'file', {})
    assert full == (4000, 3000) and image.size == (2000, 1500)  # decoded at a reduced scale


def test_a_failed_report_has_its_own_exit_code_and_keeps_the_data(run, tmp_path):
    out = tmp_path / 'o'
    out.mkdir()
    (out / 'report').write_text('a file where the report folder would go')
    result = run('--input', INPUT, '--output', out, check=False)
    assert result.returncode == 4, result.stderr
    assert 'the report could not be built' in result.stderr and 'OK: ' in result.stdout
    assert json.loads((out / 'summary.json').read_text())['reconciliation']['holds']


# 6. Bounded cost ---------------------------------------------------------------------------------

def crossing_strips(n, rng):
    position = rng.permutation(n) / n * 0.99
    boxes = np.zeros((n, 4))
    horizontal = np.arange(n) % 2 == 0
    boxes[horizontal] = np.c_[np.zeros(horizontal.sum()), position[horizontal], np.ones(horizontal.sum()),
                              position[horizontal] + 0.1 / n]
    boxes[~horizontal] = np.c_[position[~horizontal], np.zeros((~horizontal).sum()),
                               position[~horizontal] + 0.1 / n, np.ones((~horizontal).sum())]
    return boxes


@pytest.mark.parametrize('threshold', [0.0, 1e-7, 1e-4, 0.001, 0.3, 0.5, 0.9, 1.0])
def test_nms_on_adversarial_lines_agrees_with_the_reference(reference_nms, threshold):
    rng = np.random.default_rng(7)
    strips = crossing_strips(300, rng)
    nested = np.array([[0.5 - s, 0.5 - s, 0.5 + s, 0.5 + s] for s in np.linspace(0.01, 0.5, 150)])
    xy = rng.random((300, 2)) * 0.8
    scattered = np.c_[xy, xy + rng.random((300, 2)) * 0.2]
    boxes = np.vstack([strips, nested, scattered])
    n = len(boxes)
    scores = rng.integers(0, 20, n) / 20
    classes = rng.choice(['a', 'b'], n)
    expected = reference_nms([0] * n, scores.tolist(), boxes.tolist(), classes.tolist(), threshold)
    got = geometry.nms_mask(np.zeros(n, dtype=np.int64), scores, boxes, classes, threshold)
    assert got.tolist() == expected


@pytest.mark.parametrize('threshold', [0.9, 0.5, 0.001, 1e-4, 1e-5, 3e-6, 2.6e-6])
def test_nms_never_compares_crossing_strips_that_cannot_reach_the_threshold(threshold):
    # 20,000 strips 1/200,000 wide: a crossing pair's IoU is at most 2.5e-6, under every threshold
    # here (even just above it), so a kept strip meets no strip of the other direction (the cost
    # stays linear).
    boxes = crossing_strips(20_000, np.random.default_rng(3))
    index = geometry._SizeClassIndex(boxes, np.zeros(len(boxes), dtype=np.int64), threshold)
    horizontal = np.arange(0, len(boxes), 2)
    index.undecided[horizontal] = False
    source, target = index.candidates(horizontal)
    assert len(source) == 0
    assert len(geometry._SizeClassIndex(boxes, np.zeros(len(boxes), dtype=np.int64), 1e-6)
               .candidates(horizontal[:10])[0]) > 1000  # at 1e-6 they could: they are compared
    assert geometry._iou_bound(np.log(2e5), np.log(2e5), False) < threshold


def test_nms_index_drops_suppressed_boxes_once_half_are_decided():
    # At threshold 0 every crossing pair suppresses: after the first kept strip, the index holds
    # only the strips still undecided, so later kept strips no longer meet the suppressed ones.
    boxes = crossing_strips(2_000, np.random.default_rng(3))
    index = geometry._SizeClassIndex(boxes, np.zeros(len(boxes), dtype=np.int64), 0.0)
    index.undecided[0] = False
    index.kept[0] = True
    index.suppress_by(np.array([0]))
    assert np.count_nonzero(index.undecided) == 999 and len(index.members) == 999
    later = np.flatnonzero(index.undecided)[:10]
    index.undecided[later] = False
    assert len(index.candidates(later)[0]) == 0


def test_many_tiny_shards_make_few_row_groups(run, tmp_path):
    run_dir = tmp_path / 'in' / 'prediction-m-1'
    run_dir.mkdir(parents=True)
    for index in range(1500):
        (run_dir / f'image_object_detection_{index}.jsonl').write_bytes(GOOD_LINE + b'\n')
    out = tmp_path / 'o'
    run('--input', tmp_path / 'in', '--output', out, '--report=false')
    files = list((out / 'images').glob('*.parquet'))
    assert sum(pq.ParquetFile(path).metadata.num_rows for path in files) == 1500
    assert sum(pq.ParquetFile(path).metadata.num_row_groups for path in files) <= len(files)


# Smaller ------------------------------------------------------------------------------------------

def test_negative_zero_is_written_as_zero(run, tmp_path):
    line = (b'{"ID":"gs://b/z.jpg","annotations":[{"display_name":"A","annotation_spec_id":"1",'
            b'"image_object_detection":{"score":-0.0,"bounding_box":{"normalized_vertices":'
            b'[{"x":-0.0,"y":-0.0},{"x":0.5,"y":0.5}]}}}]}')
    shards(tmp_path / 'in', [line])
    out = tmp_path / 'o'
    run('--input', tmp_path / 'in', '--output', out, '--report=false', '--image_size', '100x100')
    row = pq.read_table(out / 'detections').to_pylist()[0]
    assert str(row['score']) == '0.0' and str(row['x_min']) == '0.0' and str(row['px_x_min']) == '0.0'
    assert '-0' not in row['box_wkt']


def test_ids_above_64_bits_say_the_integer_is_too_large():
    line = (b'{"ID":"gs://b/z.jpg","annotations":[{"display_name":"A","annotation_spec_id":'
            b'123456789012345678901234567890,"image_object_detection":{"score":0.5,"bounding_box":'
            b'{"normalized_vertices":[{"x":0.1,"y":0.1},{"x":0.5,"y":0.5}]}}}]}')
    parsed = parse_line(line)
    assert isinstance(parsed, Rejection) and 'the integer is too large' in parsed.message
