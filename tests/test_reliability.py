"""Reliability and security: no data loss, nothing read outside a folder, no unverified file used,
no traceback for bad input, no hang. One test (or more) per item of the bad-input catalogue in
benchmarks/RESULTS.md."""

import errno
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from qwen_edge.cli.main import main
from qwen_edge.export import bundle
from qwen_edge.export.bundle import OutputError
from qwen_edge.export.to_onnx import export_onnx
from qwen_edge.models.shapes import random_model
from qwen_edge.runtime import Engine, EngineError
from qwen_edge.runtime.chat_template import ChatTemplateError, render
from qwen_edge.runtime.manifest import verify

from .gguf_writer import write_gguf


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN_EDGE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny GGUF (with tokenizer and chat template) and its ort export."""
    tmp = tmp_path_factory.mktemp("made")
    gguf = write_gguf(random_model("tiny", seed=3, std=0.1), tmp / "m.gguf")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QWEN_EDGE_CACHE", str(tmp / "cache"))
        export_onnx(str(gguf), tmp / "ort")
    return gguf, tmp / "ort"


@pytest.fixture
def ort(made, tmp_path) -> Path:
    """A private copy of the ort folder, free to damage."""
    return Path(shutil.copytree(made[1], tmp_path / "ort"))


def edit_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def reseal(folder: Path, **extra) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    info = {k: v for k, v in manifest.items() if k not in ("files", "tools")}
    bundle.seal(folder, {**info, **extra})


def one_line_error(capsys, argv: list[str], command: str) -> str:
    """Run the CLI in-process: it must fail with exit 2 and one line naming the command (our own
    error type: anything else would propagate here as an exception with its traceback)."""
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("qwen-edge")]
    assert len(err) == 1 and err[0].startswith(f"qwen-edge {command}: error: "), err
    return err[0]


# 1. data loss ------------------------------------------------------------------------------------


def test_overwrite_refuses_a_folder_that_is_not_an_export(tmp_path, capsys):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "notes.txt").write_text("precious")
    line = one_line_error(capsys, ["export", "tiny", "-o", str(d), "--overwrite"], "export")
    assert "not a qwen-edge export folder" in line
    assert (d / "notes.txt").read_text() == "precious" and (d / "sub").is_dir()


def test_overwrite_refuses_the_source_folder(tmp_path, capsys):
    from safetensors.torch import save_file

    src = tmp_path / "src"
    src.mkdir()
    model = random_model("tiny")
    (src / "config.json").write_text(json.dumps(model.config.to_dict()))
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}, src / "model.safetensors"
    )
    before = (src / "model.safetensors").read_bytes()
    line = one_line_error(capsys, ["export", str(src), "-o", str(src), "--overwrite"], "export")
    assert "is the source being read" in line
    assert (src / "model.safetensors").read_bytes() == before


def test_overwrite_refuses_an_export_holding_an_unlisted_file_and_the_quantize_input(ort, tmp_path, capsys):
    (ort / "notes.txt").write_text("mine")
    line = one_line_error(capsys, ["export", "tiny", "-o", str(ort), "--overwrite"], "export")
    assert "notes.txt" in line and (ort / "notes.txt").exists()
    (ort / "notes.txt").unlink()
    line = one_line_error(capsys, ["quantize", str(ort), "-o", str(ort), "--overwrite"], "quantize")
    assert "is the source being read" in line
    verify(ort, full=True)  # untouched


def test_overwrite_replaces_an_export_and_a_failed_one_keeps_the_old(ort, made):
    old = (ort / "manifest.json").read_text()
    with pytest.raises(RuntimeError, match="boom"), bundle.staged(ort, overwrite=True) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")
    assert (ort / "manifest.json").read_text() == old and not (ort / "half.bin").exists()
    assert not list(ort.parent.glob(f".{ort.name}.*"))  # no staging folder left
    export_onnx(str(made[0]), ort, overwrite=True)
    verify(ort, full=True)


def test_a_folder_set_aside_before_a_crash_is_put_back(ort, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    aside = tmp_path / f".ort.old-{dead.pid}-x1"
    ort.rename(aside)  # as if killed between the two renames of a swap
    bundle.remove_stale(ort)
    assert not aside.exists()
    verify(ort, full=True)


# 2. reads outside the folder / 4. unlisted files -------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "/dev/zero", "a/../../x", "", "..", "a\\..\\b"],
)
def test_manifest_names_outside_the_folder_are_refused_before_any_read(ort, name):
    edit_manifest(ort, lambda m: m["files"].__setitem__(name, {"bytes": 1, "sha256": "0" * 64}))
    start = time.perf_counter()
    with pytest.raises(EngineError, match="not a plain file name"):
        Engine.load(ort)
    assert time.perf_counter() - start < 5  # /dev/zero is never opened


def test_links_leaving_the_folder_fifos_and_unlisted_runtime_files_are_refused(ort, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    os.symlink(outside, ort / "link.txt")
    edit_manifest(ort, lambda m: m["files"].__setitem__("link.txt", {"bytes": 6, "sha256": "0" * 64}))
    with pytest.raises(EngineError, match="points outside the folder"):
        Engine.load(ort)
    (ort / "link.txt").unlink()
    os.mkfifo(ort / "link.txt")
    with pytest.raises(EngineError, match="not a regular file"):
        Engine.load(ort)  # would block forever if opened
    edit_manifest(ort, lambda m: (m["files"].pop("link.txt"), m.__setitem__("runtime_file", "elsewhere.onnx")))
    with pytest.raises(EngineError, match="'elsewhere.onnx' is not listed"):
        Engine.load(ort, verify=False)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda m: m.__setitem__("files", {}), "lists no files"),
        (lambda m: m["files"].pop("model.onnx"), "'model.onnx' is not listed"),
        (lambda m: m.__setitem__("files", []), "lists no files"),
        (lambda m: m["files"]["model.onnx"].__setitem__("bytes", "12"), "needs 'bytes'"),
        (lambda m: m.__setitem__("format", ["onnx"]), "'format' has the wrong type"),
        (lambda m: m.__setitem__("config", 7), "'config' has the wrong type"),
    ],
)
def test_manifest_with_missing_or_wrongly_typed_entries_is_refused(ort, change, match):
    edit_manifest(ort, change)
    with pytest.raises(EngineError, match=match):
        Engine.load(ort)
    with pytest.raises(EngineError, match=match):
        Engine.load(ort, verify=False)  # the shape is checked even when hashes are not


def test_manifest_that_is_not_json_or_not_an_object(ort, capsys):
    (ort / "manifest.json").write_text("{not json")
    assert "is not valid JSON" in one_line_error(capsys, ["generate", str(ort), "-p", "hi"], "generate")
    (ort / "manifest.json").write_text("[1, 2]")
    assert "not a JSON object" in one_line_error(capsys, ["generate", str(ort), "-p", "hi"], "generate")


def test_an_unlisted_chat_template_never_replaces_the_verified_one(ort):
    original = Engine.load(ort).tokenizer.chat_template
    (ort / "chat_template.jinja").write_text("HACKED {{ messages }}")
    engine = Engine.load(ort)
    assert engine.tokenizer.chat_template == original and "HACKED" not in engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}]
    )


# 3. verification bypass ----------------------------------------------------------------------------


def test_a_flipped_byte_is_caught_even_with_the_mtime_set_back(ort):
    Engine.load(ort)  # verified once: the stamp is written
    target = ort / "model.onnx"
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # touch -r
    assert target.stat().st_mtime_ns == st.st_mtime_ns and target.stat().st_size == st.st_size
    with pytest.raises(EngineError, match="model.onnx was altered since export \\(sha256 differs\\)"):
        Engine.load(ort)


def test_a_missing_file_is_named(ort):
    (ort / "config.json").unlink()
    with pytest.raises(EngineError, match="config.json is missing"):
        Engine.load(ort)


# 5. parsers ----------------------------------------------------------------------------------------


def safetensors_bytes(header, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return len(raw).to_bytes(8, "little") + raw + data


T = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    "content, match",
    [
        (safetensors_bytes({"a": {**T, "data_offsets": [-8, 0]}}, b"\0" * 8), "byte range|does not start"),
        (safetensors_bytes({"a": T, "b": {**T, "data_offsets": [4, 12]}}, b"\0" * 12), "does not start"),
        (safetensors_bytes({"a": {**T, "data_offsets": [8, 16]}}, b"\0" * 16), "does not start"),
        ((2**62).to_bytes(8, "little") + b"{}", "past the end"),
        (safetensors_bytes([1, 2]), "not a JSON object"),
        (safetensors_bytes({"a": {"shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8), "no supported dtype"),
        (safetensors_bytes({"a": {**T, "data_offsets": ["0", "8"]}}, b"\0" * 8), "two whole numbers"),
        (safetensors_bytes({"a": {**T, "shape": [-2], "data_offsets": [0, -8]}}), "shape"),
        (safetensors_bytes({"a": T}, b"\0" * 4), "file holds"),
        (safetensors_bytes(b"\xff\xfe{}"), "not JSON"),
        (b"\1\0", "shorter than"),
    ],
)
def test_safetensors_headers_are_validated(tmp_path, content, match):
    from qwen_edge.models.safetensors_file import SafetensorsError, read

    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(SafetensorsError, match=match):
        read(path)


def test_a_gguf_without_tokens_is_named(tmp_path):
    import gguf

    from qwen_edge.models.loaders import load
    from qwen_edge.models.qwen2 import UnsupportedModelError

    w = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "qwen2")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedModelError, match="has no tokenizer"):
        load(str(tmp_path / "x.gguf"))


def test_a_large_file_that_is_not_gguf_is_refused_reading_4_bytes(tmp_path):
    import tracemalloc

    from qwen_edge.models.loaders import ModelSourceError, load

    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GB on paper, nothing on disk
    tracemalloc.start()
    with pytest.raises(ModelSourceError, match="neither a GGUF file"):
        load(str(big))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20


# 6. hangs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template, match",
    [
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "was stopped"),
        ("{% set r = range(100000) %}{% for i in r %}{% for j in r %}{{ '' }}{% endfor %}{% endfor %}", "stopped"),
        ("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", "wrote over"),
        ("{{ 'x' * 1000000000 }}", "sandbox forbids"),
        ("{{ 10 ** 100000000 }}", "sandbox forbids"),
        ("{{ messages.__class__.__mro__ }}", "sandbox forbids"),
        ("{{ raise_exception('only user and assistant roles') }}", "refused these messages: only user"),
        ("{% for %}", "not valid jinja"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
    ],
)
def test_chat_templates_are_bounded_and_fail_in_one_line(template, match):
    start = time.perf_counter()
    with pytest.raises(ChatTemplateError, match=match):
        render(template, messages=[{"role": "user", "content": "hi"}])
    assert time.perf_counter() - start < 10
    assert sys.gettrace() is None or "coverage" in repr(sys.gettrace())  # the render's tracer is gone


def test_a_hanging_template_fails_generate_chat_in_one_line(ort, capsys):
    config = json.loads((ort / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    (ort / "tokenizer_config.json").write_text(json.dumps(config))
    reseal(ort)
    line = one_line_error(capsys, ["generate", str(ort), "-p", "hi", "--chat"], "generate")
    assert "chat template ran for over" in line


# 7. leftovers --------------------------------------------------------------------------------------


def test_a_killed_export_leaves_a_staging_folder_the_next_export_removes(made, tmp_path, caplog):
    out = tmp_path / "x"
    code = f"from qwen_edge.export.to_onnx import export_onnx; export_onnx({str(made[0])!r}, {str(out)!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "QWEN_EDGE_CACHE": str(tmp_path / "c")})
    deadline = time.time() + 120
    while not list(tmp_path.glob(".x.partial-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    left = list(tmp_path.glob(".x.partial-*"))
    assert left and not out.exists(), "the export finished before it could be killed"
    alive = tmp_path / f".x.partial-{os.getpid()}-live"  # a running export's folder is not touched
    alive.mkdir()
    caplog.set_level("INFO", logger="qwen_edge")
    export_onnx(str(made[0]), out)
    assert not any(p.exists() for p in left) and alive.exists()
    assert "left by an export that was stopped" in caplog.text
    verify(out, full=True)


# 8. one-line errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, match",
    [
        (["-p", "caf\udce9"], "not valid UTF-8"),
        (["-p", "hi", "--seed", "-1"], "seed must be"),
        (["-p", "hi", "--temperature", "1e-320"], "temperature must be 0"),
        (["-p", "hi", "--temperature", "inf"], "finite number"),
        (["-p", "hi", "--temperature", "0.7", "--presence-penalty", "nan"], "finite number"),
        (["-p", "hi", "--threads", "-2"], "threads must be"),
    ],
)
def test_bad_generation_values_fail_in_one_line(ort, capsys, flags, match):
    assert match in one_line_error(capsys, ["generate", str(ort), *flags], "generate")


def test_invalid_utf8_piped_into_chat_is_skipped(ort, capsys, monkeypatch):
    stdin = io.TextIOWrapper(io.BytesIO(b"caf\xe9 \xff\nhello\n"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["chat", str(ort), "--max-new-tokens", "3"]) == 0
    captured = capsys.readouterr()
    assert "not valid UTF-8 text; it was skipped" in captured.err and captured.out.strip()


def test_a_full_disk_is_one_line(tmp_path):
    with pytest.raises(OutputError, match="is full"), bundle.staged(tmp_path / "out") as tmp:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "model.onnx"))
    with pytest.raises(OutputError, match="is the disk full"), bundle.staged(tmp_path / "out") as tmp:
        raise RuntimeError("Exception from src/core/src/pass/serialize.cpp: basic_ios::clear: iostream error")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_eval_window_sizes_and_binary_texts(ort, tmp_path, capsys):
    assert "--window-tokens (0)" in one_line_error(capsys, ["eval", str(ort), "--window-tokens", "0"], "eval")
    assert "--windows (0)" in one_line_error(capsys, ["eval", str(ort), "--windows", "0"], "eval")
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\x7fELF\0\0\x01" * 100)
    line = one_line_error(capsys, ["eval", str(ort), "--text", str(binary)], "eval")
    assert "--text file" in line and "not UTF-8 text" in line and "--calibration" not in line
    line = one_line_error(  # the ONNX path is data-free, but a wrong file is still reported
        capsys, ["quantize", str(ort), "-o", str(tmp_path / "q"), "--calibration", str(binary)], "quantize"
    )
    assert "--calibration file" in line and "not UTF-8 text" in line and not (tmp_path / "q").exists()


@pytest.mark.parametrize(
    "config, match",
    [
        ('{"model_type": "qwen2"}', "lacks vocab_size"),
        ('{"model_type": "qwen2", "vocab_size": "10", "hidden_size": 0, "intermediate_size": 1, '
         '"num_hidden_layers": 1, "num_attention_heads": 1, "num_key_value_heads": 1}',
         "vocab_size, hidden_size must be whole numbers"),
        ("[1]", "not a JSON object"),
        ("{", "not valid JSON"),
    ],
)  # fmt: skip
def test_a_broken_config_json_is_named(tmp_path, capsys, config, match):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(config)
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"")
    assert match in one_line_error(capsys, ["export", str(tmp_path / "hf"), "-o", str(tmp_path / "o")], "export")


# 9. checks before the work -------------------------------------------------------------------------


def test_quantize_checks_its_eval_text_before_compressing(ort, tmp_path, capsys):
    start = time.perf_counter()
    line = one_line_error(
        capsys, ["quantize", str(ort), "-o", str(tmp_path / "q"), "--eval-text", str(tmp_path / "nope")], "quantize"
    )
    assert "--eval-text file" in line and "leave --eval-text out" in line and "--calibration" not in line
    assert time.perf_counter() - start < 5 and not (tmp_path / "q").exists()
    (tmp_path / "short.txt").write_text("too short to score")
    line = one_line_error(
        capsys,
        ["quantize", str(ort), "-o", str(tmp_path / "q"), "--eval-text", str(tmp_path / "short.txt")],
        "quantize",
    )
    assert "fewer than one 512-token window: give a longer --eval-text" in line and "--window-tokens" not in line


def test_export_of_a_shape_name_for_mobile_fails_before_the_work(tmp_path, capsys):
    start = time.perf_counter()
    line = one_line_error(capsys, ["export", "tiny", "-o", str(tmp_path / "m"), "--target", "mobile"], "export")
    assert "no tokenizer" in line and ".partial" not in line and ".export-" not in line
    assert time.perf_counter() - start < 3 and not list(tmp_path.iterdir())


# 10. serve-demo ------------------------------------------------------------------------------------


@pytest.fixture
def served(ort, capsys):
    """The demo server on a folder sealed as a mobile bundle (the app is not run here)."""
    import threading

    from qwen_edge.cli.serve_demo import DEMO, make_server

    if not (DEMO / "node_modules" / "onnxruntime-web").exists():
        pytest.fail("android_demo/node_modules is missing: run make install (it runs npm ci there)")
    reseal(ort, target="mobile")
    (ort / "unlisted.txt").write_text("not in the manifest")
    server = make_server(ort, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def raw_status(base: str, path: str) -> int:
    """The status for a path sent as is (urllib would normalize `..` away)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        return int(s.recv(64).split()[1])


@pytest.mark.parametrize(
    "path, code",
    [
        ("/", 200),
        ("/index%2Ehtml", 200),  # percent-escapes are decoded
        ("/bundle/manifest.json", 200),
        ("/bundle/model.onnx", 200),
        ("/bundle/unlisted.txt", 404),  # only what the manifest lists
        ("/src/", 404),  # no folder listings
        ("/bundle/", 404),
        ("/vendor/ort/", 404),
        ("/src/../node_modules/onnxruntime-web/package.json", 404),
        ("/src/%2e%2e/node_modules/onnxruntime-web/package.json", 404),
        ("/node_modules/onnxruntime-web/package.json", 404),
        ("/bundle/../../../../etc/passwd", 404),
        ("/bundle/%2e%2e/%2e%2e/%2e%2e/etc/passwd", 404),
        ("/%00", 404),
    ],
)
def test_serve_demo_paths(served, path, code):
    assert raw_status(served[1], path) == code


def test_serve_demo_client_disconnect_prints_no_traceback(served, capsys):
    host, port = served[1].removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, (1).to_bytes(4, "little") + (0).to_bytes(4, "little"))
            s.sendall(b"GET /bundle/model.onnx HTTP/1.0\r\n\r\n")
            s.recv(16)
    time.sleep(0.5)
    assert status(served[1] + "/") == 200  # still serving
    assert "Traceback" not in capsys.readouterr().err


def test_serve_demo_refuses_bad_ports_and_non_mobile_folders(ort, made):
    from qwen_edge.cli.serve_demo import ServeError, make_server

    with pytest.raises(ServeError, match="not a phone bundle"):
        make_server(made[1], "127.0.0.1", 0)
    reseal(ort, target="mobile")
    server = make_server(ort, port=0)
    assert server.server_address[0] == "127.0.0.1"  # loopback unless told otherwise
    server.server_close()
    with pytest.raises(ServeError, match="not a port number"):
        make_server(ort, "127.0.0.1", 70000)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ServeError, match="cannot listen on 127.0.0.1"):
            make_server(ort, "127.0.0.1", taken.getsockname()[1])


# 11. file modes ------------------------------------------------------------------------------------


def test_onnx_quantized_files_are_as_readable_as_the_rest(ort, tmp_path):
    from qwen_edge.quantize.quantize import quantize

    umask = os.umask(0o022)
    try:
        quantize(ort, tmp_path / "q", weights="int4", report=False, data_free=True)
    finally:
        os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "q").rglob("*") if p.is_file()}
    assert set(modes.values()) == {0o644}, modes


def test_serve_demo_over_https_with_a_certificate(ort, tmp_path, capsys):
    """--cert / --key: HTTPS, so a phone on the same network gets a secure context."""
    import ssl
    import threading

    from qwen_edge.cli.serve_demo import ServeError, make_server

    reseal(ort, target="mobile")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    with pytest.raises(ServeError, match="both --cert and --key"):
        make_server(ort, "127.0.0.1", 0, cert=str(cert))
    with pytest.raises(ServeError, match="cannot use --cert"):
        make_server(ort, "127.0.0.1", 0, cert=str(key), key=str(key))
    server = make_server(ort, "127.0.0.1", 0, cert=str(cert), key=str(key))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        context = ssl.create_default_context(cafile=str(cert))
        url = f"https://127.0.0.1:{server.server_address[1]}/"
        with urllib.request.urlopen(url, context=context, timeout=10) as r:
            assert r.status == 200 and r.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        with pytest.raises((OSError, http.client.HTTPException)):  # plain HTTP to a TLS port gets no page
            urllib.request.urlopen(url.replace("https", "http"), timeout=10).read()
        time.sleep(0.3)
        assert "Traceback" not in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()


def test_openvino_errors_are_reported_by_their_cause_not_their_source_file():
    """OpenVINO's messages open with one 'Exception from src/…:' line per frame; the one line a
    user sees must be the cause (real messages from this OpenVINO)."""
    import openvino as ov

    from qwen_edge.runtime.result import first_line

    causes = []
    for call in (lambda: ov.Core().read_model("/nonexistent/model.xml"),
                 lambda: ov.Core().get_property("NPU", "FULL_DEVICE_NAME")):  # fmt: skip
        with pytest.raises(Exception) as raised:
            call()
        assert str(raised.value).startswith("Exception from src/")
        causes.append(first_line(raised.value))
    assert causes[0] == 'ir: Could not open the file: "/nonexistent/model.xml"'
    assert "NPU" in causes[1] or "FULL_DEVICE_NAME" in causes[1]
    assert first_line(RuntimeError("plain message\nmore")) == "plain message"
    assert first_line(RuntimeError("")) == "RuntimeError"
