"""The alternatives the pipeline is measured against, each doing the same job as the pipeline's core
(read every result shard, parse, threshold, pixel boxes, write Parquet), and Beam's own floor.

python bench/contenders.py baseline|duckdb|polars|beam_floor legacy|vertex INPUT_DIR OUTPUT_DIR THRESHOLD WIDTH HEIGHT

DuckDB and Polars run in the anchors' own environment (bench/anchors-requirements.txt): their newest
versions, whatever the project pins for its tests.
"""
import glob
import os
import sys

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

RESULT_SHARDS = {'legacy': 'image_object_detection_*.jsonl', 'vertex': 'predictions_*.jsonl'}
STRING_COLUMNS = ('image_uri', 'label', 'label_id')


def baseline(fmt, input_dir, output_dir, threshold, width, height):
    """A plain single-process Python loop with orjson and pyarrow: what a user writes for the job."""
    columns = {name: [] for name in ('image_uri', 'label', 'label_id', 'score', 'x_min', 'y_min',
                                     'x_max', 'y_max')}
    rows = legacy_rows if fmt == 'legacy' else vertex_rows
    for path in sorted(glob.glob(os.path.join(input_dir, '**', RESULT_SHARDS[fmt]), recursive=True)):
        with open(path, 'rb') as handle:
            for line in handle:
                if line.strip():
                    for row in rows(orjson.loads(line), threshold):
                        for name, value in zip(columns, row):
                            columns[name].append(value)
    table = pa.table({name: pa.array(values, type=pa.string() if name in STRING_COLUMNS else pa.float64())
                      for name, values in columns.items()})
    for name, extent in (('x_min', width), ('y_min', height), ('x_max', width), ('y_max', height)):
        table = table.append_column(f'px_{name}', pc.multiply(table[name], float(extent)))
    os.makedirs(output_dir, exist_ok=True)
    pq.write_table(table, os.path.join(output_dir, 'detections.parquet'))


def legacy_rows(record, threshold):
    uri = record['ID']
    for ann in record.get('annotations') or ():
        det = ann['image_object_detection']
        score = det['score']
        if score >= threshold:
            vertices = det['bounding_box']['normalized_vertices']
            xs = [v.get('x', 0.0) for v in vertices]
            ys = [v.get('y', 0.0) for v in vertices]
            yield (uri, ann.get('display_name'), ann.get('annotation_spec_id'), score,
                   min(xs), min(ys), max(xs), max(ys))


def vertex_rows(record, threshold):
    uri = record['instance']['content']
    prediction = record['prediction']
    for name, label_id, score, (x1, x2, y1, y2) in zip(prediction['displayNames'], prediction['ids'],
                                                     prediction['confidences'], prediction['bboxes']):
        if score >= threshold:
            yield uri, name, label_id, score, min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


# The fastest of the formulations tried (docs/benchmark.md lists them with their times): unnest in the
# select list (a lateral join, `FROM t, UNNEST(annotations)`, takes about 3x as long), over a list
# already filtered by score.
DUCKDB_SQL = {'legacy': """
COPY (
  SELECT image_uri, label, label_id, score, x_min, y_min, x_max, y_max,
         x_min * {width} AS px_x_min, y_min * {height} AS px_y_min,
         x_max * {width} AS px_x_max, y_max * {height} AS px_y_max
  FROM (
    SELECT ID AS image_uri, a.display_name AS label, a.annotation_spec_id AS label_id,
           a.image_object_detection.score AS score,
           least(coalesce(v[1].x, 0), coalesce(v[2].x, 0)) AS x_min,
           least(coalesce(v[1].y, 0), coalesce(v[2].y, 0)) AS y_min,
           greatest(coalesce(v[1].x, 0), coalesce(v[2].x, 0)) AS x_max,
           greatest(coalesce(v[1].y, 0), coalesce(v[2].y, 0)) AS y_max
    FROM (
      SELECT ID, a, a.image_object_detection.bounding_box.normalized_vertices AS v
      FROM (
        SELECT ID, unnest(list_filter(annotations, lambda x: x.image_object_detection.score >= {threshold})) AS a
        FROM read_json('{pattern}', format = 'newline_delimited', columns = {{
               ID: 'VARCHAR',
               annotations: 'STRUCT(annotation_spec_id VARCHAR, display_name VARCHAR,
                 image_object_detection STRUCT(bounding_box STRUCT(normalized_vertices
                 STRUCT(x DOUBLE, y DOUBLE)[]), score DOUBLE))[]'}}))))
) TO '{output}' (FORMAT parquet)
""", 'vertex': """
COPY (
  SELECT image_uri, label, label_id, score,
         least(b[1], b[2]) AS x_min, least(b[3], b[4]) AS y_min,
         greatest(b[1], b[2]) AS x_max, greatest(b[3], b[4]) AS y_max,
         x_min * {width} AS px_x_min, y_min * {height} AS px_y_min,
         x_max * {width} AS px_x_max, y_max * {height} AS px_y_max
  FROM (
    SELECT instance.content AS image_uri, unnest(prediction.displayNames) AS label,
           unnest(prediction.ids) AS label_id, unnest(prediction.confidences) AS score,
           unnest(prediction.bboxes) AS b
    FROM read_json('{pattern}', format = 'newline_delimited', columns = {{
           instance: 'STRUCT(content VARCHAR)',
           prediction: 'STRUCT(ids VARCHAR[], displayNames VARCHAR[], confidences DOUBLE[],
                               bboxes DOUBLE[][])'}}))
  WHERE score >= {threshold}
) TO '{output}' (FORMAT parquet)
"""}


def duckdb_job(fmt, input_dir, output_dir, threshold, width, height):
    """DuckDB doing the same job in one SQL statement, on 2 threads."""
    import duckdb
    os.makedirs(output_dir, exist_ok=True)
    connection = duckdb.connect()
    connection.execute('SET threads = 2')
    connection.execute(DUCKDB_SQL[fmt].format(
        pattern=os.path.join(input_dir, '**', RESULT_SHARDS[fmt]),
        output=os.path.join(output_dir, 'detections.parquet'), threshold=threshold,
        width=width, height=height))


def polars_job(fmt, input_dir, output_dir, threshold, width, height):
    """Polars doing the same job lazily (an explicit schema, explode, filter, sink), on 2 threads
    (set here, before Polars starts its pool)."""
    os.environ['POLARS_MAX_THREADS'] = '2'
    import polars as pl
    os.makedirs(output_dir, exist_ok=True)
    paths = sorted(glob.glob(os.path.join(input_dir, '**', RESULT_SHARDS[fmt]), recursive=True))
    frame = (_polars_legacy if fmt == 'legacy' else _polars_vertex)(pl, paths, threshold)
    frame.with_columns(
        (pl.col('x_min') * width).alias('px_x_min'), (pl.col('y_min') * height).alias('px_y_min'),
        (pl.col('x_max') * width).alias('px_x_max'), (pl.col('y_max') * height).alias('px_y_max'),
    ).sink_parquet(os.path.join(output_dir, 'detections.parquet'))


def _polars_legacy(pl, paths, threshold):
    vertex = pl.Struct({'x': pl.Float64, 'y': pl.Float64})
    annotation = pl.Struct({'annotation_spec_id': pl.String, 'display_name': pl.String,
                            'image_object_detection': pl.Struct({
                                'bounding_box': pl.Struct({'normalized_vertices': pl.List(vertex)}),
                                'score': pl.Float64})})
    frame = pl.scan_ndjson(paths, schema={'ID': pl.String, 'annotations': pl.List(annotation)})
    detection = pl.col('a').struct.field('image_object_detection')
    vertices = detection.struct.field('bounding_box').struct.field('normalized_vertices')
    first, second = vertices.list.get(0), vertices.list.get(1)

    def coordinate(point, axis):
        return point.struct.field(axis).fill_null(0.0)
    return (frame
            .select(pl.col('ID').alias('image_uri'), pl.col('annotations').list.filter(
                pl.element().struct.field('image_object_detection').struct.field('score') >= threshold).alias('a'))
            .explode('a')
            .filter(pl.col('a').is_not_null())
            .select('image_uri', pl.col('a').struct.field('display_name').alias('label'),
                    pl.col('a').struct.field('annotation_spec_id').alias('label_id'),
                    detection.struct.field('score').alias('score'),
                    pl.min_horizontal(coordinate(first, 'x'), coordinate(second, 'x')).alias('x_min'),
                    pl.min_horizontal(coordinate(first, 'y'), coordinate(second, 'y')).alias('y_min'),
                    pl.max_horizontal(coordinate(first, 'x'), coordinate(second, 'x')).alias('x_max'),
                    pl.max_horizontal(coordinate(first, 'y'), coordinate(second, 'y')).alias('y_max')))


def _polars_vertex(pl, paths, threshold):
    schema = {'instance': pl.Struct({'content': pl.String}),
              'prediction': pl.Struct({'ids': pl.List(pl.String), 'displayNames': pl.List(pl.String),
                                       'confidences': pl.List(pl.Float64), 'bboxes': pl.List(pl.List(pl.Float64))})}
    box = pl.col('bboxes')
    return (pl.scan_ndjson(paths, schema=schema)
            .select(pl.col('instance').struct.field('content').alias('image_uri'),
                    pl.col('prediction').struct.field('displayNames').alias('label'),
                    pl.col('prediction').struct.field('ids').alias('label_id'),
                    pl.col('prediction').struct.field('confidences').alias('score'),
                    pl.col('prediction').struct.field('bboxes'))
            .explode(['label', 'label_id', 'score', 'bboxes'])
            .filter(pl.col('score') >= threshold)
            .select('image_uri', 'label', 'label_id', 'score',
                    pl.min_horizontal(box.list.get(0), box.list.get(1)).alias('x_min'),
                    pl.min_horizontal(box.list.get(2), box.list.get(3)).alias('y_min'),
                    pl.max_horizontal(box.list.get(0), box.list.get(1)).alias('x_max'),
                    pl.max_horizontal(box.list.get(2), box.list.get(3)).alias('y_max')))


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
    kind, fmt, input_dir, output_dir, threshold, width, height = sys.argv[1:8]
    {'baseline': baseline, 'duckdb': duckdb_job, 'polars': polars_job, 'beam_floor': beam_floor}[kind](
        fmt, input_dir, output_dir, float(threshold), int(width), int(height))
