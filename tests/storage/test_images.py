"""The image store writes whole PNG files with their parameters, addressed by job and index."""

from __future__ import annotations

import hashlib
import io
import os
import time

import pytest
from PIL import Image

from storage.images import ImageStore, StoreMismatch, read_parameters


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


def test_a_users_picture_is_kept_as_sent_when_its_bytes_are_faithful(tmp_path):
    store = ImageStore(tmp_path)
    picture = Image.effect_noise((256, 256), 50).convert("RGB")
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    name = store.save_input(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), (buffer.getvalue(), "JPEG"))
    assert name.endswith(".jpg") and store.input_path(name).read_bytes() == buffer.getvalue()
    recoded = store.save_input(picture)  # no faithful original: kept as PNG
    assert recoded.endswith(".png") and store.input_path(recoded).stat().st_size > len(buffer.getvalue())


def test_retention_removes_old_pictures_and_a_reused_input_starts_over(tmp_path):
    store = ImageStore(tmp_path)
    old, reused = store.save_input(Image.new("RGB", (8, 8), "red")), store.save_input(Image.new("RGB", (8, 8), "blue"))
    result = store.save(1, 0, Image.new("RGB", (8, 8), "white"), "x")
    fresh = store.save(2, 0, Image.new("RGB", (8, 8), "black"), "y")
    long_ago = time.time() - 10 * 86_400
    for path in (store.input_path(old), store.input_path(reused), result.path):
        os.utime(path, (long_ago, long_ago))
    store.save_input(Image.new("RGB", (8, 8), "blue"))  # used again today
    cutoff = time.time() - 86_400
    assert (store.expire_inputs(cutoff), store.expire_results(cutoff)) == (1, 1)
    assert not store.input_path(old).exists() and store.input_path(reused).exists()
    assert not result.path.exists() and fresh.path.exists()


def test_reconcile_matches_pictures_by_job_and_index_so_a_moved_store_keeps_them(tmp_path):
    old = ImageStore(tmp_path / "old")
    kept = old.save(1234, 0, Image.new("RGB", (8, 8), "red"), "")
    stray = old.save(1235, 0, Image.new("RGB", (8, 8), "blue"), "")  # no row: a kill before the record
    (tmp_path / "old").rename(tmp_path / "new")  # the operator moved the deployment
    moved = ImageStore(tmp_path / "new")
    assert moved.reconcile({(1234, 0)}, set()) == (0, 1)
    assert moved.path_for(1234, 0).exists() and not moved.path_for(1235, 0).exists()
    assert kept.path != moved.path_for(1234, 0) and stray.path.name == "0.png"


def test_reconcile_refuses_to_empty_a_store_the_database_does_not_know(tmp_path):
    store = ImageStore(tmp_path)
    for job_id in range(1, 31):
        store.save(job_id, 0, Image.new("RGB", (8, 8), "red"), "")
    with pytest.raises(StoreMismatch, match=r"30 of the 30 files .* is `database_url` the one"):
        store.reconcile(set(), set())  # the wrong (or an empty) database
    assert len(list(tmp_path.rglob("*.png"))) == 30  # nothing removed
