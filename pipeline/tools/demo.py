"""`python -m pipeline.tools.demo FOLDER`: a small, seeded evaluation demo that needs no cloud account.

Images of coloured shapes; the ground truth of their boxes in the three formats the pipeline reads
(Vertex AI import JSONL, AutoML Vision CSV, COCO); two prediction runs of one model family over the
same images, one better than the other (Vertex AI's output format); and the images' sizes. `make
demo` writes it to demo/ and runs evaluation, export and the report on it.
"""
import argparse
import csv
import json
import os
import random
import sys
from typing import Dict, List, NamedTuple, Tuple

from PIL import Image, ImageDraw

BUCKET = 'gs://demo-bucket/images/'
LABELS = ('circle', 'square', 'triangle')
COLOURS = {'circle': (220, 60, 60), 'square': (60, 120, 220), 'triangle': (40, 170, 90)}
WIDTH, HEIGHT = 480, 320
# (run folder, how far boxes stray as a share of their side, share of objects missed, false positives
# per image, share of labels confused): two versions of one model, the second weaker.
RUNS = (('prediction-shapes_v2-2026-11-30T10:00:00.000Z', 0.04, 0.05, 0.2, 0.0),
        ('prediction-shapes_v1-2026-11-01T10:00:00.000Z', 0.12, 0.25, 1.0, 0.1))


class Shape(NamedTuple):
    label: str
    box: Tuple[float, float, float, float]  # normalized x_min, y_min, x_max, y_max


def make_shapes(rng: random.Random) -> List[Shape]:
    shapes = []
    for _ in range(rng.randint(1, 4)):
        side = rng.uniform(0.12, 0.35)
        x, y = rng.uniform(0, 1 - side), rng.uniform(0, 1 - side * WIDTH / HEIGHT)
        shapes.append(Shape(rng.choice(LABELS), (x, y, x + side, min(1.0, y + side * WIDTH / HEIGHT))))
    return shapes


def draw(shapes: List[Shape]) -> Image.Image:
    image = Image.new('RGB', (WIDTH, HEIGHT), (245, 242, 235))
    pen = ImageDraw.Draw(image)
    for shape in shapes:
        x0, y0, x1, y1 = shape.box[0] * WIDTH, shape.box[1] * HEIGHT, shape.box[2] * WIDTH, shape.box[3] * HEIGHT
        colour = COLOURS[shape.label]
        if shape.label == 'circle':
            pen.ellipse((x0, y0, x1, y1), fill=colour)
        elif shape.label == 'square':
            pen.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            pen.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)
    return image


def predict(shapes: List[Shape], rng: random.Random, stray: float, miss: float, false_positives: float,
            confuse: float) -> Dict:
    """One Vertex AI prediction line's `prediction` for an image: its shapes found with some error."""
    found = []
    for shape in shapes:
        if rng.random() < miss:
            continue
        width, height = shape.box[2] - shape.box[0], shape.box[3] - shape.box[1]
        box = [min(1.0, max(0.0, value + rng.gauss(0, stray) * side))
               for value, side in zip(shape.box, (width, height, width, height))]
        label = rng.choice(LABELS) if rng.random() < confuse else shape.label
        found.append((label, round(rng.uniform(0.55, 0.99), 3), box))
    while rng.random() < false_positives / (1 + false_positives):
        x, y = rng.uniform(0, 0.8), rng.uniform(0, 0.8)
        found.append((rng.choice(LABELS), round(rng.uniform(0.05, 0.6), 3), [x, y, x + 0.15, y + 0.2]))
    found.sort(key=lambda item: -item[1])
    return {'ids': [str(LABELS.index(label) + 1) for label, _, _ in found],
            'displayNames': [label for label, _, _ in found], 'confidences': [score for _, score, _ in found],
            'bboxes': [[round(b[0], 6), round(b[2], 6), round(b[1], 6), round(b[3], 6)] for _, _, b in found]}


def write_demo(folder: str, images: int = 30, seed: int = 7) -> None:
    rng = random.Random(seed)
    scenes = [make_shapes(rng) for _ in range(images)]
    names = [f'shapes_{index:03d}.jpg' for index in range(images)]
    for sub in ('images', 'ground_truth', *(f'input/{run[0]}' for run in RUNS)):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    for name, shapes in zip(names, scenes):
        draw(shapes).save(os.path.join(folder, 'images', name), quality=90)
    with open(os.path.join(folder, 'image_sizes.csv'), 'w', newline='') as handle:
        csv.writer(handle).writerows([('image_uri', 'width', 'height')]
                                     + [(BUCKET + name, WIDTH, HEIGHT) for name in names])
    write_ground_truth(os.path.join(folder, 'ground_truth'), names, scenes)
    with open(os.path.join(folder, 'image_attributes.csv'), 'w', newline='') as handle:  # what --slice_by reads
        csv.writer(handle).writerows([('image_uri', 'camera', 'shapes')] + [
            (BUCKET + name, f'cam-{index % 3 + 1}', len(shapes))
            for index, (name, shapes) in enumerate(zip(names, scenes))])
    for run, stray, miss, false_positives, confuse in RUNS:
        run_rng = random.Random(f'{seed}-{run}')
        with open(os.path.join(folder, 'input', run, 'predictions_00001.jsonl'), 'w') as handle:
            for name, shapes in zip(names, scenes):
                prediction = predict(shapes, run_rng, stray, miss, false_positives, confuse)
                handle.write(json.dumps({'instance': {'content': BUCKET + name, 'mimeType': 'image/jpeg'},
                                         'prediction': prediction}) + '\n')


def write_ground_truth(folder: str, names: List[str], scenes: List[List[Shape]]) -> None:
    """The same boxes as Vertex AI import JSONL, AutoML Vision CSV and COCO (file names under BUCKET)."""
    with open(os.path.join(folder, 'vertex_import.jsonl'), 'w') as handle:
        for name, shapes in zip(names, scenes):
            handle.write(json.dumps({'imageGcsUri': BUCKET + name, 'boundingBoxAnnotations': [
                {'displayName': s.label, 'xMin': s.box[0], 'xMax': s.box[2], 'yMin': s.box[1], 'yMax': s.box[3]}
                for s in shapes], 'dataItemResourceLabels': {'aiplatform.googleapis.com/ml_use': 'test'}}) + '\n')
    with open(os.path.join(folder, 'automl.csv'), 'w', newline='') as handle:
        csv.writer(handle).writerows(['TEST', BUCKET + name, s.label, s.box[0], s.box[1], '', '', s.box[2], s.box[3],
                                      '', ''] for name, shapes in zip(names, scenes) for s in shapes)
    categories = {label: index + 1 for index, label in enumerate(LABELS)}
    annotations = [{'id': len(names) * 10 + n, 'image_id': image, 'category_id': categories[s.label],
                    'bbox': [s.box[0] * WIDTH, s.box[1] * HEIGHT, (s.box[2] - s.box[0]) * WIDTH,
                             (s.box[3] - s.box[1]) * HEIGHT], 'iscrowd': 0}
                   for n, (image, s) in enumerate((image, s) for image, shapes in enumerate(scenes) for s in shapes)]
    with open(os.path.join(folder, 'coco.json'), 'w') as handle:
        json.dump({'images': [{'id': image, 'file_name': name, 'width': WIDTH, 'height': HEIGHT}
                              for image, name in enumerate(names)],
                   'annotations': annotations,
                   'categories': [{'id': i, 'name': label} for label, i in categories.items()]}, handle)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('folder', help='where to write the demo (created)')
    parser.add_argument('--images', type=int, default=30)
    parser.add_argument('--seed', type=int, default=7)
    args = parser.parse_args(argv)
    write_demo(args.folder, args.images, args.seed)
    print(f'Demo written to {args.folder}: {args.images} images, ground truth in three formats, '
          f'{len(RUNS)} prediction runs')
    return 0


if __name__ == '__main__':
    sys.exit(main())
