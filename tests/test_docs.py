"""The docs' examples run: the pytest example of docs/rules.md passes against the shipped rules."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from workers.settings import PROJECT_ROOT


def test_the_rules_test_example_of_docs_rules_md_passes(tmp_path):
    doc = (PROJECT_ROOT / "docs" / "rules.md").read_text()
    [example] = re.findall(r"```python\n(.*?)```", doc, re.S)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_rules.py").write_text(example)
    shutil.copy(PROJECT_ROOT / "rules.yaml", tmp_path / "rules.yaml")
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
           "RELANCE_TEMPLATES_DIR": str(PROJECT_ROOT / "templates")}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
