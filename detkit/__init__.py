"""detkit: two-stage object detection training (ResNet+BN, RPN, RoI head, Numba box kernels)."""

__version__ = "0.1.0"
