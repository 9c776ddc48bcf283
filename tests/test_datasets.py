"""`--data` resolution: folders, data set names under S3EDIT_DATA_ROOT, clear errors."""

import pytest

from s3edit.errors import UsageError
from s3edit.train.datasets import editor_data, resolve_data


@pytest.fixture
def root(tmp_path, monkeypatch):
    faces = tmp_path / "CelebAMask-HQ-128"
    (faces / "CelebA-HQ-img").mkdir(parents=True)
    (faces / "CelebAMask-HQ-attribute-anno.txt").write_text("0\n")
    clips = tmp_path / "voxceleb" / "id001"
    clips.mkdir(parents=True)
    (clips / "a.mp4").write_bytes(b"")
    monkeypatch.setenv("S3EDIT_DATA_ROOT", str(tmp_path))
    return tmp_path


def test_names_resolve_under_the_data_root(root):
    assert resolve_data("celebahq") == root / "CelebAMask-HQ-128"
    assert resolve_data("VoxCeleb") == root / "voxceleb"
    assert resolve_data(str(root / "voxceleb")) == root / "voxceleb"


def test_videos_alone_bring_the_labelled_faces_from_the_root(root):
    data = editor_data(["voxceleb"])
    assert data.faces == root / "CelebAMask-HQ-128"
    assert data.videos == [root / "voxceleb"]


def test_missing_data_set_names_what_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("S3EDIT_DATA_ROOT", str(tmp_path))
    with pytest.raises(UsageError, match="CelebAMask-HQ.*S3EDIT_DATA_ROOT"):
        resolve_data("celebahq")
    with pytest.raises(UsageError, match="not a data set name"):
        resolve_data("imagenet")


def test_a_folder_of_neither_kind_is_refused(root, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(UsageError, match="neither"):
        editor_data([str(tmp_path / "notes")])
