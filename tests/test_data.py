import gzip
import hashlib
import os
import struct
from pathlib import Path

import pytest
import torch

from learned_optim.meta.tasks import mnist as data
from learned_optim.meta.tasks.mnist import DataError, download_file, find_mnist, load_split, read_idx

from conftest import mnist_root


def write_idx(path: Path, array: torch.Tensor, truncate: int = 0) -> Path:
    header = bytes([0, 0, 0x08, array.dim()]) + struct.pack(f">{array.dim()}I", *array.shape)
    payload = header + array.to(torch.uint8).numpy().tobytes()
    with gzip.open(path, "wb") as handle:
        handle.write(payload[: len(payload) - truncate])
    return path


def write_fake_mnist(folder: Path, train: int = 60_000, test: int = 10) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    images = torch.arange(train * 4, dtype=torch.int64).remainder(256).reshape(train, 2, 2)
    write_idx(folder / "train-images-idx3-ubyte.gz", images)
    write_idx(folder / "train-labels-idx1-ubyte.gz", torch.arange(train).remainder(10))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", torch.zeros(test, 2, 2))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", torch.zeros(test))
    return folder


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    load_split.cache_clear()
    yield
    load_split.cache_clear()


def test_read_idx_parses_shape_and_values(tmp_path):
    array = torch.randint(0, 256, (3, 4, 5))
    assert torch.equal(read_idx(write_idx(tmp_path / "a.gz", array)), array.to(torch.uint8))


def test_truncated_and_corrupt_files_name_the_file_and_the_fix(tmp_path):
    truncated = write_idx(tmp_path / "truncated.gz", torch.zeros(4, 3), truncate=2)
    with pytest.raises(DataError, match="truncated.gz.*does not match its header.*download it again"):
        read_idx(truncated)
    corrupt = tmp_path / "corrupt.gz"
    corrupt.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="corrupt.gz is corrupt or truncated"):
        read_idx(corrupt)
    not_idx = tmp_path / "text.gz"
    with gzip.open(not_idx, "wb") as handle:
        handle.write(b"hello world")
    with pytest.raises(DataError, match="not an unsigned-byte IDX file"):
        read_idx(not_idx)


def test_splits_are_the_first_50k_the_last_10k_and_test(tmp_path):
    root = write_fake_mnist(tmp_path / "mnist")
    train_images, train_labels = load_split("train", str(root))
    validation_images, validation_labels = load_split("validation", str(root))
    assert train_images.shape == (50_000, 4) and validation_images.shape == (10_000, 4)
    assert train_labels[0] == 0 and validation_labels[0] == 50_000 % 10
    assert train_images.max() <= 1 and train_images.dtype == torch.float32
    assert load_split("test", str(root))[0].shape == (10, 4)
    with pytest.raises(ValueError, match="split"):
        load_split("dev", str(root))


def test_search_order_explicit_then_environment_then_cache(tmp_path, monkeypatch):
    explicit, env, cache = (write_fake_mnist(tmp_path / name, train=2)
                            for name in ("explicit", "env", "cache/learned_optim/mnist"))
    monkeypatch.setenv(data.ENV_VAR, str(env))
    assert find_mnist(explicit) == explicit
    assert find_mnist() == env
    monkeypatch.delenv(data.ENV_VAR)
    assert find_mnist() == cache


def test_missing_files_offline_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=f"not found in .*{data.ENV_VAR}"):
        find_mnist(download=False)
    with pytest.raises(DataError, match="not found"):
        find_mnist(tmp_path / "empty")


def test_download_verifies_md5_and_writes_atomically(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    payload = b"pretend this is MNIST"
    (mirror / "file.gz").write_bytes(payload)
    monkeypatch.setitem(data.FILES, "file.gz", hashlib.md5(payload).hexdigest())
    out = download_file("file.gz", tmp_path / "out", mirrors=(mirror.as_uri() + "/",))
    assert out.read_bytes() == payload and os.listdir(tmp_path / "out") == ["file.gz"]
    assert out.stat().st_mode & 0o777 == 0o644  # an ordinary file, not the temporary file's 0600

    monkeypatch.setitem(data.FILES, "file.gz", "0" * 32)
    with pytest.raises(DataError, match="md5 mismatch"):
        download_file("file.gz", tmp_path / "bad", mirrors=(mirror.as_uri() + "/",))
    assert not any((tmp_path / "bad").iterdir())
    with pytest.raises(DataError, match="could not download"):
        download_file("file.gz", tmp_path / "bad", mirrors=((tmp_path / "nowhere").as_uri() + "/",))


def test_real_mnist_files_have_the_canonical_md5s_and_shapes():
    root = Path(mnist_root())
    for name, md5 in data.FILES.items():
        assert hashlib.md5((root / name).read_bytes()).hexdigest() == md5
    images, labels = load_split("test", str(root))
    assert images.shape == (10_000, 784) and labels.bincount().tolist()[0] == 980
