"""Distributed methods; each module registers its methods on import."""

from . import (  # noqa: F401  (registers)
    diana,
    error_feedback,
    lag,
    langevin,
    laq,
    quantized_sgd,
)
from .base import (
    KINDS,
    OPTIMIZER,
    SAMPLER,
    SKIP_POLICIES,
    Column,
    Method,
    MethodContext,
    MethodOptions,
    available_methods,
    method_class,
    register_method,
)
from .link import Link

__all__ = [
    "KINDS",
    "OPTIMIZER",
    "SAMPLER",
    "SKIP_POLICIES",
    "Column",
    "Link",
    "Method",
    "MethodContext",
    "MethodOptions",
    "available_methods",
    "method_class",
    "register_method",
]
