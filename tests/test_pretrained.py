import shutil
import time

import pytest
import torch
from huggingface_hub import constants

from learned_optim import CheckpointError, CoordinatewiseLSTM, LearnedOptimizer, list_pretrained
from learned_optim.pretrained import DEFAULT_CHECKPOINT, resolve

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, checkpoint):
    """A huggingface_hub cache holding 'org/l2l' at COMMIT (branch main), built by hand."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--org--l2l" / "snapshots" / COMMIT
    shutil.copytree(checkpoint, snapshot)
    (cache / "models--org--l2l" / "refs").mkdir()
    (cache / "models--org--l2l" / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_bundled_checkpoints_are_listed_with_descriptions():
    bundled = list_pretrained()
    assert DEFAULT_CHECKPOINT in bundled
    assert all(description for description in bundled.values())


def test_default_optimizer_runs_the_generalist_with_step_scale_control():
    optimizer = LearnedOptimizer([torch.nn.Parameter(torch.ones(2))])
    assert DEFAULT_CHECKPOINT == "l2o-generalist-2"
    generalist = CoordinatewiseLSTM.from_pretrained(resolve("l2o-generalist-2"))
    assert optimizer.network.fingerprint() == generalist.fingerprint() and generalist.scale_rate == 0.01


def test_local_folder(checkpoint, network):
    optimizer = LearnedOptimizer([torch.nn.Parameter(torch.ones(2))], pretrained=str(checkpoint))
    assert torch.equal(optimizer.network.head.weight, network.head.weight)


def test_hub_repo_id_from_the_offline_cache(hub_cache, network):
    for revision in (None, "main", COMMIT):
        optimizer = LearnedOptimizer([torch.nn.Parameter(torch.ones(2))], pretrained="org/l2l", revision=revision)
        assert torch.equal(optimizer.network.head.weight, network.head.weight)


def test_hub_repo_id_not_cached_offline_is_a_fast_clear_error(hub_cache):
    started = time.perf_counter()
    with pytest.raises(CheckpointError,
                       match="not in the local Hugging Face cache and HF_HUB_OFFLINE is set.*local folder"):
        resolve("org/missing")
    with pytest.raises(CheckpointError, match="revision v2"):
        resolve("org/l2l", revision="v2")
    assert time.perf_counter() - started < 5  # a guard against network retries, not a benchmark


def test_unknown_names_list_the_bundled_ones():
    with pytest.raises(CheckpointError, match=f"unknown checkpoint 'nope'.*{DEFAULT_CHECKPOINT}"):
        resolve("nope")


def test_a_bundled_name_with_a_revision_says_bundled_checkpoints_have_none():
    with pytest.raises(CheckpointError, match="'l2l-mnist' is a bundled checkpoint, which has no revisions"):
        LearnedOptimizer([torch.nn.Parameter(torch.ones(2))], pretrained="l2l-mnist", revision="main")


def test_a_learning_rate_in_the_checkpoint_position_shows_the_keyword_form():
    with pytest.raises(TypeError, match=r"LearnedOptimizer\(params, lr=0.001\)"):
        LearnedOptimizer([torch.nn.Parameter(torch.ones(2))], 1e-3)
