"""Run against run: the three matching passes against a plain one-pair-at-a-time greedy, each outcome
on a case made for it, and the mirror of A against B."""
import numpy as np
import pytest

from pipeline.core.comparison import (
    ADDED,
    MOVED,
    OUTCOMES,
    RELABELLED,
    REMOVED,
    SAME,
    LabelComparison,
    RunBoxes,
    changed_images,
    label_counts,
    match_runs,
)

NAMES = ['cat', 'dog', 'bird']


def boxes(rows):
    """RunBoxes from (image, label, score, [x0, y0, x1, y1]) rows."""
    if not rows:
        return RunBoxes.empty()
    image, label, score, box = zip(*rows)
    return RunBoxes(np.array(image, dtype=np.int64), np.array([NAMES.index(n) for n in label], dtype=np.int64),
                    np.array(score, dtype=float), np.array(box, dtype=float))


def iou(p, q):
    w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
    h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
    inter = w * h
    return inter / ((p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter)


def plain_match(run, base, eval_iou):
    """The passes written one pair at a time: {(run box, base box): outcome}."""
    run_taken, base_taken, taken = set(), set(), {}
    for outcome, wanted in ((SAME, lambda s, v: s and v >= eval_iou), (RELABELLED, lambda s, v: v >= eval_iou),
                            (MOVED, lambda s, v: s and 0.1 <= v < eval_iou)):
        pairs = []
        for r in range(len(run.image)):
            for b in range(len(base.image)):
                if run.image[r] != base.image[b]:
                    continue
                value = iou(run.boxes[r], base.boxes[b])
                if value > 0 and wanted(run.label[r] == base.label[b], value):
                    high, low = max(run.scores[r], base.scores[b]), min(run.scores[r], base.scores[b])
                    pairs.append((-high, -low, -value, r, b))
        for *_, r, b in sorted(pairs):
            if r not in run_taken and b not in base_taken:
                run_taken.add(r)
                base_taken.add(b)
                taken[r, b] = outcome
    return taken


def random_run(rng, images, count):
    rows = []
    for _ in range(count):
        x, y = rng.random(2) * 0.7
        w, h = 0.05 + rng.random(2) * 0.25
        rows.append((int(rng.integers(0, images)), str(rng.choice(NAMES)), float(rng.random()), [x, y, x + w, y + h]))
    return rows


def moved_copy(rng, rows):
    """The same boxes moved a little, some relabelled, rescored."""
    out = []
    for image, label, _, (x0, y0, x1, y1) in rows:
        dx, dy = rng.normal(0, 0.03, 2)
        label = str(rng.choice(NAMES)) if rng.random() < 0.2 else label
        out.append((image, label, float(rng.random()), [x0 + dx, y0 + dy, x1 + dx, y1 + dy]))
    return out


def test_the_passes_take_what_one_pair_at_a_time_takes():
    seen = set()
    for seed in range(15):
        rng = np.random.default_rng(seed)
        base_rows = random_run(rng, 6, 40)
        run_rows = moved_copy(rng, base_rows[:30]) + random_run(rng, 6, 8)
        run, base = boxes(run_rows), boxes(base_rows)
        matched = match_runs(run, base, 0.5)
        got = {(r, b): OUTCOMES[o] for r, b, o in zip(matched.run.tolist(), matched.base.tolist(),
                                                       matched.outcome.tolist())}
        assert got == plain_match(run, base, 0.5), seed
        seen.update(got.values())
    assert seen == {SAME, RELABELLED, MOVED}  # the cases met each pass


@pytest.mark.parametrize('seed', range(10))
def test_a_against_b_mirrors_b_against_a(seed):
    rng = np.random.default_rng(100 + seed)
    a_rows = random_run(rng, 5, 30)
    b_rows = moved_copy(rng, a_rows[:25]) + random_run(rng, 5, 6)
    a, b = boxes(a_rows), boxes(b_rows)
    forward, backward = label_counts(a, b, match_runs(a, b, 0.5), NAMES), label_counts(b, a, match_runs(b, a, 0.5),
                                                                                        NAMES)
    assert set(forward) == set(backward)
    for label, ahead in forward.items():
        back = backward[label]
        assert (ahead.same, ahead.moved, ahead.added, ahead.removed, ahead.relabelled, ahead.relabelled_in) == \
            (back.same, back.moved, back.removed, back.added, back.relabelled_in, back.relabelled), label
        assert ahead.agreement == back.agreement


def test_each_outcome_on_its_own_case():
    base = boxes([(0, 'cat', 0.9, [0.1, 0.1, 0.3, 0.3]),   # the run has it too: same
                  (0, 'dog', 0.8, [0.5, 0.5, 0.7, 0.7]),   # the run calls it a cat: relabelled
                  (1, 'bird', 0.7, [0.1, 0.1, 0.3, 0.3]),  # the run's is off by a third: moved
                  (1, 'cat', 0.6, [0.6, 0.1, 0.9, 0.3])])  # the run has nothing there: removed
    run = boxes([(0, 'cat', 0.95, [0.1, 0.1, 0.3, 0.31]),
                 (0, 'cat', 0.5, [0.5, 0.5, 0.7, 0.7]),
                 (1, 'bird', 0.4, [0.2, 0.1, 0.4, 0.3]),
                 (1, 'dog', 0.3, [0.1, 0.6, 0.2, 0.9])])   # nothing of the base there: added
    matched = match_runs(run, base, 0.5)
    assert sorted(zip(matched.run.tolist(), matched.base.tolist(), [OUTCOMES[o] for o in matched.outcome])) == [
        (0, 0, SAME), (1, 1, RELABELLED), (2, 2, MOVED)]
    assert [a.tolist() for a in matched.unmatched(4, 4)] == [[3], [3]]
    counts = label_counts(run, base, matched, NAMES)
    assert counts['cat'] == LabelComparison(same=1, relabelled_in=1, removed=1, run_boxes=2, base_boxes=2)
    assert counts['dog'] == LabelComparison(relabelled=1, added=1, run_boxes=1, base_boxes=1)
    assert counts['bird'] == LabelComparison(moved=1, run_boxes=1, base_boxes=1)
    assert counts['cat'].agreement == 0.5 and counts['bird'].agreement == 0.0
    assert changed_images(run, base, matched, 2).tolist() == [True, True]


def test_identical_runs_agree_fully():
    rows = random_run(np.random.default_rng(7), 4, 25)
    run, base = boxes(rows), boxes(rows)
    matched = match_runs(run, base, 0.5)
    assert [OUTCOMES[o] for o in matched.outcome] == [SAME] * 25
    assert all(c.agreement == 1.0 for c in label_counts(run, base, matched, NAMES).values())
    assert not changed_images(run, base, matched, 4).any()
    assert ADDED not in OUTCOMES[:3] and REMOVED not in OUTCOMES[:3]
