"""Counts: one name per count, merged in any order to the same whole."""
import itertools

import numpy as np

from pipeline.core import counts as names
from pipeline.core.counts import MAX_LISTED_OTHER_FILES, Counts


def part(seed: int) -> Counts:
    rng = np.random.default_rng(seed)
    counts = Counts({names.LINES_READ: int(rng.integers(0, 9)), names.files('result'): 1,
                     names.removed_by('nms'): int(rng.integers(0, 3))})
    counts.add_scores('all', rng.random(5))
    counts.kept_by_label[f'L{seed % 2}'] += 1
    counts.probe_failures['failed_missing'] += seed
    counts.add_other_files([f'f{seed}-{i}' for i in range(40)])
    return counts


def test_merging_in_any_order_gives_the_same_counts():
    parts = [part(seed) for seed in range(4)]
    totals = []
    for order in itertools.permutations(range(4)):
        whole = Counts()
        for index in order:
            whole.merge(part(index))
        totals.append(whole.as_metrics())
    assert all(total == totals[0] for total in totals)
    assert totals[0][names.files('result')] == 4 and sum(p.get(names.LINES_READ) for p in parts) == \
        totals[0].get(names.LINES_READ, 0)


def test_other_files_are_capped_and_kept_in_arrival_order():
    whole = Counts()
    for seed in range(4):
        whole.merge(part(seed))
    assert len(whole.other_files) == MAX_LISTED_OTHER_FILES
    assert whole.other_files[:2] == ['f0-0', 'f0-1']


def test_metric_names_are_the_beam_counters_the_job_page_shows():
    counts = Counts({names.IMAGES_WRITTEN: 2, names.size_from('probe'): 1, names.dead_letters('malformed_line'): 0})
    counts.add_scores('kept', np.array([0.3, 1.0]))
    counts.kept_by_label['Salad'] = 3
    counts.probe_failures['skipped_not_allowed'] = 1
    assert counts.as_metrics() == {
        'images_written': 2, 'images_size_from_probe': 1, 'score_bin_kept_06': 1,
        'score_bin_kept_19': 1, 'kept_label=Salad': 3, 'probe_skipped_not_allowed': 1}
