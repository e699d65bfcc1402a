"""The embedded default: a tokenizer, tiny models and dataset samples, built here, offline, deterministically.

Nothing in the project downloads from the Hugging Face hub, so tests, `make demo` and the notebooks'
defaults run on artefacts built locally: a SentencePiece-style tokenizer trained on the bundled corpus
(`tokenizer`), random-initialised Llama and Mistral models saved with `save_pretrained` (`models`), and
small samples of every dataset in its hub schema (`samples`). Scores on them are at chance; they prove
that every code path runs. Builds are cached and atomic (`build`).
"""

from __future__ import annotations
