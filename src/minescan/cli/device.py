"""``minescan device``: the device a detect/classify job would run on here (minescan.scan.device), to check
an environment (``make venv-gpu`` runs it) or a GPU node
(``srun --gres=gpu:1 .venv-gpu/bin/minescan device --require-gpu``)."""

from __future__ import annotations


def cmd_device(args) -> int:
    from minescan.scan import device
    from minescan.scan.inference import DEFAULT_MAX_BLOCK_MB, import_keras_lean

    import_keras_lean()
    dev = device.setup(require_gpu=args.require_gpu)
    print(dev.log_line())
    budget = device.block_budget_mb(dev, DEFAULT_MAX_BLOCK_MB, device.host_limit_mb())
    print(f"strip budget when detect.max_block_mb is not set: {budget:.0f} MB")
    print(runtime_line())
    return 0


def runtime_line() -> str:
    """What ``detect.runtime: auto`` runs here, per ``detect.precision``."""
    from minescan.scan import device

    picks = [f"{p} -> {device.detect_runtime('auto', precision=p)}" for p in ("float32", "bfloat16", "float16")]
    return "detect.runtime auto, by detect.precision: " + ", ".join(picks)


def register(sub) -> None:
    p = sub.add_parser(
        "device", help="print the device (GPU model and memory, or CPU and threads) jobs run on here, and what "
        "detect.runtime auto runs there"
    )
    p.add_argument("--require-gpu", action="store_true", help="exit 2 when there is no usable GPU")
    p.set_defaults(func=cmd_device)
