"""Rewrites a wheel under another platform tag: `retag.py IN.whl OUT.whl`.

The platform tag is taken from OUT's file name (`name-version-py3-none-PLATFORM.whl`); the
`Tag:` lines of `*.dist-info/WHEEL` are replaced by that one tag and the WHEEL file's hash and
size in RECORD are updated, so `pip install` and `wheel tags` see a consistent wheel.
"""

import base64
import hashlib
import sys
import zipfile


def record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def main(src: str, dst: str) -> None:
    stem = dst.rsplit("/", 1)[-1][: -len(".whl")]
    python, abi, platform = stem.split("-")[-3:]
    tag = f"{python}-{abi}-{platform}"
    with zipfile.ZipFile(src) as zin:
        infos = zin.infolist()
        files = {i.filename: zin.read(i.filename) for i in infos}
    wheel_name = next(n for n in files if n.endswith(".dist-info/WHEEL"))
    record_name = next(n for n in files if n.endswith(".dist-info/RECORD"))
    lines = [l for l in files[wheel_name].decode().splitlines() if not l.startswith("Tag:")]
    lines.append(f"Tag: {tag}")
    files[wheel_name] = ("\n".join(lines) + "\n").encode()
    record = []
    for line in files[record_name].decode().splitlines():
        if line.split(",", 1)[0] == wheel_name:
            data = files[wheel_name]
            line = f"{wheel_name},{record_hash(data)},{len(data)}"
        record.append(line)
    files[record_name] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for info in infos:
            out = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            out.external_attr = info.external_attr  # keeps the binary executable
            out.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(out, files[info.filename])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
