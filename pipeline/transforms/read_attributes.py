"""Reading image attributes (--image_attributes), a step of its own beside the ground truth's: each
file is a work item; its usable rows leave in one element per bucket for the evaluation's join, each
unusable row is an invalid_attribute dead letter, and what choosing each attribute's slices needs
(numeric or not, distinct numbers, quantiles) is profiled per file and merged per attribute. Rows
read == rows used + dead letters."""
import collections
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import apache_beam as beam
import numpy as np
from apache_beam.transforms.stats import ApproximateQuantilesCombineFn

from pipeline.core import counts as names
from pipeline.core import dead_letters
from pipeline.core.columns import bucket_of
from pipeline.core.counts import Counts
from pipeline.core.dead_letters import INVALID_ATTRIBUTE
from pipeline.core.evaluation import ATTRIBUTED, packed
from pipeline.core.image_attributes import (
    AttributeProfile,
    AttributeRejection,
    BucketAttributes,
    SliceRule,
    most_frequent,
    numeric_value,
    value_name,
)
from pipeline.io.attribute_files import read_attribute_file
from pipeline.io.spill import SpillWriter
from pipeline.transforms.count import counted

# Rows gathered before they leave in one element per bucket.
ROWS_PER_FLUSH = 50_000
# Distinct numbers an attribute's profile keeps before it stops counting them (then it is binned).
MAX_DISTINCT_NUMBERS = 64
# Distinct text values whose rows a profile counts; a value first seen past them is not counted (the
# most frequent are kept as slices: image_attributes.MAX_SLICE_VALUES). Bounds a profile's memory.
MAX_COUNTED_VALUES = 20_000


class AttributesRead(NamedTuple):
    parts: beam.PCollection  # (bucket, (ATTRIBUTED, None, payload of a packed BucketAttributes))
    rules: beam.PCollection  # a SliceRule per sliced attribute that any row gives a value
    dead_letters: beam.PCollection  # an invalid_attribute record per row that cannot be used
    counts: beam.PCollection


class ReadImageAttributes(beam.PTransform):
    """Attribute files ((path, format) pairs) -> AttributesRead: rows keyed by `key`, the values of
    the attributes `sliced`, whose numbers fall in `bins` (a count of quantile bins, or edges)."""

    def __init__(self, files: Sequence[Tuple[str, str]], key: str, sliced: Sequence[str],
                 bins: Union[int, Tuple[float, ...]], buckets: int, spill_folder: Optional[str] = None):
        super().__init__()
        self._files = list(files)
        self._sliced = tuple(sliced)
        self._bins = bins
        self._read = ReadAttributeFileFn(key, self._sliced, buckets, self._quantiles(), spill_folder)

    def _quantiles(self) -> int:
        return self._bins + 1 if isinstance(self._bins, int) else 2

    def expand(self, pbegin):
        read = (
            pbegin
            | 'AttributeFiles' >> beam.Create(self._files, reshuffle=False)  # spread just below
            | 'SpreadAttributeFiles' >> beam.Reshuffle()
            | 'ReadAttributeFiles' >> beam.ParDo(self._read).with_outputs(
                'evaluation_parts', 'profiles', 'dead_letters', 'counts', main='unused',
            ).with_exception_handling(main_tag='unused', dead_letter_tag='failed_files'))
        failed = read.failed_files | 'FailedFilesToDeadLetters' >> beam.Map(_failed_file_to_dead_letter)
        bins = self._bins
        rules = (read.profiles
                 | 'ProfilePerAttribute' >> beam.CombinePerKey(MergeProfilesFn(self._quantiles()))
                 | 'SliceRules' >> beam.MapTuple(lambda attribute, profile: SliceRule.of_profile(attribute, profile,
                                                                                                  bins)))
        dead = (read.dead_letters, failed) | 'FlattenAttributeDeadLetters' >> beam.Flatten()
        return AttributesRead(read.evaluation_parts, rules, dead, read.counts)


def _failed_file_to_dead_letter(failure) -> dict:
    (path, _), (exc_type, exc_repr, _) = failure
    return dead_letters.make_dead_letter(INVALID_ATTRIBUTE, path, f'unexpected error while reading this image '
                                                                   f'attribute file: {exc_type.__name__}: {exc_repr}')


class ReadAttributeFileFn(beam.DoFn):
    """(path, format) -> its tagged outputs (read_attribute_rows); on a local run the parts wait in
    the run's spill folder (io.spill), one file per bundle."""

    def __init__(self, key: str, sliced: Sequence[str], buckets: int, quantiles: int,
                 spill_folder: Optional[str] = None):
        self._key = key
        self._sliced = tuple(sliced)
        self._buckets = buckets
        self._quantiles = quantiles
        self._spill_folder = spill_folder
        self._spill = SpillWriter(spill_folder)

    def start_bundle(self):
        self._spill = SpillWriter(self._spill_folder)

    def finish_bundle(self):
        self._spill.close()

    def process(self, work: Tuple[str, str]):
        path, fmt = work
        yield from read_attribute_rows(path, fmt, self._key, self._sliced, self._buckets, self._quantiles,
                                       self._spill.put)


def read_attribute_rows(path: str, fmt: str, key: str, sliced: Sequence[str], buckets: int, quantiles: int,
                        payload=lambda part: part) -> Iterator:
    """The tagged outputs of one file: 'evaluation_parts' (bucket, (ATTRIBUTED, None, payload of a
    packed BucketAttributes)), 'profiles' (attribute, a profile accumulator of the file's values),
    'dead_letters' and 'counts'."""
    tally = collections.Counter({names.IMAGE_ATTRIBUTE_ROWS_READ: 0, names.IMAGE_ATTRIBUTE_ROWS_USED: 0})
    profiles = MergeProfilesFn(quantiles)
    accumulators = {name: profiles.create_accumulator() for name in sliced}
    pending: Dict[int, List[Tuple[int, str, tuple]]] = collections.defaultdict(list)
    held = 0
    for number, written, unit in read_attribute_file(path, fmt, key, sliced):
        tally[names.IMAGE_ATTRIBUTE_ROWS_READ] += 1
        if isinstance(unit, AttributeRejection):
            yield beam.pvalue.TaggedOutput('dead_letters', dead_letters.make_dead_letter(
                INVALID_ATTRIBUTE, path, f'line {number}: {unit.message}', written, unit.image_uri))
            continue
        tally[names.IMAGE_ATTRIBUTE_ROWS_USED] += 1
        for name, value in zip(sliced, unit.values):
            accumulators[name] = profiles.add_value(accumulators[name], value)
        pending[bucket_of(unit.image_uri, buckets)].append((number, unit.image_uri, unit.values))
        held += 1
        if held >= ROWS_PER_FLUSH:
            yield from _flushed(path, pending, payload)
            pending, held = collections.defaultdict(list), 0
    yield from _flushed(path, pending, payload)
    for name, accumulator in accumulators.items():
        yield beam.pvalue.TaggedOutput('profiles', (name, accumulator))
    yield counted(Counts(tally))


def _flushed(path: str, pending: Dict[int, List[Tuple[int, str, tuple]]], payload) -> Iterator:
    for bucket, rows in pending.items():
        part = BucketAttributes(path, np.array([row[0] for row in rows], dtype=np.int64), [row[1] for row in rows],
                                [row[2] for row in rows])
        yield beam.pvalue.TaggedOutput('evaluation_parts', (bucket, (ATTRIBUTED, None, payload(packed(part)))))


class MergeProfilesFn(beam.CombineFn):
    """Profile accumulators of one attribute (one per file) -> its AttributeProfile. An accumulator:
    (values given, all of them numbers, distinct numbers or None past MAX_DISTINCT_NUMBERS, Beam's
    quantile state of the numbers, the rows of each text value up to MAX_COUNTED_VALUES values)."""

    def __init__(self, quantiles: int):
        self._quantiles = ApproximateQuantilesCombineFn.create(max(quantiles, 2))

    def create_accumulator(self):
        return 0, True, frozenset(), self._quantiles.create_accumulator(), {}

    def add_value(self, accumulator, value):
        """One value of the attribute (None: not given, which says nothing of its kind)."""
        if value is None:
            return accumulator
        given, numeric, distinct, state, texts = accumulator
        name = value_name(value)
        if name in texts or len(texts) < MAX_COUNTED_VALUES:
            texts[name] = texts.get(name, 0) + 1
        number = numeric_value(value) if numeric else None
        if number is None:
            return given + 1, False, None, state, texts
        if distinct is not None and number not in distinct:
            distinct = distinct | {number} if len(distinct) < MAX_DISTINCT_NUMBERS else None
        return given + 1, numeric, distinct, self._quantiles.add_input(state, number), texts

    def add_input(self, accumulator, element):
        return self.merge_accumulators([accumulator, element])

    def merge_accumulators(self, accumulators):
        accumulators = list(accumulators)
        numeric = all(accumulator[1] for accumulator in accumulators)
        distincts = [accumulator[2] for accumulator in accumulators]
        distinct = None if not numeric or any(d is None for d in distincts) else frozenset().union(*distincts)
        if distinct is not None and len(distinct) > MAX_DISTINCT_NUMBERS:
            distinct = None
        texts: Dict[str, int] = {}
        for accumulator in accumulators:
            for name, rows in accumulator[4].items():
                if name in texts or len(texts) < MAX_COUNTED_VALUES:
                    texts[name] = texts.get(name, 0) + rows
        return (sum(accumulator[0] for accumulator in accumulators), numeric, distinct,
                self._quantiles.merge_accumulators([accumulator[3] for accumulator in accumulators]), texts)

    def extract_output(self, accumulator):
        given, numeric, distinct, state, texts = accumulator
        numeric = numeric and given > 0
        return AttributeProfile(numeric, distinct if numeric else None,
                                tuple(self._quantiles.extract_output(state)) if numeric else (),
                                None if numeric else most_frequent(texts))
