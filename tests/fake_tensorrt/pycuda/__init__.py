"""A stand-in for pycuda (see tests/fake_tensorrt/tensorrt): device memory is host memory."""
