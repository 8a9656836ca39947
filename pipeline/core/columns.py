"""Columns of variable-length groups (the boxes of lines, the detections of images): labels as codes,
ranges of rows, groups split by a key, and texts as fixed-size fingerprints, in numpy, without a Python
object per row."""
import hashlib
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

SMALL_LABEL_LISTS = 2000  # labels: below this, a dict codes them faster than Arrow (its cost per call)


def label_codes(labels: Sequence[Optional[str]]) -> Tuple[List[str], np.ndarray]:
    """(the distinct labels, in order of first appearance; the position of each label among them, -1
    for None): an element of boxes carries each label's text once, not once per box."""
    if len(labels) < SMALL_LABEL_LISTS:
        index: dict = {None: -1}
        codes = np.fromiter((index.setdefault(label, len(index) - 1) for label in labels), dtype=np.int32,
                            count=len(labels))
        return [label for label in index if label is not None], codes
    encoded = pa.array(labels, type=pa.string()).dictionary_encode()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    return encoded.dictionary.to_pylist(), codes


def recoded(codes: np.ndarray, names: Sequence[str], index: dict) -> np.ndarray:
    """Codes into `names` as codes into the vocabulary `index` (name -> code); -1 stays -1."""
    mapping = np.array([index[name] for name in names] + [-1], dtype=np.int64)
    return mapping[codes]  # -1 takes the last entry


def compacted(names: Sequence[str], codes: np.ndarray) -> Tuple[List[str], np.ndarray]:
    """Only the names the codes use (in their order), and the codes into them; -1 stays -1."""
    used = np.unique(codes[codes >= 0])
    mapping = np.full(len(names) + 1, -1, dtype=np.int32)  # -1 takes the last entry
    mapping[used] = np.arange(len(used))
    return [names[code] for code in used.tolist()], mapping[codes]


def joined_codes(parts: Sequence[Tuple[Sequence[str], np.ndarray]]) -> Tuple[List[str], np.ndarray]:
    """Codes into each part's own names, (names, codes) per part, as codes into one vocabulary: the
    names in order of first appearance, and the codes of the parts one after the other."""
    index = {name: code for code, name in enumerate(dict.fromkeys(name for names, _ in parts for name in names))}
    codes = [recoded(codes, names, index) for names, codes in parts]
    return list(index), np.concatenate([np.zeros(0, dtype=np.int64)] + codes).astype(np.int32)


def concat_ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The positions of the ranges [start, end), one after the other."""
    lengths = ends - starts
    if not len(lengths):
        return np.zeros(0, dtype=np.int64)
    return np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum()))


def rows_of(offsets: np.ndarray, lines: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(the rows of some lines, one line after the other; their offsets from 0), where the rows of line
    i are offsets[i]:offsets[i + 1]."""
    starts, ends = offsets[lines], offsets[lines + 1]
    return concat_ranges(starts, ends), np.r_[0, np.cumsum(ends - starts)].astype(np.int64)


def bucket_of(image_uri: str, buckets: int) -> int:
    """Stable across processes and machines (crc32, not Python's salted hash)."""
    return zlib.crc32(image_uri.encode('utf-8')) % buckets


def buckets_of(image_uris: Sequence[str], buckets: int) -> np.ndarray:
    return np.fromiter((bucket_of(uri, buckets) for uri in image_uris), dtype=np.int64, count=len(image_uris))


def fingerprints(texts: Sequence[str]) -> np.ndarray:
    """(n, 2) uint64: each text's 128-bit BLAKE2b digest, stable across processes and machines. Two
    texts share one with a chance of about 2^-128 a pair (one in 10^20 among a billion): a count of
    repeated image URIs holds 16 bytes an image instead of its URI."""
    digest = hashlib.blake2b
    joined = b''.join([digest(text.encode('utf-8'), digest_size=16).digest() for text in texts])
    return np.frombuffer(joined, dtype='<u8').reshape(-1, 2)


def repeated_count(prints: np.ndarray) -> int:
    """How many distinct rows of `prints` (fingerprints) occur more than once."""
    if len(prints) < 2:
        return 0
    ordered = prints[np.lexsort((prints[:, 1], prints[:, 0]))]
    same = (ordered[1:] == ordered[:-1]).all(axis=1)  # a row equal to the one before it
    return int(np.count_nonzero(same[1:] & ~same[:-1]) + same[0])  # runs of equal rows


def split_by_key(keys: np.ndarray) -> Dict[int, np.ndarray]:
    """key -> the positions holding it, in their order."""
    order = np.argsort(keys, kind='stable')
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    return {int(keys[positions[0]]): positions for positions in np.split(order, bounds) if len(positions)}


def packed_flags(flags: np.ndarray) -> np.ndarray:
    """(columns, rows) booleans as (ceil(columns / 8), rows) bytes of bits: the flags of a bucket's
    detections travel to the merge in an eighth of the bytes."""
    return np.packbits(flags, axis=0)


def stored_counts(*counts: np.ndarray) -> Tuple[List[np.ndarray], bool]:
    """(counts merged per score in the fewest bytes, whether they are bits): bits (packed_flags) when
    every count is 0 or 1 (distinct scores), one byte when under 256, else as they are. Merged counts
    wait and travel so, and are read through `flags` (bits) or widened (bytes) before any sum."""
    highest = max((int(values.max(initial=0)) for values in counts), default=0)
    if highest <= 1:
        return [packed_flags(values > 0) for values in counts], True
    if highest < 256:
        return [values.astype(np.uint8) for values in counts], False
    return list(counts), False


def widened(counts: np.ndarray) -> np.ndarray:
    """Counts read from bits or bytes (stored_counts) in 4 bytes, so sums of them cannot wrap; wider
    ones as they are."""
    return counts.astype(np.int32) if counts.dtype == np.uint8 else counts


def unpacked_flags(bits: np.ndarray, columns: int) -> np.ndarray:
    """packed_flags' (columns, rows) as 0/1 bytes."""
    return np.unpackbits(bits, axis=0, count=columns)


def summed_per_score(scores: np.ndarray, *weights: np.ndarray) -> Tuple[np.ndarray, List[np.ndarray]]:
    """(the distinct scores, descending; for each (columns, rows) weights, their (columns, distinct)
    sums at each score): one sort for them all, the sums in 4 bytes while no column's total can reach
    2^31 (a label's whole run), else in 8."""
    distinct, inverse = np.unique(-scores, return_inverse=True)
    sums = []
    for values in weights:
        small = int(values.sum(axis=1, dtype=np.int64).max(initial=0)) < 2 ** 31
        summed = np.zeros((len(values), len(distinct)), dtype=np.int32 if small else np.int64)
        for row, column in zip(summed, values):
            row[:] = np.bincount(inverse, weights=column, minlength=len(distinct))
        sums.append(summed)
    return -distinct, sums
