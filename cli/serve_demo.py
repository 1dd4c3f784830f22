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
    p.add_argument("--cert", help="HTTPS: certificate file (PEM), so a phone on the same network gets a secure context")
    p.add_argument("--key", help="HTTPS: the certificate's private key (PEM)")


def make_server(
    bundle: str | Path, host: str = "127.0.0.1", port: int = 8000, cert: str | None = None, key: str | None = None
):
    """A ThreadingHTTPServer for the app and `bundle` (not started); HTTPS with `cert` and `key`."""
    import logging
    import posixpath
    import ssl
    import sys
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import unquote

    from qwen_edge.runtime.manifest import MANIFEST, ManifestError, read

    bundle = Path(bundle).resolve()
    try:
        info = read(bundle)
    except ManifestError as e:
        raise ServeError(f"{e} (the demo needs a folder from qwen-edge export MODEL -o OUT --target mobile)") from None
    if info.target != "mobile":
        raise ServeError(
            f"{bundle} is a {info.format} {info.graph} export, not a phone bundle: "
            "export one with qwen-edge export MODEL -o OUT --target mobile"
        )
    if bool(cert) != bool(key):
        raise ServeError("HTTPS needs both --cert and --key (PEM files), or neither for plain HTTP")
    if not 0 <= port <= 65535:
        raise ServeError(f"--port {port} is not a port number: choose one from 1 to 65535 (0: any free port)")
    vendor = DEMO / "node_modules"
    if not (vendor / "onnxruntime-web").exists():
        raise ServeError(f"{vendor} is missing: run make install (npm ci in android_demo) from a source checkout")
    bundle_files = set(info.files) | {MANIFEST}
    roots = {"/bundle/": bundle, "/vendor/ort/": vendor / "onnxruntime-web" / "dist",
             "/vendor/jinja/": vendor / "@huggingface" / "jinja" / "dist", "/": DEMO}  # fmt: skip
    log = logging.getLogger("qwen_edge.serve_demo")

    def resolve(url_path: str) -> Path | None:
        """The file a URL path names, or None: decoded, normalized, confined to its root, never a
        folder listing, nothing under node_modules but the two vendor folders, and in the bundle
        only the files its manifest lists."""
        path = posixpath.normpath(unquote(url_path.split("?", 1)[0].split("#", 1)[0]))
        if "\0" in path or "\\" in path:
            return None
        path += "/" if url_path.split("?", 1)[0].endswith("/") and path != "/" else ""
        for prefix, root in roots.items():
            if not path.startswith(prefix):
                continue
            rel = path[len(prefix) :]
            target = (root / rel).resolve()
            if not (target == root or root in target.parents):
                return None
            if target.is_dir():
                target = target / "index.html"
            if root == bundle and target.relative_to(bundle).as_posix() not in bundle_files:
                return None
            if root == DEMO and "node_modules" in target.relative_to(DEMO).parts:
                return None
            return target if target.is_file() else None
        return None

    class Handler(SimpleHTTPRequestHandler):
        def translate_path(self, path: str) -> str:
            return str(resolve(path) or DEMO / "__missing__")

        def list_directory(self, path):
            self.send_error(404, "File not found")
            return None

        def guess_type(self, path):
            return TYPES.get(Path(path).suffix, super().guess_type(path))

        def end_headers(self):
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
            self.send_header("Cross-Origin-Resource-Policy", "same-origin")
            self.send_header("Cache-Control", "no-cache")
            super().end_headers()

        def log_message(self, fmt, *args):
            log.debug(fmt, *args)

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, ssl.SSLError)):
                # a reload, a closed tab, plain HTTP sent to the HTTPS port
                log.debug("%s: %s", client_address[0], sys.exc_info()[1])
                return
            super().handle_error(request, client_address)

    try:
        server = Server((host, port), Handler)
    except OSError as e:
        raise ServeError(
            f"cannot listen on {host}:{port} ({e.strerror or e}): choose another --port or --host"
        ) from None
    if cert:
        _use_tls(server, cert, key)
    return server


def _use_tls(server, cert: str, key: str) -> None:
    """Wrap the listening socket; each connection's handshake runs in its own handler thread."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        server.server_close()
        raise ServeError(f"cannot use --cert {cert} --key {key}: {getattr(e, 'strerror', None) or e}") from None
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)


def run(
    bundle: str, host: str = "127.0.0.1", port: int = 8000, cert: str | None = None, key: str | None = None
) -> None:
    server = make_server(bundle, host, port, cert, key)
    scheme = "https" if cert else "http"
    print(f"serving the demo on {scheme}://{host}:{server.server_address[1]}/ (bundle {bundle}); Ctrl-C stops")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
