"""edgesmith build steps.

Every module here is importable without torch, transformers or onnx: heavy
libraries are imported inside the functions that need them, so that SCons can
read the build files quickly.
"""
