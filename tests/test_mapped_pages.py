"""Giving back the resident pages of read-only file mappings (runners/mapped_pages.py).

The pages must leave this process' RSS, reads afterwards must still see the file's bytes,
and writable mappings (whose pages may hold the only copy of a write) must be left alone.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest
import torch

from runners import mapped_pages
from runners.mapped_pages import ReleasingMappedPages, read_only_mappings, release_mapped_pages
from tests.conftest import converted_cache_in

pytestmark = pytest.mark.skipif(mapped_pages._MADVISE is None, reason="needs Linux /proc/self/maps and madvise")

SIZE = 16 * 2**20


def resident_kb(folder: Path) -> int:
    """Rss of this process' mappings of files under ``folder``, from /proc/self/smaps."""
    total, inside = 0, False
    prefix = str(folder.resolve())
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
            inside = len(fields) >= 6 and fields[5].startswith(prefix)
        elif inside and fields and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.fixture
def weights_file(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, SIZE, dtype=np.uint8).tobytes()
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    return path, data


def test_read_only_pages_leave_rss_and_still_read_the_same(weights_file, tmp_path):
    path, data = weights_file
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert mapped[:] == data  # every page touched
        assert resident_kb(tmp_path) >= SIZE // 1024 * 0.9
        assert [p for _, _, p in read_only_mappings([tmp_path])] == [str(path.resolve())]
        assert release_mapped_pages([tmp_path]) >= SIZE
        assert resident_kb(tmp_path) < SIZE // 1024 * 0.1
        assert mapped[:] == data  # faulted in again from the file


def test_writable_private_mappings_keep_their_writes(weights_file, tmp_path):
    path, data = weights_file
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) as private:
        private[:5] = b"write"  # copy-on-write: this page's only copy is in memory
        assert read_only_mappings([tmp_path]) == []
        assert release_mapped_pages([tmp_path]) == 0
        assert private[:5] == b"write" and private[5:] == data[5:]
    assert path.read_bytes() == data


def test_other_folders_are_not_touched(weights_file, tmp_path_factory):
    path, data = weights_file
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert mapped[:] == data
        assert release_mapped_pages([elsewhere]) == 0
        assert release_mapped_pages([]) == 0  # no folder: nothing, not every mapping
        assert resident_kb(path.parent) >= SIZE // 1024 * 0.9


def test_the_context_releases_what_was_mapped_inside_it(weights_file, tmp_path):
    path, data = weights_file
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        with ReleasingMappedPages([tmp_path], interval_s=0.001) as releasing:
            assert releasing._thread is not None and releasing._thread.is_alive()
            assert mapped[:] == data
        assert not releasing._thread.is_alive()
        assert resident_kb(tmp_path) < SIZE // 1024 * 0.1
        assert mapped[:] == data


def test_openvino_encoder_holds_no_mapped_weight_pages_after_compiling(tiny_checkpoint, tiny_conversion, tmp_path):
    pytest.importorskip("openvino")
    from runners.converted import converted_encoder
    from runners.encoders import OpenVINOEncoder, TorchEncoder
    from runners.models import load_sam
    from runners.specs import get_spec

    converted = converted_encoder(converted_cache_in(tiny_conversion, tmp_path), tiny_checkpoint, None, "tiny")
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))
    reference = TorchEncoder(load_sam(get_spec("tiny"), tiny_checkpoint, torch.device("cpu")).image_encoder,
                             torch.device("cpu"), None)(x)
    for start in ("first (compiles the IR)", "second (imports the compiled blob)"):
        encoder = OpenVINOEncoder.from_converted(converted, "fp32")
        assert read_only_mappings([tmp_path]), start  # OpenVINO does keep the files mapped...
        assert resident_kb(tmp_path) < 256, start  # ...but none of their pages stay resident
        ours = encoder(x)
        assert (ours - reference).abs().max() <= 1e-4 * reference.abs().max(), start
        del encoder
    assert list((converted.compiled_cache).glob("*.blob")), "the second start imported a compiled blob"
