"""A second family of your own for ``fit`` or ``train --task-module``: a small CNN on MNIST minibatches.

    python -m learned_optim.meta train runs/mnist-cnn --task-module examples/mnist_cnn_task.py:make_task \
        --horizon 200 --budget 10m

Two 5x5 convolutions of 8 channels (ReLU, 2x2 max-pooling), 32 hidden units, batch 64; the splits are MNIST's first
50,000 training images, its last 10,000 and the test images (``$LEARNED_OPTIM_MNIST`` or downloaded).
"""

from learned_optim.meta.tasks import ModuleTask, convnet, mnist_task


def make_model():
    return convnet(channels=8, num_convs=2, kernel_size=5, hidden=32, batch_norm=False)


def make_task(split: str = "train") -> ModuleTask:
    return mnist_task(make_model, split, batch_size=64)
