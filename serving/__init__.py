"""The speech serving container: batch and streaming ASR over onnxruntime Whisper models, and speech synthesis."""
