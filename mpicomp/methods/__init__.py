"""Distributed methods; each module registers its methods on import."""

from . import diana  # noqa: F401  (registers)
from . import error_feedback, quantized_sgd  # noqa: F401  (registers)
from .base import Method, MethodContext, MethodOptions, available_methods, method_class, register_method

__all__ = ["Method", "MethodContext", "MethodOptions", "available_methods", "method_class", "register_method"]
