"""Which files `docflow process` finds under the folders it is given."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from docflow.pipeline.inputs import discover


def test_folders_are_walked_sorted_through_links_once_and_without_dotfiles(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.png").write_bytes(b"x")
    (tmp_path / "a.pdf").write_bytes(b"x")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "c.png").write_bytes(b"x")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "o.tiff").write_bytes(b"x")
    (tmp_path / "b" / "out").symlink_to(outside)
    (tmp_path / "b" / "back").symlink_to(tmp_path)  # a loop
    (tmp_path / "gone.png").symlink_to(tmp_path / "nothing")
    found = list(discover([tmp_path]))
    assert found == [
        tmp_path / "a.pdf",
        tmp_path / "b" / "2.png",
        tmp_path / "b" / "out" / "o.tiff",
        tmp_path / "gone.png",  # a dangling link is yielded: its row says what it is
    ]


def test_a_folder_that_cannot_be_listed_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for folder, name in (("a", "x.png"), ("locked", "y.png")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_bytes(b"x")
    listing = os.scandir

    def scandir(path: str) -> os.ScandirIterator[str]:  # root may list any folder: refuse this one here
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return listing(path)

    monkeypatch.setattr(os, "scandir", scandir)
    skipped: list[tuple[Path, str]] = []
    found = list(discover([tmp_path], on_skipped=lambda folder, why: skipped.append((folder, why))))
    assert found == [tmp_path / "a" / "x.png"]
    assert skipped == [(tmp_path / "locked", "Permission denied")]


def test_a_file_named_directly_is_yielded_as_given(tmp_path: Path) -> None:
    assert list(discover([tmp_path / "not-there.pdf"])) == [tmp_path / "not-there.pdf"]
