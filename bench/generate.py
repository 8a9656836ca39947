"""Deterministic synthetic batch prediction output, shaped like real runs, in either format: legacy
AutoML Vision or Vertex AI, the same images and boxes in both.

0 to 40 annotations per image (mean about 20), scores skewed low as AutoML's are, some omitted zero
coordinates in legacy lines (proto3 JSON drops zeros), a few error shards.
`python bench/generate.py --images 20000 [--format vertex] DIR`.
"""
import argparse
import os
import random

import orjson

LABELS = [('3163553338344079360', 'Baked Goods'), ('6622317852164620288', 'Tomato'),
          ('4316474842950926336', 'Salad'), ('2010631833737232384', 'Cheese'),
          ('7754337640727445504', 'Seafood')]
RUN_FOLDER = 'prediction-bench_model-2026-11-27T00:00:00.000000Z'


def vertex(x, y):
    """proto3 JSON: a zero coordinate is omitted."""
    out = {}
    if x:
        out['x'] = x
    if y:
        out['y'] = y
    return out


def annotation(rng):
    label_id, name = rng.choice(LABELS)
    x1, x2 = sorted((round(rng.random(), 8), round(rng.random(), 8)))
    y1, y2 = sorted((round(rng.random(), 8), round(rng.random(), 8)))
    if rng.random() < 0.1:
        x1 = 0  # boxes on the image's left or top edge
    if rng.random() < 0.1:
        y1 = 0
    return {'annotation_spec_id': label_id, 'display_name': name,
            'image_object_detection': {'bounding_box': {
                'normalized_vertices': [vertex(x1, y1), vertex(x2, y2)], 'vertices': []},
                'score': round(rng.random() ** 3, 8)}}


def as_vertex(uri, annotations):
    """The same image and boxes as Vertex AI writes them: parallel arrays, [xMin, xMax, yMin, yMax]."""
    boxes = []
    for a in annotations:
        first, second = a['image_object_detection']['bounding_box']['normalized_vertices']
        boxes.append([first.get('x', 0), second.get('x', 0), first.get('y', 0), second.get('y', 0)])
    return {'instance': {'content': uri, 'mimeType': 'image/jpeg'}, 'prediction': {
        'ids': [a['annotation_spec_id'] for a in annotations],
        'displayNames': [a['display_name'] for a in annotations],
        'confidences': [a['image_object_detection']['score'] for a in annotations], 'bboxes': boxes}}


SHARD_NAMES = {'legacy': ('image_object_detection_{}.jsonl', 'errors_{}.jsonl'),
               'vertex': ('predictions_{:05d}.jsonl', 'errors_{:05d}.jsonl')}


def generate(out_dir, images, shards, seed=20261127, error_shards=2, errors_per_shard=50, fmt='legacy'):
    rng = random.Random(seed)
    run = os.path.join(out_dir, RUN_FOLDER)
    os.makedirs(run, exist_ok=True)
    results, errors = SHARD_NAMES[fmt]
    per_shard = -(-images // shards)
    for shard in range(shards):
        with open(os.path.join(run, results.format(shard)), 'wb') as handle:
            for i in range(shard * per_shard, min(images, (shard + 1) * per_shard)):
                count = rng.randint(0, 40)
                uri = f'gs://bench-bucket/images/{i // 1000:04d}/img_{i:08d}.jpg'
                annotations = [annotation(rng) for _ in range(count)]
                record = ({'ID': uri, 'annotations': annotations} if fmt == 'legacy'
                          else as_vertex(uri, annotations))
                handle.write(orjson.dumps(record) + b'\n')
    for shard in range(error_shards):
        with open(os.path.join(run, errors.format(shard)), 'wb') as handle:
            for i in range(errors_per_shard):
                uri = f'gs://bench-bucket/missing/{shard}_{i}.jpg'
                status = ({'code': 5, 'message': 'Image not found.'} if i % 2 else
                          {'status': 'INVALID_ARGUMENT', 'message': 'Unable to decode image.'})
                identity = {'ID': uri} if fmt == 'legacy' else {'instance': {'content': uri}}
                handle.write(orjson.dumps({**identity, 'error': status}) + b'\n')
    with open(os.path.join(run, '_SUCCESS'), 'wb'):
        pass
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('out_dir')
    parser.add_argument('--images', type=int, default=200_000)
    parser.add_argument('--shards', type=int, default=8)
    parser.add_argument('--seed', type=int, default=20261127)
    parser.add_argument('--format', choices=sorted(SHARD_NAMES), default='legacy')
    args = parser.parse_args()
    print(generate(args.out_dir, args.images, args.shards, args.seed, fmt=args.format))


if __name__ == '__main__':
    main()
