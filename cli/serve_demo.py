"""Serve the mobile demo app and an exported bundle over HTTP, with the headers WASM threads need.

`/` is the app (android_demo/), `/vendor/` its JavaScript packages (npm ci), `/bundle/` the folder
written by `qwen-edge export MODEL -o OUT --target mobile`. Every response carries
Cross-Origin-Opener-Policy / Cross-Origin-Embedder-Policy, so the page is cross-origin isolated and
onnxruntime-web may use threads. Open http://localhost:PORT on this machine; on a phone, see the
app's README (adb reverse, or HTTPS: browsers allow crypto and service workers only there).
"""

from __future__ import annotations

from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "android_demo"
TYPES = {
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".wasm": "application/wasm",
    ".webmanifest": "application/manifest+json",
    ".json": "application/json",
    ".onnx": "application/octet-stream",
    ".data": "application/octet-stream",
    ".css": "text/css",
    ".html": "text/html",
    ".png": "image/png",
}


class ServeError(ValueError):
    """The bundle or the app cannot be served."""


def configure_parser(p) -> None:
    p.add_argument("bundle", help="a folder from qwen-edge export MODEL -o OUT --target mobile")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to reach it from other devices")
    p.add_argument("--port", type=int, default=8000)


def make_server(bundle: str | Path, host: str = "127.0.0.1", port: int = 8000):
    """A ThreadingHTTPServer for the app and `bundle` (not started)."""
    import json
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    bundle = Path(bundle).resolve()
    manifest = bundle / "manifest.json"
    if not manifest.exists():
        raise ServeError(f"{bundle} has no manifest.json: export it with qwen-edge export MODEL -o OUT --target mobile")
    info = json.loads(manifest.read_text())
    if info.get("format") != "onnx" or info.get("graph") != "ort":
        raise ServeError(
            f"{bundle} is a {info.get('format')} {info.get('graph')} export: the app needs --target mobile"
        )
    vendor = DEMO / "node_modules"
    if not (vendor / "onnxruntime-web").exists():
        raise ServeError(f"{vendor} is missing: run make install (npm ci in android_demo) from a source checkout")
    roots = {"/bundle/": bundle, "/vendor/ort/": vendor / "onnxruntime-web" / "dist",
             "/vendor/jinja/": vendor / "@huggingface" / "jinja" / "dist", "/": DEMO}  # fmt: skip

    class Handler(SimpleHTTPRequestHandler):
        def translate_path(self, path: str) -> str:
            path = path.split("?", 1)[0].split("#", 1)[0]
            for prefix, root in roots.items():
                if path.startswith(prefix):
                    target = (root / path[len(prefix) :]).resolve()
                    if root == DEMO and path.startswith("/node_modules"):
                        break
                    if target == root or root in target.parents:
                        return str(target)
                    break
            return str(DEMO / "__missing__")

        def guess_type(self, path):
            return TYPES.get(Path(path).suffix, super().guess_type(path))

        def end_headers(self):
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
            self.send_header("Cross-Origin-Resource-Policy", "same-origin")
            self.send_header("Cache-Control", "no-cache")
            super().end_headers()

        def log_message(self, fmt, *args):
            import logging

            logging.getLogger("qwen_edge.serve_demo").debug(fmt, *args)

    return ThreadingHTTPServer((host, port), Handler)


def run(bundle: str, host: str = "127.0.0.1", port: int = 8000) -> None:
    server = make_server(bundle, host, port)
    print(f"serving the demo on http://{host}:{server.server_address[1]}/ (bundle {bundle}); Ctrl-C stops")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
