"""The image store writes whole PNG files with their parameters, addressed by job and index."""

from __future__ import annotations

import hashlib

from PIL import Image

from storage.images import ImageStore, read_parameters


def test_a_saved_png_carries_its_parameters_and_hash(tmp_path):
    store = ImageStore(tmp_path)
    picture = Image.new("RGB", (64, 48), (200, 30, 30))
    parameters = "a red circle\nNegative prompt: blue\nSteps: 20, Seed: 42, Size: 64x48"
    stored = store.save(1234, 2, picture, parameters)
    assert stored.path == tmp_path / "00001" / "1234" / "2.png"
    assert (stored.width, stored.height) == (64, 48)
    assert stored.sha256 == hashlib.sha256(stored.path.read_bytes()).hexdigest()
    assert read_parameters(stored.path) == parameters
    assert store.open(stored.path).getpixel((10, 10)) == (200, 30, 30)
    assert [p.name for p in stored.path.parent.iterdir()] == ["2.png"]  # no temp file left


def test_saving_again_replaces_the_file_whole(tmp_path):
    store = ImageStore(tmp_path)
    store.save(1, 0, Image.new("RGB", (8, 8), "white"), "first")
    again = store.save(1, 0, Image.new("RGB", (8, 8), "black"), "second")
    assert read_parameters(again.path) == "second"
