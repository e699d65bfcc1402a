"""MAPLE: multilingual evaluation of parameter-efficient finetuning.

Submodules are imported where they are used; importing the package loads nothing heavy.
"""

__version__ = "0.1.0"
