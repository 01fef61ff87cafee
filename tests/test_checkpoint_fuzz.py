"""Fuzzing real checkpoint files: every damaged checkpoint is a CheckpointError or the very same network.

Mutations of the bundled ``l2l-mnist`` files: truncations, byte flips anywhere, edits of the
safetensors header (shapes, dtypes, offsets, huge declared sizes), nan/inf written into the weights,
and edits of ``config.json``. Never a crash, a hang, a large allocation, or a loaded network that
differs from the original; every mutation that certainly damages the files (all but bit flips, which may hit the
header's whitespace, and config edits that keep a value) is refused, and the undamaged files load. The default run
tries 200 mutations; ``pytest -m slow`` 3,000.
"""

import json
import random
import shutil
import struct

import pytest

from learned_optim import CheckpointError, pretrained

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def _header(data: bytes) -> tuple[dict, int]:
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + length]), 8 + length


def _with_header(data: bytes, header: dict) -> bytes:
    _, start = _header(data)
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data[start:]


def mutate(files: dict[str, bytes], rng: random.Random) -> tuple[dict[str, bytes], bool]:
    """One random damage to a checkpoint's files, and whether it certainly changed what they mean."""
    weights, config = files[WEIGHTS], files[CONFIG]
    kind = rng.choice(["truncate", "flip", "header", "non_finite", "config"])
    certain = kind != "flip"
    if kind == "truncate":
        weights = weights[:rng.randrange(len(weights))]
    elif kind == "flip":
        damaged = bytearray(weights)
        for _ in range(rng.randint(1, 8)):
            damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        weights = bytes(damaged)
    elif kind == "header":
        header, _ = _header(weights)
        name = rng.choice([key for key in header if key != "__metadata__"])
        edit = rng.choice(["shape", "huge", "dtype", "offsets", "drop", "length"])
        if edit == "shape":
            header[name]["shape"] = [dim + rng.choice([-1, 1]) for dim in header[name]["shape"]]
        elif edit == "huge":
            header[name]["shape"] = [2**40] * len(header[name]["shape"] or [1])
        elif edit == "dtype":
            header[name]["dtype"] = rng.choice(["F16", "BF16", "F64", "I64", "U8", "BOOL"])
        elif edit == "offsets":
            header[name]["data_offsets"] = [rng.randrange(2**20) for _ in range(2)]
        elif edit == "drop":
            del header[name]
        weights = _with_header(weights, header)
        if edit == "length":
            weights = struct.pack("<Q", rng.choice([0, 7, 2**40, 2**63])) + weights[8:]
    elif kind == "non_finite":
        _, start = _header(weights)
        damaged = bytearray(weights)
        offset = start + 4 * rng.randrange((len(weights) - start) // 4)
        damaged[offset:offset + 4] = struct.pack("<f", rng.choice([float("nan"), float("inf"), float("-inf")]))
        weights = bytes(damaged)
    else:
        values = json.loads(config)
        key = rng.choice(list(values))
        value = rng.choice([0, -1, 10**9, 2**40, 1.5, "20", None, True, float("inf"), [20], {"a": 1}])
        values[key] = value
        config = json.dumps(values).encode() if rng.random() < 0.9 else config[:rng.randrange(len(config))]
        certain = _meaning(config) != _meaning(files[CONFIG])  # a cut of the final newline changes nothing
    damaged = {WEIGHTS: weights, CONFIG: config}
    return damaged, certain and damaged != files  # e.g. a shape edit of a 0-d tensor changes nothing


def _meaning(config: bytes) -> str | None:
    """The config's values, types included (1, 1.0 and true differ), or None if it is not JSON."""
    try:
        return json.dumps(json.loads(config), sort_keys=True)
    except ValueError:
        return None


def load_copy(folder, files: dict[str, bytes]):
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    try:
        return pretrained.load(folder)
    finally:
        shutil.rmtree(folder)


def fuzz(tmp_path, iterations: int, seed: int) -> None:
    source = pretrained.resolve("l2l-mnist")
    original = pretrained.load(source).fingerprint()
    files = {name: (source / name).read_bytes() for name in (WEIGHTS, CONFIG)}
    assert load_copy(tmp_path / "undamaged", files).fingerprint() == original
    rng = random.Random(seed)
    refused = certain_damage = 0
    for iteration in range(iterations):
        damaged, certain = mutate(files, rng)
        certain_damage += certain
        try:
            loaded = load_copy(tmp_path / f"case{iteration}", damaged)
        except CheckpointError:
            refused += 1
        else:  # e.g. a flipped bit in the header's whitespace: harmless only if it is the same network
            assert not certain, f"mutation {iteration} damaged the files and was loaded"
            assert loaded.fingerprint() == original, f"mutation {iteration} loaded a different network"
    assert refused >= certain_damage > iterations // 2


def test_damaged_checkpoints_are_refused(tmp_path):
    fuzz(tmp_path, iterations=200, seed=0)


@pytest.mark.slow
def test_damaged_checkpoints_are_refused_long(tmp_path):
    fuzz(tmp_path, iterations=3000, seed=1)
