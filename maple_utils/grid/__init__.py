"""The grid: plan a grid file's jobs from the stage registry (`planner`), run them with papermill
(`runner`), and the command line (`python -m maple_utils.grid`, `cli`)."""
