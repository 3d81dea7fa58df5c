"""What the bench runs on: device name and properties, versions, clocks, the peak bandwidth it is judged by.

Every query that is newer than torch 2.11 or needs an optional package (pynvml) is guarded: a field that
cannot be read is left out (env.json) or blank (results.csv), never a crash.
"""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from typing import Any

import torch

# Peak DRAM bandwidth (bytes/s) by device name, from the vendors' data sheets. Matched by the longest
# key contained in the device name (case-insensitive); unknown devices get no roofline fraction.
PEAK_BANDWIDTH: dict[str, float] = {
    "H200": 4.8e12,
    "H100 80GB HBM3": 3.35e12,  # H100 SXM
    "H100 SXM": 3.35e12,
    "H100 NVL": 3.9e12,
    "H100 PCIe": 2.0e12,
    "GH200": 4.0e12,
    "A100-SXM4-80GB": 2.039e12,
    "A100 80GB PCIe": 1.935e12,
    "A100-SXM4-40GB": 1.555e12,
    "A100-PCIE-40GB": 1.555e12,
    "L40S": 0.864e12,
    "L40": 0.864e12,
    "L4": 0.3e12,
    "A10G": 0.6e12,
    "RTX 4090": 1.008e12,
    "RTX 3090": 0.936e12,
    "V100": 0.9e12,
    "T4": 0.32e12,
}


def device_name(device: torch.device) -> str:
    """The CUDA device's name (the dispatch tables' key), or ``cpu (N threads)``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def peak_bandwidth(name: str) -> float | None:
    """Peak DRAM bandwidth in bytes/s for a device name, or None when it is not in the table."""
    lowered = name.lower()
    hits = [key for key in PEAK_BANDWIDTH if key.lower() in lowered]
    return PEAK_BANDWIDTH[max(hits, key=len)] if hits else None


def versions() -> dict[str, str]:
    """torch, Triton, cuDNN and CUDA versions ("" where absent)."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = ""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "torch": torch.__version__,
        "triton": triton_version,
        "cudnn": "" if cudnn is None else str(cudnn),
        "cuda": torch.version.cuda or "",
        "python": platform.python_version(),
    }


def _clocks(index: int) -> dict[str, Any]:
    """Current and max SM / memory clocks (MHz) and the power limit via pynvml, if it is importable."""
    try:
        import pynvml
    except ImportError:
        return {"note": "pynvml not importable: clocks not read"}
    out: dict[str, Any] = {}
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        for label, kind in (("sm", pynvml.NVML_CLOCK_SM), ("mem", pynvml.NVML_CLOCK_MEM)):
            out[f"{label}_clock_mhz"] = pynvml.nvmlDeviceGetClockInfo(handle, kind)
            out[f"{label}_clock_max_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(handle, kind)
        out["power_limit_w"] = pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000
    except Exception as exc:  # NVML errors differ by driver; the bench runs on without clocks
        out["note"] = f"pynvml: {type(exc).__name__}: {exc}"
    return out


def device_properties(device: torch.device) -> dict[str, Any]:
    """Device properties that torch exposes (guarded field by field: older torch lacks some)."""
    if device.type != "cuda":
        return {
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
        }
    props = torch.cuda.get_device_properties(device)
    out: dict[str, Any] = {}
    for field in ("name", "total_memory", "multi_processor_count", "major", "minor", "L2_cache_size"):
        if hasattr(props, field):
            out[field] = getattr(props, field)
    index = device.index if device.index is not None else torch.cuda.current_device()
    out["index"] = index
    out["clocks"] = _clocks(index)
    return out


def environment(device: torch.device) -> dict[str, Any]:
    """The content of env.json."""
    name = device_name(device)
    bw = peak_bandwidth(name) if device.type == "cuda" else None
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": name,
        "device_type": device.type,
        "peak_bandwidth_gb_s": None if bw is None else bw / 1e9,
        "versions": versions(),
        "properties": device_properties(device),
        "settings": {
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", ""),
        },
        "argv": sys.argv,
    }
