"""qwen-edge: one entry point, one module per command; each command is a typed library function."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# command -> module with configure_parser(parser) and run(**kwargs)
COMMANDS = {
    "fetch": "qwen_edge.cli.fetch",
    "demo": "qwen_edge.cli.demo",
    "export": "qwen_edge.cli.export",
    "check": "qwen_edge.cli.check",
    "quantize": "qwen_edge.cli.quantize",
    "eval": "qwen_edge.cli.eval",
    "generate": "qwen_edge.cli.generate",
    "chat": "qwen_edge.cli.chat",
    "bench": "qwen_edge.cli.bench",
    "serve": "qwen_edge.cli.serve",
    "serve-demo": "qwen_edge.cli.serve_demo",
    "desktop": "qwen_edge.cli.desktop",
}

# A package a command imports -> the extra that installs it (the bare install is the runtime on
# ONNX Runtime; see pyproject.toml).
EXTRAS = {
    **dict.fromkeys(("torch", "transformers", "safetensors", "gguf", "accelerate", "onnx", "onnxscript", "nncf",
                     "openvino_tokenizers", "psutil"), "export"),  # fmt: skip
    "openvino": "openvino",
    **dict.fromkeys(("starlette", "uvicorn", "sse_starlette"), "serve"),
    **dict.fromkeys(("PySide6", "shiboken6"), "desktop"),
    "matplotlib": "bench",
    **dict.fromkeys(("openvino_genai", "onnxruntime_genai", "optimum"), "dev"),
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qwen-edge")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    # -v / -q are accepted before and after the command; SUPPRESS keeps a subcommand that was not
    # given the flag from resetting what was given before it.
    common = argparse.ArgumentParser(add_help=False)
    loudness = common.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    loudness.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="warnings and errors only, no progress"
    )
    parser = argparse.ArgumentParser(
        prog="qwen-edge", description="Qwen2 on edge devices: export, compress, run.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"qwen-edge {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name, help=module.__doc__.strip().splitlines()[0], description=module.__doc__, parents=[common]
        )
        module.configure_parser(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command, run = args.pop("command"), args.pop("_run")
    verbose, quiet = args.pop("verbose", False), args.pop("quiet", False)
    if verbose and quiet:
        print(f"qwen-edge {command}: error: -v and -q disagree: give one", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("qwen_edge").setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"  # tqdm reads its defaults from TQDM_* variables
    try:
        status = run(**args)
    except ModuleNotFoundError as e:  # a command whose extra is not installed: say which
        extra = EXTRAS.get((e.name or "").split(".")[0])
        if extra is None or verbose:
            raise
        fix = f"pip install 'qwen-edge[{extra}]'"
        print(f"qwen-edge {command}: error: {e.name} is not installed: {fix}", file=sys.stderr)
        return 2
    except Exception as e:
        # Our own exception types carry a message written for the user: one line, no traceback.
        # Anything else is a bug and keeps its traceback.
        if not type(e).__module__.startswith("qwen_edge") or verbose:
            raise
        print(f"qwen-edge {command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qwen-edge {command}: interrupted", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0  # commands that judge (check) return their status


if __name__ == "__main__":
    sys.exit(main())
