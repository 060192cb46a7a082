"""Every module under plugins/modules renders with ansible-doc: DOCUMENTATION parses and EXAMPLES and RETURN are
there. ansible-lint only warns about an unparsable DOCUMENTATION, so this is what catches one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(p.stem for p in (ROOT / "plugins/modules").glob("*.py") if not p.name.startswith("_"))


def test_every_module_renders_with_ansible_doc():
    proc = subprocess.run(
        [Path(sys.executable).parent / "ansible-doc", "-M", ROOT / "plugins/modules", "--json", *MODULES],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    docs = json.loads(proc.stdout)
    assert sorted(docs) == MODULES
    for name, doc in docs.items():
        assert doc["doc"]["short_description"] and doc["doc"]["options"] is not None, name
        assert doc["examples"], f"{name}: no EXAMPLES"
        assert doc["return"], f"{name}: no RETURN"
