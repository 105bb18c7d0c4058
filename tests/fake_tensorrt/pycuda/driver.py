"""pycuda.driver's calls the TensorRT runner makes, over byte arrays standing in for device memory."""
import numpy as np

_MEMORY = {}  # address -> bytearray


class DeviceAllocation:
    def __init__(self, nbytes):
        self._address = id(self)
        _MEMORY[self._address] = bytearray(nbytes)

    def __int__(self):
        return self._address


class Stream:
    handle = 0

    def synchronize(self):
        pass


def mem_alloc(nbytes):
    return DeviceAllocation(nbytes)


def pagelocked_empty(shape, dtype):
    return np.empty(shape, dtype)


def write(address, array):
    data = np.ascontiguousarray(array).tobytes()
    memory = _MEMORY[int(address)]
    if len(data) > len(memory):
        raise ValueError(f"{len(data)} bytes do not fit a {len(memory)}-byte allocation")
    memory[:len(data)] = data


def read(address, shape, dtype):
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer(bytes(_MEMORY[int(address)][:count]), dtype=dtype).reshape(shape)


def memcpy_htod_async(dest, src, stream=None):
    write(dest, src)


def memcpy_dtoh_async(dest, src, stream=None):
    dest[...] = read(src, dest.shape, dest.dtype)
