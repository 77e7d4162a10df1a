"""Writes a binary-only wheel holding one executable, as Python tools
written in Rust ship: `pip install` puts it in the environment's bin/.

    wheel.py BINARY NAME VERSION TAGS OUTDIR SUMMARY

TAGS is the wheel's compressed tag set (e.g. py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64).
The archive is reproducible: fixed timestamps and order.
"""

import base64
import hashlib
import os
import sys
import zipfile

EPOCH = (1980, 1, 1, 0, 0, 0)


def digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def main(binary, name, version, tags, outdir, summary):
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    with open(binary, "rb") as f:
        exe = f.read()
    metadata = (
        "Metadata-Version: 2.1\n"
        f"Name: {name}\n"
        f"Version: {version}\n"
        f"Summary: {summary}\n"
        "License: MIT\n"
        "Requires-Python: >=3.6\n"
    ).encode()
    wheel_tags = "".join(f"Tag: {tag}\n" for tag in expand(tags))
    wheel = f"Wheel-Version: 1.0\nGenerator: celerity scripts/dist\nRoot-Is-Purelib: false\n{wheel_tags}".encode()
    files = [
        (f"{dist}-{version}.data/scripts/celerity", exe, 0o755),
        (f"{info}/METADATA", metadata, 0o644),
        (f"{info}/WHEEL", wheel, 0o644),
    ]
    record = "".join(f"{path},{digest(data)},{len(data)}\n" for path, data, _ in files)
    record += f"{info}/RECORD,,\n"
    files.append((f"{info}/RECORD", record.encode(), 0o644))
    out = os.path.join(outdir, f"{dist}-{version}-{tags}.whl")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data, mode in files:
            entry = zipfile.ZipInfo(path, EPOCH)
            entry.external_attr = (0o100000 | mode) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(entry, data)
    print(out)


def expand(tags):
    """py3-none-a.b -> py3-none-a, py3-none-b."""
    python, abi, platforms = tags.split("-")
    return [f"{python}-{abi}-{platform}" for platform in platforms.split(".")]


if __name__ == "__main__":
    main(*sys.argv[1:])
