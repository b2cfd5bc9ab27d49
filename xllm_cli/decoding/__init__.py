"""Decoding: ``xllm decode`` (data directories) and ``xllm transcribe`` (files of any length).

One job per module (docs/architecture.md):

- ``options``   DecodeOptions and their validation
- ``systems``   the registry of decoding systems (``llm``, ``nar``, ``whisper``; docs/extending.md)
- ``job``       a decode job's stage, directory name and fingerprint
- ``bundle``    the inference bundle: a stage's model + feature pipeline, batches, generation
- ``batches``   utterances into length-sorted batches; ``prefetch``: the loader thread
- ``loop``      the resumable decode loop; ``results``: the decode directory's files
- ``parallel``  ``--nj``: split, worker processes, merge
- ``decode``    the orchestrator: run_decode, rescoring, scoring
- ``transcribe`` VAD-chunked transcription; ``language``: unspaced (CJK) or spaced text
- ``ct2``, ``whisper_ct2``  CTranslate2 export, rescoring and the Whisper baseline
"""
