"""Build-time tools: turn the models that ship in PyPI packages into servable model directories.

Nothing in the server imports this package: it needs torch and onnx (the ``build`` extra), which the serving image
leaves out. ``python -m serving.build.export`` builds a Whisper model, ``python -m serving.build.voice`` a voice.
"""
