"""The evaluation benchmark's ground truth, and its anchor: faster-coco-eval on the same boxes.

Ground truth is generated from the benchmark's own prediction shards: for each image, some predicted
boxes moved a little (they become true positives at some IoU), plus boxes no detection is near (misses).
The same boxes are written twice: as Vertex AI import JSONL (what the pipeline reads, line by line on
any number of workers) and as COCO JSON (what faster-coco-eval reads).

python bench/evaluation.py faster_coco_eval DATA_DIR COCO_JSON THRESHOLD WIDTH HEIGHT OUTPUT_JSON
"""
import glob
import json
import os
import random
import sys
import time

import orjson

LABELS = ['Baked Goods', 'Tomato', 'Salad', 'Cheese', 'Seafood']
IMAGE_PREFIX = 'gs://bench-bucket/images/'
SHARDS = 'image_object_detection_*.jsonl'


def _boxes_of(record):
    for annotation in record.get('annotations') or ():
        first, second = annotation['image_object_detection']['bounding_box']['normalized_vertices']
        yield (annotation['display_name'], first.get('x', 0.0), first.get('y', 0.0), second.get('x', 0.0),
               second.get('y', 0.0))


def _clamp(value):
    return min(1.0, max(0.0, value))


def generate_ground_truth(data_dir, jsonl_path, coco_path, width, height, seed=20261202):
    """Both ground-truth files for the legacy shards under `data_dir`; returns (images, boxes)."""
    rng = random.Random(seed)
    images, annotations = [], []
    with open(jsonl_path, 'wb') as jsonl:
        for path in sorted(glob.glob(os.path.join(data_dir, '**', SHARDS), recursive=True)):
            with open(path, 'rb') as handle:
                for line in handle:
                    record = orjson.loads(line)
                    boxes = []
                    for label, x1, y1, x2, y2 in _boxes_of(record):
                        if rng.random() < 0.3:
                            w, h = x2 - x1, y2 - y1
                            dx, dy = rng.gauss(0, 0.08) * w, rng.gauss(0, 0.08) * h
                            boxes.append((label, _clamp(x1 + dx), _clamp(y1 + dy), _clamp(x2 + dx), _clamp(y2 + dy)))
                    for _ in range(rng.randint(0, 2)):
                        x1, y1 = rng.random() * 0.8, rng.random() * 0.8
                        boxes.append((rng.choice(LABELS), x1, y1, x1 + 0.05 + rng.random() * 0.15,
                                      y1 + 0.05 + rng.random() * 0.15))
                    boxes = [b for b in boxes if b[3] - b[1] > 1e-3 and b[4] - b[2] > 1e-3]
                    uri = record['ID']
                    jsonl.write(orjson.dumps({'imageGcsUri': uri, 'boundingBoxAnnotations': [
                        {'displayName': label, 'xMin': x1, 'yMin': y1, 'xMax': x2, 'yMax': y2}
                        for label, x1, y1, x2, y2 in boxes]}) + b'\n')
                    image_id = len(images) + 1
                    images.append({'id': image_id, 'file_name': uri[len(IMAGE_PREFIX):], 'width': width,
                                   'height': height})
                    for label, x1, y1, x2, y2 in boxes:
                        annotations.append({'id': len(annotations) + 1, 'image_id': image_id,
                                            'category_id': LABELS.index(label) + 1, 'iscrowd': 0,
                                            'bbox': [x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height],
                                            'area': (x2 - x1) * width * (y2 - y1) * height})
    with open(coco_path, 'wb') as handle:
        handle.write(orjson.dumps({'images': images, 'annotations': annotations, 'categories': [
            {'id': i + 1, 'name': name} for i, name in enumerate(LABELS)]}))
    return len(images), len(annotations)


def faster_coco_eval(data_dir, coco_path, threshold, width, height, output):
    """What a user does with faster-coco-eval: the prediction lines into COCO results (an N x 7 array,
    the form loadRes takes fastest), then COCOeval_faster's evaluate, accumulate and summarize."""
    import numpy as np
    from faster_coco_eval import COCO, COCOeval_faster
    start = time.perf_counter()
    with open(coco_path, 'rb') as handle:
        document = orjson.loads(handle.read())
    ids = {IMAGE_PREFIX + image['file_name']: image['id'] for image in document['images']}
    categories = {category['name']: category['id'] for category in document['categories']}
    rows = []
    for path in sorted(glob.glob(os.path.join(data_dir, '**', SHARDS), recursive=True)):
        with open(path, 'rb') as handle:
            for line in handle:
                record = orjson.loads(line)
                image_id = ids[record['ID']]
                for annotation in record.get('annotations') or ():
                    detection = annotation['image_object_detection']
                    if detection['score'] >= threshold:
                        first, second = detection['bounding_box']['normalized_vertices']
                        x1, y1 = first.get('x', 0.0) * width, first.get('y', 0.0) * height
                        x2, y2 = second.get('x', 0.0) * width, second.get('y', 0.0) * height
                        rows.append((image_id, x1, y1, x2 - x1, y2 - y1, detection['score'],
                                     categories[annotation['display_name']]))
    converted = time.perf_counter()
    ground_truth = COCO(coco_path)
    results = ground_truth.loadRes(np.array(rows, dtype=np.float64))
    evaluation = COCOeval_faster(ground_truth, results, 'bbox')
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    done = time.perf_counter()
    with open(output, 'w', encoding='utf-8') as handle:
        json.dump({'map': float(evaluation.stats[0]), 'map_50': float(evaluation.stats[1]),
                   'map_75': float(evaluation.stats[2]), 'mar_100': float(evaluation.stats[8]),
                   'stats': [float(value) for value in evaluation.stats],
                   'detections': len(rows), 'convert_s': converted - start, 'evaluate_s': done - converted},
                  handle)


if __name__ == '__main__':
    kind, *args = sys.argv[1:]
    if kind == 'faster_coco_eval':
        data_dir, coco_path, threshold, width, height, output = args
        faster_coco_eval(data_dir, coco_path, float(threshold), int(width), int(height), output)
