"""Pure computations: tensors in, numbers out. Imports nothing from io, report or cli."""
