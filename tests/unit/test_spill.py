"""The join's parts waiting in files on a local run: what is put is read back, a cut file says so, and
only a folder the run made is removed."""
import os

import pytest

from pipeline.io.spill import SPILL_PREFIX, SpillWriter, make_spill_folder, read_payload, remove_spill_folder


def test_parts_read_back_as_they_were_put_and_inline_parts_pass_through(tmp_path):
    writer = SpillWriter(str(tmp_path))
    parts = [b'first', b'', b'\x00' * 100_000, b'last']
    refs = [writer.put(part) for part in parts]
    writer.close()
    assert [read_payload(ref) for ref in refs] == parts
    assert read_payload(b'inline') == b'inline'
    assert len(os.listdir(tmp_path)) == 1  # one file per writer (per bundle)
    other = SpillWriter(str(tmp_path))
    other.put(b'x')
    other.close()
    assert len(os.listdir(tmp_path)) == 2  # a retried bundle never writes into another's file


def test_without_a_folder_parts_pass_as_they_are(tmp_path):
    writer = SpillWriter(None)  # Dataflow: its shuffle carries the parts
    assert writer.put(b'part') == b'part'
    writer.close()
    assert read_payload(writer.put(b'again')) == b'again'


def test_a_part_cut_short_is_an_error_naming_the_file(tmp_path):
    writer = SpillWriter(str(tmp_path))
    ref = writer.put(b'0123456789')
    writer.close()
    with open(ref[0], 'r+b') as handle:
        handle.truncate(4)
    with pytest.raises(OSError, match='holds 4 of the 10 bytes'):
        read_payload(ref)


def test_only_a_folder_the_run_made_is_removed(tmp_path):
    folder = make_spill_folder()
    assert os.path.basename(folder).startswith(SPILL_PREFIX)
    remove_spill_folder(folder)
    assert not os.path.exists(folder)
    users = tmp_path / 'results'
    users.mkdir()
    (users / 'keep.txt').write_text('mine')
    remove_spill_folder(str(users))
    assert (users / 'keep.txt').read_text() == 'mine'
    remove_spill_folder(None)


def test_without_a_writable_temporary_folder_the_parts_stay_in_memory(tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path / 'missing'))
    assert make_spill_folder() is None


def test_a_later_run_removes_the_spill_folders_of_killed_runs_of_its_host_only(tmp_path):
    import socket
    import subprocess

    from pipeline.io.spill import remove_stale_spill_folders
    gone = subprocess.Popen(['true'])
    gone.wait()
    host = socket.gethostname()
    names = {'dead': f'{SPILL_PREFIX}{host}-{gone.pid}-abcd_123', 'alive': f'{SPILL_PREFIX}{host}-{os.getpid()}-abcd_123',
             'elsewhere': f'{SPILL_PREFIX}other-host-{gone.pid}-abcd_123', 'old': f'{SPILL_PREFIX}abcd_123',
             'users': f'my-{SPILL_PREFIX}{host}-{gone.pid}-abcd_123'}
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / 'part').write_bytes(b'x')
    assert remove_stale_spill_folders(str(tmp_path)) == [str(tmp_path / names['dead'])]
    assert sorted(os.listdir(tmp_path)) == sorted(name for key, name in names.items() if key != 'dead')


def test_a_run_names_its_spill_folder_by_host_and_process(tmp_path, monkeypatch):
    import socket
    monkeypatch.setenv('TMPDIR', str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, 'tempdir', None)
    folder = make_spill_folder()
    assert os.path.basename(folder).startswith(f'{SPILL_PREFIX}{socket.gethostname()}-{os.getpid()}-')
    remove_spill_folder(folder)
    assert not os.path.exists(folder)
