"""Which files are ours: the layout of a batch run's outputs and the names only we write.

A run removes nothing that a run of ours did not write. A file is ours when the summary of a completed
run lists it, or when it bears one of our names in one of our folders while a run lock of ours stands
there (a run that died before its summary). Everything else is the user's: it is never removed, and
when it stands where we would write, the run stops before any work.
"""
import re
from typing import Collection, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from pipeline.config.options import join_path

LOCK_NAME = '.prediction-tables.lock'
SUMMARY_WRITER = 'prediction-tables'
TABLES = ('detections', 'images')
EVALUATION_FOLDER = 'evaluation'
SLICES_FOLDER = 'slices'  # --slice_by
EVALUATION_TABLES = ('matches', 'confidence_metrics', 'confusion_matrix', SLICES_FOLDER)
METRICS_FILE = 'metrics.json'
THRESHOLDS_FILE = 'thresholds.csv'
COMPARISON_FOLDER = 'comparison'  # a table folder: <output>/comparison/part-*.parquet
COMPARISON_FILE = 'comparison.json'  # beside it, in the output root
EXPORT_FOLDER = 'export'
EXPORT_FORMAT_FOLDERS = ('vertex_jsonl', 'automl_csv', 'coco', 'label_studio')
EXPORT_DOCUMENTS = {'coco': 'annotations.json', 'label_studio': 'tasks.json'}
_HEX = r'[0-9a-f]{32}'
# Beam's file sinks: final names, and the temporary folders they rename from.
_TABLE_FILE = re.compile(r'part-\d{5}-of-\d{5}\.(parquet|jsonl|csv)')
_DEAD_LETTER_FILE = re.compile(r'dead_letter-\d{5}-of-\d{5}\.jsonl')
_BEAM_TEMP = re.compile(rf'beam-temp-(part|dead_letter)-{_HEX}(/.*)?')


def normalize(path: str) -> str:
    """A location without its trailing slash, for comparing locations."""
    stripped = path.rstrip('/')
    return stripped or '/'


def is_under(path: str, folder: str) -> bool:
    """Whether `path` is `folder` itself or inside it."""
    path, folder = normalize(path), normalize(folder)
    return path == folder or path.startswith(folder.rstrip('/') + '/')


class Conflict(NamedTuple):
    """A file that is not ours where this run would write."""
    path: str
    why: str


class OutputLayout(NamedTuple):
    """Where a batch run writes: the Parquet root, the dead-letter root, the summary, the report and
    the evaluation."""
    output: Optional[str]
    dead_letter: Optional[str]
    summary: Optional[str]
    report: Optional[str]  # <output>/report/index.html when the report is built
    evaluation: Optional[str] = None  # <output>/evaluation when the run evaluates against ground truth
    export: Optional[str] = None  # <output>/export when the run exports boxes
    comparison: Optional[str] = None  # <output>/comparison when the run compares prediction runs

    @classmethod
    def of(cls, output: Optional[str], dead_letter: Optional[str], summary: Optional[str],
           report: bool, evaluation: bool = False, export: bool = False, comparison: bool = False) -> 'OutputLayout':
        return cls(output and normalize(output), dead_letter and normalize(dead_letter), summary,
                   join_path(output, 'report', 'index.html') if output and report else None,
                   join_path(output, EVALUATION_FOLDER) if output and evaluation else None,
                   join_path(output, EXPORT_FOLDER) if output and export else None,
                   join_path(output, COMPARISON_FOLDER) if output and comparison else None)

    def with_every_folder(self) -> 'OutputLayout':
        """The layout with the evaluation's and the exports' folders whatever this run makes: where
        earlier runs of ours may have left them."""
        if not self.output:
            return self
        return self._replace(evaluation=join_path(self.output, EVALUATION_FOLDER),
                             export=join_path(self.output, EXPORT_FOLDER),
                             comparison=join_path(self.output, COMPARISON_FOLDER))

    @property
    def table_folders(self) -> List[str]:
        """The folders that hold one Parquet table each, and nothing else."""
        folders = [join_path(self.output, name) for name in TABLES] if self.output else []
        if self.evaluation:
            folders += [join_path(self.evaluation, name) for name in EVALUATION_TABLES]
        if self.comparison:
            folders.append(self.comparison)
        if self.export:
            folders += [join_path(self.export, name) for name in EXPORT_FORMAT_FOLDERS]
        return folders

    @property
    def export_documents(self) -> List[str]:
        """The one-document exports (COCO, Label Studio), named in their folders."""
        if not self.export:
            return []
        return [join_path(self.export, fmt, name) for fmt, name in EXPORT_DOCUMENTS.items()]

    @property
    def metrics_file(self) -> Optional[str]:
        return join_path(self.evaluation, METRICS_FILE) if self.evaluation else None

    @property
    def documents(self) -> List[str]:
        """The one-file documents of the evaluation (metrics.json, thresholds.csv) and of the
        comparison (comparison.json)."""
        documents = [join_path(self.evaluation, name) for name in (METRICS_FILE, THRESHOLDS_FILE)] \
            if self.evaluation else []
        if self.comparison and self.output:
            documents.append(join_path(self.output, COMPARISON_FILE))
        return documents

    @property
    def default_summary(self) -> Optional[str]:
        return join_path(self.output, 'summary.json') if self.output else None

    @property
    def summaries(self) -> List[str]:
        """Where a completed run of ours may have left its summary: the one asked for, and the default
        one in the output root (a run with --summary elsewhere must not write over a run there)."""
        return list(dict.fromkeys(filter(None, (self.summary, self.default_summary))))

    @property
    def lock_files(self) -> List[str]:
        """One lock per place this run writes: the output root, and the dead-letter root and the
        summary when they lie outside it."""
        locks = []
        if self.output:
            locks.append(join_path(self.output, LOCK_NAME))
        if self.dead_letter and not (self.output and is_under(self.dead_letter, self.output)):
            locks.append(join_path(self.dead_letter, LOCK_NAME))
        if self.summary and not any(is_under(self.summary, folder) for folder in
                                    filter(None, (self.output, self.dead_letter))):
            locks.append(self.summary + '.lock')
        return locks

    def locations(self) -> Dict[str, str]:
        """Option name -> the location it names, for the checks against --input."""
        return {name: value for name, value in (('output', self.output), ('dead_letter', self.dead_letter),
                                                ('summary', self.summary)) if value}

    def inside_tables(self) -> List[Tuple[str, str]]:
        """(option, location) of the dead-letter root or summary placed inside a table folder."""
        return [(name, value) for name, value in (('dead_letter', self.dead_letter), ('summary', self.summary))
                if value and any(is_under(value, folder) for folder in self.table_folders)]

    def lock_for(self, path: str) -> Optional[str]:
        """The lock of the place that holds `path`: where a stopped run of ours left its evidence."""
        if self.output and is_under(path, self.output):
            return join_path(self.output, LOCK_NAME)
        if self.dead_letter and is_under(path, self.dead_letter):
            return join_path(self.dead_letter, LOCK_NAME)
        if self.summary and (path == self.summary or _is_summary_temp(path, self.summary)):
            return self.summary + '.lock'
        return None

    def owns_name(self, path: str) -> bool:
        """Whether `path` bears a name that only a run of ours writes there (files of the tables,
        dead letters, Beam's temporary folders, the summary, its temporary file, the report, locks)."""
        table = self._table_folder_of(path)
        if table is not None:
            rest = path[len(table) + 1:]
            return bool(_TABLE_FILE.fullmatch(rest) or _BEAM_TEMP.fullmatch(rest) or path in self.export_documents
                        or any(_is_summary_temp(path, document) for document in self.export_documents))
        if (self._has_dead_letter_name(path) or path in self.lock_files or path == self.report
                or path in self.documents):
            return True
        return any(path == summary or _is_summary_temp(path, summary) for summary in self.summaries)

    def is_ours_to_skip(self, path: str) -> bool:
        """Whether discovery under --input must leave `path` alone: everything in our table folders,
        and our own names elsewhere (the input and an output may hold one another)."""
        return self._table_folder_of(path) is not None or self.owns_name(path)

    def write_targets(self, path: str) -> Optional[str]:
        """Why `path`, if not ours, stands where this run writes (None: it does not)."""
        table = self._table_folder_of(path)
        if table is not None:
            return (f'{table}/ is where the {table.rsplit("/", 1)[-1]} output goes, and it must '
                    f'hold only the files of our runs (readers take the whole folder)')
        if self._has_dead_letter_name(path):
            return 'it has the name of a dead-letter file this run would write'
        if path == self.summary:
            return 'it is where the run summary goes'
        if path == self.report:
            return 'it is where the report goes (or pass --report=false)'
        if path == self.metrics_file:
            return 'it is where the evaluation metrics go'
        if path in self.documents:
            return ('it is where the comparison of the runs goes' if path.endswith(COMPARISON_FILE)
                    else 'it is where the evaluation\'s operating thresholds go')
        return None

    def _table_folder_of(self, path: str) -> Optional[str]:
        """The table folder `path` lies in (the folder itself does not count)."""
        return next((folder for folder in self.table_folders
                     if path != folder and is_under(path, folder)), None)

    def _has_dead_letter_name(self, path: str) -> bool:
        """A dead-letter file, or Beam's temporary folder for them, in the dead-letter root."""
        if not self.dead_letter or path == self.dead_letter or not is_under(path, self.dead_letter):
            return False
        rest = path[len(self.dead_letter) + 1:]
        return bool(_DEAD_LETTER_FILE.fullmatch(rest) or _BEAM_TEMP.fullmatch(rest))


def _is_summary_temp(path: str, summary: str) -> bool:
    return path.startswith(summary + '.tmp-') and re.fullmatch(_HEX, path[len(summary) + 5:]) is not None


def summary_temp_path(summary: str, run_id: str) -> str:
    """Where a file we write in one piece (the summary, an export document) waits until it is whole."""
    return f'{summary}.tmp-{run_id}'


def is_our_summary(document) -> bool:
    """A summary.json of ours: what the run wrote (older runs had no `writer` field)."""
    return (isinstance(document, dict) and isinstance(document.get('outputs'), dict)
            and isinstance(document.get('reconciliation'), dict)
            and document.get('writer', SUMMARY_WRITER) == SUMMARY_WRITER)


def listed_outputs(summary: Mapping) -> List[str]:
    """Every file a completed run's summary lists as written."""
    return [path for paths in summary.get('outputs', {}).values() if isinstance(paths, list)
            for path in paths if isinstance(path, str)]


class Survey(NamedTuple):
    """What stands in our locations before a run: ours to remove, and what blocks the run."""
    ours: List[str]
    conflicts: List[Conflict]


def survey(layout: OutputLayout, existing: Iterable[str], completed_outputs: Sequence[str],
           stale_locks: Collection[str]) -> Survey:
    """Sorts the files found in our locations. `completed_outputs` are the files listed by the
    summaries of completed runs of ours found there; `stale_locks` are the locks that runs of ours
    left when they stopped before their summary: in the place each one guards, the files bearing our
    names are that run's. A place without one proves nothing."""
    listed = set(completed_outputs)
    ours, conflicts = [], []
    for path in sorted(set(existing)):
        evidence = layout.lock_for(path) in stale_locks and layout.owns_name(path)
        if path in listed or path in layout.lock_files or evidence:
            ours.append(path)
            continue
        why = layout.write_targets(path)
        if why:
            conflicts.append(Conflict(path, why))
    return Survey(ours, conflicts)


def overlaps_with_input(layout: OutputLayout, input_locations: Sequence[str]) -> List[Tuple[str, str]]:
    """(option, location) of each output location equal to an input location (local paths resolved by
    the caller). An output inside the input, or holding it, is allowed."""
    inputs = {normalize(location) for location in input_locations}
    return [(name, value) for name, value in layout.locations().items() if normalize(value) in inputs]
