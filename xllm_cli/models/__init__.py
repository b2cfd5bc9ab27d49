"""Models: speech encoders, CIF + C-Former, Q-Former image/video interfaces, adapters, the LLM wrapper, XLLM.

Entry points: ``xllm_cli.models.xllm`` (XLLM), ``saved_model`` (save_model, load_model), ``tiny_llm.create_tiny_llm``,
``tokenizer.build_char_tokenizer`` / ``tokenizer.load_tokenizer``. Nothing heavy is imported here.
"""
