import json
import shutil
import time
from unittest import mock

import pytest
import torch
from huggingface_hub import constants
from safetensors import safe_open
from safetensors.torch import load_file, save_file

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


def test_default_optimizer_runs_the_generalist_with_step_scale_control_and_a_nominal_term():
    optimizer = LearnedOptimizer([torch.nn.Parameter(torch.ones(2))])
    assert DEFAULT_CHECKPOINT == "l2o-generalist-3"
    generalist = CoordinatewiseLSTM.from_pretrained(resolve("l2o-generalist-3"))
    assert optimizer.network.fingerprint() == generalist.fingerprint()
    assert generalist.scale_rate == 0.01 and generalist.nominal == 0.003


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


# Reading a checkpoint folder: strict, validated before anything is allocated


def test_save_then_strict_load_round_trip(checkpoint, network):
    loaded = CoordinatewiseLSTM.from_pretrained(checkpoint)
    assert loaded.config == network.config
    for (name, a), (_, b) in zip(network.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert json.loads((checkpoint / "config.json").read_text()) == network.config
    assert (checkpoint / "README.md").is_file()


def test_loading_rejects_missing_extra_and_misshapen_tensors(checkpoint):
    weights = load_file(checkpoint / "model.safetensors")
    cases = {
        "missing": {k: v for k, v in weights.items() if k != "head.bias"},
        "extra": {**weights, "head.extra": torch.zeros(1)},
        "misshapen": {**weights, "head.weight": torch.zeros(1, 21)},
    }
    for case, tensors in cases.items():
        save_file(tensors, checkpoint / "model.safetensors")
        with pytest.raises(CheckpointError, match="does not match"):
            CoordinatewiseLSTM.from_pretrained(checkpoint)


def test_loading_rejects_bad_configs(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "hidden_size": 8}))
    with pytest.raises(CheckpointError, match="does not match"):
        CoordinatewiseLSTM.from_pretrained(checkpoint)
    (checkpoint / "config.json").write_text(json.dumps({**config, "learning_rate": 3}))
    with pytest.raises(CheckpointError, match="unknown config keys"):
        CoordinatewiseLSTM.from_pretrained(checkpoint)
    (checkpoint / "config.json").write_text(json.dumps({**config, "preprocessing": "fancy"}))
    with pytest.raises(CheckpointError, match="invalid config"):
        CoordinatewiseLSTM.from_pretrained(checkpoint)
    (checkpoint / "config.json").write_text(json.dumps({**config, "preprocessing": "log_sign", "nominal": 0.1}))
    with pytest.raises(CheckpointError, match="a nominal term needs"):
        CoordinatewiseLSTM.from_pretrained(checkpoint)
    (checkpoint / "config.json").write_text(json.dumps({**config, "preprocessing": "adam", "nominal": -0.05}))
    with pytest.raises(CheckpointError, match="invalid config.*finite nominal >= 0"):
        CoordinatewiseLSTM.from_pretrained(checkpoint)


@pytest.mark.parametrize("damage", ["empty", "truncated", "random"])
def test_unreadable_weights_are_a_checkpoint_error_naming_the_file(checkpoint, damage):
    path = checkpoint / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "random": bytes(range(256)) * 4}[damage])
    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file"):
        CoordinatewiseLSTM.from_pretrained(checkpoint)


def test_unexpected_metadata_keys_are_refused_by_name(checkpoint):
    path = checkpoint / "model.safetensors"
    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    save_file(load_file(path), path, metadata={**metadata, "origin": "elsewhere"})
    with pytest.raises(CheckpointError, match=r"unexpected metadata keys \['origin'\]"):
        CoordinatewiseLSTM.from_pretrained(checkpoint)


def test_non_finite_weights_are_refused(checkpoint):
    weights = load_file(checkpoint / "model.safetensors")
    weights["head.bias"] = torch.tensor([float("nan")])
    save_file(weights, checkpoint / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"non-finite .*\['head.bias'\]"):
        CoordinatewiseLSTM.from_pretrained(checkpoint)


@pytest.mark.parametrize("size", [{"hidden_size": 10**9}, {"num_layers": 10**6}, {"hidden_size": 4096}])
def test_a_config_asking_for_a_huge_network_is_refused_before_allocating(checkpoint, size):
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, **size}))
    with mock.patch.object(CoordinatewiseLSTM, "__init__", side_effect=AssertionError("allocated")):
        with pytest.raises(CheckpointError, match="invalid config|does not match its config"):
            CoordinatewiseLSTM.from_pretrained(checkpoint)


def test_broken_config_json_is_a_checkpoint_error(checkpoint):
    from learned_optim import pretrained

    (checkpoint / "config.json").write_text("{broken")
    for load in (pretrained.load, CoordinatewiseLSTM.from_pretrained):
        with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
            load(checkpoint)


def test_loading_requires_safetensors_weights(checkpoint):
    (checkpoint / "model.safetensors").unlink()
    torch.save({}, checkpoint / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        CoordinatewiseLSTM.from_pretrained(checkpoint)
