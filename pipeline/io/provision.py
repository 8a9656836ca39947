"""Provisioning a batch run's output locations, after every option has been checked and before any
work: take the run locks, refuse what is not ours, and remove what an earlier run of ours left.
"""
import glob
import json
import logging
import os
import re
from typing import List, Optional, Sequence

from apache_beam.io.filesystems import FileSystems

from pipeline.config.options import OptionError
from pipeline.core.outputs import (
    Conflict,
    OutputLayout,
    is_our_summary,
    listed_outputs,
    summary_temp_path,
    survey,
)
from pipeline.core.shards import scheme_of
from pipeline.io.locks import LockHeld, RunLock

MAX_NAMED_CONFLICTS = 5
_BEAM_TEMP_FOLDER = re.compile(r'beam-temp-(part|dead_letter)-[0-9a-f]{32}')


class OutputConflict(OptionError):
    """Something that is not ours stands where the run would write."""


def provision(layout: OutputLayout, overwrite: bool, run_id: str,
              input_location: Optional[str]) -> List[RunLock]:
    """Takes every lock of the layout, then clears what earlier runs of ours left there. Raises
    OptionError (LockHeld, OutputConflict, a location that cannot be written) before removing
    anything; returns the locks, which the caller releases when the run ends."""
    locks = acquire_locks(layout, run_id, input_location)
    try:
        completed, conflicts = completed_runs(layout)
        if completed and not overwrite:
            raise OptionError(f'--output: {completed[0][0]} holds a completed run; pass --overwrite '
                              f'to replace it, or choose another --output')
        listed = ([path for _, summary in completed for path in listed_outputs(summary)]
                  + [path for path, _ in completed])
        stale = {lock.path for lock in locks if lock.took_over}
        # What earlier runs of ours left goes whatever this run's options (an evaluation or an export it
        # does not make), but only what stands where this run writes can stop it.
        everything = layout.with_every_folder()
        found = survey(everything, existing_files(everything), listed, stale_locks=stale)
        conflicts += survey(layout, existing_files(layout), listed, stale_locks=stale).conflicts
        if conflicts:
            raise OutputConflict(describe_conflicts(conflicts))
        lock_paths = {lock.path for lock in locks}
        remove_ours(everything, [path for path in found.ours if path not in lock_paths],
                    [path for path, _ in completed])
    except BaseException:
        release_untouched(locks)
        raise
    return locks


def release_untouched(locks: Sequence[RunLock]) -> None:
    """Locks of a run that stops before writing: a lock it created goes, one it took over from a
    stopped run stays as that run's evidence."""
    for lock in locks:
        lock.release(keep=lock.took_over)


def acquire_locks(layout: OutputLayout, run_id: str, input_location: Optional[str]) -> List[RunLock]:
    """Every lock of the layout (each says whether it took over the lock of a stopped run)."""
    locks: List[RunLock] = []
    try:
        for path in layout.lock_files:
            lock = RunLock(path, run_id, input_location)
            try:
                lock.acquire()
            except LockHeld as exc:
                raise OptionError(f'another run is writing there: {exc}') from None
            except OSError as exc:
                raise OptionError(f'cannot write to {path.rsplit("/", 1)[0]}: {exc.strerror or exc}'
                                  f' (check --output, --dead_letter and --summary)') from None
            locks.append(lock)
    except BaseException:
        release_untouched(locks)
        raise
    return locks


def completed_runs(layout: OutputLayout):
    """([(summary path, summary)] of completed runs of ours, [conflicts]): a summary that is not
    ours where this run writes its own is a conflict."""
    completed, conflicts = [], []
    for path in layout.summaries:
        if not _exists(path):
            continue
        try:
            with FileSystems.open(path) as handle:
                document = json.loads(handle.read(64 * 1024 * 1024))
        except (ValueError, OSError):
            document = None
        if is_our_summary(document):
            completed.append((path, document))
        elif path == layout.summary:
            conflicts.append(Conflict(path, 'it is where the run summary goes, and it is not a '
                                            'summary written by a run of ours'))
    return completed, conflicts


def describe_conflicts(conflicts) -> str:
    lines = [f'{conflict.path}: not written by a run of ours, and {conflict.why}'
             for conflict in conflicts[:MAX_NAMED_CONFLICTS]]
    more = len(conflicts) - MAX_NAMED_CONFLICTS
    if more > 0:
        lines.append(f'... and {more} more')
    return ('nothing was removed; move these files or choose another output location:\n  '
            + '\n  '.join(lines))


def existing_files(layout: OutputLayout) -> List[str]:
    """Every file in our table folders, and the files elsewhere that bear names we write."""
    patterns = [folder + '/**' for folder in layout.table_folders]
    if layout.dead_letter:
        patterns.append(layout.dead_letter + '/dead_letter-*')
        if scheme_of(layout.dead_letter) == 'file':
            patterns += [folder + '/**' for folder in
                         glob.glob(glob.escape(layout.dead_letter) + '/beam-temp-dead_letter-*')
                         if os.path.isdir(folder) and not os.path.islink(folder)]
        else:
            patterns.append(layout.dead_letter + '/beam-temp-dead_letter-*/**')
    patterns += [summary_temp_path(summary, '*') for summary in layout.summaries]
    found = [path for pattern in patterns for path in _match(pattern)]
    exact = [layout.report, *layout.documents, *layout.summaries, *layout.lock_files]
    return sorted(set(found) | {path for path in exact if path and _exists(path)})


def remove_ours(layout: OutputLayout, paths: Sequence[str], summaries: Sequence[str]) -> None:
    """Summaries first: a run stopped half-way through this leaves no completed mark over partial
    data (its lock marks the rest as ours)."""
    first = [path for path in paths if path in summaries]
    rest = [path for path in paths if path not in summaries]
    for batch in (first, rest):
        if batch:
            FileSystems.delete(batch)
    if paths:
        logging.warning('Removed %d files left by an earlier run of ours (%s)', len(paths),
                        ', '.join(layout.locations().values()))
    for folder in layout.table_folders + ([layout.dead_letter] if layout.dead_letter else []):
        _remove_empty_temp_folders(folder)


def _remove_empty_temp_folders(folder: str) -> None:
    """A local file system keeps the empty temporary folders of Beam's sinks (Cloud Storage has no
    folders); only empty ones named as Beam names them are removed."""
    if scheme_of(folder) != 'file' or not os.path.isdir(folder):
        return
    for path in glob.glob(os.path.join(glob.escape(folder), 'beam-temp-*')):
        if (_BEAM_TEMP_FOLDER.fullmatch(os.path.basename(path)) and os.path.isdir(path)
                and not os.path.islink(path)):
            for root, _, _ in sorted(os.walk(path), key=lambda item: -len(item[0])):
                try:
                    os.rmdir(root)
                except OSError:
                    pass  # not empty: something that is not ours is inside


def _match(pattern: str) -> List[str]:
    if scheme_of(pattern) == 'file':
        if pattern.endswith('/**'):
            return _walk_local(pattern[:-3])
        return [path for path in glob.glob(_escape_stem(pattern))
                if os.path.islink(path) or not os.path.isdir(path)]
    try:
        return [metadata.path for metadata in FileSystems.match([_escape_stem(pattern)])[0].metadata_list]
    except Exception as exc:  # listing failed: what stands there is unknown, so nothing may go ahead
        raise OptionError(f'cannot list {pattern} to see what stands where this run writes: {exc}') from None


def _walk_local(folder: str) -> List[str]:
    """Every file and link under a local folder, hidden ones too; links are not followed."""
    found = []
    for root, folders, files in os.walk(folder):
        found += [os.path.join(root, name) for name in files]
        found += [os.path.join(root, name) for name in folders if os.path.islink(os.path.join(root, name))]
    return found


def _escape_stem(pattern: str) -> str:
    """Our patterns end in a glob of our own; the location before it is taken literally (Beam's
    patterns read glob.escape's brackets as Python's glob does)."""
    for marker in ('/dead_letter-*', '.tmp-*', '/beam-temp-dead_letter-*/**', '/**'):
        if pattern.endswith(marker):
            return glob.escape(pattern[:-len(marker)]) + marker
    return glob.escape(pattern)


def _exists(path: str) -> bool:
    if scheme_of(path) == 'file':
        return os.path.lexists(path)
    return FileSystems.exists(path)
