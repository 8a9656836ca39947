"""Draws the bundled sample images (run once; the JPEGs are committed): a table-top scene per image,
with food-coloured shapes where the sample's detections put their boxes, so the report's gallery has
something plausible to show. `python sample/make_images.py`."""
import gzip
import json
import pathlib
import random

from PIL import Image, ImageDraw, ImageFilter

HERE = pathlib.Path(__file__).resolve().parent
SIZE = (1024, 683)
COLOURS = {'Salad': (70, 150, 60), 'Tomato': (210, 40, 35), 'Baked Goods': (190, 130, 60),
           'Cheese': (240, 205, 80), 'Seafood': (240, 150, 120)}
MIRRORS = {'gs://migration-ucaip-trainingaip-20210301091741/openimage/': HERE / 'images' / 'legacy',
           'gs://migration-ucaip-trainingaip-20210226015226/': HERE / 'images' / 'vertex'}


def first_lines():
    """image URI -> [(label, x_min, y_min, x_max, y_max)] from the first line naming it."""
    boxes = {}
    for path in sorted((HERE / 'input').rglob('*.jsonl*')):
        if path.name.startswith('errors_'):
            continue
        data = gzip.decompress(path.read_bytes()) if path.suffix == '.gz' else path.read_bytes()
        for line in data.decode().splitlines():
            record = json.loads(line)
            if 'ID' in record:
                items = []
                for a in record['annotations']:
                    vs = a['image_object_detection']['bounding_box']['normalized_vertices']
                    xs, ys = [v.get('x', 0) for v in vs], [v.get('y', 0) for v in vs]
                    items.append((a['display_name'], min(xs), min(ys), max(xs), max(ys)))
                boxes.setdefault(record['ID'], items)
            else:
                p = record['prediction']
                boxes.setdefault(record['instance']['content'], [
                    (n, b[0], b[2], b[1], b[3]) for n, b in zip(p['displayNames'], p['bboxes'])])
    return boxes


def draw(items, seed):
    rng = random.Random(seed)
    image = Image.new('RGB', SIZE, (150, 110, 80))  # a wooden table
    pen = ImageDraw.Draw(image)
    for y in range(0, SIZE[1], 9):
        pen.line([(0, y), (SIZE[0], y + rng.randint(-6, 6))], fill=(140 + rng.randint(-8, 8), 100, 70))
    pen.ellipse([60, 40, SIZE[0] - 60, SIZE[1] - 30], fill=(235, 235, 228), outline=(200, 200, 195), width=6)
    for label, x1, y1, x2, y2 in sorted(items, key=lambda item: -(item[3] - item[1]) * (item[4] - item[2])):
        box = [x1 * SIZE[0], y1 * SIZE[1], x2 * SIZE[0], y2 * SIZE[1]]
        colour = COLOURS.get(label, (120, 120, 120))
        for _ in range(40):
            cx, cy = rng.uniform(box[0], box[2]), rng.uniform(box[1], box[3])
            r = rng.uniform(8, 30)
            shade = tuple(max(0, min(255, c + rng.randint(-30, 30))) for c in colour)
            pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=shade)
    return image.filter(ImageFilter.GaussianBlur(1.2))


def main():
    for seed, (uri, items) in enumerate(sorted(first_lines().items())):
        for prefix, folder in MIRRORS.items():
            if uri.startswith(prefix):
                target = folder / uri[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                draw(items, seed).save(target, 'JPEG', quality=70)
                print(target)


if __name__ == '__main__':
    main()
