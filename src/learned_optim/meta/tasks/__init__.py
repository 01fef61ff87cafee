r"""Tasks: families of optimization problems that meta-training is written against.

A :class:`Task` samples :class:`Problem` instances from a ``torch.Generator``. A problem gives
initial parameters :math:`\theta_0` (a dict of tensors) and a differentiable loss
:math:`f(\theta, t)` of those parameters at step :math:`t` (so minibatches can change per step;
the same ``t`` always gives the same minibatch).

Meta-training runs ``K`` problems of one task together as a :class:`ProblemBatch`: every
parameter stacked along a leading dimension of size ``K`` and one loss call returning the ``K``
losses. :meth:`Task.sample_many` stacks ``K`` problems drawn from ``K`` generators, so problem
``k`` of a batch is exactly the problem :meth:`Task.sample` draws from the ``k``-th generator;
:class:`ModuleTask` evaluates the ``K`` models in one call with ``torch.func.vmap``.

The package: :mod:`~learned_optim.meta.tasks.base` (problems, batches, tasks), the families
(:mod:`~learned_optim.meta.tasks.synthetic`, :mod:`~learned_optim.meta.tasks.modules` for any ``nn.Module``,
:mod:`~learned_optim.meta.tasks.mnist`, :mod:`~learned_optim.meta.tasks.families` for sampled architectures and
mixtures, :mod:`~learned_optim.meta.tasks.art` with the generated styles of :mod:`~learned_optim.meta.tasks.textures`)
and :mod:`~learned_optim.meta.tasks.registry`, which builds a task
from its JSON spec.
"""

from .base import Params, Problem, ProblemBatch, Task, seeded, stack_problems
from .modules import ACTIVATIONS, ModuleTask, convnet, mlp, paper_convnet
from .mnist import mnist_mlp_task, mnist_task
from .registry import DEFAULTS, TASK_NAMES, make_task
from .synthetic import QuadraticTask, SimpleTask

__all__ = ["ACTIVATIONS", "DEFAULTS", "TASK_NAMES", "ModuleTask", "Params", "Problem", "ProblemBatch", "QuadraticTask",
           "SimpleTask", "Task", "convnet", "make_task", "mlp", "mnist_mlp_task", "mnist_task", "paper_convnet",
           "seeded", "stack_problems"]
