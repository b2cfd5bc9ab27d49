"""xllm: LLM-based speech recognition after X-LLM (Chen et al., 2023)."""

__version__ = "0.1.0"
