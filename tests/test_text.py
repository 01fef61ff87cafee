"""Character-level language models on the bundled Python corpus (learned_optim.meta.tasks.text)."""

import gzip

import pytest
import torch

from learned_optim.meta.tasks import make_task, seeded
from learned_optim.meta.tasks.text import (CORPUS, HELD_OUT_LANGUAGE_MODEL, CharTransformer, LanguageModelConfig,
                                           TextLMFamily, load_text, text_lm_task)


def test_the_splits_are_disjoint_consecutive_and_cover_the_corpus_as_its_readme_says():
    corpus = gzip.decompress(CORPUS.read_bytes())
    assert len(corpus) == 313_020 and max(corpus) < 128  # corpus/README.md
    splits = [load_text(split) for split in ("train", "validation", "test")]
    assert torch.equal(torch.cat(splits), torch.tensor(list(corpus)))
    assert [len(s) for s in splits] == [250_416, 31_302, 31_302]
    with pytest.raises(ValueError, match="split"):
        load_text("holdout")


def test_the_transformer_is_causal():
    torch.manual_seed(0)
    model = CharTransformer(context=16, width=16, layers=2)
    tokens = torch.randint(128, (3, 16))
    changed = tokens.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 128
    before, after = (model(t).view(3, 16, 128) for t in (tokens, changed))
    torch.testing.assert_close(before[:, :10], after[:, :10])
    assert not torch.allclose(before[:, 10:], after[:, 10:])


def test_a_problem_predicts_the_next_byte_of_its_windows_and_starts_near_a_uniform_guess():
    task = text_lm_task(LanguageModelConfig(16, 1, 8, 4), split="validation")
    inputs, targets = task.sample_batch(seeded(0))
    assert inputs.shape == (4, 8) and targets.shape == (32,)
    assert torch.equal(inputs[:, 1:].reshape(4, 7), targets.view(4, 8)[:, :-1])  # each target is the next input
    problem = task.sample(seeded(0))
    assert abs(float(problem.loss(problem.params, 0)) - torch.log(torch.tensor(128.0))) < 0.5
    batch = task.sample_many([seeded(0), seeded(1)])
    torch.testing.assert_close(batch.loss(batch.params, 3)[0], problem.loss(problem.params, 3))


def test_the_family_draws_varied_models_never_the_suites_and_the_registry_builds_both():
    family = TextLMFamily()
    configs = [family.config(seeded(seed)) for seed in range(200)]
    assert HELD_OUT_LANGUAGE_MODEL not in configs
    assert {c.layers for c in configs} == {1, 2} and {c.context for c in configs} == {16, 32, 64}
    assert all(16 <= c.width <= 64 and c.width % 2 == 0 for c in configs)
    assert isinstance(make_task({"name": "text-lms"}), TextLMFamily)
    task = make_task({"name": "text-lm", "width": 16}, split="test")
    assert task.sample(seeded(0)).params["embedding.weight"].shape == (128, 16)
