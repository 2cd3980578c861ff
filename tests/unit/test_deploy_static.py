"""Static checks of the gcp deployment: Dockerfiles, skaffold.yaml, Cloud Run manifests, Terraform.

Nothing here talks to Google Cloud or builds an image; each test reads the files and fails when
they disagree with each other or with the code (topology, settings, the service apps).
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import hcl2
import jsonschema
import pytest
import yaml

from ctflow import events, topology
from ctflow.settings import REPO_ROOT, Settings

SERVICES_DIR = REPO_ROOT / "services"
MANIFEST_DIR = REPO_ROOT / "deploy" / "cloudrun"
TERRAFORM_DIR = REPO_ROOT / "deploy" / "terraform"
PIPELINES_DIR = REPO_ROOT / "deploy" / "pipelines"
DEPLOY_SCRIPT = REPO_ROOT / "deploy" / "cloudrun-deploy.sh"
SERVICE_DOCKERFILE = SERVICES_DIR / "Dockerfile"
MODEL_SERVER_DIR = SERVICES_DIR / "model_server"


# CTFLOW_* variables the manifests set before ctflow.settings reads them (Settings ignores
# unknown CTFLOW_ variables); anything else must be a Settings field, so a typo fails here.
PROPOSED_SETTINGS = {
    "CTFLOW_IMAGE_REPO",
    "CTFLOW_SERVING_SERVICE_ACCOUNT",
    "CTFLOW_BUILD_SERVICE_ACCOUNT",
}

DOCKERFILE_INSTRUCTIONS = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
}


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def service_packages() -> dict[str, str]:
    """{service name: package} for every package under services/ with an app.py."""
    apps = sorted(SERVICES_DIR.glob("*/app.py"))
    return {p.parent.name.replace("_", "-"): p.parent.name for p in apps}


def skaffold() -> dict:
    return yaml.safe_load((REPO_ROOT / "skaffold.yaml").read_text())


def artifacts() -> dict[str, dict]:
    return {a["image"]: a for a in skaffold()["build"]["artifacts"]}


def manifests() -> dict[str, dict]:
    """{file stem: parsed manifest} for deploy/cloudrun/*.yaml."""
    return {p.stem: yaml.safe_load(p.read_text()) for p in sorted(MANIFEST_DIR.glob("*.yaml"))}


def container(manifest: dict) -> dict:
    (only,) = manifest["spec"]["template"]["spec"]["containers"]
    return only


def env_of(manifest: dict) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(manifest).get("env", [])}


def lit(value: Any) -> Any:
    """A python-hcl2 string literal as its value (8.x keeps quotes and escapes)."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value)
    return value


@functools.cache  # parsing every file takes ~0.3 s and many tests read it; nothing mutates the result
def terraform() -> list[tuple[str, dict]]:
    """(file name, parsed HCL) for every deploy/terraform/*.tf."""
    return [(p.name, hcl2.load(p.open())) for p in sorted(TERRAFORM_DIR.glob("*.tf"))]


def tf_locals() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for _, doc in terraform():
        for block in doc.get("locals", []):
            merged.update({k: v for k, v in block.items() if not k.startswith("__")})
    return merged


def tf_blocks(kind: str, rtype: str) -> dict[str, dict]:
    """{name: body} of every `kind "rtype" "name"` block (kind: resource or data)."""
    found: dict[str, dict] = {}
    for _, doc in terraform():
        for item in doc.get(kind, []):
            for typ, named in item.items():
                if lit(typ) == rtype:
                    found.update({lit(name): body for name, body in named.items()})
    return found


def tf_variable_default(name: str) -> Any:
    for _, doc in terraform():
        for item in doc.get("variable", []):
            for var, body in item.items():
                if lit(var) == name:
                    return lit(body.get("default"))
    raise AssertionError(f"no variable {name!r} in deploy/terraform")


def tf_map(value: dict) -> dict[str, Any]:
    """An HCL object literal with its keys and string values unquoted, one level deep."""
    return {
        lit(k): ({lit(kk): lit(vv) for kk, vv in v.items()} if isinstance(v, dict) else lit(v))
        for k, v in value.items()
        if not k.startswith("__")
    }


def expected_subscriptions() -> dict[str, topology.Subscription]:
    return {s.name: s for s in topology.SUBSCRIPTIONS}


def filter_types(expression: str) -> frozenset[str] | None:
    """The ce-type values a Pub/Sub filter of the form `attributes.ce-type = "X" OR ...` admits."""
    if expression == "":
        return None
    clause = r'attributes\.ce-type = "([A-Za-z0-9._-]+)"'
    assert re.fullmatch(rf"{clause}( OR {clause})*", expression), f"unexpected filter: {expression}"
    return frozenset(re.findall(clause, expression))


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined as Docker does."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        word, _, rest = stripped.partition(" ")
        out.append((word, rest.strip()))
    return out


def module_defines(path: Path, name: str) -> bool:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
    return False


def module_constant(path: Path, name: str) -> ast.expr | None:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node.value
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return node.value
    return None


def deploy_placeholders() -> set[str]:
    match = re.search(r"^PLACEHOLDERS=\(([^)]*)\)", DEPLOY_SCRIPT.read_text(), re.M)
    assert match, "deploy/cloudrun-deploy.sh has no PLACEHOLDERS=(...) line"
    return set(match.group(1).split())


# ----------------------------------------------------------------------------------------------
# services <-> skaffold <-> manifests
# ----------------------------------------------------------------------------------------------
def test_every_service_package_is_one_of_the_topology_services():
    """The packages with an app.py are exactly topology.SERVICES: none missing, none extra."""
    assert set(service_packages()) == set(topology.SERVICES)


@pytest.mark.parametrize("service", sorted(topology.SERVICES))
def test_service_has_skaffold_artifact_and_manifest_with_matching_image(service):
    """Each service has a services/Dockerfile artifact (SERVICE=pkg) and a manifest running it."""
    package = service_packages()[service]
    artifact = artifacts().get(service)
    assert artifact, f"skaffold.yaml has no artifact {service!r}"
    assert artifact.get("context", ".") == "."
    assert artifact["docker"]["dockerfile"] == "services/Dockerfile"
    assert artifact["docker"]["buildArgs"]["SERVICE"] == package
    assert set(artifact["docker"]["buildArgs"]["EXTRAS"].split(",")) >= {"postgres", "gcp"}

    manifest = manifests().get(service)
    assert manifest, f"no deploy/cloudrun/{service}.yaml"
    assert manifest["metadata"]["name"] == service
    assert container(manifest)["image"] == artifact["image"]


def test_only_the_service_that_loads_models_carries_torch():
    """The completion-handler evaluates models in-process (train: torch); the job-launcher only
    reads MLflow (registry: mlflow-skinny); the rest need neither. Every extra exists."""
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    wanted = {
        service: set(artifact["docker"]["buildArgs"]["EXTRAS"].split(","))
        for service, artifact in artifacts().items()
        if service in topology.SERVICES
    }
    assert all(service_extras <= set(extras) for service_extras in wanted.values())
    assert {service for service, service_extras in wanted.items() if "train" in service_extras} == {
        topology.COMPLETION_HANDLER
    }
    assert "registry" in wanted[topology.JOB_LAUNCHER]
    assert any(r.startswith("mlflow-skinny") for r in extras["registry"])
    assert not any(r.startswith(("torch", "mlflow>", "mlflow=", "numpy")) for r in extras["registry"])


def test_skaffold_renders_the_cloudrun_manifests_and_deploys_to_cloud_run():
    """skaffold.yaml (v4beta11) renders deploy/cloudrun/*.yaml raw and deploys them to Cloud Run."""
    config = skaffold()
    assert config["apiVersion"] == "skaffold/v4beta11" and config["kind"] == "Config"
    assert config["manifests"]["rawYaml"] == ["deploy/cloudrun/*.yaml"]
    assert "cloudrun" in config["deploy"]
    images = [a["image"] for a in config["build"]["artifacts"]]
    assert len(images) == len(set(images)), "duplicate artifact names"
    manifest_images = {container(m)["image"] for m in manifests().values()}
    assert manifest_images <= set(images), "a manifest runs an image skaffold does not build"


def test_pipeline_training_images_are_skaffold_artifacts():
    """Every pipeline spec's training.image names a skaffold artifact."""
    names = set(artifacts())
    for path in sorted(PIPELINES_DIR.glob("*.yaml")):
        image = yaml.safe_load(path.read_text())["training"]["image"]
        assert image in names, f"{path.name}: training.image {image!r} is not a skaffold artifact"


@pytest.mark.parametrize("service", sorted(topology.SERVICES))
def test_app_serves_healthz_and_reconcile(service):
    """The app the image runs has GET /healthz (probes) and POST /reconcile (scheduler)."""
    app = importlib.import_module(f"{service_packages()[service]}.app").app
    routes = {(r.path, method) for r in app.routes for method in getattr(r, "methods", ())}
    assert ("/healthz", "GET") in routes
    assert ("/reconcile", "POST") in routes


# ----------------------------------------------------------------------------------------------
# Cloud Run manifests
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(p.stem for p in MANIFEST_DIR.glob("*.yaml")))
def test_manifest_is_a_hardened_cloud_run_service(name):
    """A manifest: /healthz probes, limits, scale bounds, own account, secret DB URL, Cloud SQL."""
    manifest = manifests()[name]
    assert manifest["apiVersion"] == "serving.knative.dev/v1" and manifest["kind"] == "Service"
    template = manifest["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    spec = template["spec"]
    c = container(manifest)

    for probe in ("startupProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/healthz", f"{probe} must hit /healthz"
        assert c[probe]["httpGet"].get("port", 8080) == c["ports"][0]["containerPort"] == 8080
    assert {"cpu", "memory"} <= set(c["resources"]["limits"])
    assert int(annotations["autoscaling.knative.dev/minScale"]) >= 0
    assert int(annotations["autoscaling.knative.dev/maxScale"]) >= 1
    assert 1 <= spec["containerConcurrency"] <= 1000
    assert 1 <= spec["timeoutSeconds"] <= 3600
    assert annotations["run.googleapis.com/cloudsql-instances"] == "${SQL_CONNECTION_NAME}"
    assert spec["serviceAccountName"] == f"ctflow-{name}@${{PROJECT_ID}}.iam.gserviceaccount.com"

    env = env_of(manifest)
    assert env["CTFLOW_MODE"] == "gcp"
    secret = {"secretKeyRef": {"name": "ctflow-database-url", "key": "latest"}}
    assert env["CTFLOW_DATABASE_URL"] == secret
    assert env["CTFLOW_OIDC_AUDIENCE"] == f"https://{name}-${{PROJECT_NUMBER}}.${{REGION}}.run.app"

    expected_ingress = "all" if name == topology.STATUS_API else "internal"
    assert manifest["metadata"]["annotations"]["run.googleapis.com/ingress"] == expected_ingress


def test_no_manifest_disables_invoker_iam():
    """No manifest sets run.googleapis.com/invoker-iam-disabled: every caller needs run.invoker."""
    for path in MANIFEST_DIR.glob("*.yaml"):
        assert "invoker-iam-disabled" not in path.read_text(), path.name


@pytest.mark.parametrize("name", sorted(p.stem for p in MANIFEST_DIR.glob("*.yaml")))
def test_manifest_env_is_accepted_by_gcp_settings(name, monkeypatch):
    """A manifest's env (placeholders filled) passes gcp-mode Settings; no unknown CTFLOW_ name."""
    fields = {f"CTFLOW_{field.upper()}" for field in Settings.model_fields}
    env = env_of(manifests()[name])
    unknown = {k for k in env if k.startswith("CTFLOW_")} - fields - PROPOSED_SETTINGS
    assert not unknown, f"{name}: not ctflow settings (typo?): {sorted(unknown)}"

    filled = {
        "PROJECT_ID": "demo",
        "PROJECT_NUMBER": "123",
        "REGION": "us-central1",
        "BUCKET": "demo-ctflow",
        "SQL_CONNECTION_NAME": "demo:us-central1:ctflow-ledger",
        "IMAGE_REPO": "r",
        "TRAINER_IMAGE": "t",
    }
    for key in [k for k in os.environ if k.startswith("CTFLOW_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if isinstance(value, dict):  # secretKeyRef
            value = "postgresql+psycopg://ctflow:x@/ctflow?host=/cloudsql/demo:us-central1:ledger"
        monkeypatch.setenv(key, re.sub(r"\$\{(\w+)\}", lambda m: filled[m.group(1)], value))
    settings = Settings()
    assert settings.mode == "gcp" and settings.allowed_invokers
    assert all(sa.endswith("@demo.iam.gserviceaccount.com") for sa in settings.allowed_invokers)
    if name == topology.STATUS_API:
        assert set(settings.service_urls) == set(topology.SERVICES) - {topology.STATUS_API}


def test_manifest_placeholders_are_all_filled_by_the_deploy_script():
    """Every ${NAME} in the manifests is filled by the deploy script from terraform's deploy_env."""
    used = set()
    for path in MANIFEST_DIR.glob("*.yaml"):
        lines = path.read_text().splitlines()
        body = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
        used |= set(re.findall(r"\$\{(\w+)\}", body))
    placeholders = deploy_placeholders()
    assert used <= placeholders, f"not filled by the deploy script: {used - placeholders}"
    outputs = (TERRAFORM_DIR / "outputs.tf").read_text()
    exported = set(re.findall(r"export (\w+)=", outputs))
    assert placeholders - {"TRAINER_IMAGE"} <= exported, "deploy_env output misses a placeholder"


def test_deploy_script_is_valid_bash():
    """deploy/cloudrun-deploy.sh parses (bash -n) and is executable."""
    bash = shutil.which("bash")  # .ci/run is a bash script: bash is always there
    result = subprocess.run([bash, "-n", str(DEPLOY_SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert DEPLOY_SCRIPT.stat().st_mode & 0o111


def test_manifests_allow_every_caller_terraform_grants_invoker():
    """CTFLOW_ALLOWED_INVOKERS names every identity terraform lets invoke the service (no 401s)."""
    services = tf_map(tf_locals()["services"])
    pushed = {lit(s["service"]) for s in tf_map(tf_locals()["push_subscriptions"]).values()}
    for name, svc in services.items():
        expected = set()
        if name in pushed:
            expected.add("pubsub-pusher")
        if name == topology.DATASET_LISTENER:
            expected.add("eventarc")
        if svc["reconcile"]:
            expected.add("scheduler")
        if name != topology.STATUS_API:
            expected.add("status-api")
        allowed = json.loads(env_of(manifests()[name])["CTFLOW_ALLOWED_INVOKERS"])
        account = re.compile(r"ctflow-([a-z-]+)@\$\{PROJECT_ID\}\.iam\.gserviceaccount\.com")
        short = {account.fullmatch(sa).group(1) for sa in allowed}
        assert expected <= short, f"{name}: allowed invokers miss {sorted(expected - short)}"
        known = set(tf_map(tf_locals()["service_accounts"]))
        assert short <= known, f"{name}: unknown service account"


# ----------------------------------------------------------------------------------------------
# Dockerfiles
# ----------------------------------------------------------------------------------------------
DOCKERFILES = sorted(
    {
        SERVICE_DOCKERFILE,
        MODEL_SERVER_DIR / "Dockerfile",
        *(REPO_ROOT / a["docker"]["dockerfile"] for a in artifacts().values()),
    }
)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_dockerfile_parses(path):
    """Each Dockerfile (ours, every artifact's) has known instructions, FROM first, a CMD."""
    assert path.exists(), f"{path.relative_to(REPO_ROOT)} is missing"
    instructions = dockerfile_instructions(path)
    unknown = [word for word, _ in instructions if word.upper() not in DOCKERFILE_INSTRUCTIONS]
    assert not unknown, f"unknown instructions: {unknown}"
    words = [word.upper() for word, _ in instructions]
    first = next(w for w in words if w != "ARG")
    assert first == "FROM"
    assert "CMD" in words or "ENTRYPOINT" in words


def test_service_dockerfile_runs_the_service_app_as_non_root():
    """services/Dockerfile runs ${SERVICE}.app:app on $PORT, non-root; each SERVICE has an app."""
    instructions = dockerfile_instructions(SERVICE_DOCKERFILE)
    cmd = [args for word, args in instructions if word == "CMD"][-1]
    assert cmd.startswith("exec uvicorn ") and '"${SERVICE}.app:app"' in cmd
    assert '"${PORT:-8080}"' in cmd
    user = [args for word, args in instructions if word == "USER"][-1]
    assert not user.startswith(("root", "0")), "the service image must not run as root"
    env = " ".join(args for word, args in instructions if word == "ENV")
    for var in ("CTFLOW_PIPELINES_DIR", "CTFLOW_SCHEMAS_DIR", "PYTHONUNBUFFERED"):
        assert var in env
    for artifact in artifacts().values():
        if artifact.get("docker", {}).get("dockerfile") != "services/Dockerfile":
            continue
        package = artifact["docker"]["buildArgs"]["SERVICE"]
        app = SERVICES_DIR / package / "app.py"
        assert app.exists(), f"{artifact['image']}: no services/{package}/app.py"
        assert module_defines(app, "app"), f"services/{package}/app.py defines no `app`"


def test_service_dockerfile_copies_exist_and_are_not_dockerignored():
    """Each COPY source of services/Dockerfile exists in the context and is not dockerignored."""
    ignored = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for word, args in dockerfile_instructions(SERVICE_DOCKERFILE):
        if word != "COPY" or "--from=" in args:
            continue
        *sources, _dest = [a for a in shlex.split(args) if not a.startswith("--")]
        for source in sources:
            rel = source.rstrip("/")
            assert (REPO_ROOT / rel).exists(), f"COPY {source}: not in the build context"
            for pattern in ignored:
                pat = pattern.rstrip("/")
                inside = rel.startswith(pat + "/") or pat.startswith(rel + "/")
                hit = fnmatch.fnmatch(rel, pat) or inside
                assert not hit, f"COPY {source} is excluded by .dockerignore pattern {pattern!r}"


def test_dockerignore_keeps_secrets_and_local_state_out():
    """.dockerignore drops the venv, git, tests, caches and Terraform state (DB passwords)."""
    lines = set((REPO_ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "tests", "**/__pycache__", "**/*.tfstate", "deploy/terraform"} <= lines


def test_model_server_image_is_generic_and_pins_what_the_project_pins():
    """One image for every version (the archive comes from the bucket, verified by its sha256), started by
    model_server.serve, with the torch, TorchServe and archiver versions of pyproject's extras."""
    import tomllib

    instructions = dockerfile_instructions(MODEL_SERVER_DIR / "Dockerfile")
    assert not any(word == "COPY" and ".mar" in args for word, args in instructions)  # nothing baked in
    assert [args for word, args in instructions if word == "CMD"][-1] == '["python", "-m", "model_server.serve"]'
    assert any(word == "USER" and not args.startswith("0") for word, args in instructions)
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pinned = [
        r
        for r in extras["train"] + extras["serve"]
        if r.split("==")[0] in ("torch", "torchserve", "torch-model-archiver")
    ]
    installs = " ".join(args for word, args in instructions if word == "RUN")
    assert len(pinned) == 3 and all(requirement in installs for requirement in pinned), pinned


# ----------------------------------------------------------------------------------------------
# Terraform
# ----------------------------------------------------------------------------------------------
def test_terraform_files_parse_as_hcl():
    """Every deploy/terraform/*.tf parses as HCL2 and the expected files are there."""
    names = {name for name, _ in terraform()}
    assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= names


def test_nothing_is_public():
    """Nothing grants allUsers/allAuthenticatedUsers or disables invoker IAM."""
    paths = [*TERRAFORM_DIR.glob("*.tf"), *MANIFEST_DIR.glob("*.yaml"), REPO_ROOT / "skaffold.yaml"]
    for path in paths:
        text = path.read_text()
        assert "allUsers" not in text and "allAuthenticatedUsers" not in text, path.name
        assert not re.search(r"invoker_iam_disabled\s*=\s*true", text), path.name
    for body in tf_blocks("resource", "google_cloud_run_v2_service").values():
        assert lit(body.get("invoker_iam_disabled", False)) in (False, "false")


def test_terraform_services_match_topology_and_manifests():
    """Terraform services = topology's; ticks = apps with reconcilers; ingress agrees."""
    services = tf_map(tf_locals()["services"])
    assert set(services) == set(topology.SERVICES)
    ingress = {"INGRESS_TRAFFIC_ALL": "all", "INGRESS_TRAFFIC_INTERNAL_ONLY": "internal"}
    for name, svc in services.items():
        app = SERVICES_DIR / service_packages()[name] / "app.py"
        reconcilers = module_constant(app, "RECONCILERS")
        has_reconcilers = not (isinstance(reconcilers, ast.Tuple) and not reconcilers.elts)  # () or a named set
        assert svc["reconcile"] == has_reconcilers, f"{name}: reconcile vs RECONCILERS"
        annotations = manifests()[name]["metadata"]["annotations"]
        assert ingress[svc["ingress"]] == annotations["run.googleapis.com/ingress"], name


def test_topics_match_topology():
    """Terraform makes the topics topology.py names, each with a dead-letter topic."""
    topics = {lit(t) for t in tf_locals()["topics"]}
    assert topics == {topology.EVENTS_TOPIC, topology.HPARAMS_TOPIC}
    dead_letter = tf_blocks("resource", "google_pubsub_topic")["dead_letter"]
    assert lit(dead_letter["name"]) == "${each.key}-dead-letter"


def test_pubsub_subscriptions_match_topology():
    """Push subscriptions = topology's (+ announced): names, topics, services, ce-type filters."""
    wanted = {n: s for n, s in expected_subscriptions().items() if s.delivery == "pubsub-push"}
    actual = tf_map(tf_locals()["push_subscriptions"])
    assert set(actual) == set(wanted)
    for name, sub in wanted.items():
        got = actual[name]
        assert got["topic"] == sub.topic, name
        assert got["service"] == sub.service, name
        assert len(got["filter"].encode()) <= 256, f"{name}: Pub/Sub filters are at most 256 bytes"
        assert filter_types(got["filter"]) == sub.event_types, f"{name}: filter admits other types"
        assert 10 <= int(got["ack_deadline"]) <= 600


def test_push_subscriptions_authenticate_retry_and_dead_letter():
    """Pushes go to the service URL with OIDC, back off exponentially, dead-letter after 5 tries."""
    body = tf_blocks("resource", "google_pubsub_subscription")["push"]
    assert lit(body["for_each"]) == "${local.push_subscriptions}"
    (push,) = body["push_config"]
    assert lit(push["push_endpoint"]) == "${local.service_url[each.value.service]}/"
    (oidc,) = push["oidc_token"]
    assert "pubsub-pusher" in lit(oidc["service_account_email"])
    assert lit(oidc["audience"]) == "${local.service_url[each.value.service]}"
    (retry,) = body["retry_policy"]
    assert lit(retry["minimum_backoff"]) and lit(retry["maximum_backoff"])
    (dead,) = body["dead_letter_policy"]
    assert "dead_letter" in lit(dead["dead_letter_topic"])
    assert lit(dead["max_delivery_attempts"]) == "${var.pubsub_max_delivery_attempts}"
    assert tf_variable_default("pubsub_max_delivery_attempts") == 5


def test_cloudevent_routes_are_eventarc_triggers():
    """Each cloudevent route in topology.py is an Eventarc GCS-finalized trigger to its service."""
    triggers = tf_blocks("resource", "google_eventarc_trigger")
    by_name = {lit(body["name"]): body for body in triggers.values()}
    cloudevent = [s for s in expected_subscriptions().values() if s.delivery == "cloudevent"]
    assert cloudevent, "topology.py has no cloudevent route"
    for sub in cloudevent:
        assert sub.topic == topology.STORAGE_TOPIC
        body = by_name.get(sub.name)
        assert body, f"no google_eventarc_trigger named {sub.name!r}"
        criteria = {lit(c["attribute"]): lit(c["value"]) for c in body["matching_criteria"]}
        assert criteria["type"] == events.GCS_OBJECT_FINALIZED
        assert "google_storage_bucket.data.name" in criteria["bucket"]
        (run,) = body["destination"][0]["cloud_run_service"]
        assert f'service["{sub.service}"]' in lit(run["service"])
        assert lit(run["path"]) == "/"


def test_reconcile_ticks_post_with_oidc():
    """Reconcile jobs POST /reconcile every minute with an OIDC token for the service URL."""
    body = tf_blocks("resource", "google_cloud_scheduler_job")["reconcile"]
    assert lit(body["schedule"]) == "* * * * *"
    (target,) = body["http_target"]
    assert lit(target["http_method"]) == "POST"
    assert lit(target["uri"]).endswith("/reconcile")
    (oidc,) = target["oidc_token"]
    assert "scheduler" in lit(oidc["service_account_email"])
    assert lit(oidc["audience"]) == "${local.service_url[each.key]}"


def test_pipeline_schedules_publish_valid_hyperparameter_messages():
    """Pipeline schedules publish valid hyperparameter messages with ctflow-trigger=schedule."""
    assert lit(tf_locals()["pipelines_dir"]) == "${path.module}/../pipelines"
    body = tf_blocks("resource", "google_cloud_scheduler_job")["pipeline_schedule"]
    (target,) = body["pubsub_target"]
    assert 'topic["ctflow-hparams"]' in lit(target["topic_name"])
    assert tf_map(target["attributes"]) == {"ctflow-trigger": "schedule"}

    schema = json.loads((REPO_ROOT / "schemas" / "hyperparameter-message.schema.json").read_text())
    schedules = 0
    for path in sorted(PIPELINES_DIR.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        for schedule in spec.get("schedules", []):
            schedules += 1
            jsonschema.validate(schedule["message"], schema)
            assert schedule["message"]["pipeline"] == spec["name"]
            assert len(schedule["cron"].split()) == 5
            job = f"ctflow-{spec['name']}-{schedule['name']}"
            assert re.fullmatch(r"[A-Za-z0-9_-]{1,400}", job), job
    assert schedules, "expected at least the digits nightly schedule"


def test_every_service_account_can_read_the_database_secret():
    """Each service account may read ctflow-database-url and connect to Cloud SQL."""
    secret_iam = tf_blocks("resource", "google_secret_manager_secret_iam_member")
    accessor = secret_iam["database_url_accessor"]
    assert lit(accessor["for_each"]) == "${local.services}"
    roles = tf_map(tf_locals()["project_roles"])
    cloudsql = {r["sa"] for r in roles.values() if r["role"] == "roles/cloudsql.client"}
    assert set(topology.SERVICES) <= cloudsql


def test_trainer_image_installs_what_its_mlflow_project_declares():
    """trainer_image/Dockerfile pip-installs exactly python_env.yaml's dependencies, torch aside:
    the CUDA base image brings torch, at a version python_env.yaml accepts."""
    from packaging.requirements import Requirement

    declared = {
        Requirement(r).name: Requirement(r).specifier
        for r in yaml.safe_load((REPO_ROOT / "trainer_image/python_env.yaml").read_text())["dependencies"]
    }
    dockerfile = (REPO_ROOT / "trainer_image/Dockerfile").read_text()
    install = re.search(r"RUN python -m pip install \\\n((?:\s+\"[^\"]+\"(?: \\)?\n)+)", dockerfile)
    assert install, "trainer_image/Dockerfile has no `RUN python -m pip install` list"
    installed = {Requirement(r).name: Requirement(r).specifier for r in re.findall(r'"([^"]+)"', install.group(1))}
    torch = declared.pop("torch")
    assert installed == declared
    base = re.search(r"^FROM pytorch/pytorch:(\d+\.\d+\.\d+)-", dockerfile, re.MULTILINE)
    assert base and base.group(1) in torch, f"the base image's torch {base and base.group(1)} is not {torch}"


def trainer_core_imports() -> list[str]:
    """The core (ctflow.*) modules the trainer package imports, wherever the import stands."""
    found = set()
    for path in (REPO_ROOT / "trainer_image" / "ctflow_trainer").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            found.update(name for name in names if name.startswith("ctflow."))
    return sorted(found)


def test_the_core_modules_the_trainer_image_imports_need_only_the_standard_library():
    """trainer_image/Dockerfile copies services/ctflow without its dependencies: every core module the
    trainer imports must pull in nothing outside the standard library, and the image imports each at build."""
    core = trainer_core_imports()
    assert core, "the trainer imports no core module?"
    dockerfile = (REPO_ROOT / "trainer_image/Dockerfile").read_text()
    built = re.search(r'python -c "import ([^"]+)"', dockerfile)
    assert built and set(core) <= {name.strip() for name in built.group(1).split(",")}, core
    probe = (
        f"import sys; before = set(sys.modules); import {', '.join(core)}; "
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT / "services", capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "['ctflow']", done.stdout
