"""The launcher's side of a local batch run's progress: collects the workers' reports from logging and
shows them on stderr, as a live bar on a terminal and as a line every few seconds otherwise."""
import logging
import sys
import threading
import time
from typing import List, Mapping, Optional, TextIO

from pipeline.core import progress
from pipeline.core.progress import Progress

LINE_EVERY_SECONDS = 5.0
BAR_REFRESH_SECONDS = 0.2


class _Collector(logging.Handler):
    """Takes the reports out of the log records, whichever way they came (a record of ours in the
    same process, or a worker process's log entry forwarded as text by the runner)."""

    def __init__(self, state: Progress):
        super().__init__(level=logging.INFO)
        self._state = state
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno != logging.INFO:
            return
        report = progress.decode(record.getMessage())
        if report is not None:
            with self._lock:
                self._state.add(report)


class ProgressDisplay:
    """`with ProgressDisplay(shard_sizes): run the pipeline`. While it lasts, INFO records reach the
    root logger (the runner forwards the workers' records at INFO) but the handlers already there
    still print only what they printed before."""

    def __init__(self, shard_sizes: Mapping[str, int], stream: Optional[TextIO] = None,
                 live: Optional[bool] = None):
        self.state = Progress(shard_sizes)
        stream = sys.stderr if stream is None else stream
        self._stream = stream
        self._live = stream.isatty() if live is None else live
        self._collector = _Collector(self.state)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._show, name='progress', daemon=True)
        self._saved_levels: List = []
        self._start = 0.0

    def __enter__(self) -> 'ProgressDisplay':
        root = logging.getLogger()
        self._saved_levels = [(root, root.level)] + [(handler, handler.level) for handler in root.handlers]
        for handler in root.handlers:
            handler.setLevel(max(handler.level, root.level))
        root.setLevel(logging.INFO)
        root.addHandler(self._collector)
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._done.set()
        self._thread.join()
        root = logging.getLogger()
        root.removeHandler(self._collector)
        for owner, level in self._saved_levels:
            owner.setLevel(level)

    def _show(self) -> None:
        if self._live:
            self._show_bar()
            return
        shown = False
        while not self._done.wait(LINE_EVERY_SECONDS):
            print(self.state.line(time.monotonic() - self._start), file=self._stream, flush=True)
            shown = True
        if shown:  # where it ended, after the lines on the way there
            print(self.state.line(time.monotonic() - self._start), file=self._stream, flush=True)

    def _show_bar(self) -> None:
        from tqdm import tqdm  # only a terminal needs it: no import cost for the other runs

        state = self.state
        with tqdm(total=state.total_bytes, unit='B', unit_scale=True, file=self._stream, desc='read',
                  dynamic_ncols=True, leave=False) as bar:
            while not self._done.wait(BAR_REFRESH_SECONDS):
                bar.n = min(state.bytes, state.total_bytes)
                bar.set_postfix_str(f'{state.shards_done}/{state.total_shards} shards, {state.lines:,} lines, '
                                    f'{state.kept:,} kept', refresh=False)
                bar.refresh()
