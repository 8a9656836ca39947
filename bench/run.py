"""`make bench`: the pipeline against a plain Python baseline and DuckDB, interleaved and repeated.

For each input format, data size and threshold, every contender runs `--repeats` times in turn, each
repeat starting with the next contender; the table gives the median seconds (and the spread),
annotations per second, the CPU seconds per million annotations (all processes, what a Dataflow
worker bills), the peak memory of the whole process tree, and the ratios to the baseline and to
DuckDB. Every contender's output is checked to hold the same rows. Results are also written as JSON.
"""
import argparse
import csv
import glob
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

import psutil
import pyarrow as pa
import pyarrow.dataset as ds

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from contenders import RESULT_SHARDS, TWO_PROCESS_FLAGS  # noqa: E402  pylint: disable=wrong-import-position
from cost_model import cost_model, render_cost_model  # noqa: E402  pylint: disable=wrong-import-position
from evaluation import generate_ground_truth  # noqa: E402  pylint: disable=wrong-import-position
from generate import generate  # noqa: E402  pylint: disable=wrong-import-position
from targets import render_targets, target_checks  # noqa: E402  pylint: disable=wrong-import-position

from pipeline.config.options import COCO_MAX_DETS  # noqa: E402  pylint: disable=wrong-import-position
from pipeline.core.evaluation import stat_names  # noqa: E402  pylint: disable=wrong-import-position

WIDTH, HEIGHT = 1024, 768
COMPARED = ['image_uri', 'label', 'label_id', 'score', 'x_min', 'y_min', 'x_max', 'y_max',
            'px_x_min', 'px_y_min', 'px_x_max', 'px_y_max']
STRING_COMPARED = ('image_uri', 'label', 'label_id')


# Every post-processing option on, for the cost per detection of issue #3's steps (its rows differ
# from the others', so they are not compared).
POSTPROCESSING = ['--label_thresholds', 'Salad=0.6', '--drop_labels', 'Seafood', '--min_box_area', '0.001',
                  '--roi', 'POLYGON ((0 0, 0.9 0, 0.9 0.9, 0 0.9, 0 0))', '--nms_iou', '0.5',
                  '--max_detections', '10']
WITH_POSTPROCESSING = 'pipeline, 2 processes, post-processing'
BEAM_FLOOR = 'Beam alone, 2 processes, no work'
TWO_PROCESSES = 'pipeline, 2 processes'
BASELINE = 'python baseline'
DUCKDB, POLARS = 'duckdb, 2 threads', 'polars, 2 threads'
ANCHOR_PYTHON = os.path.join(ROOT, '.venv-anchors', 'bin', 'python')
# Contenders whose rows are not compared: other rows (post-processing) or none at all (the floor).
UNCHECKED = (WITH_POSTPROCESSING, BEAM_FLOOR)


def contender_commands(fmt, input_dir, output_dir, threshold, postprocessing=False, anchor_python=sys.executable):
    """`anchor_python`: the interpreter of the anchors' environment (the newest DuckDB and Polars)."""
    pipeline = [sys.executable, '-m', 'pipeline', '--input', input_dir, '--output', output_dir,
                '--score_threshold', str(threshold), '--image_size', f'{WIDTH}x{HEIGHT}',
                '--report=false', '--overwrite']

    def other(kind, python=sys.executable):
        return [python, os.path.join(HERE, 'contenders.py'), kind, fmt, input_dir, output_dir, str(threshold),
                str(WIDTH), str(HEIGHT)]
    return {
        'pipeline, 1 process': pipeline + ['--direct_num_workers=1'],
        TWO_PROCESSES: pipeline + TWO_PROCESS_FLAGS,
        BASELINE: other('baseline'),
        DUCKDB: other('duckdb', anchor_python),
        POLARS: other('polars', anchor_python),
        **({WITH_POSTPROCESSING: pipeline + TWO_PROCESS_FLAGS + POSTPROCESSING} if postprocessing else {}),
        BEAM_FLOOR: other('beam_floor'),
    }


def anchor_versions(python):
    """{'duckdb': version, 'polars': version} of the anchors' environment; a missing one stops the
    benchmark before any run, with what to do."""
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        sys.exit(f'bench: the anchors\' environment is missing ({python}): `make bench` builds it from '
                 f'bench/anchors-requirements.txt, or give --anchor_python')
    found = subprocess.run([python, '-c', 'import duckdb, polars; print(duckdb.__version__, polars.__version__)'],
                           capture_output=True, text=True, check=False)
    if found.returncode != 0:
        sys.exit(f'bench: {python} cannot import duckdb and polars: {found.stderr.strip()[-500:]}')
    duckdb_version, polars_version = found.stdout.split()
    return {'duckdb': duckdb_version, 'polars': polars_version}


def in_turn(names, repeat):
    """The contenders' order in a repeat: each repeat starts one later, so that no contender always
    runs first or right after the same one (on this machine a command run always first of a pair
    measured 5% slower than in alternating pairs)."""
    names = list(names)
    shift = repeat % len(names) if names else 0
    return names[shift:] + names[:shift]


def settle(paths):
    """Before a run: the files it reads brought into the page cache, and what earlier runs wrote
    flushed to disk, so that a run neither reads the disk (this machine's kernel evicts files between
    runs) nor waits for an earlier run's writes. Every contender starts the same way."""
    for path in paths:
        with open(path, 'rb') as handle:
            while handle.read(1 << 24):
                pass
    os.sync()


def input_files(*roots):
    return [path for root in roots
            for path in (glob.glob(os.path.join(root, '**', '*'), recursive=True) if os.path.isdir(root) else [root])
            if os.path.isfile(path)]


def children_cpu_seconds():
    """User + system CPU of every descendant reaped so far (Beam's workers are reaped by the pipeline's
    process, so they count when it is)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_measured(command):
    """(seconds, peak RSS in MB of the process and all its children, CPU seconds of them all)."""
    cpu_before = children_cpu_seconds()
    start = time.perf_counter()
    process = psutil.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        rss = 0
        try:
            for member in [process] + process.children(recursive=True):
                rss += member.memory_info().rss
        except psutil.Error:
            pass
        peak = max(peak, rss)
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f'{command} failed: {process.stderr.read().decode()[-2000:]}')
    return seconds, peak / 2 ** 20, children_cpu_seconds() - cpu_before


def canonical_rows(output_dir):
    path = os.path.join(output_dir, 'detections')
    table = ds.dataset(path if os.path.isdir(path) else output_dir, format='parquet').to_table(
        columns=COMPARED)
    # Compare values only: nullability flags and string widths (Polars writes large strings) differ
    # between writers.
    table = pa.Table.from_arrays([column.combine_chunks().cast(pa.string() if name in STRING_COMPARED else pa.float64())
                                  for name, column in zip(COMPARED, table.columns)], names=COMPARED)
    return table.sort_by([(name, 'ascending') for name in COMPARED])


def annotations_in(input_dir, fmt):
    """Annotations in the result shards, counted by a plain scan (the same for every contender)."""
    import orjson
    count = ((lambda r: len(r.get('annotations') or ())) if fmt == 'legacy'
             else (lambda r: len(r['prediction']['confidences'])))
    total = 0
    for path in glob.glob(os.path.join(input_dir, '**', RESULT_SHARDS[fmt]), recursive=True):
        with open(path, 'rb') as handle:
            total += sum(count(orjson.loads(line)) for line in handle)
    return total


def bench_size(fmt, images, thresholds, repeats, work_dir, postprocessing=False, anchor_python=sys.executable):
    data_dir = os.path.join(work_dir, f'data-{images}' if fmt == 'legacy' else f'{fmt}-{images}')
    if not os.path.isdir(data_dir):
        generate(data_dir, images, shards=8, fmt=fmt)
    annotations = annotations_in(data_dir, fmt)  # also brings the files into the page cache, when they fit
    results = []
    for threshold in thresholds:
        timings = {}
        reference = None
        for repeat in range(repeats):
            commands = contender_commands(fmt, data_dir, os.path.join(work_dir, 'out'), threshold, postprocessing,
                                          anchor_python)
            for name in in_turn(commands, repeat):
                command = commands[name]
                output_dir = os.path.join(work_dir, 'out')
                shutil.rmtree(output_dir, ignore_errors=True)
                settle(input_files(data_dir))
                seconds, peak_mb, cpu_s = run_measured(command)
                timings.setdefault(name, []).append((seconds, peak_mb, cpu_s))
                if repeat == 0 and name not in UNCHECKED:
                    rows = canonical_rows(output_dir)
                    if reference is None:
                        reference = rows
                    elif not rows.equals(reference):
                        raise AssertionError(f'{name} wrote other rows than the first contender '
                                             f'({rows.num_rows} vs {reference.num_rows})')
                print(f'  {fmt}, {images} images, threshold {threshold}, run {repeat + 1}: {name}: '
                      f'{seconds:.2f} s, {cpu_s:.2f} CPU s, {peak_mb:.0f} MB', flush=True)
        medians = {name: statistics.median(s for s, _, _ in runs) for name, runs in timings.items()}
        for name, runs in timings.items():
            seconds = [s for s, _, _ in runs]
            results.append({
                'format': fmt, 'images': images, 'annotations': annotations, 'threshold': threshold,
                'rows_out': reference.num_rows, 'contender': name,
                'median_s': medians[name], 'min_s': min(seconds), 'max_s': max(seconds),
                'annotations_per_s': annotations / medians[name],
                'us_per_annotation': medians[name] / annotations * 1e6,
                'peak_mb': max(mb for _, mb, _ in runs),
                'cpu_s_per_million_annotations': statistics.median(c for _, _, c in runs) / annotations * 1e6,
                'vs_baseline': medians[name] / medians[BASELINE],
                'vs_duckdb': medians[name] / medians[DUCKDB],
                'vs_polars': medians[name] / medians[POLARS],
            })
    return results


WITHOUT_GROUND_TRUTH = 'pipeline, 2 processes'
WITH_GROUND_TRUTH = 'pipeline, 2 processes, --ground_truth'
FASTER_COCO_EVAL = 'faster-coco-eval'


def timed_rounds(commands, inputs, repeats, output_dir, what, after=lambda name: None):
    """{name: [(seconds, peak MB, CPU s)]}: `repeats` rounds of the commands in turn, each on a fresh
    output folder with its inputs (`inputs`: name -> files) settled; `after(name)` reads a run's answer."""
    timings = {}
    for repeat in range(repeats):
        for name in in_turn(commands, repeat):
            command = commands[name]
            shutil.rmtree(output_dir, ignore_errors=True)
            settle(inputs[name])
            seconds, peak_mb, cpu_s = run_measured(command)
            timings.setdefault(name, []).append((seconds, peak_mb, cpu_s))
            after(name)
            print(f'  {what}, run {repeat + 1}: {name}: {seconds:.2f} s, {cpu_s:.2f} CPU s, {peak_mb:.0f} MB',
                  flush=True)
    return timings


def labelled_data(images, work_dir):
    """(the legacy data's folder, its ground truth as Vertex AI JSONL and as COCO), made when missing."""
    data_dir = os.path.join(work_dir, f'data-{images}')
    if not os.path.isdir(data_dir):
        generate(data_dir, images, shards=8)
    truth_jsonl = os.path.join(work_dir, 'ground-truth', f'truth-{images}.jsonl')
    truth_coco = os.path.join(work_dir, 'ground-truth', f'truth-{images}.coco.json')
    if not os.path.exists(truth_coco):
        os.makedirs(os.path.dirname(truth_coco), exist_ok=True)
        generate_ground_truth(data_dir, truth_jsonl, truth_coco, WIDTH, HEIGHT)
    return data_dir, truth_jsonl, truth_coco


def twelve_numbers_difference(ours: dict, anchor: list, tolerance: float = 1e-6) -> float:
    """The largest difference between metrics.json's `stats` and faster-coco-eval's twelve summary
    numbers (its -1 is our null); a difference over `tolerance`, or a null against a number, stops
    the benchmark: it compares times of runs that give the same figures."""
    names = stat_names(COCO_MAX_DETS)
    differences = {}
    for name, theirs in zip(names, anchor):
        mine = ours[name]
        if (mine is None) != (theirs == -1):
            raise AssertionError(f'{name}: {mine} here, {theirs} from faster-coco-eval')
        differences[name] = 0.0 if mine is None else abs(mine - theirs)
    worst = max(differences, key=differences.get)
    if differences[worst] > tolerance:
        raise AssertionError(f'the twelve numbers differ from faster-coco-eval\'s: {worst} by {differences[worst]:.3g} '
                             f'({ours} against {anchor})')
    return differences[worst]


def bench_evaluation(images, threshold, repeats, work_dir):
    """The same run with and without --ground_truth, and faster-coco-eval on the same boxes (its COCO
    ground truth, the prediction lines converted as its users do). The mAP of each is compared."""
    data_dir, truth_jsonl, truth_coco = labelled_data(images, work_dir)
    annotations = annotations_in(data_dir, 'legacy')
    output_dir = os.path.join(work_dir, 'out')
    anchor_json = os.path.join(work_dir, 'faster-coco-eval.json')
    pipeline = [sys.executable, '-m', 'pipeline', '--input', data_dir, '--output', output_dir,
                '--score_threshold', str(threshold), '--image_size', f'{WIDTH}x{HEIGHT}', '--report=false',
                '--overwrite', *TWO_PROCESS_FLAGS]
    commands = {
        WITHOUT_GROUND_TRUTH: pipeline,
        WITH_GROUND_TRUTH: pipeline + ['--ground_truth', truth_jsonl],
        FASTER_COCO_EVAL: [sys.executable, os.path.join(HERE, 'evaluation.py'), 'faster_coco_eval', data_dir,
                           truth_coco, str(threshold), str(WIDTH), str(HEIGHT), anchor_json],
    }
    inputs = {WITHOUT_GROUND_TRUTH: input_files(data_dir), WITH_GROUND_TRUTH: input_files(data_dir, truth_jsonl),
              FASTER_COCO_EVAL: input_files(data_dir, truth_coco)}
    maps, anchor, stats = {}, {}, {}

    def read_map(name):
        if name == WITH_GROUND_TRUTH:
            with open(os.path.join(output_dir, 'evaluation', 'metrics.json'), encoding='utf-8') as handle:
                run = json.load(handle)['runs'][0]
            maps[name], stats[name] = run['map'], run['stats']
        elif name == FASTER_COCO_EVAL:
            with open(anchor_json, encoding='utf-8') as handle:
                anchor.update(json.load(handle))
            maps[name] = anchor['map']
    timings = timed_rounds(commands, inputs, repeats, output_dir, f'evaluation, {images} images, threshold {threshold}',
                           read_map)
    if abs(maps[WITH_GROUND_TRUTH] - maps[FASTER_COCO_EVAL]) > 1e-6:
        raise AssertionError(f'mAP differs: {maps}')
    stats_difference = twelve_numbers_difference(stats[WITH_GROUND_TRUTH], anchor['stats'])
    medians = {name: statistics.median(s for s, _, _ in runs) for name, runs in timings.items()}
    # What evaluation adds, pair by pair (the two runs of one repeat follow each other, so the machine's
    # drift over the repeats cancels out), then the median over the repeats.
    added = statistics.median((evaluated - plain) / plain for (plain, _, _), (evaluated, _, _) in zip(
        timings[WITHOUT_GROUND_TRUTH], timings[WITH_GROUND_TRUTH]))
    return [{'images': images, 'annotations': annotations, 'threshold': threshold, 'contender': name,
             'median_s': medians[name], 'min_s': min(s for s, _, _ in runs), 'max_s': max(s for s, _, _ in runs),
             'peak_mb': max(mb for _, mb, _ in runs),
             'cpu_s': statistics.median(c for _, _, c in runs),
             'added_vs_plain_run': added if name == WITH_GROUND_TRUTH else None,
             'added_per_repeat': [(e - p) / p for (p, _, _), (e, _, _) in zip(timings[WITHOUT_GROUND_TRUTH], runs)]
             if name == WITH_GROUND_TRUTH else None,
             'vs_faster_coco_eval': medians[name] / medians[FASTER_COCO_EVAL],
             'map': maps.get(name),
             'stats_max_difference': stats_difference if name == WITH_GROUND_TRUTH else None,
             **({'faster_coco_eval_convert_s': anchor['convert_s'], 'faster_coco_eval_evaluate_s': anchor['evaluate_s']}
                if name == FASTER_COCO_EVAL else {})}
            for name, runs in timings.items()]


WITHOUT_COMPARISON = 'pipeline, 2 processes, two runs'
WITH_COMPARISON = 'pipeline, 2 processes, two runs, --compare_to first'


def bench_comparison(images, threshold, repeats, work_dir):
    """Two prediction runs of the same images under one prefix (the legacy and the Vertex AI shards of
    the benchmark: the same boxes, so every box is matched: the comparison's most work per box), read
    with and without --compare_to; the time it adds is a median of pairs, as the evaluation's."""
    runs = {}
    for fmt, name in (('legacy', 'prediction-legacy-2026-11-27T00:00:00.000Z'),
                      ('vertex', 'prediction-vertex-2026-11-27T00:00:00.000Z')):
        data_dir = os.path.join(work_dir, f'data-{images}' if fmt == 'legacy' else f'{fmt}-{images}')
        if not os.path.isdir(data_dir):
            generate(data_dir, images, shards=8, fmt=fmt)
        (run_dir,) = glob.glob(os.path.join(data_dir, 'prediction-*'))
        runs[name] = run_dir
    input_dir = os.path.join(work_dir, f'compare-{images}')
    os.makedirs(input_dir, exist_ok=True)
    for name, run_dir in runs.items():  # the run folders, linked under one prefix
        link = os.path.join(input_dir, name)
        if not os.path.islink(link):
            os.symlink(run_dir, link)
    output_dir = os.path.join(work_dir, 'out')
    plain = [sys.executable, '-m', 'pipeline', '--input', input_dir, '--output', output_dir,
             '--score_threshold', str(threshold), '--image_size', f'{WIDTH}x{HEIGHT}', '--report=false',
             '--overwrite', *TWO_PROCESS_FLAGS]
    commands = {WITHOUT_COMPARISON: plain, WITH_COMPARISON: plain + ['--compare_to', 'first']}
    files = input_files(*runs.values())
    compared = None

    def read_comparison(name):
        nonlocal compared
        if name == WITH_COMPARISON:
            with open(os.path.join(output_dir, 'comparison.json'), encoding='utf-8') as handle:
                compared = json.load(handle)['runs'][0]
    timings = timed_rounds(commands, dict.fromkeys(commands, files), repeats, output_dir,
                           f'comparison, {images} images x 2 runs', read_comparison)
    if not compared or compared['compared'] != images or compared['agreement'] != 1.0:
        raise AssertionError(f'the two runs hold the same boxes: expected every image compared and agreement 1, '
                             f'got {compared and {k: v for k, v in compared.items() if k != "labels"}}')
    added = [(c - p) / p for (p, _, _), (c, _, _) in zip(timings[WITHOUT_COMPARISON], timings[WITH_COMPARISON])]
    return [{'images': images, 'runs': 2, 'threshold': threshold, 'contender': name,
             'median_s': statistics.median(s for s, _, _ in rows), 'min_s': min(s for s, _, _ in rows),
             'max_s': max(s for s, _, _ in rows), 'peak_mb': max(mb for _, mb, _ in rows),
             'cpu_s': statistics.median(c for _, _, c in rows),
             'added_vs_plain_run': statistics.median(added) if name == WITH_COMPARISON else None,
             'added_per_repeat': added if name == WITH_COMPARISON else None}
            for name, rows in timings.items()]


PLAIN = 'pipeline, 2 processes'
SLICED = 'pipeline, 2 processes, --slice_by camera,hour'
EVALUATED = 'pipeline, 2 processes, --ground_truth'
EVALUATED_SLICED = 'pipeline, 2 processes, --ground_truth, --slice_by camera,hour,box_size'


def write_attributes(truth_jsonl: str, path: str) -> None:
    """The image attributes of the benchmark's images: 5 cameras and an hour (0 to 23), by line."""
    with open(truth_jsonl, 'rb') as lines, open(path, 'w', newline='', encoding='utf-8') as handle:
        writer = csv.writer(handle)
        writer.writerow(['image_uri', 'camera', 'hour'])
        for index, line in enumerate(lines):
            writer.writerow([json.loads(line)['imageGcsUri'], f'cam-{index % 5}', index * 7 % 24])


def bench_slices(images, threshold, repeats, work_dir):
    """--slice_by by two image attributes (and box_size with ground truth): with ground truth against
    the evaluation alone, without against the plain run; the time added is a median of pairs."""
    data_dir, truth_jsonl, _ = labelled_data(images, work_dir)
    attributes = os.path.join(work_dir, 'ground-truth', f'attributes-{images}.csv')
    if not os.path.exists(attributes):
        write_attributes(truth_jsonl, attributes)
    output_dir = os.path.join(work_dir, 'out')
    plain = [sys.executable, '-m', 'pipeline', '--input', data_dir, '--output', output_dir,
             '--score_threshold', str(threshold), '--image_size', f'{WIDTH}x{HEIGHT}', '--report=false',
             '--overwrite', *TWO_PROCESS_FLAGS]
    sliced = ['--image_attributes', attributes, '--slice_by']
    commands = {PLAIN: plain, SLICED: plain + sliced + ['camera,hour'],
                EVALUATED: plain + ['--ground_truth', truth_jsonl],
                EVALUATED_SLICED: plain + ['--ground_truth', truth_jsonl] + sliced + ['camera,hour,box_size']}
    files = input_files(data_dir, truth_jsonl, attributes)

    def check_cameras(name):
        if name != EVALUATED_SLICED:
            return
        with open(os.path.join(output_dir, 'evaluation', 'metrics.json'), encoding='utf-8') as handle:
            cameras = [e for e in json.load(handle)['slices'] if e['slice_by'] == 'camera']
        if sorted(e['slice_value'] for e in cameras) != [f'cam-{i}' for i in range(5)] or \
                sum(e['images'] for e in cameras) != images:
            raise AssertionError(f'expected 5 camera slices over {images} images, got {cameras[:2]}')
    timings = timed_rounds(commands, dict.fromkeys(commands, files), repeats, output_dir,
                           f'slices, {images} images', check_cameras)
    rows = []
    for name, rows_of in timings.items():
        base = {SLICED: PLAIN, EVALUATED_SLICED: EVALUATED}.get(name)
        added = None if base is None else [(s - b) / b for (b, _, _), (s, _, _) in zip(timings[base], rows_of)]
        rows.append({'images': images, 'threshold': threshold, 'contender': name,
                     'median_s': statistics.median(s for s, _, _ in rows_of), 'min_s': min(s for s, _, _ in rows_of),
                     'max_s': max(s for s, _, _ in rows_of), 'peak_mb': max(mb for _, mb, _ in rows_of),
                     'cpu_s': statistics.median(c for _, _, c in rows_of), 'added_vs': base,
                     'added': None if added is None else statistics.median(added), 'added_per_repeat': added})
    return rows


def render_slices(results):
    rows = [('images', 'contender', 'median s', 'spread s', 'CPU s', 'peak MB', 'added')]
    for r in results:
        rows.append((f'{r["images"]:,}', r['contender'], f'{r["median_s"]:.2f}', f'{r["min_s"]:.2f}-{r["max_s"]:.2f}',
                     f'{r["cpu_s"]:.1f}', f'{r["peak_mb"]:,.0f}', '' if r['added'] is None else f'{r["added"]:+.0%}'))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return '\n'.join('  '.join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows)


def render_comparison(results):
    rows = [('images', 'contender', 'median s', 'spread s', 'CPU s', 'peak MB', 'added')]
    for r in results:
        rows.append((f'{r["images"]:,} x 2', r['contender'], f'{r["median_s"]:.2f}',
                     f'{r["min_s"]:.2f}-{r["max_s"]:.2f}', f'{r["cpu_s"]:.1f}', f'{r["peak_mb"]:,.0f}',
                     '' if r['added_vs_plain_run'] is None else f'{r["added_vs_plain_run"]:+.0%}'))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return '\n'.join('  '.join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows)


def render_evaluation(results):
    header = ('images', 'threshold', 'contender', 'median s', 'spread s', 'CPU s', 'peak MB', 'added', 'x fce', 'mAP')
    rows = [header]
    for r in results:
        rows.append((f'{r["images"]:,}', f'{r["threshold"]}', r['contender'], f'{r["median_s"]:.2f}',
                     f'{r["min_s"]:.2f}-{r["max_s"]:.2f}', f'{r["cpu_s"]:.2f}', f'{r["peak_mb"]:.0f}',
                     '' if r['added_vs_plain_run'] is None else f'{r["added_vs_plain_run"]:+.0%}',
                     f'{r["vs_faster_coco_eval"]:.2f}', '' if r['map'] is None else f'{r["map"]:.6f}'))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ['  '.join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, '  '.join('-' * width for width in widths))
    lines += [f'The twelve COCO numbers of the {r["images"]:,}-image run equal faster-coco-eval\'s: the largest '
              f'difference {r["stats_max_difference"]:.1e}'
              for r in results if r.get('stats_max_difference') is not None]
    return '\n'.join(lines)


def render(results):
    header = ('format', 'images', 'threshold', 'contender', 'median s', 'spread s', 'annot/s', 'us/annot',
              'CPU s/M annot', 'peak MB', 'x baseline', 'x duckdb', 'x polars')
    rows = [header]
    for r in results:
        rows.append((r['format'], f'{r["images"]:,}', f'{r["threshold"]}', r['contender'], f'{r["median_s"]:.2f}',
                     f'{r["min_s"]:.2f}-{r["max_s"]:.2f}', f'{r["annotations_per_s"]:,.0f}',
                     f'{r["us_per_annotation"]:.2f}', f'{r["cpu_s_per_million_annotations"]:.2f}',
                     f'{r["peak_mb"]:.0f}', f'{r["vs_baseline"]:.2f}', f'{r["vs_duckdb"]:.2f}',
                     f'{r["vs_polars"]:.2f}'))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ['  '.join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, '  '.join('-' * width for width in widths))
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--images', type=int, nargs='+', default=[20_000, 200_000])
    parser.add_argument('--formats', nargs='+', choices=sorted(RESULT_SHARDS), default=['legacy', 'vertex'])
    parser.add_argument('--thresholds', type=float, nargs='+', default=[0.5, 0.0])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--evaluation_repeats', type=int, default=5,
                        help='repeats of the evaluation rows (their added time is a median of pairs)')
    parser.add_argument('--work_dir', default=os.path.join(ROOT, 'bench', 'work'))
    parser.add_argument('--json', default=os.path.join(ROOT, 'bench', 'results.json'))
    parser.add_argument('--postprocessing', action='store_true',
                        help='also run the pipeline with every post-processing option on')
    parser.add_argument('--evaluation', type=int, nargs='*', default=None, metavar='IMAGES',
                        help='also the evaluation rows: with and without --ground_truth, and faster-coco-eval, '
                             'on these sizes (default 200000), legacy format, threshold 0.5')
    parser.add_argument('--only_evaluation', action='store_true', help='the evaluation rows alone')
    parser.add_argument('--comparison', type=int, nargs='*', default=None, metavar='IMAGES',
                        help='also the comparison rows: two runs of the same images with and without '
                             '--compare_to (default 200,000 images)')
    parser.add_argument('--only_comparison', action='store_true', help='the comparison rows alone')
    parser.add_argument('--only_slices', action='store_true',
                        help='the slices rows alone: --slice_by with and without ground truth, 200,000 images')
    parser.add_argument('--anchor_python', default=ANCHOR_PYTHON,
                        help='the Python of the anchors\' environment, with the newest DuckDB and Polars '
                             '(bench/anchors-requirements.txt; make bench builds it)')
    args = parser.parse_args()
    only = args.only_evaluation or args.only_comparison or args.only_slices
    anchors = {} if only else anchor_versions(args.anchor_python)
    results = []
    for fmt in args.formats if not only else ():
        for images in args.images:
            results += bench_size(fmt, images, args.thresholds, args.repeats, args.work_dir, args.postprocessing,
                                  args.anchor_python)
    evaluation = []
    comparison = []
    if args.comparison is not None or args.only_comparison:
        for images in args.comparison or [200_000]:
            comparison += bench_comparison(images, 0.5, args.evaluation_repeats, args.work_dir)
    if args.evaluation is not None or args.only_evaluation:
        for images in args.evaluation or [200_000]:
            evaluation += bench_evaluation(images, 0.5, args.evaluation_repeats, args.work_dir)
    slices = bench_slices(200_000, 0.5, args.evaluation_repeats, args.work_dir) if args.only_slices else []
    model = [dict(entry, format=fmt) for fmt in args.formats for entry in cost_model(
        [r for r in results if r['format'] == fmt], pipeline=TWO_PROCESSES, baseline=BASELINE, anchor=DUCKDB)]
    if anchors:
        print('Anchors: ' + ', '.join(f'{name} {version}' for name, version in anchors.items()))
    if results:
        print(render(results))
    if model:
        print(render_cost_model(model))
    targets = target_checks(results, model)
    if targets:
        print(render_targets(targets))
    if evaluation:
        print(render_evaluation(evaluation))
    if comparison:
        print(render_comparison(comparison))
    if slices:
        print(render_slices(slices))
    written = {'machine': {'cpus': os.cpu_count(), 'memory_gb': round(psutil.virtual_memory().total / 2 ** 30)},
               'anchors': anchors, 'results': results, 'cost_model': model, 'targets': targets,
               'evaluation': evaluation, 'comparison': comparison}
    if only and os.path.exists(args.json):  # the other rows of the file stay as they were
        with open(args.json, encoding='utf-8') as handle:
            kept = json.load(handle)
        written = dict(kept, **({'evaluation': evaluation} if args.only_evaluation else {}),
                       **({'comparison': comparison} if args.only_comparison else {}),
                       **({'slices': slices} if args.only_slices else {}))
    with open(args.json, 'w', encoding='utf-8') as handle:
        json.dump(written, handle, indent=2)
    print(f'Results: {args.json}')


if __name__ == '__main__':
    main()
