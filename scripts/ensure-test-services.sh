#!/usr/bin/env bash
# Makes sure what the integration tests need is installed and running:
# PostgreSQL on 127.0.0.1:5432, Java (Pub/Sub emulator, TorchServe) and the gcloud
# Pub/Sub emulator. The tests start the emulators themselves; this script installs.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# PostgreSQL
if ! command -v pg_isready >/dev/null 2>&1; then
  echo "installing PostgreSQL"; apt_install postgresql postgresql-client
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "starting PostgreSQL"
  for version in $(ls /etc/postgresql 2>/dev/null); do
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432

# Java for the Pub/Sub emulator and TorchServe
if ! command -v java >/dev/null 2>&1; then
  echo "installing Java"; apt_install openjdk-17-jre-headless
fi

# The Pub/Sub emulator ships with the Google Cloud CLI (Debian package google-cloud-cli-pubsub-emulator).
if ! command -v gcloud >/dev/null 2>&1; then
  echo "gcloud (Google Cloud CLI with the Pub/Sub emulator) is not installed" >&2
  exit 1
fi
if ! ls /usr/lib/google-cloud-sdk/platform/pubsub-emulator >/dev/null 2>&1 \
   && ! gcloud components list --only-local-state --format='value(id)' 2>/dev/null | grep -q pubsub-emulator; then
  apt_install google-cloud-cli-pubsub-emulator || { echo "the Pub/Sub emulator is not installed" >&2; exit 1; }
fi
echo "test services ready"
