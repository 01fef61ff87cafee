"""The fused CPU step: ``csrc/lstm_step.cpp``, compiled on first use, cached, called through ctypes.

Per tile of coordinates (16 with AVX2, 32 with AVX-512) the kernel runs the gradient encoding, every LSTM layer,
the head and the parameter update in one pass, reading and writing each coordinate's state once (the chunked
PyTorch path makes ~10 passes over each chunk); see the source for how. It is compiled with the system's C++
compiler (``$CXX``, else ``c++``, ``g++`` or ``clang++``) for this CPU (``-march=native``) into
``$LEARNED_OPTIM_CACHE/kernels`` (default ``$XDG_CACHE_HOME/learned_optim/kernels``, ``XDG_CACHE_HOME`` defaulting to
``~/.cache``), keyed by the source, the flags and the CPU, written atomically and readable by every user, so it is
built once per machine in about a second; builds unused for :data:`STALE_DAYS` days are deleted when a new one is
made. Without a compiler,
or with ``LEARNED_OPTIM_KERNEL=0``, :func:`available` is False and callers use the PyTorch path
(one warning says why, when the compiler is missing or fails). The gate matmuls multiply in float32, or, with
``precision="bf16"`` on a CPU with AVX-512-BF16 (:func:`bf16_dot`), in bfloat16 pairs with float32 sums.

One call steps any number of tensors (:func:`fused_update_many_`, which ``LearnedOptimizer`` calls once per param
group): their tiles are laid end to end and split, in chunks, over the calling thread and up to
``torch.get_num_threads() - 1`` helper threads of the library's own, at least :data:`MIN_COORDINATES_PER_THREAD`
coordinates per thread. A helper takes chunks while any are left; the caller never waits for a helper to wake, only
for the chunks one has taken, so beside another busy process the step slows down by the share of the cores it gets,
not by a thread that waits for one (``benchmarks/step_contention.py``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .fusion import DEFAULT_PRECISION, OUTPUT_CODES, PREPROCESSING_CODES, PreparedWeights, fusable
from .preprocessing import ADAM_EPSILON, MOMENT_DECAY

SOURCE = Path(__file__).with_name("csrc") / "lstm_step.cpp"
FLAGS = ("-O3", "-march=native", "-std=c++17", "-fno-math-errno", "-shared", "-fPIC", "-pthread")
ENV_VAR = "LEARNED_OPTIM_KERNEL"
CACHE_ENV_VAR = "LEARNED_OPTIM_CACHE"
STALE_DAYS = 30
"""A cached build not loaded for this many days is deleted when another is built (a machine's own builds are
touched at every load; builds for other CPUs sharing the folder age out)."""
MIN_COORDINATES_PER_THREAD = 4_096
"""Below this many coordinates per thread, handing a thread its share costs more than it saves."""


class CompilerError(RuntimeError):
    """The compiler failed; ``stderr`` is what it said."""

    def __init__(self, compiler: str, stderr: str) -> None:
        super().__init__(f"{compiler} failed:\n{stderr[-2000:]}")
        self.stderr = stderr


_lock = threading.Lock()
_library: Any = None  # the loaded library; False once it is known to be unavailable


def _compiler() -> str | None:
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    return next((path for path in map(shutil.which, names) if path), None)


def _cpu_identity() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags where Linux says them."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags", "Features"))}))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _cache_dir() -> Path:
    """``$LEARNED_OPTIM_CACHE/kernels``, else ``$XDG_CACHE_HOME/learned_optim/kernels`` (``~/.cache`` by default)."""
    user_cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get(CACHE_ENV_VAR) or Path(user_cache) / "learned_optim") / "kernels"


def _prune(folder: Path, keep: Path) -> None:
    """Delete builds (and abandoned partial files) in ``folder`` untouched for :data:`STALE_DAYS` days."""
    oldest = time.time() - STALE_DAYS * 86_400
    for path in [*folder.glob("lstm_step-*.so"), *folder.glob("lstm_step-*.partial")]:
        try:
            if path != keep and path.stat().st_mtime < oldest:
                path.unlink()
        except OSError:  # another process pruned it, or it is not ours to delete
            pass


def _build(compiler: str, flags: tuple[str, ...]) -> Path:
    """The compiled library for this source, flags and CPU, compiled into the cache if missing."""
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), " ".join(flags).encode(), compiler.encode(),
                                     _cpu_identity().encode()])).hexdigest()[:16]
    target = _cache_dir() / f"lstm_step-{key}.so"
    if target.exists():
        try:
            os.utime(target)  # in use: not stale
        except OSError:  # a shared, read-only cache
            pass
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=target.name, suffix=".partial", dir=target.parent)
    os.close(fd)
    try:
        result = subprocess.run([compiler, *flags, str(SOURCE), "-o", partial], capture_output=True, text=True,
                                timeout=300)
        if result.returncode != 0:
            raise CompilerError(compiler, result.stderr)
        os.chmod(partial, 0o755)  # mkstemp's file is private; the cache may be shared
        os.replace(partial, target)  # atomic: other processes see no library or the whole one
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    _prune(target.parent, keep=target)
    return target


def _load() -> Any:
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (install g++ or clang++, or set CXX)")
    library = ctypes.CDLL(str(_build(compiler, FLAGS)))
    i64, f32, i32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_int, ctypes.c_void_p
    library.learned_optim_step.argtypes = [i64, i64, i64, i32, f32, f32, f32, ptr, ptr, ptr, f32, f32, i32, f32,
                                           ptr, i64, ptr, ptr, ptr, ptr, ptr, ptr, f32, i32, f32, f32, i64, i32, ptr]
    library.learned_optim_step.restype = None
    library.learned_optim_work_size.argtypes = [i64, i64]
    library.learned_optim_work_size.restype = i64
    library.learned_optim_tile.restype = i64
    library.learned_optim_bf16_dot.restype = i32
    library.tile = library.learned_optim_tile()  # coordinates per tile: threads get whole tiles
    library.bf16_dot = bool(library.learned_optim_bf16_dot())
    return library


def available() -> bool:
    """Whether the fused kernel can run here (built or loaded on the first call)."""
    global _library
    if os.environ.get(ENV_VAR, "1") == "0":
        return False
    with _lock:
        if _library is None:
            try:
                _library = _load()
            except (OSError, RuntimeError, subprocess.SubprocessError) as error:
                _library = False
                warnings.warn(f"learned_optim: the fused CPU kernel is unavailable, so LearnedOptimizer uses the "
                              f"PyTorch path (2-5x slower on CPU): {error}. Set {ENV_VAR}=0 to silence this.",
                              RuntimeWarning, stacklevel=3)
    return _library is not False


def supports(weights: Any, grad: Tensor, state: Tensor, out: Tensor | None, moments: Tensor | None = None) -> bool:
    """Whether :func:`fused_update_` takes these arguments (:func:`~learned_optim.fusion.fusable` on the CPU);
    anything else goes through the PyTorch path."""
    return fusable(weights, "cpu", grad, state, out, moments) and available()


def bfloat16_pairs(weight: Tensor) -> Tensor:
    """``[rows, G]`` float32 weights as the kernel's bfloat16 dot products read them: ``[ceil(rows / 2), G]`` int32,
    each the pair of rows ``2r`` (low half) and ``2r + 1`` (high half, zero past the last row), rounded to nearest
    even."""
    rows, columns = weight.shape
    padded = torch.cat([weight, weight.new_zeros(rows % 2, columns)]).to(torch.bfloat16)
    return torch.stack([padded[0::2], padded[1::2]], dim=-1).contiguous().view(torch.int32).squeeze(-1)


def _network_arguments(weights: Any) -> tuple:
    """The kernel's network arguments for ``weights``: ``(H, L, F, encoding, p, beta, eps, weight pointers,
    bias pointers, head pointer, head bias, output scale, bounded, nominal)``, the pointers to each layer's weights as
    :func:`bfloat16_pairs` (None where the kernel has no bfloat16 matmuls), and the tensors they point into."""
    hidden = weights.head_weight.shape[0]
    layers = [(w.detach().contiguous(), b.detach().contiguous()) for w, b in weights.layers]
    pairs = [bfloat16_pairs(w) for w, _ in layers] if _library.bf16_dot else []
    head_weight = weights.head_weight.detach().contiguous()
    arguments = (hidden, len(layers), layers[0][0].shape[0] - hidden, PREPROCESSING_CODES[weights.preprocessing],
                 weights.p, MOMENT_DECAY, ADAM_EPSILON,
                 (ctypes.c_void_p * len(layers))(*[w.data_ptr() for w, _ in layers]),
                 (ctypes.c_void_p * len(layers))(*[b.data_ptr() for _, b in layers]), head_weight.data_ptr(),
                 float(weights.head_bias), weights.output_scale, OUTPUT_CODES[weights.output], weights.nominal)
    bf16_pointers = (ctypes.c_void_p * len(pairs))(*[w.data_ptr() for w in pairs]) if pairs else None
    return arguments, bf16_pointers, (layers, pairs, head_weight)  # the tensors stay alive with their pointers


_prepared = PreparedWeights(_network_arguments)


def bf16_dot() -> bool:
    """Whether the kernel runs here with bfloat16 gate matmuls for ``precision="bf16"``: CPUs with AVX-512-BF16
    (elsewhere it computes in float32 whatever the precision)."""
    return available() and _library.bf16_dot


@torch.no_grad()
def fused_update_(weights: Any, grad: Tensor, state: Tensor, *, out: Tensor | None = None, lr: float = 1.0,
                  decay: float = 1.0, maximize: bool = False, moments: Tensor | None = None,
                  precision: str = DEFAULT_PRECISION) -> Tensor:
    """The no-grad step of :func:`~learned_optim.functional.fast_update_` in one pass per tile.

    ``state [2L, N, H]`` (and, for the ``"adam"`` encoding, ``moments [3, N]``, float32) is updated in place;
    with ``out`` (flat, float32) ``out <- decay * out + lr * update`` and ``out`` is returned, else the
    update. ``precision="bf16"`` rounds the gate matmuls' operands to bfloat16 (float32 sums) where
    :func:`bf16_dot` holds; every other precision computes in float32. Call only where :func:`supports` holds.
    """
    accumulate = out is not None
    if out is None:
        out = torch.empty(grad.shape[0], dtype=torch.float32)
    _run(weights, [grad], [state], [out], [moments], accumulate, lr, decay, maximize, precision)
    return out


@torch.no_grad()
def fused_update_many_(weights: Any, grads: list[Tensor], states: list[Tensor], outs: list[Tensor],
                       moments: list[Tensor | None], lr: float = 1.0, decay: float = 1.0, maximize: bool = False,
                       precision: str = DEFAULT_PRECISION, max_threads: int | None = None) -> None:
    """:func:`fused_update_` with an ``out`` for each of several tensors in one call: ``outs[k] <- decay * outs[k]
    + lr * update_k``. The threads split the tensors' tiles laid end to end, so many small tensors (a model's
    biases and norms) run like one large one, without a call per tensor, on up to ``max_threads`` threads (default:
    torch's). Call only where :func:`supports` holds for every tensor."""
    _run(weights, grads, states, outs, moments, True, lr, decay, maximize, precision, max_threads)


def _run(weights: Any, grads: list[Tensor], states: list[Tensor], outs: list[Tensor], moments: list[Tensor | None],
         accumulate: bool, lr: float, decay: float, maximize: bool, precision: str,
         max_threads: int | None = None) -> None:
    """One kernel call over the tiles of all the tensors, split over up to ``max_threads`` threads (default:
    ``torch.get_num_threads()``)."""
    totals = [grad.shape[0] for grad in grads]
    tiles = sum(-(-total // _library.tile) for total in totals)
    if tiles == 0:
        return
    grads = [grad.to(torch.float32).contiguous() for grad in grads]  # alive until the call returns
    network, bf16_weights, _ = _prepared(weights)
    count, pointers = len(grads), ctypes.c_void_p * len(grads)
    matmul_weights = bf16_weights if precision == "bf16" else None  # None: float32 (always, without bf16 matmuls)
    arguments = (*network, matmul_weights, count, pointers(*[g.data_ptr() for g in grads]),
                 pointers(*[s.data_ptr() for s in states]),
                 (ctypes.c_int * count)(*[int(s.dtype == torch.bfloat16) for s in states]),
                 (ctypes.c_int64 * count)(*totals), pointers(*[None if m is None else m.data_ptr() for m in moments]),
                 pointers(*[o.data_ptr() for o in outs]), -1.0 if maximize else 1.0, int(accumulate), decay, lr)
    threads = max(1, min(max_threads or torch.get_num_threads(), sum(totals) // MIN_COORDINATES_PER_THREAD, tiles))
    work = torch.empty(threads, _library.learned_optim_work_size(network[0], network[2]), dtype=torch.float32)
    _library.learned_optim_step(*arguments, tiles, threads, work.data_ptr())
