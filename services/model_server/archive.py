"""Package a registered model version as a TorchServe archive (torch-model-archiver), with its sha256.

The archive holds the model contract's files as the trainer left them (`model.pt`,
`model_config.json`), ctflow's handler, and `serving.json` (pipeline, model version),
so a server answers with the version it serves. The deployer stores it in the artifact
store beside its sha256; the server refuses bytes that hash differently (model_server.serve).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from .serve import sha256_of

HANDLER = Path(__file__).with_name("handler.py")
REQUIRED = ("model.pt", "model_config.json")


class PackagingError(Exception):
    """The model files do not make an archive (a file of the contract missing, or the archiver failed)."""


def build_archive(model_dir: Path, dest: Path, *, pipeline: str, version: str) -> str:
    """Write `dest` (a .mar) from the model files in `model_dir`; returns its sha256."""
    missing = [name for name in REQUIRED if not (model_dir / name).is_file()]
    if missing:
        raise PackagingError(f"model files in {model_dir} lack {', '.join(missing)} (the model contract)")
    try:
        json.loads((model_dir / "model_config.json").read_text())
    except ValueError as exc:
        raise PackagingError(f"model_config.json is not JSON: {exc}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        serving = Path(tmp, "serving.json")
        serving.write_text(json.dumps({"pipeline": pipeline, "model_version": str(version)}) + "\n")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "model_archiver.model_packaging",
                "--model-name",
                pipeline,
                "--version",
                str(version),
                "--serialized-file",
                str(model_dir / "model.pt"),
                "--handler",
                str(HANDLER),
                "--extra-files",
                f"{model_dir / 'model_config.json'},{serving}",
                "--export-path",
                tmp,
                "--force",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise PackagingError(f"torch-model-archiver failed: {(done.stderr or done.stdout).strip()[-2000:]}")
        Path(tmp, f"{pipeline}.mar").replace(dest)
    return sha256_of(dest)
