"""A full filesystem under the runner's out_dir: one sentence, and nothing half-written
(issue 22.6). /dev/full answers every write with ENOSPC."""
import os
from pathlib import Path

import pytest

from boe_bench.errors import ConfigError
from boe_bench.runner import append_records, write_atomic

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")


def test_append_on_a_full_disk_is_one_sentence():
    with pytest.raises(ConfigError, match="No space left on device; the records written before are kept"):
        append_records(Path("/dev/full"), [{"id": "x", "metrics": {}}])


def test_a_torn_append_is_cut_back(tmp_path, monkeypatch):
    path = tmp_path / "examples.jsonl"
    append_records(path, [{"id": "a"}])
    before = path.read_bytes()
    real_fsync = os.fsync

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ConfigError, match="No space left on device"):
        append_records(path, [{"id": "b"}])
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert path.read_bytes() == before
    with pytest.raises(ConfigError):
        monkeypatch.setattr(os, "fsync", full)
        write_atomic(tmp_path / "summary.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["examples.jsonl"]
