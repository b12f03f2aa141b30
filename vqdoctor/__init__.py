"""vqdoctor: diagnose and repair codebook collapse in vector-quantized models."""

__version__ = "0.1.0"
