"""Fixtures of the page's browser test: the real-node fixtures of tests/anvil (node, tools)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "anvil"))

from anvil_tools import node, tools  # noqa: E402, F401  (fixtures)
