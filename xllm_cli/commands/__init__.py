"""One module per CLI verb; each exposes ``register(app)``.

Command modules import heavy libraries (torch, transformers) inside the command
functions so that ``xllm --help`` stays fast.
"""
