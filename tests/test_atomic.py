import os

import pytest

from learned_optim.meta.atomic import write_file_atomic, write_folder_atomic


def test_a_failed_file_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    path = write_file_atomic(tmp_path / "data", lambda handle: handle.write(b"old"))

    def fail(handle):
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_file_atomic(path, fail)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["data"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_folder_is_swapped_whole_or_not_at_all(tmp_path):
    folder = tmp_path / "ckpt"
    write_folder_atomic(folder, lambda staging: (staging / "a").write_text("old"))

    def fail(staging):
        (staging / "a").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_folder_atomic(folder, fail)
    assert (folder / "a").read_text() == "old" and os.listdir(tmp_path) == ["ckpt"]
    write_folder_atomic(folder, lambda staging: (staging / "b").write_text("new"))
    assert os.listdir(folder) == ["b"] and os.listdir(tmp_path) == ["ckpt"]
