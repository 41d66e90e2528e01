"""The few CUDA runtime calls the TensorRT runner needs, through ``cuda-python`` (the serve-gpu image has no torch).

cuda-python returns ``(error, value...)`` tuples instead of raising; :func:`call` turns a failed call into a
``RuntimeError`` naming it, so a CUDA fault never passes as a wrong result.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np


def load_cudart() -> Any:
    """The CUDA runtime bindings: ``cuda.bindings.runtime`` (cuda-python >= 12.6), else the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise ModuleNotFoundError(
                "cuda-python is not installed (the TensorRT backend needs it: pip install 'yoloxpai[trt]')",
                name="cuda",
            ) from None
    return runtime


def call(rt: Any, name: str, *args: Any) -> Any:
    """``rt.<name>(*args)``, its error checked; returns the value(s) after the error (None when there are none)."""
    err, *values = getattr(rt, name)(*args)
    if err != rt.cudaError_t.cudaSuccess:
        raise RuntimeError(f"{name} failed: {getattr(err, 'name', err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def device_index(device: str) -> int:
    """``cuda`` / ``cuda:N`` -> N."""
    return int(device.split(":")[1]) if ":" in device else 0


def use_device(rt: Any, index: int) -> None:
    """Make ``cuda:index`` this host thread's current device (a clear error when there is no such device)."""
    count = call(rt, "cudaGetDeviceCount")
    if index >= count:
        raise RuntimeError(f"cuda:{index} does not exist ({count} CUDA device(s) visible)")
    call(rt, "cudaSetDevice", index)


def device_name_and_capability(rt: Any, index: int) -> tuple[str, str]:
    """GPU name and compute capability ``"major.minor"`` (what a TensorRT engine is specific to)."""
    props = call(rt, "cudaGetDeviceProperties", index)
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.rstrip("\x00").strip(), f"{props.major}.{props.minor}"


class PinnedArray:
    """A page-locked host array (so ``cudaMemcpyAsync`` really is asynchronous), viewed as NumPy."""

    def __init__(self, rt: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._rt = rt
        nbytes = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
        self.ptr = call(rt, "cudaMallocHost", nbytes)
        raw = np.ctypeslib.as_array(ctypes.cast(int(self.ptr), ctypes.POINTER(ctypes.c_uint8)), (nbytes,))
        self.array = raw[: int(np.prod(shape)) * np.dtype(dtype).itemsize].view(dtype).reshape(shape)

    def free(self) -> None:
        """Release the memory (once); the array must no longer be used."""
        ptr, self.ptr = self.ptr, None
        if ptr is not None:
            self.array = None
            call(self._rt, "cudaFreeHost", ptr)


class DeviceBuffer:
    """``nbytes`` of device memory."""

    def __init__(self, rt: Any, nbytes: int) -> None:
        self._rt = rt
        self.nbytes = nbytes
        self.ptr = call(rt, "cudaMalloc", max(1, nbytes))

    def free(self) -> None:
        """Release the memory (once)."""
        ptr, self.ptr = self.ptr, None
        if ptr is not None:
            call(self._rt, "cudaFree", ptr)
