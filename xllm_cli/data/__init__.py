"""Data: Kaldi-style data directories, audio/video I/O, features, datasets, batching."""
