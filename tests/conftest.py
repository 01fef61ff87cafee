import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: no test touches the network

from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # Triton's interpreter runs the GPU kernel on CPU tensors (tests/test_triton_kernel.py); it must be on before
    # Triton is imported. The kernel itself stays off except in the tests that turn it on.
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ["LEARNED_OPTIM_TRITON"] = "0"

from unittest import mock  # noqa: E402

from torch import nn  # noqa: E402

from learned_optim import CoordinatewiseLSTM, LearnedOptimizer, kernel, triton_kernel  # noqa: E402


def random_network(seed: int = 0, **config) -> CoordinatewiseLSTM:
    """A network with O(1) random weights, so its updates differ from coordinate to coordinate."""
    torch.manual_seed(seed)
    network = CoordinatewiseLSTM(**config)
    with torch.no_grad():
        for p in network.parameters():
            p.normal_(0, 0.5)
    return network


@pytest.fixture
def network() -> CoordinatewiseLSTM:
    return random_network()


@pytest.fixture
def checkpoint(tmp_path, network):
    folder = tmp_path / "ckpt"
    network.save_pretrained(folder)
    return folder


def torchrun(args: list[str], program: tuple[str, ...] = ("-m", "learned_optim.meta"), processes: int = 2,
             timeout: float = 300) -> None:
    """``python -m learned_optim.meta ARGS`` (or another ``program``) on 2 (``processes``) CPU processes under
    torchrun (gloo), one thread each. A run still going after ``timeout`` seconds fails with its workers' Python
    stacks (``faulthandler`` on SIGABRT), so a hang says where it hangs."""
    import signal
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               *program, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
        try:
            _, stderr = run.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            workers = _children(run.pid)  # torchrun starts each in a session of its own
            for pid in workers:
                os.kill(pid, signal.SIGABRT)  # each dumps its stacks and ends; torchrun then stops
            try:
                _, stderr = run.communicate(timeout=60)
            finally:
                for pid in [run.pid, *workers]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            pytest.fail(f"torchrun still running after {timeout} s; its workers' stacks:\n{stderr[-20000:]}")
    assert run.returncode == 0, stderr[-3000:]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux's /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
"""Under CI a test never skips for something the machine should have: it fails, naming what is missing."""
SHARED_DATA = Path(__file__).parents[2] / "shared" / "data"


def missing(what: str):
    """Skip a test that needs ``what`` (a sentence naming it and where it was looked for); fail under ``CI=true``."""
    (pytest.fail if IN_CI else pytest.skip)(f"needs {what}")


def data_root(kind: str) -> Path | None:
    """The folder of the shared data set ``kind`` ("mnist" or "art") if it holds the files: its environment
    variable, else ``../shared/data/<kind>``. The one place tests look for data."""
    from learned_optim.meta.tasks.mnist import FILES

    required = {"mnist": FILES, "art": ["vgg16_features.safetensors"]}[kind]
    return next((folder for folder in _candidates(kind) if all((folder / name).is_file() for name in required)), None)


def _candidates(kind: str) -> list[Path]:
    from learned_optim.meta.tasks import art, mnist as data

    variable = {"mnist": data.ENV_VAR, "art": art.ENV_VAR}[kind]
    return [Path(folder) for folder in (os.environ.get(variable), SHARED_DATA / kind) if folder]


def require_data(kind: str) -> Path:
    """``data_root(kind)``, or skip (fail under CI) naming the folders looked in."""
    root = data_root(kind)
    if root is None:
        missing(f"the {kind} data: looked in {', '.join(map(str, _candidates(kind)))}")
    return root


def mnist_root() -> str:
    """The real MNIST files' folder (the test skips, or fails under CI, without them)."""
    return str(require_data("mnist"))


def art_root() -> Path:
    """The art folder: VGG-16 weights, content photos and styles (the test skips, or fails under CI, without it)."""
    return require_data("art")


PATHS = {  # the environment that selects each CPU execution path
    "cpu-kernel": {kernel.ENV_VAR: "1", triton_kernel.ENV_VAR: "0"},
    "pytorch": {kernel.ENV_VAR: "0", triton_kernel.ENV_VAR: "0"},
    "triton": {kernel.ENV_VAR: "0", triton_kernel.ENV_VAR: "1"},  # its interpreter, on CPU tensors
}


@pytest.fixture(params=sorted(PATHS))
def path(request):
    """Each execution path in turn, checked to be the one that ran (``last_step_paths``)."""
    if request.param == "cpu-kernel" and not kernel.available():
        pytest.skip("the fused CPU kernel is not built here (tests/test_kernel.py requires it under CI)")
    if request.param == "triton" and (triton_kernel.triton is None or torch.cuda.is_available()):
        pytest.skip("Triton's interpreter runs on CPU tensors where there is no GPU")
    with mock.patch.dict("os.environ", PATHS[request.param]):
        yield request.param


def model_and_optimizer(network, **options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2))
    groups = [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.5}]
    return model, LearnedOptimizer(groups, network, **options)


def train(model, optimizer, steps, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=generator)
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()


def parameters(model):
    return [p.detach().clone() for p in model.parameters()]
