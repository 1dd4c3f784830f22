"""Check an export folder against a device's rules (today: the Intel NPU) and list every violation.

Exit status 0 when the folder conforms, 1 when it does not.
"""

from __future__ import annotations


def configure_parser(p) -> None:
    p.add_argument("folder", help="an export folder (ONNX or OpenVINO)")
    p.add_argument("--device", default="NPU", choices=["NPU"], help="whose rules to check")


def run(folder: str, device: str = "NPU") -> int:
    from qwen_edge.export.npu_rules import check

    problems = check(folder)
    for problem in problems:
        print(f"{device}: {problem}")
    print(f"{folder}: {'conforms to' if not problems else f'{len(problems)} violations of'} the {device} rules")
    return 1 if problems else 0
