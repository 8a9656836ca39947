"""The alternatives the pipeline is measured against, each doing the same job as the pipeline's core
(read every result shard, parse, threshold, pixel boxes, write Parquet), and Beam's own floor.

python bench/contenders.py baseline|duckdb|beam_floor INPUT_DIR OUTPUT_DIR THRESHOLD WIDTH HEIGHT
"""
import glob
import os
import sys

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def baseline(input_dir, output_dir, threshold, width, height):
    """A plain single-process Python loop with orjson and pyarrow."""
    columns = {name: [] for name in ('image_uri', 'label', 'label_id', 'score', 'x_min', 'y_min',
                                     'x_max', 'y_max')}
    for path in sorted(glob.glob(os.path.join(input_dir, '**', 'image_object_detection_*.jsonl'),
                                 recursive=True)):
        with open(path, 'rb') as handle:
            for line in handle:
                if not line.strip():
                    continue
                record = orjson.loads(line)
                uri = record['ID']
                for ann in record.get('annotations') or ():
                    det = ann['image_object_detection']
                    score = det['score']
                    if score < threshold:
                        continue
                    vertices = det['bounding_box']['normalized_vertices']
                    xs = [v.get('x', 0.0) for v in vertices]
                    ys = [v.get('y', 0.0) for v in vertices]
                    for name, value in (('image_uri', uri), ('label', ann.get('display_name')),
                                        ('label_id', ann.get('annotation_spec_id')), ('score', score),
                                        ('x_min', min(xs)), ('y_min', min(ys)), ('x_max', max(xs)),
                                        ('y_max', max(ys))):
                        columns[name].append(value)
    table = pa.table({name: pa.array(values, type=pa.string() if name in ('image_uri', 'label', 'label_id')
                                     else pa.float64()) for name, values in columns.items()})
    for name, extent in (('x_min', width), ('y_min', height), ('x_max', width), ('y_max', height)):
        table = table.append_column(f'px_{name}', pc.multiply(table[name], float(extent)))
    os.makedirs(output_dir, exist_ok=True)
    pq.write_table(table, os.path.join(output_dir, 'detections.parquet'))


DUCKDB_SQL = """
COPY (
  SELECT ID AS image_uri, a.display_name AS label, a.annotation_spec_id AS label_id,
         a.image_object_detection.score AS score,
         least(coalesce(v[1].x, 0), coalesce(v[2].x, 0)) AS x_min,
         least(coalesce(v[1].y, 0), coalesce(v[2].y, 0)) AS y_min,
         greatest(coalesce(v[1].x, 0), coalesce(v[2].x, 0)) AS x_max,
         greatest(coalesce(v[1].y, 0), coalesce(v[2].y, 0)) AS y_max,
         x_min * {width} AS px_x_min, y_min * {height} AS px_y_min,
         x_max * {width} AS px_x_max, y_max * {height} AS px_y_max
  FROM (
    SELECT ID, a, a.image_object_detection.bounding_box.normalized_vertices AS v
    FROM read_json('{pattern}', format = 'newline_delimited', columns = {{
           ID: 'VARCHAR',
           annotations: 'STRUCT(annotation_spec_id VARCHAR, display_name VARCHAR,
             image_object_detection STRUCT(bounding_box STRUCT(normalized_vertices
             STRUCT(x DOUBLE, y DOUBLE)[]), score DOUBLE))[]'}}),
         UNNEST(annotations) AS t(a)
  )
  WHERE a.image_object_detection.score >= {threshold}
) TO '{output}' (FORMAT parquet)
"""


def duckdb_job(input_dir, output_dir, threshold, width, height):
    """DuckDB doing the same job in one SQL statement, on 2 threads."""
    import duckdb
    os.makedirs(output_dir, exist_ok=True)
    connection = duckdb.connect()
    connection.execute('SET threads = 2')
    connection.execute(DUCKDB_SQL.format(
        pattern=os.path.join(input_dir, '**', 'image_object_detection_*.jsonl'),
        output=os.path.join(output_dir, 'detections.parquet'), threshold=threshold,
        width=width, height=height))


# The 2-process runner of the pipeline's contenders, which the floor below runs on too.
TWO_PROCESS_FLAGS = ['--direct_num_workers=2', '--direct_running_mode=multi_processing']


def beam_floor(*_):
    """A pipeline that does no work (three numbers through a Reshuffle) on the runner the pipeline's
    2-process contender uses: what starting, running and stopping Beam costs before any data."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    options = PipelineOptions(TWO_PROCESS_FLAGS)
    with beam.Pipeline('FnApiRunner', options=options) as pipeline:
        _ = pipeline | beam.Create([1, 2, 3]) | beam.Reshuffle() | beam.Map(lambda x: x)


if __name__ == '__main__':
    kind, input_dir, output_dir, threshold, width, height = sys.argv[1:7]
    {'baseline': baseline, 'duckdb': duckdb_job, 'beam_floor': beam_floor}[kind](
        input_dir, output_dir, float(threshold), int(width), int(height))
