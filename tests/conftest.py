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

from learned_optim import CoordinatewiseLSTM  # noqa: E402


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


def real_mnist() -> str | None:
    """A folder with the real MNIST files ($LEARNED_OPTIM_MNIST or ../shared/data/mnist), else None."""
    from learned_optim.meta.data import ENV_VAR, FILES

    for folder in (os.environ.get(ENV_VAR), Path(__file__).parents[2] / "shared" / "data" / "mnist"):
        if folder and all((Path(folder) / name).is_file() for name in FILES):
            return str(folder)
    return None
