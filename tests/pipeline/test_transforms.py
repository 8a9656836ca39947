"""The transforms on a real pipeline (FnApiRunner), checked with assert_that."""
import gzip
import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to, is_not_empty
from beam_testing import local_test_pipeline

from pipeline.config.settings import Settings
from pipeline.core.counts import MAX_LISTED_OTHER_FILES, Counts
from pipeline.core.dead_letters import INVALID_RECORD, MALFORMED_LINE, PREDICTION_ERROR, UNREADABLE_FILE
from pipeline.transforms import parse
from pipeline.transforms.count import CountDuplicateImageUris, CountRepeatedUrisFn, MergeCountsFn
from pipeline.transforms.parse import ParsePredictions
from pipeline.transforms.read import LineBatch, ReadShards

GOOD = b'{"ID":"gs://b/%d.jpg","annotations":[]}'


def make_shards(root):
    run = root / 'prediction-m-2021'
    run.mkdir()
    lines = [GOOD % i for i in range(50)]
    (run / 'image_object_detection_0.jsonl').write_bytes(b'\n'.join(lines[:30]) + b'\n\n  \n')
    (run / 'predictions_00001.jsonl.gz').write_bytes(gzip.compress(b'\n'.join(lines[30:]) + b'\n'))
    (run / 'errors_0.jsonl.gz').write_bytes(b'not gzip at all')
    truncated = gzip.compress(b'\n'.join(GOOD % i for i in range(100, 4100)))
    (run / 'errors_1.jsonl.gz').write_bytes(truncated[:len(truncated) // 2])
    (run / '_SUCCESS').write_bytes(b'')
    return lines


def flatten_lines(batches):
    return [line for batch in batches for line in batch.lines]


def test_read_shards_reads_every_line_once_and_reports_unreadable_files(tmp_path):
    lines = make_shards(tmp_path)
    with local_test_pipeline() as p:
        read = p | ReadShards(f'{tmp_path}/**', range_bytes=100, batch_lines=7)
        good_lines = (read.batches
                      | beam.Filter(lambda b: 'errors_1' not in b.source_file)
                      | beam.combiners.ToList() | beam.Map(flatten_lines))
        assert_that(good_lines | beam.Map(sorted), equal_to([sorted(lines)]), label='AllLines')
        kinds = read.dead_letters | beam.Map(lambda d: (d['kind'], d['source_file'].rsplit('/', 1)[1]))
        assert_that(kinds, equal_to([(UNREADABLE_FILE, 'errors_0.jsonl.gz'),
                                     (UNREADABLE_FILE, 'errors_1.jsonl.gz')]), label='Unreadable')
        counts = read.counts | beam.CombineGlobally(MergeCountsFn())

        def check_counts(all_counts):
            (c,) = all_counts
            assert c.get('files_result') == 2 and c.get('files_error') == 2 and c.get('files_other') == 1
            assert c.other_files[0].endswith('_SUCCESS')
            assert c.get('blank_lines') == 2
            # 50 good lines + 2 blank + the complete lines of the truncated shard
            assert 1000 < c.get('lines_read') - 52 < 4000
        assert_that(counts, check_counts, label='Counts')


def test_truncated_gzip_keeps_decoded_lines_and_the_unfinished_one(tmp_path):
    make_shards(tmp_path)
    with local_test_pipeline() as p:
        read = p | ReadShards(f'{tmp_path}/*/errors_1.jsonl.gz')
        n_lines = read.batches | beam.Map(lambda b: len(b.lines)) | beam.CombineGlobally(sum)

        def check(dead_and_count):
            (dead,), (count,) = dead_and_count
            assert f'{count} complete lines were read' in dead['error_message']
            assert (GOOD % (100 + count)).decode().startswith(dead['payload'])
        both = ((read.dead_letters | 'D' >> beam.combiners.ToList()),
                (n_lines | 'N' >> beam.combiners.ToList()))
        joined = (p | beam.Create([None]) | beam.Map(
            lambda _, d, n: (d, n), beam.pvalue.AsSingleton(both[0]), beam.pvalue.AsSingleton(both[1])))
        assert_that(joined, lambda rows: check(rows[0]))


def settings(**overrides):
    return Settings.of(input='gs://b/in', output='out', dead_letter='out/dead_letter', **overrides)


def scores_at_least(lines, threshold):
    """A reference count of annotations with score >= threshold, straight from the JSON."""
    total = 0
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        scores = [a.get('image_object_detection', {}).get('score', -1) for a in record.get('annotations', [])]
        scores += record.get('prediction', {}).get('confidences', [])
        total += sum(1 for s in scores if s >= threshold)
    return total


def test_parse_predictions_splits_tables_and_dead_letters(legacy_lines, vertex_lines):
    lines = legacy_lines[:3] + vertex_lines + [
        b'{"ID":"gs://b/m.jpg","error":{"code":5,"message":"gone"}}', b'{"ID":',
        b'{"ID":"gs://b/x.jpg","annotations":[{"display_name":"A"}]}', b'\xff\xfe']
    with local_test_pipeline() as p:
        manifest = p | 'Manifest' >> beam.Create([{'gs://b/x.jpg': (1, 1)}])
        parsed = (p | beam.Create([LineBatch('gs://b/prediction-r/f.jsonl', lines)])
                  | ParsePredictions(settings(score_threshold=0.8), manifest))
        rows = parsed.detections | 'DetRows' >> beam.Map(lambda t: t.num_rows) | 'SumDet' >> beam.CombineGlobally(sum)
        assert_that(rows, equal_to([scores_at_least(lines, 0.8)]), label='Detections')
        images = parsed.images | 'ImgRows' >> beam.Map(lambda t: t.num_rows) | 'SumImg' >> beam.CombineGlobally(sum)
        assert_that(images, equal_to([5]), label='Images')
        kinds = parsed.dead_letters | beam.Map(lambda d: (d['kind'], d['payload_encoding']))
        assert_that(kinds, equal_to([(PREDICTION_ERROR, None), (MALFORMED_LINE, None),
                                     (INVALID_RECORD, None), (MALFORMED_LINE, 'base64')]),
                    label='DeadLetters')
        assert_that(parsed.image_uris, is_not_empty(), label='Uris')


def test_a_streaming_run_without_input_parses_like_a_batch_run(legacy_lines):
    streaming = Settings.from_raw({'input_subscription': 'projects/my-project/subscriptions/shards',
                                   'output': 'out'})
    assert streaming.input.input is None
    with local_test_pipeline() as p:
        manifest = p | 'Manifest' >> beam.Create([None])
        parsed = (p | beam.Create([LineBatch('gs://b/prediction-r/f.jsonl', legacy_lines[:3])])
                  | ParsePredictions(streaming, manifest))
        images = parsed.images | beam.Map(lambda t: t.num_rows) | beam.CombineGlobally(sum)
        assert_that(images, equal_to([3]), label='Images')
        assert_that(parsed.dead_letters, equal_to([]), label='NoDeadLetters')


def test_a_batch_that_raises_becomes_dead_letters_line_by_line(monkeypatch, legacy_lines):
    def broken(*_args, **_kwargs):
        raise RuntimeError('bug in assembly')
    monkeypatch.setattr(parse, 'build_tables', broken)
    with local_test_pipeline() as p:
        manifest = p | 'Manifest' >> beam.Create([None])
        parsed = (p | beam.Create([LineBatch('f.jsonl', legacy_lines[:4])])
                  | ParsePredictions(settings(), manifest))
        dead = parsed.dead_letters | beam.Map(
            lambda d: (d['kind'], 'bug in assembly' in d['error_message'], d['payload']))
        assert_that(dead, equal_to([(INVALID_RECORD, True, line.decode()) for line in legacy_lines[:4]]))
        assert_that(parsed.images, equal_to([]), label='NoImages')


@pytest.mark.parametrize('gathered_rows', [0, 10_000])
def test_the_lines_of_a_bundle_leave_for_the_evaluation_once_in_a_part_per_bucket(monkeypatch, legacy_lines,
                                                                                  gathered_rows):
    """Batches of several files and runs, gathered per bundle (sent on at every batch when the limit is
    0): every kept line reaches the join once, in the bucket of its image, with its run, file, range
    and position; a batch that fails is dead letters and leaves nothing there."""
    import dataclasses

    from pipeline.core.columns import bucket_of
    from pipeline.core.evaluation import PREDICTED, unpacked
    from pipeline.core.shards import prediction_run
    monkeypatch.setattr(parse, 'GATHERED_ROWS', gathered_rows)
    base = settings(score_threshold=0.1)
    evaluating = dataclasses.replace(base, evaluation=dataclasses.replace(
        base.evaluation, ground_truth='truth.jsonl', buckets=3))
    batches = [LineBatch(f'gs://b/prediction-{run}/f{n}.jsonl', legacy_lines[n:n + 2], first=10 * n,
                         range_start=100 * n) for n, run in enumerate(['a', 'a', 'b', 'a'])]
    batches.append(LineBatch('gs://b/prediction-a/broken.jsonl', legacy_lines[:1]))
    real_batch_lines = parse.batch_lines

    def failing_for_broken(decoded, rows, positions, source_file, *rest):
        if 'broken' in source_file:
            raise RuntimeError('boom')
        return real_batch_lines(decoded, rows, positions, source_file, *rest)
    monkeypatch.setattr(parse, 'batch_lines', failing_for_broken)
    with local_test_pipeline() as p:
        manifest = p | 'Manifest' >> beam.Create([None])
        parsed = p | beam.Create(batches) | ParsePredictions(evaluating, manifest)
        lines = parsed.evaluation_parts | beam.FlatMapTuple(lambda bucket, part: [
            (bucket == bucket_of(line.image_uri, 3), part[0] == PREDICTED, part[1], line.order[0].rsplit('/', 1)[1],
             line.order[1:]) for line in unpacked(part[2]).lines()])
        assert_that(lines, equal_to([(True, True, prediction_run(batch.source_file), f'f{n}.jsonl', (100 * n, 10 * n + k))
                                     for n, batch in enumerate(batches[:4]) for k in range(2)]), label='EachLineOnce')
        assert_that(parsed.dead_letters | beam.Map(lambda d: d['source_file']),
                    equal_to(['gs://b/prediction-a/broken.jsonl']), label='TheFailedBatch')


def test_gathered_lines_that_cannot_be_sent_wait_for_the_next_try(monkeypatch, legacy_lines):
    """Sending the gathered lines fails once: the batch it happened in is dead letters, and the lines
    gathered before still reach the join, once."""
    import dataclasses

    from pipeline.core.evaluation import unpacked
    monkeypatch.setattr(parse, 'GATHERED_ROWS', 0)
    real_packed, calls = parse.packed, []

    def failing_once(part):
        calls.append(1)
        if len(calls) == 1:
            raise OSError('disk full')
        return real_packed(part)
    monkeypatch.setattr(parse, 'packed', failing_once)
    base = settings(score_threshold=0.1)
    evaluating = dataclasses.replace(base, evaluation=dataclasses.replace(
        base.evaluation, ground_truth='truth.jsonl', buckets=2))
    batches = [LineBatch(f'gs://b/prediction-a/f{n}.jsonl', [line]) for n, line in enumerate(legacy_lines[:4])]
    with local_test_pipeline() as p:
        manifest = p | 'Manifest' >> beam.Create([None])
        parsed = p | beam.Create(batches) | ParsePredictions(evaluating, manifest)
        sent = parsed.evaluation_parts | 'Sent' >> beam.FlatMapTuple(
            lambda _, part: [line.order[0] for line in unpacked(part[2]).lines()])
        dead = parsed.dead_letters | 'Dead' >> beam.Map(lambda d: d['source_file'])
        everything = ((sent | 'AllSent' >> beam.combiners.ToList()), (dead | 'AllDead' >> beam.combiners.ToList()))

        def check(both):
            (sent_files, dead_files), = both
            assert len(dead_files) == 1
            assert sorted(sent_files + dead_files) == sorted(batch.source_file for batch in batches)
        joined = p | 'One' >> beam.Create([None]) | beam.Map(
            lambda _, s, d: (s, d), beam.pvalue.AsSingleton(everything[0]), beam.pvalue.AsSingleton(everything[1]))
        assert_that(joined, check, label='OnceEach')


def test_count_duplicate_image_uris_across_batches():
    with local_test_pipeline() as p:
        uris = p | beam.Create([('r1', ['a', 'b', 'a']), ('r1', ['c', 'b']), ('r1', ['d']), ('r1', ['e', 'e', 'e']),
                                ('r2', ['a', 'f']), (None, ['f'])])  # another run's image is no duplicate
        assert_that(uris | CountDuplicateImageUris(), equal_to([3]))


def test_uris_seen_once_in_each_of_two_partial_merges_are_duplicates(monkeypatch):
    from pipeline.core.columns import fingerprints
    from pipeline.transforms import count
    monkeypatch.setattr(count, 'PRINT_PARTS', 2)  # parts put together in one array on the way
    fn = CountRepeatedUrisFn()
    first = fn.add_input(fn.create_accumulator(), fingerprints(['a', 'b']))
    second = fn.create_accumulator()
    for uris in (['b', 'c'], ['d', 'd'], ['e'], ['f']):
        second = fn.add_input(second, fingerprints(uris))
    assert len(second) <= 2
    coder = fn.get_accumulator_coder()  # as the parts cross from the workers to the merge
    merged = fn.merge_accumulators([coder.decode(coder.encode(first)), coder.decode(coder.encode(second)),
                                    fn.create_accumulator()])
    assert fn.extract_output(merged) == 2  # b (one in each part) and d (twice in one)
    assert fn.extract_output(fn.create_accumulator()) == 0


def test_a_batchs_uris_go_to_their_buckets_once_each():
    from pipeline.core.columns import fingerprints
    from pipeline.transforms.count import DUPLICATE_BUCKETS, _bucketed_uris
    uris = [f'gs://b/{i % 150}.jpg' for i in range(400)]
    parts = list(_bucketed_uris(('run', uris)))
    assert len({key for key, _ in parts}) == len(parts) > 1
    assert sorted(map(tuple, np.concatenate([prints for _, prints in parts]).tolist())) == sorted(
        map(tuple, fingerprints(uris).tolist()))
    assert all(key == ('run', int(row[0] % DUPLICATE_BUCKETS)) for key, prints in parts for row in prints)
    assert list(_bucketed_uris(('run', []))) == []


def test_merge_counts_sums_and_caps_listed_files():
    fn = MergeCountsFn()
    acc = fn.create_accumulator()
    for i in range(150):
        counts = Counts({'files_other': 1})
        counts.add_other_files([f'f{i}'])
        acc = fn.add_input(acc, counts)
    merged = fn.merge_accumulators([acc, Counts({'files_other': 2})])
    assert merged.get('files_other') == 152 and len(merged.other_files) == MAX_LISTED_OTHER_FILES
