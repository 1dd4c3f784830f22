"""qwen-edge: one entry point, one module per command; each command is a typed library function."""

from __future__ import annotations

import argparse
import importlib
import logging
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
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwen-edge", description="Qwen2 on edge devices: export, compress, run.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.__doc__.strip().splitlines()[0], description=module.__doc__)
        module.configure_parser(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command, run, verbose = args.pop("command"), args.pop("_run"), args.pop("verbose")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("qwen_edge").setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        status = run(**args)
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
