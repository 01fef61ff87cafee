"""A task from the user's own code on the command line (train --task-module), and its errors."""

import json
import textwrap

import pytest

from learned_optim.meta.cli import main
from learned_optim.meta.tasks import ModuleTask, make_task

USER_TASKS = textwrap.dedent('''
    import torch
    from torch import nn
    from learned_optim.meta.tasks import ModuleTask

    def regression(split):
        target = torch.randn(4, 1, generator=torch.Generator().manual_seed({"train": 0, "validation": 1}[split]))

        def sample_batch(generator):
            x = torch.randn(16, 4, generator=generator)
            return x, x @ target

        return ModuleTask(lambda: nn.Linear(4, 1), sample_batch, nn.functional.mse_loss)

    def not_a_task(split):
        return nn.Linear(4, 1)

    def no_parameters(split):
        return ModuleTask(nn.ReLU, lambda generator: (torch.randn(2, 4, generator=generator), torch.zeros(2, 4)))

    raise_on_import = False
''')


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_tasks.py"
    path.write_text(USER_TASKS)
    return path


def test_a_users_task_meta_trains_from_the_generalist_by_file_or_module(user_file, tmp_path, monkeypatch):
    run = tmp_path / "run"
    main(["train", str(run), "--task-module", f"{user_file}:regression", "--episodes", "1", "--horizon", "4",
          "--unroll", "4", "--validate-every", "1", "--num-validation", "2"])
    config = json.loads((run / "run.json").read_text())
    assert config["task"] == {"name": "module", "reference": f"{user_file}:regression"}
    assert config["init"] == "l2o-generalist-2" and config["network"]["preprocessing"] == "adam"
    assert (run / "best" / "model.safetensors").is_file()
    main(["train", str(tmp_path / "from-default"), "--task-module", f"{user_file}:regression", "--init",
          "l2o-generalist-3", "--episodes", "1", "--horizon", "4", "--unroll", "4", "--validate-every", "1",
          "--num-validation", "2"])  # the network is the init checkpoint's, its nominal term kept unsaid
    assert json.loads((tmp_path / "from-default" / "run.json").read_text())["network"]["nominal"] == 0.003
    monkeypatch.syspath_prepend(str(user_file.parent))
    assert isinstance(make_task({"name": "module", "reference": "my_tasks:regression"}, "validation"), ModuleTask)


@pytest.mark.parametrize("function, message", [
    ("regression_typo", "has no function 'regression_typo'"),
    ("not_a_task", "returned Linear; it must return a learned_optim.meta.tasks.Task"),
    ("no_parameters", "no parameters to optimize"),
])
def test_a_wrong_function_is_one_clear_error(user_file, tmp_path, capsys, function, message):
    with pytest.raises(SystemExit):
        main(["train", str(tmp_path / "run"), "--task-module", f"{user_file}:{function}", "--episodes", "1"])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("reference, message", [
    ("no_such_module_here:make", "importing 'no_such_module_here' failed: ModuleNotFoundError"),
    ("missing.py:make", "importing 'missing.py' failed: FileNotFoundError"),
    ("no_colon", "expected MODULE:FUNCTION or FILE.py:FUNCTION"),
])
def test_a_reference_that_does_not_import_is_one_clear_error(tmp_path, capsys, reference, message):
    with pytest.raises(SystemExit):
        main(["train", str(tmp_path / "run"), "--task-module", reference, "--episodes", "1"])
    assert message in capsys.readouterr().err


def test_an_import_that_raises_names_the_error(user_file, tmp_path, capsys):
    user_file.write_text(USER_TASKS.replace("raise_on_import = False", "raise RuntimeError('my bug')"))
    with pytest.raises(SystemExit):
        main(["train", str(tmp_path / "run"), "--task-module", f"{user_file}:regression", "--episodes", "1"])
    assert "failed: RuntimeError: my bug" in capsys.readouterr().err
