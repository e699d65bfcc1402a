"""MAPLE: multilingual evaluation of parameter-efficient finetuning.

The folders follow the pipeline (docs/architecture.md draws every module): registry/ (stages, tasks,
languages, datasets, models, templates), config/, data/, embedded/, train/, eval/, analysis/, grid/.
Submodules are imported where they are used; importing the package loads nothing heavy.
"""

__version__ = "0.1.0"
