"""The Python API the CLI is a thin layer over. Usable from a notebook or a training loop."""
