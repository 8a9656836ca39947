"""What a usable result line is, declared as types: msgspec structs for both formats of
../shared/formats.md, decoded and validated in C in one pass.

These are the common, valid lines. A line they do not describe is not necessarily invalid (an error
line, a camelCase key beside a snake_case one, a coordinate written as a string...): the full
validator of `formats` then decides, and says precisely why when it rejects it.
"""
from typing import Annotated, Any, List, Optional, Union

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from pipeline.core.formats import COORDINATE_TOLERANCE

# A score is a number in [0, 1]: an integer is a number, a boolean or a string is not.
Score = Annotated[float, Meta(ge=0.0, le=1.0)]
# A normalized coordinate; up to COORDINATE_TOLERANCE outside [0, 1] is float noise, clamped later.
Coordinate = Annotated[float, Meta(ge=-COORDINATE_TOLERANCE, le=1.0 + COORDINATE_TOLERANCE)]
ImageUri = Annotated[str, Meta(min_length=1)]
# int64 label ids are documented as numbers and written as strings; an integer beyond int64 is left
# to the full validator (which keeps it up to 2^64 and explains why it cannot beyond).
LabelId = Union[str, Annotated[int, Meta(ge=-(2 ** 63), le=2 ** 63 - 1)]]
# Present (even as null) means "not a plain result line": the full validator decides.
Absent = Union[Any, UnsetType]


class _Record(Struct, gc=False):
    """Structs of decoded lines, kept out of the garbage collector's way (they hold no cycles)."""


# -- Legacy AutoML Vision (`ID` + `annotations`), snake_case as batchPredict writes it ---------------

class NormalizedVertex(_Record):
    """proto3 JSON drops zeros: `{"y": 0.17}` is x = 0, `{}` is (0, 0)."""
    x: Coordinate = 0.0
    y: Coordinate = 0.0


class BoundingBox(_Record):
    normalized_vertices: Annotated[List[NormalizedVertex], Meta(min_length=2)]


class ImageObjectDetection(_Record):
    score: Score
    bounding_box: BoundingBox


class Annotation(_Record):
    display_name: str
    annotation_spec_id: LabelId
    image_object_detection: ImageObjectDetection


class LegacyLine(_Record):
    ID: ImageUri
    annotations: Optional[List[Annotation]] = None  # absent or null: an image without detections
    error: Absent = UNSET
    status: Absent = UNSET
    instance: Absent = UNSET
    prediction: Absent = UNSET


# -- The same in camelCase, as the online predict response writes it (people save those too) --------

class CamelBoundingBox(_Record, rename='camel'):
    normalized_vertices: Annotated[List[NormalizedVertex], Meta(min_length=2)]


class CamelImageObjectDetection(_Record, rename='camel'):
    score: Score
    bounding_box: CamelBoundingBox


class CamelAnnotation(_Record, rename='camel'):
    display_name: str
    annotation_spec_id: LabelId
    image_object_detection: CamelImageObjectDetection


class CamelLegacyLine(_Record):
    ID: ImageUri
    annotations: Optional[List[CamelAnnotation]] = None
    error: Absent = UNSET
    status: Absent = UNSET
    instance: Absent = UNSET
    prediction: Absent = UNSET


# The snake_case spellings: the full validator prefers them to camelCase ones, so a camelCase line
# is taken on the typed path only when none of them occurs in it.
SNAKE_CASE_KEYS = (b'display_name', b'annotation_spec_id', b'image_object_detection', b'bounding_box',
                   b'normalized_vertices')


# -- Vertex AI (`instance` + `prediction`, parallel arrays) ------------------------------------------

class Instance(_Record):
    content: ImageUri  # the image identity (mimeType and anything else echoed back is ignored)


class VertexPrediction(_Record):
    confidences: List[Score]
    bboxes: List[Annotated[List[Coordinate], Meta(min_length=4, max_length=4)]]
    ids: Optional[List[Optional[LabelId]]] = None
    displayNames: Optional[List[Optional[str]]] = None
    display_names: Absent = UNSET  # the snake_case spelling: left to the full validator


class VertexLine(_Record):
    instance: Instance
    prediction: VertexPrediction
    ID: Absent = UNSET
    annotations: Absent = UNSET
    error: Absent = UNSET
    status: Absent = UNSET


LEGACY_DECODER = msgspec.json.Decoder(LegacyLine)
CAMEL_LEGACY_DECODER = msgspec.json.Decoder(CamelLegacyLine)
VERTEX_DECODER = msgspec.json.Decoder(VertexLine)
