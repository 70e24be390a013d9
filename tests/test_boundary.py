"""The labeler never imports torch, transformers or rlhf (docs/data-contracts.md: the packages exchange data, not code)."""

import pkgutil
import subprocess
import sys

import labeler


def test_labeler_imports_stay_light():
    modules = [f"labeler.{m.name}" for m in pkgutil.walk_packages(labeler.__path__) if not m.name.startswith("migrations")]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "heavy = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'transformers', 'rlhf', 'trl'))\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"labeler pulled in: {out.stdout.strip()}"
    assert "labeler.models" in modules
