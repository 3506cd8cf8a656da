#!/usr/bin/env python3
"""Dump a GPU's MIG geometry as NVML reports it, read-only, as JSON on stdout.

    python3 scripts/nvml_mig_geometry.py [--gpu-index N]

For comparing a real GPU with parva's catalogue entry (`parva catalogue`): name, memory, MIG mode,
and for every GPU instance profile id NVML knows: slices, instance count, SMs, memory and the
possible placements (start, size). Needs nvidia-ml-py (pynvml). Changes nothing on the GPU; every
call that NVML refuses (MIG mode off, an unknown profile) is recorded with its error instead.
"""
import argparse
import json
import sys


def placements(n, h, profile_id):
    """(start, size) of every placement NVML allows for a profile; pynvml has two signatures."""
    import ctypes

    try:
        pl = n.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id)
    except TypeError:
        count = ctypes.c_uint(0)
        n.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, None, ctypes.byref(count))
        pl = (n.c_nvmlGpuInstancePlacement_t * max(count.value, 1))()
        n.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, pl, ctypes.byref(count))
        pl = pl[: count.value]
    return [[x.start, x.size] for x in pl]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu-index", type=int, default=0)
    args = ap.parse_args()
    import pynvml as n

    n.nvmlInit()
    h = n.nvmlDeviceGetHandleByIndex(args.gpu_index)
    out = {"gpu_index": args.gpu_index}

    def attempt(key, f):
        try:
            out[key] = f()
        except Exception as e:  # NVMLError and API differences between pynvml versions
            out[key + "_error"] = str(e)

    attempt("name", lambda: n.nvmlDeviceGetName(h))
    attempt("driver", lambda: n.nvmlSystemGetDriverVersion())
    attempt("memory_mib", lambda: n.nvmlDeviceGetMemoryInfo(h).total // (1 << 20))
    attempt("mig_mode", lambda: list(n.nvmlDeviceGetMigMode(h)))
    attempt("cuda_cores", lambda: n.nvmlDeviceGetNumGpuCores(h))
    profiles = []
    count = getattr(n, "NVML_GPU_INSTANCE_PROFILE_COUNT", 16)
    for pid in range(count):
        p = {"profile": pid}
        info = None
        for getter in ("nvmlDeviceGetGpuInstanceProfileInfoV", "nvmlDeviceGetGpuInstanceProfileInfo"):
            f = getattr(n, getter, None)
            if f is None:
                continue
            try:
                info = f(h, pid)
                break
            except Exception as e:
                p["error"] = str(e)
        if info is not None:
            p.pop("error", None)
            for field, _ in getattr(info, "_fields_", []):
                v = getattr(info, field)
                if isinstance(v, bytes):
                    v = v.decode(errors="replace").rstrip("\0")
                if isinstance(v, (int, float, str)):
                    p[field] = v
            try:
                p["placements"] = placements(n, h, info.id)
            except Exception as e:
                p["placements_error"] = str(e)
        profiles.append(p)
    out["gpu_instance_profiles"] = profiles
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
