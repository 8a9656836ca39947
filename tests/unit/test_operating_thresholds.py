"""Per-label operating thresholds: the rules against a search over every threshold, and the file."""
import numpy as np
import pytest

from pipeline.core.operating_thresholds import (
    BEST_F1,
    TARGET_PRECISION,
    TARGET_RECALL,
    ThresholdRule,
    choose,
    csv_text,
    read_csv_thresholds,
    scores_of,
    threshold_rows,
)
from pipeline.core.schema import THRESHOLD_COLUMNS

COLUMNS = [column.name for column in THRESHOLD_COLUMNS]


def per_score(scores, positive):
    """Distinct scores, descending, with the true and false positives at each."""
    distinct = np.unique(scores)[::-1]
    tp = np.array([int(((scores == s) & positive).sum()) for s in distinct])
    fp = np.array([int(((scores == s) & ~positive).sum()) for s in distinct])
    return distinct, tp, fp


def searched(scores, positive, ground_truth, rule):
    """The rule applied by keeping the detections at or above each candidate threshold in turn."""
    candidates = []
    for threshold in sorted(set(scores.tolist()), reverse=True):
        kept = scores >= threshold
        tp, fp = int((kept & positive).sum()), int((kept & ~positive).sum())
        candidates.append((threshold, tp, fp, ground_truth - tp, *scores_of(tp, fp, ground_truth - tp)))
    if rule.name == TARGET_PRECISION:
        reaching = [c for c in candidates if c[4] >= rule.target]
        return min(reaching, key=lambda c: c[0]) if reaching else None
    if rule.name == TARGET_RECALL:
        reaching = [c for c in candidates if c[5] >= rule.target]
        return max(reaching, key=lambda c: c[0]) if reaching else None
    best = max(c[6] for c in candidates)
    return max((c for c in candidates if c[6] == best), key=lambda c: c[0]) if best > 0 else None


@pytest.mark.parametrize('seed', range(12))
@pytest.mark.parametrize('rule', [ThresholdRule(), ThresholdRule(TARGET_PRECISION, 0.8),
                                  ThresholdRule(TARGET_PRECISION, 0.5), ThresholdRule(TARGET_RECALL, 0.3),
                                  ThresholdRule(TARGET_RECALL, 0.9)])
def test_each_rule_chooses_what_a_search_over_every_threshold_finds(seed, rule):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    scores = np.round(rng.random(n), 2)  # two decimals: many ties
    positive = rng.random(n) < np.clip(scores + rng.normal(0, 0.3, n), 0, 1)
    ground_truth = int(positive.sum() + rng.integers(0, 20))
    expected = searched(scores, positive, ground_truth, rule)
    got = choose(*per_score(scores, positive), ground_truth, rule)
    assert got.rule == rule.name
    if expected is None:
        assert got.threshold is None and got.reason
    else:
        assert (got.threshold, got.tp, got.fp, got.fn, got.precision, got.recall, got.f1) == expected


def test_a_label_that_never_reaches_the_target_has_no_threshold_and_says_why():
    scores, positive = np.array([0.9, 0.8, 0.7]), np.array([False, True, False])
    got = choose(*per_score(scores, positive), 4, ThresholdRule(TARGET_PRECISION, 0.9))
    assert got.threshold is None and 'precision never reaches 0.9' in got.reason and '(at most 0.5000)' in got.reason
    got = choose(*per_score(scores, positive), 4, ThresholdRule(TARGET_RECALL, 0.5))
    assert got.threshold is None and 'recall never reaches 0.5' in got.reason
    assert choose(np.zeros(0), np.zeros(0), np.zeros(0), 3, ThresholdRule()).reason.startswith('no detection')
    assert choose(*per_score(scores, positive), 0, ThresholdRule()).reason.startswith('no ground-truth box')
    assert choose(*per_score(scores, ~positive & False), 2, ThresholdRule()).reason == \
        'no true positive at any threshold'


def test_the_rule_follows_the_options():
    assert ThresholdRule.of() == ThresholdRule(BEST_F1, None)
    assert ThresholdRule.of(target_precision=0.9) == ThresholdRule(TARGET_PRECISION, 0.9)
    assert ThresholdRule.of(target_recall=0.7) == ThresholdRule(TARGET_RECALL, 0.7)


def chosen_rows(run='run-a'):
    scores, positive = np.array([0.1 + 0.2, 0.7, 0.45]), np.array([True, True, False])
    return threshold_rows(run, [('dog', choose(*per_score(scores, positive), 3, ThresholdRule())),
                                ('cat, "tabby"', choose(*per_score(scores, ~positive), 0, ThresholdRule()))])


def test_the_file_gives_back_every_threshold_exactly():
    rows = chosen_rows()
    text = csv_text(rows, COLUMNS)
    assert text.splitlines()[0] == ','.join(COLUMNS)
    read = read_csv_thresholds(text, ['run-a'])
    assert read.thresholds == {'dog': 0.1 + 0.2}  # 0.30000000000000004, not 0.3
    assert read.without == {'cat, "tabby"': rows[0]['reason']}


def test_a_file_of_several_runs_gives_the_inputs_run_or_says_what_to_fix():
    text = csv_text(chosen_rows('run-a') + chosen_rows('run-b'), COLUMNS)
    assert read_csv_thresholds(text, ['run-b']).thresholds == {'dog': 0.1 + 0.2}
    with pytest.raises(ValueError, match=r"2 runs \('run-a', 'run-b'\).*keep the rows of the run"):
        read_csv_thresholds(text, ['run-a', 'run-b'])
    with pytest.raises(ValueError, match='2 runs'):
        read_csv_thresholds(text, ['run-c'])


@pytest.mark.parametrize('text, message', [
    ('label,threshold\ndog,0.5\n', 'no prediction_run column'),
    ('prediction_run,label,threshold\n', 'holds no threshold'),
    ('prediction_run,label,threshold\nr,dog,0.5\nr,dog,0.6\n', "line 3: 'dog' is given twice"),
    ('prediction_run,label,threshold\nr,dog,high\n', "line 2: threshold 'high' of 'dog' is not a number"),
    ('prediction_run,label,threshold\nr,dog,1.5\n', 'outside 0 to 1'),
    ('prediction_run,label,threshold\nr, ,0.5\n', 'line 2: the label is empty'),
])
def test_a_wrong_file_says_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        read_csv_thresholds(text, ['r'])
