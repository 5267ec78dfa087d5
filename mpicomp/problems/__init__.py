"""Objectives ``F(x) = (1/n) sum_i f_i(x) + R(x)`` on sharded data, and their builder."""

from .base import LocalObjective, Problem
from .factory import PROBLEMS, build_problem
from .glm import (
    GLMProblem,
    GLMShard,
    LogisticLoss,
    MarginLoss,
    SoftmaxLoss,
    SquaredLoss,
)
from .mlp import MLPProblem
from .regularizers import (
    REGULARIZERS,
    ElasticNet,
    NonconvexPenalty,
    SmoothRegularizer,
    SmoothSum,
    SquaredNorm,
    make_regularizer,
)

__all__ = [
    "PROBLEMS",
    "REGULARIZERS",
    "ElasticNet",
    "GLMProblem",
    "GLMShard",
    "LocalObjective",
    "LogisticLoss",
    "MLPProblem",
    "MarginLoss",
    "NonconvexPenalty",
    "Problem",
    "SmoothRegularizer",
    "SmoothSum",
    "SoftmaxLoss",
    "SquaredLoss",
    "SquaredNorm",
    "build_problem",
    "make_regularizer",
]
