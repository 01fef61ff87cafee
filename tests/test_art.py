"""Neural art: the VGG-16 loader and its errors, the style-transfer task, its suite, meta-training and example."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file, save_file

from learned_optim.meta.tasks import textures
from learned_optim.meta.tasks.art import (ENV_VAR, HELD_OUT_STYLES, MIN_CROP, SPLITS, StyleLoss, StyleTransferSizes,
                                          StyleTransferTask, find_style, gram, load_image, load_style, load_vgg16,
                                          photos, save_image, square, style_family, style_transfer_task)
from learned_optim.meta.cli import main
from learned_optim.meta.tasks.mnist import DataError
from learned_optim.meta.tasks.registry import DEFAULTS
from learned_optim.meta.suites import Panel
from learned_optim.meta.tasks import seeded

from conftest import art_root, data_root, random_network

REPO = Path(__file__).parents[1]


ART = data_root("art")


@pytest.fixture(scope="module", autouse=True)
def needs_art():
    art_root()  # skips, or fails under CI, without the art folder


@pytest.fixture(scope="module")
def vgg():
    return load_vgg16(ART / "vgg16_features.safetensors")


@pytest.fixture(scope="module")
def task(vgg):
    return style_transfer_task(size=32, root=ART, vgg=str(ART / "vgg16_features.safetensors"))


def test_the_shared_weights_load_as_vgg16_features_and_say_what_they_are(vgg):
    assert vgg.description == "VGG-16 (HED fine-tuned)"
    features = vgg(torch.rand(2, 3, 32, 32))
    assert {layer: tuple(f.shape) for layer, f in features.items()} == {
        1: (2, 64, 32, 32), 6: (2, 128, 16, 16), 11: (2, 256, 8, 8), 18: (2, 512, 4, 4), 25: (2, 512, 2, 2),
        20: (2, 512, 4, 4)}
    assert all((f >= 0).all() for f in features.values())  # after the ReLUs
    assert not any(p.requires_grad for p in vgg.parameters())


def test_a_hub_repo_id_loads_from_the_hub_cache_and_extra_keys_are_ignored(tmp_path, monkeypatch, vgg):
    state = load_file(ART / "vgg16_features.safetensors")
    state["head.fc.weight"] = torch.zeros(2, 2)  # timm's file also has a classifier
    snapshot = tmp_path / "hub" / "models--org--vgg16" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    save_file(state, snapshot / "model.safetensors")
    (tmp_path / "hub" / "models--org--vgg16" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--vgg16" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with mock.patch("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub")):
        loaded = load_vgg16("org/vgg16")
    assert loaded.description == "VGG-16 (org/vgg16)"
    image = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(loaded(image)[25], vgg(image)[25])


def test_loader_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_vgg16(tmp_path / "absent.safetensors")
    with pytest.raises(DataError, match="Hugging Face Hub"):
        load_vgg16("nobody/no-such-vgg")  # offline in tests, and not cached
    state = load_file(ART / "vgg16_features.safetensors")
    save_file({k: v for k, v in state.items() if k != "features.28.weight"}, tmp_path / "missing.safetensors")
    with pytest.raises(DataError, match=r"missing \['features.28.weight'\]"):
        load_vgg16(tmp_path / "missing.safetensors")
    save_file({**state, "features.0.weight": torch.zeros(64, 1, 3, 3)}, tmp_path / "shape.safetensors")
    with pytest.raises(DataError, match=r"features.0.weight \(64, 1, 3, 3\)"):
        load_vgg16(tmp_path / "shape.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="cannot read"):
        load_vgg16(tmp_path / "garbage.safetensors")
    with pytest.raises(DataError, match="starry_night.jpg.*mosaic.*'family'"):
        find_style("mona_lisa.jpg", ART)
    with pytest.raises(DataError, match="LEARNED_OPTIM_ART"):
        with mock.patch.dict(os.environ, {ENV_VAR: ""}):
            style_transfer_task(root=None)
    with mock.patch.dict(os.environ):
        os.environ.pop(ENV_VAR, None)
        with pytest.raises(DataError, match=r"'typo.jpg' not found; pass the path of an image file, .*\(mosaic\).*"
                                            "set LEARNED_OPTIM_ART"):
            load_style("typo.jpg")
        assert load_style("mosaic").shape == (3, textures.SIDE, textures.SIDE)  # needs no art folder


def test_splits_keep_whole_photos_apart():
    names = {split: {name for name, _ in photos(ART, split)} for split in ("train", "validation", "test")}
    assert names["validation"] == set(SPLITS["validation"]) and names["test"] == set(SPLITS["test"])
    assert not names["train"] & (names["validation"] | names["test"])
    assert len(names["train"]) == 16


def test_min_crop_zooms_in_on_training_crops_only(vgg):
    photo, style = torch.rand(3, 100, 200), torch.rand(3, 40, 40)

    def crop_sides(task):
        with mock.patch("learned_optim.meta.tasks.art.square", wraps=square) as crop:
            for seed in range(200):
                task.content(seeded(seed))
        return [call.args[2] for call in crop.call_args_list]

    default, zoomed = (crop_sides(StyleTransferTask(vgg, [photo], style, size=16, min_crop=m)) for m in (0.5, 0.1))
    assert 50 <= min(default) and max(default) <= 100
    assert 10 <= min(zoomed) < 20 and max(zoomed) <= 100
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match=f"Invalid min_crop: {bad}; .* in \\(0, 1\\]"):
            StyleTransferTask(vgg, [photo], style, size=16, min_crop=bad)
    weights = str(ART / "vgg16_features.safetensors")
    assert style_transfer_task(size=16, root=ART, vgg=weights, min_crop=0.2).min_crop == 0.2
    assert style_transfer_task(size=16, split="validation", root=ART, vgg=weights, min_crop=0.2).min_crop == MIN_CROP


def test_gram_matrix_is_normalised_by_the_feature_size():
    features = torch.arange(12.0).view(1, 2, 2, 3)
    flat = features.view(2, 6)
    torch.testing.assert_close(gram(features)[0], flat @ flat.T / 12)


def test_the_loss_starts_at_the_content_photo_and_batches_exactly(task):
    problem = task.sample(seeded(0))
    loss = StyleLoss(task.features, problem.params["image"][None], task.style)
    terms = loss.terms(problem.params["image"][None])
    assert float(terms["content"]) == 0 and float(terms["style"]) > 0
    batch = task.sample_many([seeded(0), seeded(1)])
    assert torch.equal(batch.params["image"][0], problem.params["image"])
    torch.testing.assert_close(batch.loss(batch.params, 0)[0], problem.loss(problem.params, 0))
    alone = task.sample(seeded(1))
    torch.testing.assert_close(batch.loss(batch.params, 0)[1], alone.loss(alone.params, 0))


def test_adam_stylises_an_image(task):
    problem = task.sample(seeded(2))
    image = problem.params["image"].clone().requires_grad_()
    optimizer = torch.optim.Adam([image], lr=0.05)
    losses = []
    for step in range(10):
        optimizer.zero_grad()
        loss = problem.loss({"image": image}, step)
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0]


def test_images_round_trip_through_files(tmp_path):
    image = torch.rand(3, 5, 7)
    save_image(image, tmp_path / "x.png")
    torch.testing.assert_close(load_image(tmp_path / "x.png"), image, atol=1 / 255, rtol=0)
    (tmp_path / "bad.png").write_bytes(b"no image")
    with pytest.raises(DataError, match="cannot read image"):
        load_image(tmp_path / "bad.png")


def test_meta_training_on_art_and_the_neural_art_suite(tmp_path, capsys):
    run = tmp_path / "run"
    main(["train", str(run), "--task", "art", "--size", "16", "--art-root", str(ART), "--horizon", "4", "--unroll", "2",
          "--episodes", "2", "--num-validation", "1", "--validate-every", "1"])
    config = json.loads((run / "run.json").read_text())
    assert config["task"] == {"name": "art", "style": "starry_night.jpg", "size": 16, "root": str(ART)}
    assert (config["recipe"]["horizon"], config["recipe"]["unroll"]) == (4, 2)
    tiny_panel = {"tiny": Panel({"style": "ihc.png", "size": 16}, 3, "tiny")}
    tiny_protocol = {"steps": 3, "problems": 2, "tuning_problems": 1, "tuning_split": "validation",
                     "lr_grid": [0.01, 0.1]}
    with mock.patch.dict("learned_optim.meta.suites.SUITES", {"neural-art": ("art", tiny_panel)}), \
         mock.patch.dict(DEFAULTS["art"], {"evaluation": tiny_protocol}):
        main(["evaluate", "--run", str(run), "--suite", "neural-art", "--art-root", str(ART),
              "--out", str(tmp_path / "ev")])
    results = json.loads((tmp_path / "ev" / "tiny.json").read_text())
    assert results["task"]["style"] == "ihc.png" and results["tuning_split"] == "validation"
    assert "VGG-16 (HED fine-tuned)" in results["splits"]
    assert {r["name"] for r in results["results"]} == {"LSTM", "SGD", "NAG", "RMSprop", "Adam"}
    assert (tmp_path / "ev" / "tiny-images.png").is_file()
    assert "tiny-images.png" in (tmp_path / "ev" / "README.md").read_text()


def test_the_neural_art_suite_is_the_papers_conditions_with_every_held_out_style(checkpoint):
    with mock.patch("learned_optim.meta.cli.run_suite") as evaluate:
        main(["evaluate", "--checkpoint", str(checkpoint), "--suite", "neural-art"])
    _, panels, protocol = evaluate.call_args.args[:3]
    assert protocol == DEFAULTS["art"]["evaluation"]
    assert [(spec["style"], spec["size"], steps) for spec, steps, _, _ in panels.values()] == [
        ("starry_night.jpg", 64, 128), ("ihc.png", 128, 128), ("hubble_deep_field.jpg", 128, 128),
        ("mosaic", 128, 128)]
    assert [spec["style"] for spec, *_ in panels.values()][1:] == list(HELD_OUT_STYLES)
    assert max(protocol["lr_grid"]) > 1 and min(protocol["lr_grid"]) <= 1e-3


@pytest.mark.parametrize("style", [str(ART / "style" / "starry_night.jpg"), "mosaic"])
def test_the_neural_art_example_writes_its_images(tmp_path, style):
    content = ART / "content" / "chelsea.png"
    result = subprocess.run([sys.executable, str(REPO / "examples" / "neural_art.py"), str(content), str(style),
                             "--size", "32", "--steps", "3", "--vgg", str(ART / "vgg16_features.safetensors"),
                             "--pretrained", str(_tiny_checkpoint(tmp_path)), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"lstm.png", "adam.png"}
    assert "loss" in result.stdout


def _tiny_checkpoint(tmp_path: Path) -> Path:
    network = random_network(preprocessing="log_sign", p=10.0, output_scale=0.01)
    network.save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


@pytest.mark.slow
def test_l2l_art_ends_below_its_nominal_step():
    """The model card's ablation, on one test problem at 64x64: l2l-art's final loss (mean of the last 10 steps) is
    below its nominal step's alone (the head zeroed, so the LSTM adds nothing), having taken the loss from the
    content photo's to below 0.2% of it. (Its claim against tuned baselines: test_claims.py.)"""
    from learned_optim import LearnedOptimizer, pretrained
    from learned_optim.meta.evaluation import EVALUATION_SEED, run_optimizer

    task = style_transfer_task(size=64, split="test", root=ART)
    nominal = pretrained.load("l2l-art")
    with torch.no_grad():
        nominal.head.weight.zero_()
        nominal.head.bias.zero_()
    optimizers = {"l2l-art": lambda params: LearnedOptimizer(params, pretrained.load("l2l-art")),
                  "nominal": lambda params: LearnedOptimizer(params, nominal)}
    losses = {name: run_optimizer(task.sample(seeded(EVALUATION_SEED)), make, 128).losses
              for name, make in optimizers.items()}
    final = {name: sum(curve[-10:]) / 10 for name, curve in losses.items()}
    assert final["l2l-art"] < final["nominal"]
    assert losses["l2l-art"][-1] < 0.002 * losses["l2l-art"][0]


@pytest.mark.parametrize("generate", [*textures.TRAINING_TEXTURES.values(), textures.mosaic])
def test_a_generated_style_is_an_rgb_image_its_seed_names(generate):
    image = generate(seeded(5), side=64)
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert 0 <= float(image.min()) and float(image.max()) <= 1 and float(image.std()) > 0.05
    assert torch.equal(generate(seeded(5), side=64), image)
    assert not torch.equal(generate(seeded(6), side=64), image)
    variant = textures.colour_variant(image, seeded(0))
    assert variant.shape == image.shape and 0 <= float(variant.min()) and float(variant.max()) <= 1


def test_no_held_out_style_is_drawn_in_meta_training_or_validation():
    held_out = [load_style(name, ART) for name in HELD_OUT_STYLES]
    assert torch.equal(load_style("mosaic", ART), held_out[-1])
    for split in ("train", "validation"):
        family = style_family(split, ART)
        sources = [source for kind in family.kinds.values() for source in kind]
        drawn = [source(seeded(0)) for source in sources]
        assert not any(image.shape == style.shape and torch.equal(image, style)
                       for image in drawn for style in held_out)
        assert textures.mosaic not in sources
    assert list(style_family("validation", ART).kinds) == ["photos", "generated"]
    train = style_family("train", ART)
    assert list(train.kinds) == ["style images", "photos", "generated"]
    assert len(train.kinds["style images"]) == 1 and len(train.kinds["photos"]) == 16  # The Starry Night alone
    assert train.kinds["generated"] == tuple(textures.TRAINING_TEXTURES.values())
    drawn = [source(seeded(0)) for source in style_family("test", ART).kinds["held out"]]
    assert len(drawn) == len(held_out) and all(torch.equal(a, b) for a, b in zip(drawn, held_out))


def test_a_style_family_task_draws_each_problems_style_and_size_and_batches_exactly():
    task = style_transfer_task("family", [16, 32], root=ART, vgg=str(ART / "vgg16_features.safetensors"))
    assert isinstance(task, StyleTransferSizes)
    problems = [task.sample(seeded(seed)) for seed in range(12)]
    assert {p.params["image"].shape[-1] for p in problems} == {16, 32}
    contents, styles = zip(*(task.images(seeded(seed)) for seed in range(12)))
    assert all(torch.equal(content, p.params["image"]) and style.shape == content.shape
               for content, style, p in zip(contents, styles, problems))
    assert len({float(style.sum()) for style in styles}) > 6  # a style per problem
    size = problems[0].params["image"].shape[-1]
    batch = task.sample_many([seeded(seed) for seed in range(3)])  # the size of its first problem
    assert batch.params["image"].shape == (3, 3, size, size)
    alone = [problems[0], *(task.task(size).sample(seeded(seed)) for seed in (1, 2))]
    for k, problem in enumerate(alone):
        assert torch.equal(batch.params["image"][k], problem.params["image"])
        torch.testing.assert_close(batch.loss(batch.params, 0)[k], problem.loss(problem.params, 0))


def test_bad_sizes_and_styles_are_named():
    weights = str(ART / "vgg16_features.safetensors")
    for bad in ([], "64", [64, True]):
        with pytest.raises(ValueError, match="Invalid size.*side in pixels"):
            style_transfer_task(size=bad, root=ART, vgg=weights)
    with pytest.raises(ValueError, match="Invalid size: 8"):
        style_transfer_task("family", [32, 8], root=ART, vgg=weights)
    with pytest.raises(DataError, match="no styles for split 'tests'"):
        style_family("tests", ART)


def test_meta_training_on_the_style_family(tmp_path):
    run = tmp_path / "run"
    main(["train", str(run), "--task", "art", "--style", "family", "--size", "16", "24", "--art-root", str(ART),
          "--horizon", "3", "--unroll", "3", "--episodes", "2", "--num-validation", "2", "--validate-every", "2"])
    config = json.loads((run / "run.json").read_text())
    assert config["task"] == {"name": "art", "style": "family", "size": [16, 24], "root": str(ART)}
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [entry["episode"] for entry in log if "meta_loss" in entry] == [1, 2]
    assert all(math.isfinite(entry["validation_loss"]) for entry in log if "validation_loss" in entry)
    tiny_protocol = {"steps": 3, "problems": 2, "tuning_problems": 1, "tuning_split": "validation",
                     "lr_grid": [0.1], "baselines": ["Adam"]}
    with mock.patch.dict(DEFAULTS["art"], {"evaluation": tiny_protocol}):
        main(["evaluate", "--run", str(run), "--out", str(tmp_path / "ev")])  # on the held-out styles
    assert (tmp_path / "ev" / "art-images.png").is_file()
    main(["publish", str(run), "--out", str(tmp_path / "ckpt")])
    card = (tmp_path / "ckpt" / "README.md").read_text()
    assert "each in a style drawn from the training styles" in card
    assert "held out from meta-training and selection: ihc.png, hubble_deep_field.jpg, mosaic" in card


def test_a_neural_art_evaluation_reuses_earlier_baselines_and_draws_their_images_again(tmp_path):
    from learned_optim.meta.suites import run_suite

    panels = {"tiny": Panel({"name": "art", "style": "mosaic", "size": 16, "root": str(ART)}, 3, "tiny")}
    protocol = {"problems": 2, "tuning_problems": 1, "tuning_split": "validation", "lr_grid": [0.01, 0.1]}
    network = random_network(preprocessing="log_sign", p=10.0, output_scale=0.01)
    run_suite(network, panels, protocol, tmp_path / "first", "first")
    with mock.patch("learned_optim.meta.evaluation.tune", side_effect=AssertionError("baselines tuned again")):
        run_suite(network, panels, protocol, tmp_path / "second", "second", baselines_from=tmp_path / "first")
    first, second = (json.loads((tmp_path / folder / "tiny.json").read_text()) for folder in ("first", "second"))
    assert second["results"] == first["results"]
    summaries = [(tmp_path / folder / "README.md").read_text().split("\n")[8] for folder in ("first", "second")]
    assert summaries[0] == summaries[1] and re.search(r"\| [0-2] / 2 \| [0-2] / 2 \|$", summaries[1])
    assert (tmp_path / "second" / "tiny-images.png").is_file()
