"""Generated detection sets and pycocotools' answer on them: the reference for the evaluation tests."""
import contextlib
import io

import numpy as np
import orjson
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

LABELS = ('cat', 'dog', 'bird', 'fish')  # 'fish' is only ever predicted


def generated_set(seed, images=40):
    """Images with pixel sizes, ground-truth boxes (some crowd) and detections near them or anywhere,
    scores continuous (no ties), at most 100 detections per image and label."""
    rng = np.random.default_rng(seed)
    sizes, truth, detections = [], [], []
    for image in range(images):
        width, height = int(rng.integers(50, 2000)), int(rng.integers(50, 2000))
        sizes.append((width, height))
        boxes = []
        for _ in range(int(rng.integers(0, 8)) if image % 7 else 0):  # every 7th image: no ground truth
            x, y = rng.uniform(0, width * 0.8), rng.uniform(0, height * 0.8)
            w, h = rng.uniform(5, width - x), rng.uniform(5, height - y)
            boxes.append((str(rng.choice(LABELS[:3])), [x, y, w, h], bool(rng.random() < 0.1)))
        truth.append(boxes)
        dets = []
        if image % 5:  # every 5th image: no detection
            for label, (x, y, w, h), _ in boxes:
                for _ in range(int(rng.integers(0, 3))):
                    jitter = rng.normal(0, 0.15, 4) * [w, h, w, h]
                    nx, ny = np.clip(x + jitter[0], 0, width - 1), np.clip(y + jitter[1], 0, height - 1)
                    nw, nh = np.clip(w + jitter[2], 1, width - nx), np.clip(h + jitter[3], 1, height - ny)
                    dets.append((label if rng.random() < 0.85 else str(rng.choice(LABELS)),
                                 [nx, ny, nw, nh], float(rng.random())))
            for _ in range(int(rng.integers(0, 4))):
                x, y = rng.uniform(0, width * 0.9), rng.uniform(0, height * 0.9)
                dets.append((str(rng.choice(LABELS)), [x, y, rng.uniform(1, width - x), rng.uniform(1, height - y)],
                             float(rng.random())))
        detections.append(dets)
    return sizes, truth, detections


def pycocotools_eval(sizes, truth, detections):
    coco = cocoeval(sizes, truth, detections)
    precision = coco.eval['precision'][:, :, :, 0, 2]  # (T, R, K), area "all", maxDets 100
    per_label = {}
    for k, name in enumerate(LABELS):
        values = precision[:, :, k]
        per_label[name] = None if (values == -1).all() else values.mean(axis=1)
    return per_label, coco.stats


def label_stats(coco, label):
    """pycocotools' AP (maxDets 100) and AR at each maxDets of one label, area "all" (None: -1)."""
    k = LABELS.index(label)
    precision = coco.eval['precision'][:, :, k, 0, 2]
    recall = coco.eval['recall'][:, k, 0, :]  # (T, M)
    if (precision == -1).all():
        return None
    return {'ap': precision.mean(), 'ap_50': precision[0].mean(), 'ap_75': precision[5].mean(),
            'ar_1': recall[:, 0].mean(), 'ar_10': recall[:, 1].mean(), 'ar_100': recall[:, 2].mean()}


def crowded_set(seed, images=12):
    """A generated set in which some images hold more than 100 detections of one label."""
    rng = np.random.default_rng(seed)
    sizes, truth, detections = generated_set(seed, images)
    for image in range(1, images, 3):
        width, height = sizes[image]
        targets = truth[image] or [('cat', [0, 0, width / 2, height / 2], False)]
        for _ in range(int(rng.integers(101, 180))):
            label, (x, y, w, h), _ = targets[int(rng.integers(0, len(targets)))]
            jitter = rng.normal(0, 0.1, 4) * [w, h, w, h]
            nx, ny = np.clip(x + jitter[0], 0, width - 1), np.clip(y + jitter[1], 0, height - 1)
            detections[image].append((label, [nx, ny, np.clip(w + jitter[2], 1, width - nx),
                                              np.clip(h + jitter[3], 1, height - ny)], float(rng.random())))
    return sizes, truth, detections


def cocoeval(sizes, truth, detections):
    """COCOeval (bbox, default parameters) run on a generated set."""
    categories = [{'id': i + 1, 'name': name} for i, name in enumerate(LABELS)]
    ids = {name: i + 1 for i, name in enumerate(LABELS)}
    annotations = [{'id': len(annotation_list) + 1, 'image_id': image, 'category_id': ids[entry[0]], 'bbox': entry[1],
                    'area': area_of(entry), 'iscrowd': int(entry[2])}
                   for annotation_list in [[]] for image, boxes in enumerate(truth)
                   for entry in boxes if not annotation_list.append(1)]
    ground_truth = COCO()
    ground_truth.dataset = {'images': [{'id': i, 'width': w, 'height': h} for i, (w, h) in enumerate(sizes)],
                            'annotations': annotations, 'categories': categories}
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
        results = ground_truth.loadRes([{'image_id': image, 'category_id': ids[label], 'bbox': box, 'score': score}
                                        for image, dets in enumerate(detections) for label, box, score in dets])
        coco = COCOeval(ground_truth, results, 'bbox')
        coco.evaluate()
        coco.accumulate()
        coco.summarize()
    return coco


def normalized(box, size):
    x, y, w, h = box
    return [x / size[0], y / size[1], (x + w) / size[0], (y + h) / size[1]]


# Prediction lines and ground truth written from a generated set, as users' files hold them.
def normalized_box(box, size):
    return [float(value) for value in normalized(box, size)]


def vertex_line(uri, size, dets):
    boxes = [normalized_box(box, size) for _, box, _ in dets]
    return orjson.dumps({'instance': {'content': uri, 'mimeType': 'image/jpeg'}, 'prediction': {
        'ids': [str(LABELS.index(label)) for label, _, _ in dets],
        'displayNames': [label for label, _, _ in dets],
        'confidences': [score for _, _, score in dets],
        'bboxes': [[b[0], b[2], b[1], b[3]] for b in boxes]}})


def legacy_line(uri, size, dets):
    return orjson.dumps({'ID': uri, 'annotations': [
        {'display_name': label, 'annotation_spec_id': str(sum(map(ord, label))), 'image_object_detection': {
            'score': score, 'bounding_box': {'normalized_vertices': [{'x': b[0], 'y': b[1]}, {'x': b[2], 'y': b[3]}]}}}
        for (label, box, score), b in ((det, normalized_box(det[1], size)) for det in dets)]})


def area_of(entry):
    """A ground-truth entry's COCO area: its own (a 4th item, as a mask's area), else its box's."""
    return float(entry[3]) if len(entry) > 3 else float(entry[1][2] * entry[1][3])


def with_mask_areas(truth, seed):
    """The ground truth with a COCO area of its own on about half of the boxes (a mask covers 40 to
    100% of its box), as COCO's real annotations have."""
    rng = np.random.default_rng(seed)
    return [[(label, box, crowd, box[2] * box[3] * rng.uniform(0.4, 1.0)) if rng.random() < 0.5
             else (label, box, crowd) for label, box, crowd in boxes] for boxes in truth]


def in_whole_pixels(truth, detections):
    """A generated set with every box on whole pixels, as PASCAL VOC and most labelling tools write
    them: IoU lands exactly on thresholds and areas exactly on the range bounds more often."""
    def whole(box):
        return [float(round(value)) for value in box]
    return ([[(label, whole(box), crowd) for label, box, crowd in boxes if round(box[2]) and round(box[3])]
             for boxes in truth],
            [[(label, whole(box), score) for label, box, score in dets if round(box[2]) and round(box[3])]
             for dets in detections])


def coco_ground_truth(sizes, truth):
    ids = {name: i + 1 for i, name in enumerate(LABELS)}
    annotations = [{'id': n + 1, 'image_id': image, 'category_id': ids[entry[0]], 'bbox': [float(v) for v in entry[1]],
                    'iscrowd': int(entry[2]), 'area': area_of(entry)}
                   for n, (image, entry) in enumerate(
                       (image, b) for image, boxes in enumerate(truth) for b in boxes)]
    annotations.append({'id': 99999, 'image_id': 12345, 'category_id': 1, 'bbox': [1, 1, 2, 2], 'iscrowd': 0})
    return {'images': [{'id': i, 'file_name': f'{i}.jpg', 'width': w, 'height': h} for i, (w, h) in enumerate(sizes)],
            'annotations': annotations,
            'categories': [{'id': i + 1, 'name': name} for i, name in enumerate(LABELS)]}


def tide_run(sizes, truth, detections, listed=None):
    """tidecv 1.0.1 (bbox, its defaults) on a generated set, images in order (`listed`: the order a
    COCO file lists them in, as tidecv's COCO loader adds them): (TIDE, its run)."""
    from tidecv import TIDE, Data
    ids = {name: i + 1 for i, name in enumerate(LABELS)}
    ground_truth, predictions = Data('ground_truth'), Data('predictions')
    for image in (range(len(truth)) if listed is None else listed):
        ground_truth.add_image(image, f'{image}.jpg')
    for image, boxes in enumerate(truth):
        for entry in boxes:
            add = ground_truth.add_ignore_region if entry[2] else ground_truth.add_ground_truth
            add(image, ids[entry[0]], box=[float(v) for v in entry[1]])
    for image, dets in enumerate(detections):
        for label, box, score in dets:
            predictions.add_detection(image, ids[label], score, box=[float(v) for v in box])
    tide = TIDE()
    with contextlib.redirect_stdout(io.StringIO()):
        run = tide.evaluate(ground_truth, predictions, mode=TIDE.BOX)
    return tide, run


# tidecv's short names of the error types, and ours.
TIDE_NAMES = {'Cls': 'cls', 'Loc': 'loc', 'Both': 'both', 'Dupe': 'dupe', 'Bkg': 'bkg', 'Miss': 'miss'}


def assert_run_errors_equal_tidecv(errors, tide, run):
    """A run's `errors` of metrics.json against tidecv's TIDE and run: AP@0.5, each type's dAP, the
    special dAPs (tidecv in percent) and the counts; returns the counts."""
    import pytest
    main, special = tide.get_main_errors()['predictions'], tide.get_special_errors()['predictions']
    assert errors['ap_50'] * 100 == pytest.approx(run.ap, abs=1e-9)
    for short, name in TIDE_NAMES.items():
        assert errors['dap'][name] * 100 == pytest.approx(main[short], abs=1e-9), name
    assert errors['special_dap']['fp'] * 100 == pytest.approx(special['FalsePos'], abs=1e-9)
    assert errors['special_dap']['fn'] * 100 == pytest.approx(special['FalseNeg'], abs=1e-9)
    counts = {TIDE_NAMES[kind.short_name]: count for kind, count in run.count_errors().items()}
    assert errors['counts'] == counts
    return counts
