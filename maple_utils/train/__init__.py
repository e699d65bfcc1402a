"""Stage 02_train: the quantised base model, LoRA, the training loop and its record."""
