#!/usr/bin/env bash
# Build the ctflow images, render deploy/cloudrun/*.yaml, fill their ${PLACEHOLDERS} and apply
# them to Cloud Run. Run from anywhere after `terraform apply` in deploy/terraform:
#
#   eval "$(terraform -chdir=deploy/terraform output -raw deploy_env)"
#   deploy/cloudrun-deploy.sh                  # build locally (Docker) and push
#   deploy/cloudrun-deploy.sh -p cloudbuild    # build on Cloud Build instead
#
# Extra arguments go to `skaffold build`. Why not plain `skaffold run`: skaffold's rawYaml
# renderer only swaps image names, and the manifests also need the project, region, bucket and
# Cloud SQL connection; so: skaffold build, skaffold render, envsubst, skaffold apply.
set -euo pipefail

# The placeholders the manifests may use; anything else left as ${...} fails the deploy.
PLACEHOLDERS=(PROJECT_ID PROJECT_NUMBER REGION BUCKET SQL_CONNECTION_NAME IMAGE_REPO TRAINER_IMAGE)

cd "$(dirname "$0")/.."
for tool in skaffold envsubst python3 grep; do
  command -v "$tool" >/dev/null || { echo "cloudrun-deploy: $tool is not installed" >&2; exit 1; }
done
for name in PROJECT_ID PROJECT_NUMBER REGION BUCKET SQL_CONNECTION_NAME IMAGE_REPO; do
  [[ -n "${!name:-}" ]] || { echo "cloudrun-deploy: $name is not set (see terraform output deploy_env)" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

skaffold build --default-repo="$IMAGE_REPO" --file-output="$work/build.json" "$@"

# The trainer runs on Vertex AI, not Cloud Run, so no manifest names it and skaffold cannot swap
# its tag in; hand the built reference to the job-launcher through a placeholder instead.
TRAINER_IMAGE="$(python3 -c '
import json, sys
builds = json.load(open(sys.argv[1]))["builds"]
print(next(b["tag"] for b in builds if b["imageName"].rsplit("/", 1)[-1] == "trainer"))
' "$work/build.json")"
export TRAINER_IMAGE

skaffold render --build-artifacts="$work/build.json" --default-repo="$IMAGE_REPO" \
  --offline=true --output="$work/rendered.yaml"

# envsubst replaces only the listed variables, so no other "$" in a manifest is touched.
# shellcheck disable=SC2016  # the single quotes are deliberate: envsubst wants literal ${NAME}s
envsubst "$(printf '${%s} ' "${PLACEHOLDERS[@]}")" <"$work/rendered.yaml" >"$work/cloudrun.yaml"

# Refuse to apply a manifest with an unfilled placeholder (comment lines do not count).
if grep -nE '^[[:space:]]*[^#[:space:]].*[$][{]' "$work/cloudrun.yaml" >&2; then
  echo "cloudrun-deploy: unfilled placeholders above" >&2
  exit 1
fi

skaffold apply "$work/cloudrun.yaml" --cloud-run-project="$PROJECT_ID" --cloud-run-location="$REGION"
