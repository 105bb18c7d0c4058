"""A stand-in for TensorRT's Python API, for running runtime/tensorrt_runner.py without a GPU.

Only what the runner calls. A "serialized engine" is the bytes of an ONNX
model, run by onnxruntime on the CPU; bytes onnxruntime cannot read do not
deserialize (None, as TensorRT answers an engine built elsewhere). Device
memory is pycuda.driver's stand-in. RUNS records the input shapes of every
execution, so tests can see what the runner fed the engine. The real names
are checked against the real bindings by tests/test_tensorrt_api.py; this
only lets the runner's logic run.
"""
import numpy as np

RUNS = []


class TensorIOMode:
    INPUT = "INPUT"
    OUTPUT = "OUTPUT"


class Logger:
    WARNING = "WARNING"

    def __init__(self, severity=WARNING):
        self.severity = severity


def nptype(dtype):
    return np.dtype(dtype).type


class Runtime:
    def __init__(self, logger):
        self.logger = logger

    def deserialize_cuda_engine(self, data):
        import onnxruntime

        try:
            session = onnxruntime.InferenceSession(bytes(data), providers=["CPUExecutionProvider"])
        except Exception:
            return None
        return ICudaEngine(session)


class ICudaEngine:
    def __init__(self, session):
        self._session = session
        self._inputs = [i.name for i in session.get_inputs()]
        self._names = self._inputs + [o.name for o in session.get_outputs()]

    @property
    def num_io_tensors(self):
        return len(self._names)

    def get_tensor_name(self, index):
        return self._names[index]

    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if name in self._inputs else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return "int64" if name in self._inputs else "float32"

    def create_execution_context(self):
        return IExecutionContext(self)


class IExecutionContext:
    def __init__(self, engine):
        self._engine = engine
        self._shapes = {}
        self._addresses = {}

    def set_input_shape(self, name, shape):
        self._shapes[name] = tuple(int(d) for d in shape)
        return True

    def get_tensor_shape(self, name):
        if name in self._shapes:
            return self._shapes[name]
        classes = self._engine._session.get_outputs()[0].shape[-1]
        return (next(iter(self._shapes.values()))[0], classes)

    def set_tensor_address(self, name, address):
        self._addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle):
        from pycuda import driver

        session = self._engine._session
        feeds = {n: driver.read(self._addresses[n], self._shapes[n], np.int64) for n in self._engine._inputs}
        output = session.get_outputs()[0].name
        (logits,) = session.run([output], feeds)
        driver.write(self._addresses[output], np.asarray(logits, dtype=np.float32))
        RUNS.append(dict(self._shapes))
        return True
