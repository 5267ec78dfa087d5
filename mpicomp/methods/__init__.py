"""Distributed methods; each module registers its methods on import."""

from . import (  # noqa: F401  (registers)
    diana,
    error_feedback,
    quantized_sgd,
)
from .base import (
    Method,
    MethodContext,
    MethodOptions,
    available_methods,
    method_class,
    register_method,
)

__all__ = ["Method", "MethodContext", "MethodOptions", "available_methods", "method_class", "register_method"]
