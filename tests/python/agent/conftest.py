"""The agent-SDK suite; the `server` fixture lives in the shared harness."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness import server  # noqa: E402,F401  (a pytest fixture)
