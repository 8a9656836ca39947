"""Progress reports: what a worker logs, read back from a record of ours or from a worker's log entry
as the runner forwards it (protobuf text), and the totals and line the launcher shows."""
from pipeline.core import progress
from pipeline.core.progress import Progress, human_bytes


def test_a_report_reads_back_from_its_own_record_and_from_a_forwarded_log_entry():
    text = progress.encode(bytes=2048, lines=10, kept=3, range_of=progress.shard_key('gs://b/ä "x".jsonl'))
    assert progress.decode(text) == {'bytes': 2048, 'lines': 10, 'kept': 3,
                                     'range_of': progress.shard_key('gs://b/ä "x".jsonl')}
    forwarded = f'severity: INFO\ntimestamp {{\n  seconds: 1\n}}\nmessage: "{text}"\nlog_location: "x.py:1"\n'
    assert progress.decode(forwarded) == progress.decode(text)
    assert progress.decode('an ordinary log line with bytes=5') is None


def test_totals_shards_done_and_the_time_left():
    sizes = {'a.jsonl': 100, 'b.jsonl': 300, 'c.jsonl.gz': 50}
    state = Progress(sizes, range_bytes=200)  # b is read in two ranges
    assert (state.total_bytes, state.total_shards) == (450, 3)
    assert state.seconds_left(1.0) is None and state.fraction == 0
    state.add({'bytes': 100, 'lines': 4, 'kept': 2, 'range_of': progress.shard_key('a.jsonl')})
    state.add({'bytes': 200, 'lines': 6, 'range_of': progress.shard_key('b.jsonl')})
    assert state.shards_done == 1  # b has a range left
    assert round(state.seconds_left(3.0), 6) == 1.5  # 2/3 read in 3 s
    state.add({'bytes': 100, 'range_of': progress.shard_key('b.jsonl')})
    state.add({'range_of': progress.shard_key('b.jsonl')})  # a range reported twice counts once
    state.add({'bytes': 400, 'lines': 90, 'kept': 1, 'range_of': progress.shard_key('c.jsonl.gz')})
    assert (state.shards_done, state.lines, state.kept, state.fraction) == (3, 100, 3, 1.0)
    assert state.line(12.0) == ('progress: 3/3 shards, 450 B of 450 B (100%), 100 lines, 3 detections kept, '
                                '12 s elapsed, about 0 s left')


def test_sizes_read_as_people_read_them():
    assert [human_bytes(n) for n in (0, 999, 1000, 5_400_000_000, 3e15)] == [
        '0 B', '999 B', '1.0 KB', '5.4 GB', '3000.0 TB']
