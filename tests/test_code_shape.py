"""The code stays readable: no class over 300 lines and no function over 60 in src/ (the training
loop orchestrates; logging, snapshots, evaluation, checkpoints and guards are pieces of their own)."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "gankit"


def test_no_class_over_300_lines_and_no_function_over_60():
    too_long = []
    for file in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            limit = 300 if isinstance(node, ast.ClassDef) else 60 if isinstance(node, ast.FunctionDef) else None
            if limit and node.end_lineno - node.lineno + 1 > limit:
                too_long.append(f"{file.relative_to(SRC)}:{node.lineno} {node.name} "
                                f"({node.end_lineno - node.lineno + 1} lines, limit {limit})")
    assert not too_long, too_long
