#!/usr/bin/env python3
"""List every MIG-enabled entry of NVIDIA mig-parted's shipped configurations, as the facts
`crates/core/src/catalogue/mig-parted-configs.txt` pins for a test (catalogue_tests.rs places each
entry on every parva GPU type it applies to).

    python3 scripts/mig_parted_configs.py MIG_PARTED_CHECKOUT > crates/core/src/catalogue/mig-parted-configs.txt

MIG_PARTED_CHECKOUT is a clone of github.com/NVIDIA/mig-parted, bare or not (its commit goes in the
header).
Read: deployments/systemd/config-default.yaml, examples/config.yaml,
examples/dgx-station-80gb-config.yaml and the ConfigMaps of deployments/container/*.yaml (the
example deployments). Output: `file | config | device-filter (PCI ids, or all) | profile=count ...`,
one line per MIG-enabled entry with at least one device, duplicates within a file dropped.
Needs PyYAML.
"""

import subprocess
import sys
from pathlib import Path

import yaml

FILES = [
    "deployments/systemd/config-default.yaml",
    "examples/config.yaml",
    "examples/dgx-station-80gb-config.yaml",
    "deployments/container/nvidia-mig-manager-example.yaml",
    "deployments/container/nvidia-mig-manager-example-hopper-blackwell.yaml",
]


def mig_configs(text):
    """The `mig-configs` mapping of a mig-parted config file, or of the ConfigMaps of a manifest."""
    for doc in yaml.safe_load_all(text):
        if not isinstance(doc, dict):
            continue
        if "mig-configs" in doc:
            yield doc["mig-configs"]
        for value in (doc.get("data") or {}).values():
            if isinstance(value, str) and "mig-configs" in value:
                inner = yaml.safe_load(value)
                if isinstance(inner, dict) and "mig-configs" in inner:
                    yield inner["mig-configs"]


def filters(entry):
    f = entry.get("device-filter")
    if f is None:
        return "all"
    if isinstance(f, str):
        f = [f]
    return ",".join(x.strip() for x in f)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = Path(sys.argv[1])
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=8", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
    print("# Every MIG-enabled entry of the configurations NVIDIA mig-parted ships (github.com/NVIDIA/mig-parted")
    print(f"# at {commit}: {', '.join(FILES)}),")
    print("# as facts for a test, written by scripts/mig_parted_configs.py:")
    print("# file | config | device-filter (PCI device ids, or all) | profile=count ...")
    print("# catalogue_tests.rs places each entry on every parva type it applies to.")
    for rel in FILES:
        path = root / rel
        if path.is_file():
            text = path.read_text()
        else:
            # A bare clone (no work tree): the file at HEAD.
            shown = subprocess.run(["git", "-C", str(root), "show", f"HEAD:{rel}"], capture_output=True, text=True)
            if shown.returncode != 0:
                sys.exit(f"{path}: not found")
            text = shown.stdout
        seen = set()
        name = rel.removeprefix("deployments/systemd/")
        for configs in mig_configs(text):
            for config, entries in configs.items():
                for entry in entries or []:
                    if not entry.get("mig-enabled"):
                        continue
                    devices = entry.get("mig-devices") or {}
                    if not devices:
                        continue
                    counts = " ".join(f"{p}={c}" for p, c in devices.items())
                    line = f"{name} | {config} | {filters(entry)} | {counts}"
                    if line not in seen:
                        seen.add(line)
                        print(line)


if __name__ == "__main__":
    main()
