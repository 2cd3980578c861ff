# ctflow infrastructure for gcp mode (ARCHITECTURE.md): everything except the six service
# revisions, which deploy/cloudrun-deploy.sh (skaffold) rolls out afterwards. docs/deploy.md
# has the whole procedure.
#
#   main.tf      provider, the service catalog, APIs, Artifact Registry, bucket, VPC
#   iam.tf       one service account per service and per caller, least-privilege roles
#   pubsub.tf    topics, dead-letter topics, push subscriptions (= services/ctflow/topology.py)
#   cloudrun.tf  the service shells, who may invoke each, the MLflow server
#   events.tf    Eventarc (GCS -> dataset-listener), Cloud Scheduler (pipeline schedules, reconcile)
#   database.tf  Cloud SQL PostgreSQL 15, databases, users, Secret Manager URLs

provider "google" {
  project = var.project_id
  region  = var.region
}

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  project_number = data.google_project.this.number
  bucket_name    = coalesce(var.bucket_name, "${var.project_id}-ctflow")

  # The six ctflow services, named as in services/ctflow/topology.py. `reconcile`: the service
  # has reconcilers (its app.py RECONCILERS is not empty), so Cloud Scheduler ticks it every
  # minute. `ingress` must match run.googleapis.com/ingress in deploy/cloudrun/<name>.yaml.
  services = {
    "dataset-listener"   = { ingress = "INGRESS_TRAFFIC_INTERNAL_ONLY", reconcile = true }
    "hparam-consumer"    = { ingress = "INGRESS_TRAFFIC_INTERNAL_ONLY", reconcile = true }
    "job-launcher"       = { ingress = "INGRESS_TRAFFIC_INTERNAL_ONLY", reconcile = true }
    "completion-handler" = { ingress = "INGRESS_TRAFFIC_INTERNAL_ONLY", reconcile = true }
    "deployer"           = { ingress = "INGRESS_TRAFFIC_INTERNAL_ONLY", reconcile = true }
    "status-api"         = { ingress = "INGRESS_TRAFFIC_ALL", reconcile = false }
  }
  event_services = [for name, _ in local.services : name if name != "status-api"]

  # Cloud Run's deterministic URLs (https://SERVICE-PROJECT_NUMBER.REGION.run.app). They are
  # known before any service exists, so push endpoints, OIDC audiences, the manifests'
  # CTFLOW_OIDC_AUDIENCE and the status API's CTFLOW_SERVICE_URLS all agree on one value.
  service_url = { for name in concat(keys(local.services), ["mlflow"]) :
    name => "https://${name}-${local.project_number}.${var.region}.run.app"
  }

  image_repo = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

# ---------------------------------------------------------------------------------------------
# APIs
# ---------------------------------------------------------------------------------------------
resource "google_project_service" "apis" {
  for_each = toset([
    "aiplatform.googleapis.com",
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "compute.googleapis.com",
    "eventarc.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "sqladmin.googleapis.com",
    "storage.googleapis.com",
  ])
  service            = each.key
  disable_on_destroy = false
}

# ---------------------------------------------------------------------------------------------
# Artifact Registry: service images, the trainer image, per-version serving images
# ---------------------------------------------------------------------------------------------
resource "google_artifact_registry_repository" "images" {
  location      = var.region
  repository_id = "ctflow"
  format        = "DOCKER"
  description   = "ctflow service, trainer and model-serving images"

  depends_on = [google_project_service.apis]
}

# ---------------------------------------------------------------------------------------------
# The data bucket: dataset versions (datasets/<pipeline>/<version>/), holdout sets, MLflow
# artifacts (mlflow/), serving-image build contexts (builds/).
# ---------------------------------------------------------------------------------------------
resource "google_storage_bucket" "data" {
  name     = local.bucket_name
  location = var.region # Eventarc's GCS trigger must live in the bucket's location

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # A dataset version is immutable once its commit marker lands; versioning keeps an
  # overwritten or deleted object recoverable for a while anyway.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

# ---------------------------------------------------------------------------------------------
# VPC for the status API's egress. The event services accept internal traffic only; Pub/Sub,
# Eventarc and Cloud Scheduler count as internal, but another Cloud Run service only does when
# its request leaves through a VPC, so status-api (dead-letter replays) sends all its traffic
# through this subnet. Private Google Access covers *.run.app and the Google APIs; Cloud NAT
# covers the rest (the Cloud SQL instance's public IP among it).
# ---------------------------------------------------------------------------------------------
resource "google_compute_network" "ctflow" {
  name                    = "ctflow"
  auto_create_subnetworks = false

  depends_on = [google_project_service.apis]
}

resource "google_compute_subnetwork" "run" {
  name                     = "ctflow-run"
  region                   = var.region
  network                  = google_compute_network.ctflow.id
  ip_cidr_range            = var.run_subnet_cidr
  private_ip_google_access = true
}

resource "google_compute_router" "run" {
  name    = "ctflow-run"
  region  = var.region
  network = google_compute_network.ctflow.id
}

resource "google_compute_router_nat" "run" {
  name                               = "ctflow-run"
  router                             = google_compute_router.run.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = google_compute_subnetwork.run.id
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }
}
