"""Stages 03_evaluate and 04_alpaca_eval: tasks, scoring, metrics, the evaluation of one model, AlpacaEval."""
