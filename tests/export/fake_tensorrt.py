"""Stand-ins for ``tensorrt`` and cuda-python's runtime module, just what ``model.runtime.tensorrt_runner`` calls.

Device memory is NumPy bytes behind fake addresses (outside any user-space range, so a host pointer can never pass
for one); pinned host memory is real memory, as the runner views it through ctypes. A stream queues its copies and
kernels and runs them at ``cudaStreamSynchronize``: a result read before the runner waits for it is still garbage.
The fake engine's "network" is :func:`fake_network`, so a test can tell exactly what must come back.
"""

from __future__ import annotations

import enum
import json
import types
from collections.abc import Callable
from typing import Any

import numpy as np

DEVICE_BASE = 0xD000_0000_0000  # above the 47-bit user address space
GARBAGE = 0xAB  # what fresh memory holds, so a missing copy shows


class CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidDevice = 101
    cudaErrorIllegalAddress = 700


class MemcpyKind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class Stream:
    """``cudaStream_t``: ``int()`` gives the handle TensorRT takes."""

    def __init__(self, handle: int) -> None:
        self.handle = handle
        self.pending: list[Callable[[], None]] = []

    def __int__(self) -> int:
        return self.handle


def fake_network(images: np.ndarray, k: int) -> list[np.ndarray]:
    """The fake engine's outputs for float32 ``[B, 3, H, W]`` images (W >= 4k): each a function of its own image."""
    b = images.shape[0]
    num = (np.floor(images[:, 1, 1, 0]).astype(np.int32) % (k + 1)).reshape(b, 1)
    boxes = images[:, 0, 0, : 4 * k].reshape(b, k, 4).astype(np.float32)
    scores = images[:, 1, 0, :k].astype(np.float32)
    classes = np.floor(images[:, 2, 0, :k]).astype(np.int32)
    return [num, boxes, scores, classes]


class FakeCudart(types.ModuleType):
    """cuda-python's runtime API: ``(error, value...)`` tuples; ``fail[name] = error`` makes a call fail."""

    cudaError_t = CudaError
    cudaMemcpyKind = MemcpyKind

    def __init__(self, name: str, devices: int = 1) -> None:
        super().__init__(name)
        self.devices = devices
        self.current_device: int | None = None
        self.device_memory: dict[int, np.ndarray] = {}  # base address -> bytes
        self.pinned: dict[int, np.ndarray] = {}  # real host address -> its backing bytes
        self.streams: dict[int, Stream] = {}
        self.fail: dict[str, CudaError] = {}
        self.calls: list[str] = []
        self._next_device = DEVICE_BASE
        self._next_stream = 1

    def _failed(self, name: str) -> CudaError | None:
        self.calls.append(name)
        return self.fail.get(name)

    def find(self, table: dict[int, np.ndarray], ptr: int, count: int) -> np.ndarray | None:
        """The ``count`` bytes at ``ptr`` inside one allocation of ``table`` (None: not a valid range)."""
        for base, memory in table.items():
            if base <= ptr and ptr + count <= base + memory.size:
                return memory[ptr - base : ptr - base + count]
        return None

    def cudaGetDeviceCount(self):
        return (self._failed("cudaGetDeviceCount") or CudaError.cudaSuccess, self.devices)

    def cudaSetDevice(self, index: int):
        if err := self._failed("cudaSetDevice"):
            return (err,)
        if not 0 <= index < self.devices:
            return (CudaError.cudaErrorInvalidDevice,)
        self.current_device = index
        return (CudaError.cudaSuccess,)

    def cudaGetDeviceProperties(self, index: int):
        if err := self._failed("cudaGetDeviceProperties"):
            return (err, None)
        return (CudaError.cudaSuccess, types.SimpleNamespace(name=b"Fake GPU 9000\x00\x00\x00", major=9, minor=0))

    def cudaMalloc(self, nbytes: int):
        if err := self._failed("cudaMalloc"):
            return (err, 0)
        ptr = self._next_device
        self._next_device += (nbytes + 255) // 256 * 256 + 256  # a gap: an overrun is out of range, not a neighbour
        self.device_memory[ptr] = np.full(nbytes, GARBAGE, np.uint8)
        return (CudaError.cudaSuccess, ptr)

    def cudaFree(self, ptr: int):
        if err := self._failed("cudaFree"):
            return (err,)
        return (
            (CudaError.cudaSuccess,)
            if self.device_memory.pop(ptr, None) is not None
            else (CudaError.cudaErrorInvalidValue,)
        )

    def cudaMallocHost(self, nbytes: int):
        if err := self._failed("cudaMallocHost"):
            return (err, 0)
        memory = np.full(nbytes, GARBAGE, np.uint8)
        self.pinned[memory.ctypes.data] = memory
        return (CudaError.cudaSuccess, memory.ctypes.data)

    def cudaFreeHost(self, ptr: int):
        if err := self._failed("cudaFreeHost"):
            return (err,)
        return (
            (CudaError.cudaSuccess,) if self.pinned.pop(ptr, None) is not None else (CudaError.cudaErrorInvalidValue,)
        )

    def cudaStreamCreate(self):
        if err := self._failed("cudaStreamCreate"):
            return (err, None)
        stream = Stream(self._next_stream)
        self._next_stream += 1
        self.streams[stream.handle] = stream
        return (CudaError.cudaSuccess, stream)

    def cudaStreamDestroy(self, stream: Stream):
        if err := self._failed("cudaStreamDestroy"):
            return (err,)
        return (CudaError.cudaSuccess,) if self.streams.pop(int(stream), None) else (CudaError.cudaErrorInvalidValue,)

    def cudaStreamSynchronize(self, stream: Stream):
        if err := self._failed("cudaStreamSynchronize"):
            return (err,)
        if int(stream) not in self.streams:
            return (CudaError.cudaErrorInvalidValue,)
        while stream.pending:
            stream.pending.pop(0)()
        return (CudaError.cudaSuccess,)

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: MemcpyKind, stream: Stream):
        """Host memory must be pinned (a pageable buffer would make the copy synchronous on a real GPU)."""
        if err := self._failed("cudaMemcpyAsync"):
            return (err,)
        if kind == MemcpyKind.cudaMemcpyHostToDevice:
            to, frm = self.find(self.device_memory, dst, count), self.find(self.pinned, src, count)
        else:
            to, frm = self.find(self.pinned, dst, count), self.find(self.device_memory, src, count)
        if to is None or frm is None or int(stream) not in self.streams:
            return (CudaError.cudaErrorInvalidValue,)
        stream.pending.append(lambda: to.__setitem__(slice(None), frm))
        return (CudaError.cudaSuccess,)


class FakeContext:
    """An execution context of :class:`FakeEngine`: checks what the runner set, queues the network on the stream."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.profile: int | None = None
        self.input_shape: tuple[int, ...] | None = None
        self.addresses: dict[str, int] = {}
        self.profiles_selected: list[int] = []

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        assert isinstance(stream, int) and stream in self.engine.rt.streams, stream
        self.profile = index
        self.profiles_selected.append(index)
        return 0 <= index < len(self.engine.profiles)

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        lo, hi = self.engine.profiles[self.profile]
        ok = name == "images" and tuple(shape[1:]) == (3, *self.engine.input_hw) and lo <= shape[0] <= hi
        self.input_shape = tuple(shape) if ok else None
        return ok

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return name in self.engine.dtypes

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (self.input_shape[0], *self.engine.get_tensor_shape(name)[1:])

    def _view(self, name: str) -> np.ndarray:
        shape, dtype = self.get_tensor_shape(name), self.engine.dtypes[name]
        memory = self.engine.rt.find(
            self.engine.rt.device_memory, self.addresses[name], int(np.prod(shape)) * dtype.itemsize
        )
        assert memory is not None, f"{name}: no device allocation of {shape} {dtype} at {self.addresses[name]:#x}"
        return memory.view(dtype).reshape(shape)

    def execute_async_v3(self, stream: int) -> bool:
        assert isinstance(stream, int) and stream in self.engine.rt.streams, stream
        if self.input_shape is None or set(self.addresses) != set(self.engine.dtypes):
            return False
        views = {name: self._view(name) for name in self.engine.dtypes}  # all in range, or fail now

        def network() -> None:
            outputs = fake_network(views["images"], self.engine.k)
            for name, value in zip(("num_dets", "boxes", "scores", "classes"), outputs, strict=True):
                views[name][...] = value

        self.engine.rt.streams[stream].pending.append(network)
        return True


class FakeEngine:
    """A deserialized engine: JSON ``{"k", "input_hw", "profiles"}`` (what the fake builder serializes)."""

    def __init__(self, rt: FakeCudart, data: bytes) -> None:
        spec = json.loads(data)
        self.rt = rt
        self.k = spec["k"]
        self.input_hw = tuple(spec["input_hw"])
        self.profiles = [tuple(p) for p in spec["profiles"]]
        self.dtypes = {
            "images": np.dtype(np.float32),
            "num_dets": np.dtype(np.int32),
            "boxes": np.dtype(np.float32),
            "scores": np.dtype(np.float32),
            "classes": np.dtype(np.int32),
        }
        self.contexts: list[FakeContext] = []

    def get_tensor_dtype(self, name: str) -> np.dtype:
        return self.dtypes[name]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        h, w = self.input_hw
        k = self.k
        return {
            "images": (-1, 3, h, w),
            "num_dets": (-1, 1),
            "boxes": (-1, k, 4),
            "scores": (-1, k),
            "classes": (-1, k),
        }[name]

    def create_execution_context(self) -> FakeContext:
        self.contexts.append(FakeContext(self))
        return self.contexts[-1]


def engine_bytes(k: int, input_hw: tuple[int, int], profiles) -> bytes:
    """What the fake builder produces for an engine of ``k`` detections."""
    return json.dumps({"k": k, "input_hw": list(input_hw), "profiles": [list(p) for p in profiles]}).encode()


class FakeTensorRT(types.ModuleType):
    """``tensorrt``: a logger, the plugin registry, a runtime that deserializes :class:`FakeEngine`."""

    __version__ = "10.99.0"

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    def __init__(self, rt: FakeCudart) -> None:
        super().__init__("tensorrt")
        self.rt = rt
        self.engines: list[FakeEngine] = []

    def init_libnvinfer_plugins(self, logger: Any, namespace: str) -> bool:
        return True

    def Runtime(self, logger: Any) -> Any:  # noqa: N802 (TensorRT's name)
        outer = self

        class _Runtime:
            def deserialize_cuda_engine(self, data: bytes) -> FakeEngine:
                outer.engines.append(FakeEngine(outer.rt, data))
                return outer.engines[-1]

        return _Runtime()

    @staticmethod
    def nptype(dtype: np.dtype) -> type:
        return dtype.type


def fake_modules(layout: str = "cuda.bindings", devices: int = 1) -> tuple[FakeTensorRT, FakeCudart, dict]:
    """``(tensorrt, cudart, sys.modules entries)`` for cuda-python's new layout (``cuda.bindings.runtime``) or its
    old one (``cuda.cudart``, with ``cuda.bindings`` made unimportable)."""
    cuda = types.ModuleType("cuda")
    if layout == "cuda.bindings":
        rt = FakeCudart("cuda.bindings.runtime", devices)
        bindings = types.ModuleType("cuda.bindings")
        bindings.runtime = rt
        cuda.bindings = bindings
        modules = {"cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": rt}
    else:
        rt = FakeCudart("cuda.cudart", devices)
        cuda.cudart = rt
        modules = {"cuda": cuda, "cuda.bindings": None, "cuda.bindings.runtime": None, "cuda.cudart": rt}
    trt = FakeTensorRT(rt)
    return trt, rt, {"tensorrt": trt, **modules}
