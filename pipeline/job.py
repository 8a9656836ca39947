"""The whole job as one PTransform: shards in, tables, dead letters and the run summary out."""
import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsList, AsSingleton

from pipeline import summary as run_summary
from pipeline.schema import DETECTIONS_SCHEMA, IMAGES_SCHEMA
from pipeline.options import Settings
from pipeline.sinks import WriteDeadLetterFiles, WriteParquetTable
from pipeline.transforms import (METRICS_NAMESPACE, CountDeadLetters, CountDuplicateImageUris,
                                 LoadManifest, MergeCountsFn, ParsePredictions, ReadShards)


class PredictionsToTables(beam.PTransform):
    """Reads every shard matched by `pattern`; writes detections, images, dead letters and
    summary.json; outputs the summary dict (one element)."""

    def __init__(self, settings: Settings, pattern: str):
        super().__init__()
        self._settings = settings
        self._pattern = pattern

    def expand(self, pbegin):
        settings = self._settings
        read = pbegin | 'ReadShards' >> ReadShards(self._pattern)
        manifest = pbegin | 'ImageSizesManifest' >> LoadManifest(settings.image_sizes)
        parsed = read['batches'] | 'ParsePredictions' >> ParsePredictions(settings, manifest)

        dead = (read['dead_letters'], parsed['dead_letters']) | 'AllDeadLetters' >> beam.Flatten()
        written = {
            'detections': parsed['detections'] | 'WriteDetections' >> WriteParquetTable(
                settings.output, 'detections', DETECTIONS_SCHEMA),
            'images': parsed['images'] | 'WriteImages' >> WriteParquetTable(
                settings.output, 'images', IMAGES_SCHEMA),
            'dead_letters': dead | 'WriteDeadLetters' >> WriteDeadLetterFiles(settings.dead_letter),
        }

        counts = (
            (read['counts'], parsed['counts'], dead | 'CountDeadLetters' >> CountDeadLetters())
            | 'AllCounts' >> beam.Flatten()
            | 'SumCounts' >> beam.CombineGlobally(MergeCountsFn()))
        duplicates = parsed['image_uris'] | 'DuplicateImageUris' >> CountDuplicateImageUris()
        pattern = self._pattern
        summary_path = run_summary.summary_path(settings)

        def summarize(_, counts, duplicates, detections, images, dead_letter_files):
            summary = run_summary.build_summary(
                counts, duplicates, settings, pattern,
                {'detections': detections, 'images': images, 'dead_letters': dead_letter_files})
            run_summary.write_summary(summary, summary_path)
            Metrics.counter(METRICS_NAMESPACE, 'duplicate_image_uris').inc(duplicates)
            return summary

        # The summary waits on every write (side inputs), so it is the run's last file: a run killed
        # before the end leaves no summary.
        return (pbegin
                | 'SummaryTrigger' >> beam.Create([None])
                | 'WriteSummary' >> beam.Map(
                    summarize, AsSingleton(counts), AsSingleton(duplicates),
                    AsList(written['detections']), AsList(written['images']),
                    AsList(written['dead_letters'])))
