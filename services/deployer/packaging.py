"""A registered model version as a serving revision: its TorchServe archive in the artifact store, with its sha256.

The archive is built once per rollout (torch-model-archiver, model_server.archive) from
the version's model files in MLflow (the trainer's `model/` folder: model.pt and
model_config.json), stored under `serving/<pipeline>/v<version>/<sha256>.mar` (its name
is its content, so a rebuild never overwrites an archive a revision was started from),
and named by the revision that serves it. The probe (one valid instance of the model's
declared input) is what readiness and the smoke test send.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ctflow.handling import Rejected
from ctflow.registry import NotFound
from ctflow.serving import Revision, revision_name

if TYPE_CHECKING:
    from ctflow.deps import Dependencies


def archive_name(pipeline: str, version: str, sha256: str) -> str:
    return f"serving/{pipeline}/v{version}/{sha256}.mar"


def package(deps: Dependencies, *, pipeline: str, service: str, version: str) -> Revision:
    """Build and store the archive of `version`; the revision that will serve it."""
    from model_server.archive import PackagingError, build_archive
    from model_server.handler import InputSpec

    try:
        ref = deps.registry.version(pipeline, version)
    except NotFound as exc:
        raise Rejected(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="ctflow-package-") as tmp:
        model_dir = deps.registry.download(ref.source, Path(tmp, "model"))
        try:
            config = json.loads((model_dir / "model_config.json").read_text())
            probe = {"instances": [InputSpec.of(config).example()]}
            archive = Path(tmp, "model.mar")
            sha256 = build_archive(model_dir, archive, pipeline=pipeline, version=version)
        except (OSError, ValueError, PackagingError) as exc:
            raise Rejected(f"version {version} of {pipeline} cannot be packaged: {exc}") from None
        name = archive_name(pipeline, version, sha256)
        if deps.blobs.stat(name) is None:
            deps.blobs.write_bytes(name, archive.read_bytes())
    return Revision(
        name=revision_name(service, version, sha256),
        pipeline=pipeline,
        version=version,
        archive_uri=name,
        archive_sha256=sha256,
        probe=probe,
    )
