"""The device a TensorFlow job runs on: found, prepared, logged and recorded.

Every detect/classify process that starts TensorFlow calls :func:`setup` once, right after importing it:

* GPU memory growth is switched on for every visible GPU (TensorFlow would otherwise reserve the whole
  GPU at the first operation, which breaks sharing a GPU between jobs and hides the real use);
* one log line says where the job runs: ``device: GPU NVIDIA A100-SXM4-40GB (40960 MB, 40321 MB free),
  memory growth on`` or ``device: CPU, 4 threads``; a job that SLURM gave a GPU (``CUDA_VISIBLE_DEVICES``
  set) but that finds none it can use says so, and why, and runs on the CPU, unless ``require_gpu`` is set
  (``detect.require_gpu``), in which case it fails with a :class:`DeviceError`;
* the device's label (``GPU <model>`` or ``CPU``) goes into the tags of the quadrant's probability raster
  (``DEVICE``), from which ``minescan merge`` counts the jobs per device in ``summary.json``.

On a GPU, the strip budget of the streamed FCN (:func:`block_budget_mb`) comes from the GPU's free memory
when ``detect.max_block_mb`` is not set, capped by the host memory the job may use (every stage's output
comes back to the host). Optional reduced precision (``detect.precision``) is applied by
:mod:`minescan.scan.inference`; :data:`PRECISION_TOLERANCE` is the documented, tested bound on the
probability difference it may cause.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from minescan.errors import MinescanError

log = logging.getLogger(__name__)

#: detect.precision values and the largest difference of a cell's mine probability from the float32
#: result that each may cause (checked by tests/test_device.py on the CPU against whole-array float32
#: inference); candidates within this of the threshold may flip.
PRECISION_TOLERANCE = {"float32": 1e-5, "bfloat16": 0.05, "float16": 0.01}
GPU_MEMORY_SHARE = 0.5  # share of the GPU's free memory given to one strip (the rest: TF workspace, cuDNN)
HOST_BASELINE_MB = 1000  # a detect job's memory besides the strip (Python, TensorFlow, models, read cache)
CPU_LABEL = "CPU"


class DeviceError(MinescanError):
    """A GPU was required (detect.require_gpu) but the job has none it can use."""


@dataclass(frozen=True)
class Device:
    kind: str  # "GPU" or "CPU"
    name: str  # GPU model, or "CPU"
    threads: int  # CPU threads TensorFlow may use
    memory_mb: int | None = None  # GPU memory, total and free when the job started (nvidia-smi)
    free_mb: int | None = None
    assigned: str | None = None  # CUDA_VISIBLE_DEVICES as the scheduler set it
    note: str = ""  # why a GPU that was assigned is not used

    @property
    def label(self) -> str:
        """What summary.json counts: ``GPU <model>`` or ``CPU`` (threads vary between runs, so not here)."""
        return f"GPU {self.name}" if self.kind == "GPU" else CPU_LABEL

    def log_line(self) -> str:
        if self.kind == "GPU":
            mem = (
                f" ({self.memory_mb} MB, {self.free_mb} MB free)"
                if self.memory_mb is not None
                else " (memory unknown: no nvidia-smi)"
            )
            return f"device: GPU {self.name}{mem}, memory growth on, CUDA_VISIBLE_DEVICES={self.assigned}"
        line = f"device: CPU, {self.threads} threads"
        return f"{line}; {self.note}" if self.note else line


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -2, -3, -8
#: what :func:`keep_freed_memory` sets: one heap for all threads (the read-ahead thread frees what the main
#: thread allocated and the other way round: per-thread heaps each kept their own freed memory, +0.5 GB of
#: peak RSS), blocks up to 256 MB from it, up to 256 MB of freed memory kept, grown 16 MB at a time.
#: Measured on a tile job (ZSTD tile, ~300 candidates per quadrant): 2.59 M page faults and 1.94 GB peak RSS
#: with glibc's defaults, 0.56 M and 2.12 GB with these; without the single heap 0.69 M and 2.64 GB.
MALLOC_SETTINGS = {M_ARENA_MAX: 1, M_MMAP_THRESHOLD: 256 * 2**20, M_TRIM_THRESHOLD: 256 * 2**20,
                   M_TOP_PAD: 16 * 2**20}
MALLOC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory(env=None) -> bool:
    """Tells glibc's malloc to keep freed memory for the next allocations instead of handing it back to the
    kernel. A detect job allocates and frees tile pieces of ~16 MB (and, for a compressed tile, decoded
    blocks of ~6 MB) hundreds of times per quadrant; by default most are new mappings whose every page faults
    on first use (system time 7.4 s vs 1.8 s per tile job of a ZSTD tile, :data:`MALLOC_SETTINGS`,
    docs/performance.md). Does nothing where malloc is not glibc's, or when the user set any of glibc's
    ``MALLOC_*`` variables (:data:`MALLOC_ENV`). Call it before the job starts its threads. Returns whether
    it was set."""
    import ctypes

    env = os.environ if env is None else env
    if any(k in env for k in MALLOC_ENV):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt)
        return False
    return all(mallopt(k, v) == 1 for k, v in MALLOC_SETTINGS.items())


def assigned_gpus(env=None) -> str | None:
    """The GPUs the scheduler gave this job (CUDA_VISIBLE_DEVICES), None when none was given."""
    env = os.environ if env is None else env
    v = env.get("CUDA_VISIBLE_DEVICES")
    return None if v is None or v.strip() in ("", "-1", "NoDevFiles") else v.strip()


def cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def nvidia_smi_memory(index: str = "0") -> tuple[int, int] | None:
    """(total, free) MB of GPU ``index`` from nvidia-smi, None when it is missing or does not answer."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        r = subprocess.run(
            [exe, "--query-gpu=memory.total,memory.free", "--format=csv,noheader,nounits", "-i", index],
            capture_output=True,
            text=True,
            timeout=20,
        )
        total, free = (int(float(v)) for v in r.stdout.strip().splitlines()[0].split(","))
        return total, free
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def describe(
    gpus: list,
    details: dict | None,
    *,
    built_with_cuda: bool,
    threads: int,
    env=None,
    memory: tuple[int, int] | None = None,
    require_gpu: bool = False,
) -> Device:
    """The job's :class:`Device` from what TensorFlow reports (pure, so every case is testable on a CPU).

    ``gpus``: TensorFlow's visible GPUs; ``details``: ``get_device_details`` of the first; ``memory``:
    (total, free) MB of that GPU. Raises :class:`DeviceError` with ``require_gpu`` and no usable GPU."""
    assigned = assigned_gpus(env)
    if gpus:
        name = (details or {}).get("device_name") or "unknown model"
        total, free = memory if memory else (None, None)
        return Device("GPU", name, threads, total, free, assigned)
    why = (
        "this TensorFlow is built without CUDA (tensorflow-cpu; the GPU environment is described in "
        "docs/gpu.md)"
        if not built_with_cuda
        else "TensorFlow finds no usable GPU (driver, CUDA libraries)"
    )
    cause = (
        f"a GPU was assigned (CUDA_VISIBLE_DEVICES={assigned}) but {why}"
        if assigned
        else "no GPU was assigned"
    )
    if require_gpu:
        raise DeviceError(f"detect.require_gpu is set but this job has no usable GPU: {cause}")
    note = f"{cause}: running on the CPU" if assigned else ""
    return Device("CPU", CPU_LABEL, threads, assigned=assigned, note=note)


_CURRENT: Device | None = None


def setup(require_gpu: bool = False) -> Device:
    """Find the device, enable GPU memory growth, log the device line; once per process (later calls return
    the same :class:`Device`, and still raise if ``require_gpu`` and it is a CPU)."""
    global _CURRENT
    if _CURRENT is None:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        for g in gpus:
            try:
                tf.config.experimental.set_memory_growth(g, True)
            except RuntimeError:  # GPUs already initialised (TensorFlow used before setup): leave as is
                log.warning("GPU memory growth could not be set: TensorFlow was already initialised")
        details = tf.config.experimental.get_device_details(gpus[0]) if gpus else None
        visible = (assigned_gpus() or "0").split(",")[0]
        threads = tf.config.threading.get_intra_op_parallelism_threads() or cpu_threads()
        dev = describe(
            gpus,
            details,
            built_with_cuda=tf.test.is_built_with_cuda(),
            threads=threads,
            memory=nvidia_smi_memory(visible) if gpus else None,
            require_gpu=require_gpu,
        )
        _CURRENT = dev
        log.info(dev.log_line())
    elif require_gpu and _CURRENT.kind != "GPU":
        raise DeviceError(
            f"detect.require_gpu is set but this job has no usable GPU: {_CURRENT.note or 'none'}"
        )
    return _CURRENT


def host_limit_mb(env=None) -> float | None:
    """Memory this job may use on the host (SLURM's --mem, else the machine's available memory), MB."""
    env = os.environ if env is None else env
    for key in ("SLURM_MEM_PER_NODE",):
        if env.get(key, "").isdigit():
            return float(env[key])
    if env.get("SLURM_MEM_PER_CPU", "").isdigit() and env.get("SLURM_CPUS_ON_NODE", "").isdigit():
        return float(env["SLURM_MEM_PER_CPU"]) * int(env["SLURM_CPUS_ON_NODE"])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def block_budget_mb(dev: Device, default_mb: float, host_mb: float | None = None) -> float:
    """Strip budget (MB) when detect.max_block_mb is not set: ``default_mb`` on a CPU; on a GPU, a share
    (:data:`GPU_MEMORY_SHARE`) of its free memory, so strips are as tall as the GPU holds (the whole
    quadrant on a 40 GB GPU), but no more than the host can hold next to the job's baseline
    (``(host - 1000) / 1.25`` MB, the inverse of the rule's ``mem_mb = 1000 + 1.25 x max_block_mb``)."""
    if dev.kind != "GPU" or dev.free_mb is None:
        return float(default_mb)
    budget = GPU_MEMORY_SHARE * dev.free_mb
    if host_mb is not None:
        budget = min(budget, max((host_mb - HOST_BASELINE_MB) / 1.25, default_mb))
    return float(max(budget, default_mb))


# ---------------------------------------------------------------------------------- counting in merge
def device_tag(raster_path) -> str:
    """The DEVICE tag of a probability raster written by detect ('unknown' for rasters written before it)."""
    import rasterio

    with rasterio.open(raster_path) as ds:
        return ds.tags().get("DEVICE", "unknown")


def count_jobs(probability_rasters) -> dict[str, int]:
    """Detect jobs per device, from the quadrants' probability rasters (missing rasters are skipped)."""
    counts = Counter(device_tag(p) for p in probability_rasters if Path(p).exists())
    return {k: int(v) for k, v in sorted(counts.items())}


# ---------------------------------------------------------------------------------- the runtime
def gpu_present(env=None) -> bool:
    """Whether this job may have a GPU: one assigned by the scheduler, or an NVIDIA device node."""
    return assigned_gpus(env) is not None or Path("/dev/nvidia0").exists()


def detect_runtime(requested: str, *, precision: str = "float32", require_gpu: bool = False,
                   pyramid: bool = False, patch_model: bool = False, env=None) -> str:
    """'tensorflow', 'onnxruntime' or 'openvino' for a detect job (``detect.runtime``).

    ``auto`` takes ONNX Runtime (no TensorFlow start, ~3 s less per job; docs/performance.md) when the job
    runs the FCN in float32 on a CPU, OpenVINO when it runs it in bfloat16 on a CPU that computes bfloat16
    (AVX512_BF16 / AMX: about half the float32 time), TensorFlow for a GPU (assigned or present), float16,
    the pyramid's screen and imported patch models (and for bfloat16 on other CPUs). ``onnxruntime`` or
    ``openvino`` asked for where it cannot run is a :class:`DeviceError` naming the reason."""
    from minescan.models.onnx_net import OV_PRECISIONS, RUNTIMES, available, ov_cpu_bf16

    if requested not in RUNTIMES:
        raise DeviceError(f"detect.runtime must be one of {', '.join(RUNTIMES)}, not {requested!r}")
    if requested == "tensorflow":
        return requested
    common = (("detect.require_gpu", require_gpu), ("the pyramid scan", pyramid),
              ("an imported patch model", patch_model))

    def blockers(runtime: str) -> list[str]:
        if runtime == "onnxruntime":
            own = [(f"precision {precision} (float32 only)", precision != "float32"),
                   ("onnxruntime or onnx not installed", not available("onnxruntime"))]
        else:
            installed = available("openvino")
            own = [(f"precision {precision} (float32 or bfloat16 only)", precision not in OV_PRECISIONS),
                   ("openvino or onnx not installed", not installed),
                   ("this CPU computes no bfloat16 (AVX512_BF16 / AMX)",
                    installed and precision == "bfloat16" and not ov_cpu_bf16())]
        return [why for why, hit in (*common, *own) if hit]

    if requested in ("onnxruntime", "openvino"):
        why = blockers(requested)
        if why:
            raise DeviceError(f"detect.runtime {requested} cannot run this job: {'; '.join(why)}")
        return requested
    if gpu_present(env):
        return "tensorflow"
    for runtime in ("onnxruntime", "openvino") if precision == "float32" else ("openvino",):
        if not blockers(runtime):
            return runtime
    return "tensorflow"


def cpu_device(note: str) -> Device:
    """The :class:`Device` of a job that does not start TensorFlow (ONNX Runtime or OpenVINO on the CPU,
    ``note``); logged."""
    dev = Device("CPU", CPU_LABEL, cpu_threads(), note=note)
    log.info(dev.log_line())
    return dev
