"""The collector's tuning, in a process of its own (it changes the process for good)."""
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def test_tuning_freezes_what_is_alive_and_raises_the_young_threshold():
    code = ('import gc\n'
            'from pipeline.core.garbage_collection import GC_YOUNG_THRESHOLD, tune_garbage_collector\n'
            'frozen_before = gc.get_freeze_count()\n'
            'tune_garbage_collector()\n'
            'print(frozen_before, gc.get_freeze_count(), gc.get_threshold()[0] == GC_YOUNG_THRESHOLD)\n'
            'gc.set_threshold(200_000)\n'
            'tune_garbage_collector()\n'  # a threshold already higher stays
            'print(gc.get_threshold()[0])\n')
    first, second = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                                   check=True).stdout.splitlines()
    frozen_before, frozen_after, raised = first.split()
    assert int(frozen_before) == 0 and int(frozen_after) > 1000 and raised == 'True'
    assert second == '200000'
