import argparse
import logging
import sys

from .app import main

parser = argparse.ArgumentParser(prog="python -m qwen_edge.desktop_demo", description="The qwen-edge chat app.")
parser.add_argument("folder", nargs="?", help="an export folder (default: the last one opened)")
parser.add_argument("--device", help="CPU, GPU, NPU … (default: the last one used, else the first present)")
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
sys.exit(main(**vars(parser.parse_args())))
