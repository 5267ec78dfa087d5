"""A multilayer perceptron: ReLU hidden layers, softmax cross-entropy (paper 003's neural network).

Worker i's objective on its ``m_i`` samples ``(a_j, y_j)``::

    f_i(x) = (1/m_i) sum_j [logsumexp(z_L(a_j)) - z_L(a_j)_{y_j}] + r(x)
    h_0 = a,   z_l = W_l h_{l-1} + b_l,   h_l = relu(z_l)  (l < L),   z_L = the logits

with r the smooth regularisers of every problem (``(l2/2)||x||^2``, the paper's ``0.01 ||theta||^2 / 2``).
The first layer has no bias vector of its own: the features' intercept column (``[problem]
intercept``, on by default) is its bias, exactly as for the GLMs. Layer widths are
``features, hidden..., classes``; MNIST 784-200-10 with the intercept has
``p = 785 * 200 + (200 + 1) * 10 = 159,010`` parameters, the paper's count.

Parameters are one flat vector, layer after layer, each layer's matrix ``[W_l | b_l]``
(``n_l x (n_{l-1} + 1)``; layer 1: ``n_1 x features``) row-major, so every compressor and method
applies unchanged; the output layer is class-major like ``softmax`` (``x[y * cols + f]``).
Gradients by backpropagation, vectorised over samples (matrix products); per-sample gradients as
outer products. The start ``x0`` is Glorot-uniform weights and zero biases (Keras's default, as in
the authors' code), drawn from the problem's seed, the same on every rank.

The objective is nonconvex and its gradient has no global Lipschitz constant (the curvature grows
with the weights), so there is no reference optimum and no default step size: methods need
``[method] stepsize``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import scipy.sparse as sp

from .base import Collective, LocalObjective, Problem, held_out_sizes
from .glm import SoftmaxLoss
from .regularizers import ElasticNet, SmoothRegularizer, SmoothSum

INIT_STREAM = 3  # SeedSequence spawn key of the initial weights (split: 1, partition: 2)


def dense(features: np.ndarray | sp.spmatrix) -> np.ndarray:
    """Features as a dense float64 array (the network's products need dense rows)."""
    return np.asarray(features if isinstance(features, np.ndarray) else features.toarray(), dtype=np.float64)


class Layout:
    """Where each layer's ``[W_l | b_l]`` lives in the flat parameter vector."""

    def __init__(self, widths: Sequence[int]) -> None:
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(
                f"mlp: layer widths must be positive integers (inputs, hidden..., classes), got {list(widths)}"
            )
        self.widths = tuple(int(w) for w in widths)
        self.shapes = [(self.widths[l], self.widths[l - 1] + (l > 1)) for l in range(1, len(self.widths))]
        sizes = [rows * cols for rows, cols in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.d = int(self.offsets[-1])

    def matrices(self, x: np.ndarray) -> list[np.ndarray]:
        """Views of ``x`` as the layer matrices (writing into them writes into ``x``)."""
        if x.shape != (self.d,):
            raise ValueError(f"x must have shape ({self.d},), got {x.shape}")
        return [
            x[lo:hi].reshape(shape)
            for lo, hi, shape in zip(self.offsets[:-1], self.offsets[1:], self.shapes, strict=True)
        ]

    def glorot(self, rng: np.random.Generator) -> np.ndarray:
        """Weights uniform on ``+-sqrt(6 / (fan_in + fan_out))``, biases 0."""
        x = np.zeros(self.d)
        for layer, matrix in enumerate(self.matrices(x)):
            fan_out, fan_in = self.widths[layer + 1], self.widths[layer]
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            matrix[:, :fan_in] = rng.uniform(-limit, limit, (fan_out, fan_in))
        return x


class Network:
    """Forward and backward passes of the MLP for a batch of rows (no regulariser)."""

    def __init__(self, layout: Layout, loss: SoftmaxLoss) -> None:
        self.layout = layout
        self.loss = loss

    def forward(self, x: np.ndarray, rows: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``(inputs, preactivations)``: ``h_{l-1}`` and ``z_l`` of every layer; the last z is the logits."""
        inputs, pre = [], []
        h = rows
        for layer, matrix in enumerate(self.layout.matrices(x)):
            inputs.append(h)
            z = h @ matrix.T if layer == 0 else h @ matrix[:, :-1].T + matrix[:, -1]
            pre.append(z)
            h = np.maximum(z, 0.0)
        return inputs, pre

    def logits(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self.forward(x, rows)[1][-1]

    def value(self, x: np.ndarray, rows: np.ndarray, targets: np.ndarray, weight: float | np.ndarray) -> float:
        """``sum_j w_j CE_j`` (forward pass only; ``weight`` a scalar or one per row)."""
        return float(np.sum(weight * self.loss.values(self.logits(x, rows), targets)))

    def backward(self, x: np.ndarray, pre: list[np.ndarray], dz: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """``(l, d loss / d z_l)`` from the last layer down, given the gradient at the logits."""
        matrices = self.layout.matrices(x)
        for layer in range(len(matrices) - 1, -1, -1):
            yield layer, dz
            if layer:
                dz = (dz @ matrices[layer][:, :-1]) * (pre[layer - 1] > 0.0)

    def value_and_grad(
        self, x: np.ndarray, rows: np.ndarray, targets: np.ndarray, weight: float | np.ndarray
    ) -> tuple[float, np.ndarray]:
        """``sum_j w_j CE_j`` and its gradient (``weight`` a scalar or one per row)."""
        inputs, pre = self.forward(x, rows)
        value = float(np.sum(weight * self.loss.values(pre[-1], targets)))
        dz = self.loss.derivative(pre[-1], targets)
        dz *= np.reshape(weight, (-1, 1)) if np.ndim(weight) else weight
        grad = np.empty(self.layout.d)
        blocks = self.layout.matrices(grad)
        for layer, delta in self.backward(x, pre, dz):
            if layer == 0:
                blocks[0][:] = delta.T @ inputs[0]
            else:
                blocks[layer][:, :-1] = delta.T @ inputs[layer]
                blocks[layer][:, -1] = delta.sum(axis=0)
        return value, grad

    def sample_grads(self, x: np.ndarray, rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Rows ``grad CE_j(x)``: per layer the outer products ``dz_j [h_j, 1]``."""
        inputs, pre = self.forward(x, rows)
        blocks: dict[int, np.ndarray] = {}
        for layer, dz in self.backward(x, pre, self.loss.derivative(pre[-1], targets)):
            outer = dz[:, :, None] * inputs[layer][:, None, :]
            if layer:
                outer = np.concatenate((outer, dz[:, :, None]), axis=2)
            blocks[layer] = outer.reshape(rows.shape[0], -1)
        return np.concatenate([blocks[layer] for layer in sorted(blocks)], axis=1)


class MLPShard(LocalObjective):
    """Worker i's ``f_i``: its rows, their class indices, the network and the smooth terms."""

    def __init__(self, network: Network, features: np.ndarray, targets: np.ndarray, smooth: SmoothRegularizer) -> None:
        self.network = network
        self.features = features
        self.targets = targets
        self.smooth = smooth
        self.m = features.shape[0]
        self.d = network.layout.d

    def loss(self, x: np.ndarray) -> float:
        return self.network.value(x, self.features, self.targets, 1.0 / self.m) + self.smooth.value(x)

    def grad(self, x: np.ndarray) -> np.ndarray:
        return self.network.value_and_grad(x, self.features, self.targets, 1.0 / self.m)[1] + self.smooth.grad(x)

    def loss_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``(f_i(x), grad f_i(x))`` from one forward and backward pass, bit for bit :meth:`loss` and :meth:`grad`."""
        value, grad = self.network.value_and_grad(x, self.features, self.targets, 1.0 / self.m)
        return value + self.smooth.value(x), grad + self.smooth.grad(x)

    def grad_batch(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        idx = self.indices(idx)
        grad = self.network.value_and_grad(x, self.features[idx], self.targets[idx], 1.0 / idx.size)[1]
        return grad + self.smooth.grad(x)

    def sample_grads(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        idx = self.indices(idx)
        return self.network.sample_grads(x, self.features[idx], self.targets[idx]) + self.smooth.grad(x)

    def indices(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.intp)
        if idx.ndim != 1 or idx.size == 0 or idx.min() < 0 or idx.max() >= self.m:
            raise IndexError(f"idx must be a non-empty 1-D array of sample indices in [0, {self.m})")
        return idx


class MLPProblem(Problem):
    """``F(x) = (1/n) sum_i f_i(x) + R(x)`` for the MLP on n shards of dense features.

    ``features`` and ``targets`` hold the rows of this process's workers' shards only, concatenated
    in worker order; ``shard_sizes`` gives every worker's ``m_i``; the held-out split likewise
    (``test_sizes``), as for :class:`~.glm.GLMProblem`.
    """

    name = "mlp"

    def __init__(
        self,
        features: np.ndarray | sp.spmatrix,
        targets: np.ndarray,
        shard_sizes: Sequence[int] | np.ndarray,
        n_classes: int,
        hidden: Sequence[int] = (200,),
        *,
        seed: int = 0,
        collective: Collective | None = None,
        smooth: SmoothRegularizer | None = None,
        regularizer: ElasticNet | None = None,
        test_features: np.ndarray | sp.spmatrix | None = None,
        test_targets: np.ndarray | None = None,
        test_sizes: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        sizes = np.asarray(shard_sizes, dtype=np.int64)
        if sizes.size == 0 or (sizes <= 0).any():
            raise ValueError("mlp: every shard needs at least one sample")
        loss = SoftmaxLoss(n_classes)
        self.network = Network(Layout([features.shape[1], *hidden, n_classes]), loss)
        self.n_workers = sizes.size
        self.collective = collective
        self.shard_sizes = sizes
        self.d = self.network.layout.d
        self.smooth = smooth if smooth is not None else SmoothSum()
        self.regularizer = regularizer if regularizer is not None else ElasticNet()
        self.test_sizes = held_out_sizes(test_features, test_targets, test_sizes, self.n_workers, collective)
        self.test_features = None if test_features is None else dense(test_features)
        self.test_targets = None if test_targets is None else loss.targets(test_targets)
        self.start = self.network.layout.glorot(
            np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(INIT_STREAM,)))
        )
        local = self.local_workers
        offsets = np.concatenate([[0], np.cumsum(sizes[local.start : local.stop])])
        if features.shape[0] != offsets[-1]:
            raise ValueError(f"mlp: workers {local} hold {offsets[-1]} rows but features have {features.shape[0]}")
        rows, labels = dense(features), loss.targets(targets)
        self.shards = {
            w: MLPShard(self.network, rows[lo:hi], labels[lo:hi], self.smooth)
            for w, lo, hi in zip(local, offsets[:-1], offsets[1:], strict=True)
        }

    def local(self, worker: int) -> MLPShard:
        if worker not in self.shards:
            raise self._not_local(worker)
        return self.shards[worker]

    def sample_counts(self) -> np.ndarray:
        return self.shard_sizes.copy()

    def x0(self) -> np.ndarray:
        return self.start.copy()

    def smoothness(self) -> float:
        raise ValueError(
            "mlp: a ReLU network's gradient has no global Lipschitz constant, so no default step size "
            "can be derived; set [method] stepsize"
        )

    def sample_smoothness(self) -> float:
        return self.smoothness()

    def test_class_probabilities(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``softmax(z_L(a_j))`` of the held-out rows of the local blocks, and their classes."""
        assert self.test_features is not None and self.test_targets is not None, "asked only with a held-out split"
        return self.network.loss.probabilities(self.network.logits(x, self.test_features)), self.test_targets

    def test_correct(self, x: np.ndarray) -> np.ndarray:
        """Held-out rows of the local blocks whose largest logit is their class."""
        assert self.test_features is not None, "asked only with a held-out split"
        return self.network.logits(x, self.test_features).argmax(axis=1) == self.test_targets
