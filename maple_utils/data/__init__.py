"""Instruction data and evaluation data: the language table, the one data-source dispatch, release file
formats, instruction records."""
