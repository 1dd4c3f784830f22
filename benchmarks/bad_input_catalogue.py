"""The bad-input catalogue: every hostile or mistaken input from the reliability issue, run through
the real `qwen-edge` CLI in a fresh process, with its outcome.

For each case: exit code, whether stderr holds a traceback, whether it finished within the time
limit (a hang otherwise), whether any file that existed before is gone or changed, and the one-line
message. Writes a Markdown table (and JSON with --json).

    .venv/bin/python benchmarks/bad_input_catalogue.py --markdown benchmarks/bad_input_catalogue.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIMIT_S = 60
HELD: list = []  # sockets a case keeps busy
MOUNTS: list = []  # tmpfs mounts to undo
QE = [sys.executable, "-m", "qwen_edge.cli.main"]


def snapshot(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and "cache" not in p.relative_to(root).parts[:1]
    }


def run(argv, root: Path, stdin: bytes | None = None) -> dict:
    before = snapshot(root)
    start = time.perf_counter()
    env = {**os.environ, "QWEN_EDGE_CACHE": str(root / "cache")}
    try:
        out = subprocess.run(QE + argv, input=stdin or b"", capture_output=True, timeout=LIMIT_S, env=env)
        code, err = out.returncode, out.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        code, err = None, ""
    after = snapshot(root)
    lost = sorted(k for k in before if k not in after or after[k] != before[k])
    lines = [ln for ln in err.splitlines() if ln.startswith("qwen-edge")]
    return {
        "exit": code,
        "seconds": round(time.perf_counter() - start, 2),
        "traceback": "Traceback" in err,
        "hang": code is None,
        "lost": lost,
        "message": lines[-1] if lines else err.strip().splitlines()[-1:] or "",
    }


def cases(root: Path, ort: Path, gguf: Path):
    """(category, case, setup -> argv[, stdin])."""

    def copy(name="f"):
        dst = root / name
        shutil.rmtree(dst, ignore_errors=True)
        return Path(shutil.copytree(ort, dst))

    def manifest_edit(change):
        def setup():
            f = copy()
            m = json.loads((f / "manifest.json").read_text())
            change(m)
            (f / "manifest.json").write_text(json.dumps(m))
            return ["generate", str(f), "-p", "hi", "--max-new-tokens", "2"]

        return setup

    def user_folder():
        d = root / "d"
        (d / "sub").mkdir(parents=True, exist_ok=True)
        (d / "notes.txt").write_text("precious")
        return ["export", "tiny", "-o", str(d), "--overwrite"]

    def source_as_output():
        f = copy("src")
        return ["quantize", str(f), "-o", str(f), "--overwrite", "--no-report", "--data-free"]

    def flipped_byte():
        f = copy()
        subprocess.run(QE + ["generate", str(f), "-p", "hi", "--max-new-tokens", "1"], capture_output=True,
                       env={**os.environ, "QWEN_EDGE_CACHE": str(root / "cache")})  # fmt: skip
        target = f / "model.onnx"
        st = target.stat()
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        return ["generate", str(f), "-p", "hi"]

    def unlisted_template():
        f = copy()
        (f / "chat_template.jinja").write_text("{{ raise_exception('the unlisted template was used') }}")
        return ["generate", str(f), "-p", "hi", "--chat", "--max-new-tokens", "2"]

    def template(text):
        def setup():
            from qwen_edge.export import bundle

            f = copy()
            config = json.loads((f / "tokenizer_config.json").read_text())
            config["chat_template"] = text
            (f / "tokenizer_config.json").write_text(json.dumps(config))
            m = json.loads((f / "manifest.json").read_text())
            bundle.seal(f, {k: v for k, v in m.items() if k not in ("files", "tools")})
            return ["generate", str(f), "-p", "hi", "--chat"]

        return setup

    def safetensors(header: bytes, data=b""):
        def setup():
            d = root / "hf"
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            from qwen_edge.models.shapes import random_model

            (d / "config.json").write_text(json.dumps(random_model("tiny").config.to_dict()))
            (d / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + data)
            return ["export", str(d), "-o", str(root / "hf-out")]

        return setup

    def big_file():
        with open(root / "big.bin", "wb") as f:
            f.truncate(1 << 30)
        return ["export", str(root / "big.bin"), "-o", str(root / "x")]

    def busy_port():
        f = copy()
        from qwen_edge.export import bundle

        m = json.loads((f / "manifest.json").read_text())
        bundle.seal(f, {**{k: v for k, v in m.items() if k not in ("files", "tools")}, "target": "mobile"})
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        HELD.append(s)  # kept open until the run ends
        return ["serve-demo", str(f), "--port", str(s.getsockname()[1])]

    def binary_text(flag_argv):
        def setup():
            (root / "bin.txt").write_bytes(b"\x7fELF\0\0\x01" * 64)
            return flag_argv(root / "bin.txt")

        return setup

    def full_disk(fmt):
        def setup():  # a real 300 KB tmpfs (needs root; the row says so when it cannot mount)
            disk = root / f"full-{fmt}"
            disk.mkdir()
            if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)]).returncode:
                return ["export", "--help-cannot-mount-tmpfs"]
            MOUNTS.append(disk)
            return ["export", "tiny", "-o", str(disk / "x"), "--format", fmt]

        return setup

    gen = lambda *flags: lambda: ["generate", str(copy()), *flags]  # noqa: E731
    T = "0" * 64
    yield "data loss", "--overwrite on a user folder", user_folder
    yield "data loss", "quantize IN -o IN --overwrite", source_as_output
    yield (
        "reads outside",
        "manifest lists ../../etc/passwd",
        manifest_edit(lambda m: m["files"].update({"../../etc/passwd": {"bytes": 1, "sha256": T}})),
    )  # noqa: E501
    yield (
        "reads outside",
        "manifest lists /dev/zero",
        manifest_edit(lambda m: m["files"].update({"/dev/zero": {"bytes": 1, "sha256": T}})),
    )  # noqa: E501
    yield "reads outside", "runtime_file outside the list", manifest_edit(lambda m: m.update(runtime_file="../m.onnx"))  # noqa: E501
    yield "reads outside", 'manifest "files": {}', manifest_edit(lambda m: m.update(files={}))
    yield "verification", "flipped byte, mtime set back", flipped_byte
    yield "verification", "unlisted chat_template.jinja", unlisted_template
    yield (
        "parsers",
        "safetensors negative offsets",
        safetensors(b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}}', b"\0" * 8),
    )  # noqa: E501
    yield (
        "parsers",
        "safetensors header length 2^62",
        lambda: (
            safetensors(b"{}")(),
            (root / "hf" / "model.safetensors").write_bytes((2**62).to_bytes(8, "little") + b"{}"),
            ["export", str(root / "hf"), "-o", str(root / "hf-out")],
        )[-1],
    )  # noqa: E501
    yield "parsers", "safetensors header is a JSON list", safetensors(b"[1,2]")
    yield (
        "parsers",
        "safetensors tensor without dtype",
        safetensors(b'{"a":{"shape":[2],"data_offsets":[0,8]}}', b"\0" * 8),
    )  # noqa: E501
    yield (
        "parsers",
        "safetensors string offsets",
        safetensors(b'{"a":{"dtype":"F32","shape":[2],"data_offsets":["0","8"]}}', b"\0" * 8),
    )  # noqa: E501
    yield (
        "parsers",
        "safetensors negative shape",
        safetensors(b'{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,0]}}'),
    )  # noqa: E501
    yield "parsers", "1 GB file that is not GGUF", big_file
    yield (
        "parsers",
        "config.json without sizes",
        lambda: (
            safetensors(b"{}")(),
            (root / "hf" / "config.json").write_text('{"model_type": "qwen2"}'),
            ["export", str(root / "hf"), "-o", str(root / "hf-out")],
        )[-1],
    )  # noqa: E501
    yield (
        "hangs",
        "nested range(100000) template",
        template("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"),
    )  # noqa: E501
    yield "tracebacks", "invalid UTF-8 prompt (argv)", lambda: ["generate", str(copy()), "-p", os.fsdecode(b"caf\xe9")]
    yield (
        "tracebacks",
        "invalid UTF-8 piped into chat",
        lambda: (["chat", str(copy()), "--max-new-tokens", "2"], b"caf\xe9\nhi\n"),
    )  # noqa: E501
    yield "tracebacks", "--seed -1", gen("-p", "hi", "--seed", "-1")
    yield "tracebacks", "--temperature 1e-320", gen("-p", "hi", "--temperature", "1e-320")
    yield "tracebacks", "--presence-penalty nan", gen("-p", "hi", "--temperature", "1", "--presence-penalty", "nan")
    yield "tracebacks", "--temperature inf", gen("-p", "hi", "--temperature", "inf")
    yield "tracebacks", "--threads -1", gen("-p", "hi", "--threads", "-1")
    yield "tracebacks", "template SecurityError", template("{{ messages.__class__.__mro__ }}")
    yield "tracebacks", "template syntax error", template("{% for %}")
    yield "tracebacks", "template raise_exception", template("{{ raise_exception('no system role') }}")
    yield (
        "tracebacks",
        "manifest.json not JSON",
        lambda: ((copy() / "manifest.json").write_text("{"), ["generate", str(root / "f"), "-p", "hi"])[1],
    )  # noqa: E501
    yield "tracebacks", "manifest wrong types", manifest_edit(lambda m: m.update(format=["onnx"]))
    yield "tracebacks", "serve-demo port in use", busy_port
    yield (
        "tracebacks",
        "serve-demo port 70000",
        lambda: (busy_port(), ["serve-demo", str(root / "f"), "--port", "70000"])[1],
    )  # noqa: E501
    yield "tracebacks", "full disk, ONNX export", full_disk("onnx")
    yield "tracebacks", "full disk, OpenVINO export", full_disk("openvino")
    yield "tracebacks", "eval --window-tokens 0", lambda: ["eval", str(copy()), "--window-tokens", "0"]
    yield (
        "tracebacks",
        "binary calibration text",
        binary_text(
            lambda p: ["quantize", str(copy()), "-o", str(root / "q"), "--weights", "int4", "--calibration", str(p)]
        ),
    )  # noqa: E501
    yield "late checks", "eval --windows 0", lambda: ["eval", str(copy()), "--windows", "0"]
    yield (
        "late checks",
        "quantize --eval-text missing",
        lambda: ["quantize", str(copy()), "-o", str(root / "q"), "--eval-text", str(root / "nope.txt")],
    )  # noqa: E501
    yield (
        "late checks",
        "export tiny --target mobile",
        lambda: ["export", "tiny", "-o", str(root / "m"), "--target", "mobile"],
    )  # noqa: E501


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", help="write the table here")
    ap.add_argument("--json", help="write the raw outcomes here")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from gguf_writer import write_gguf

    from qwen_edge.export.to_onnx import export_onnx
    from qwen_edge.models.shapes import random_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        os.environ["QWEN_EDGE_CACHE"] = str(base / "cache")
        gguf = write_gguf(random_model("tiny", seed=3, std=0.1), base / "m.gguf")
        export_onnx(str(gguf), base / "ort")
        for category, name, setup in cases(base / "work", base / "ort", gguf):
            (base / "work").mkdir(exist_ok=True)
            made = setup()
            argv, stdin = made if isinstance(made, tuple) else (made, None)
            outcome = {"category": category, "case": name, **run(argv, base / "work", stdin)}
            rows.append(outcome)
            print(json.dumps(outcome), flush=True)
            while MOUNTS:
                disk = MOUNTS.pop()
                outcome["left_on_full_disk"] = sorted(p.name for p in disk.iterdir())
                subprocess.run(["umount", str(disk)])
            shutil.rmtree(base / "work", ignore_errors=True)
    table = [
        "| category | input | exit | traceback | hang | files lost | seconds | message |",
        "|---|---|---|---|---|---|---|---|",
    ]  # noqa: E501
    for r in rows:
        msg = str(r["message"]).replace("|", "\\|")[:160]
        table.append(f"| {r['category']} | {r['case']} | {r['exit']} | {'yes' if r['traceback'] else 'no'} | "
                     f"{'yes' if r['hang'] else 'no'} | {len(r['lost'])} | {r['seconds']} | {msg} |")  # fmt: skip
    total = {k: sum(bool(r[k]) for r in rows) for k in ("traceback", "hang", "lost")}
    table.append(f"\n{len(rows)} inputs: {total['traceback']} tracebacks, {total['hang']} hangs, "
                 f"{total['lost']} with files lost.")  # fmt: skip
    print("\n".join(table))
    if args.markdown:
        Path(args.markdown).write_text("\n".join(table) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
