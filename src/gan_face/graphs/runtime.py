"""The runtime every network of a scan runs on: OpenVINO imported without its telemetry, the device, and graphs
compiled for a fixed number of rows, callable from any thread (:mod:`gan_face.graphs` says why OpenVINO)."""

from __future__ import annotations

import queue
import sys
import threading
from types import ModuleType
from typing import Callable, Iterable, Mapping, Optional

import numpy as np

from ..errors import DeviceError

#: Compile options on the CPU: float32 whatever the CPU offers, threads not pinned to cores (another process may
#: hold one), one stream of one thread: an inference runs on the thread that asks for it.
CPU_CONFIG = {
    "INFERENCE_PRECISION_HINT": "f32",
    "ENABLE_CPU_PINNING": False,
    "NUM_STREAMS": 1,
    "INFERENCE_NUM_THREADS": 1,
}


_ABSENT = object()


def openvino() -> ModuleType:
    """OpenVINO, imported without its usage telemetry: the one way this package imports it.

    ``import openvino`` imports its model converter, which reports every import to Google Analytics (a process
    forked to send it, a client id and a usage count written under ``~/intel``) unless the user opted out. A
    forensic tool run offline on sensitive folders must not do that. OpenVINO falls back to its own no-op stub
    when ``openvino_telemetry`` cannot be imported, so that module is hidden for the length of this import and put
    back after it: a user's own ``import openvino_telemetry`` still works (the converter keeps the stub, so the
    host's ``openvino.convert_model`` reports nothing either). If the host application imported OpenVINO first,
    its settings stand.
    """
    if "openvino" in sys.modules:
        import openvino as ov

        return ov
    hidden = sys.modules.get("openvino_telemetry", _ABSENT)
    sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # makes its import fail
    try:
        import openvino as ov
    finally:
        if hidden is _ABSENT:
            sys.modules.pop("openvino_telemetry", None)
        else:
            sys.modules["openvino_telemetry"] = hidden
    return ov


def runtime_device(device: str | None) -> str:
    """The OpenVINO device that scores: ``None`` or ``"cpu"`` is the CPU; ``"gpu"`` an Intel GPU. A device
    OpenVINO does not find here, and PyTorch's ``"cuda"`` (OpenVINO has no CUDA device), raise a
    :class:`~gan_face.errors.DeviceError` saying so, before anything is compiled."""
    name = (device or "cpu").strip()
    if name.lower().startswith("cuda"):
        raise DeviceError(
            f"device {name!r}: scoring runs on OpenVINO (CPU, or an Intel GPU as 'GPU'), which has no CUDA device"
        )
    name = name.upper()
    if name != "CPU":
        available = list(openvino().Core().available_devices)
        if not any(found == name or found.startswith(name + ".") for found in available):
            raise DeviceError(
                f"device {name!r}: OpenVINO finds no such device on this machine "
                f"(available: {', '.join(available) or 'none'})"
            )
    return name


class CompiledNetwork:
    """A graph compiled for ``rows`` inputs of one shape; callable on any number of rows (in calls of exactly
    ``rows``, the last padded with zeros) from any thread.

    ``streams``: how many calls may run at once (a scan runs one worker per core: with one their inferences would
    wait for each other). Each call takes a free slot (an inference request) for its length and gives it back;
    when none is free and fewer than ``streams`` exist, the caller makes one, else it waits for one. On the CPU a
    slot is a copy of the network compiled for one stream, so an inference runs on the calling thread: one copy
    compiled for ``streams`` streams hands every inference to a stream thread of its own and back, and a v3 scan
    on 2 cores kept them 91% busy that way against 97% with a copy per worker (6-9% more images per second, about
    80 MiB of memory for each worker after the first). Other devices (an Intel GPU) schedule their own streams:
    their slots are requests on one compiled network. Calls that never overlap never make a second slot.
    """

    def __init__(
        self, model, rows: int, device: str = "CPU", streams: int = 1, cpu_hints: Optional[Mapping] = None
    ) -> None:
        self.rows = rows
        self._model, self._device = model, device.upper()
        # the stream settings last: a hint cannot undo one inference per calling thread
        streams_config = {k: CPU_CONFIG[k] for k in ("NUM_STREAMS", "INFERENCE_NUM_THREADS")}
        self._config = {**CPU_CONFIG, **(cpu_hints or {}), **streams_config} if self._device == "CPU" else {}
        self.compiled = self._compile()
        #: what the graph takes (float32, or uint8 for the CNNs, which normalise their crops themselves)
        self.input_dtype = self.compiled.inputs[0].get_element_type().to_dtype()
        self.streams = max(1, int(streams))
        self._free: queue.LifoQueue = queue.LifoQueue()  # the most recently used slot first: its caches are warm
        self._free.put(self.compiled.create_infer_request())
        self.slots = 1  # slots made so far (at most ``streams``)
        self._lock = threading.Lock()

    def _compile(self):
        return openvino().Core().compile_model(self._model, self._device, self._config)

    def _take(self):
        """A free slot, a new one if none is free and fewer than ``streams`` exist, else the next one freed."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            grow = self.slots < self.streams
            if grow:
                self.slots += 1
        if not grow:
            return self._free.get()
        try:  # compiled outside the lock: the other callers go on meanwhile
            compiled = self._compile() if self._device == "CPU" else self.compiled
            return compiled.create_infer_request()
        except BaseException:
            with self._lock:
                self.slots -= 1
            raise

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        n = len(x)
        if not n:
            return tuple(
                np.zeros((0, *out.get_partial_shape().to_shape()[1:]), np.float32) for out in self.compiled.outputs
            )
        outputs: list[list[np.ndarray]] = []
        request = self._take()
        try:
            for start in range(0, n, self.rows):
                part = x[start : start + self.rows]
                if len(part) < self.rows:
                    part = np.concatenate([part, np.zeros((self.rows - len(part), *part.shape[1:]), part.dtype)])
                results = request.infer({0: np.ascontiguousarray(part, dtype=self.input_dtype)})
                # by position: a slot's outputs are its own copy's, not self.compiled's
                outputs.append([np.array(results[i]) for i in range(len(self.compiled.outputs))])
        finally:
            self._free.put(request)
        return tuple(np.concatenate(parts)[:n] for parts in zip(*outputs))


class ShapeCache:
    """Networks compiled on first use, one per input shape (P-Net sees one shape per pyramid level)."""

    def __init__(self, build: Callable[..., object], rows: int, device: str = "CPU", streams: int = 1) -> None:
        self.build, self.rows, self.device, self.streams = build, rows, device, streams
        self._compiled: dict[tuple, CompiledNetwork] = {}
        self._lock = threading.Lock()

    def prepare(self, shapes: Iterable[tuple[int, ...]]) -> None:
        """Compile the networks of these input shapes (``H, W``) now rather than on first use."""
        for shape in shapes:
            self._network(tuple(shape))

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        return self._network(tuple(x.shape[2:]))(x)

    def _network(self, shape: tuple) -> CompiledNetwork:
        network = self._compiled.get(shape)
        if network is None:
            with self._lock:
                network = self._compiled.get(shape)
                if network is None:
                    network = CompiledNetwork(self.build(*shape, self.rows), self.rows, self.device, self.streams)
                    self._compiled[shape] = network
        return network
