# One service account per service and per caller; each gets only what its code does.
# Grants are on the narrowest resource that works (topic, secret, bucket, service account,
# Cloud Run service); project-level roles only where no narrower resource exists.
# run.invoker grants live in cloudrun.tf next to the services they open.

locals {
  service_accounts = {
    # The six services (Cloud Run runtime identities).
    "dataset-listener"   = "ctflow dataset-listener: verifies dataset versions, emits dataset.arrived"
    "hparam-consumer"    = "ctflow hparam-consumer: validates hyperparameter messages, emits training.requested"
    "job-launcher"       = "ctflow job-launcher: launches Vertex AI training jobs"
    "completion-handler" = "ctflow completion-handler: evaluates and registers models"
    "deployer"           = "ctflow deployer: builds serving images, rolls out canaries"
    "status-api"         = "ctflow status-api: read model, manual promote/abort, dead-letter replay"
    # Workloads ctflow starts.
    "trainer"       = "ctflow trainer: identity of Vertex AI CustomJobs"
    "model-server"  = "ctflow model-server: identity of TorchServe serving revisions (needs no roles)"
    "model-builder" = "ctflow model-builder: Cloud Build identity that builds serving images"
    "mlflow"        = "ctflow MLflow tracking server"
    # Callers: the identities Google services present when they call ctflow (OIDC).
    "pubsub-pusher" = "ctflow: OIDC identity of the Pub/Sub push subscriptions"
    "scheduler"     = "ctflow: OIDC identity of the Cloud Scheduler reconcile ticks"
    "eventarc"      = "ctflow: identity of the Eventarc trigger GCS -> dataset-listener"
  }

  sa_member = { for key, sa in google_service_account.sa : key => "serviceAccount:${sa.email}" }

  # Google-managed service agents.
  pubsub_agent = "serviceAccount:service-${local.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  # Project-level roles (no narrower resource to grant them on).
  project_roles = {
    # Cloud SQL Auth Proxy connections (the ledger; MLflow's store).
    "dataset-listener/cloudsql"   = { sa = "dataset-listener", role = "roles/cloudsql.client" }
    "hparam-consumer/cloudsql"    = { sa = "hparam-consumer", role = "roles/cloudsql.client" }
    "job-launcher/cloudsql"       = { sa = "job-launcher", role = "roles/cloudsql.client" }
    "completion-handler/cloudsql" = { sa = "completion-handler", role = "roles/cloudsql.client" }
    "deployer/cloudsql"           = { sa = "deployer", role = "roles/cloudsql.client" }
    "status-api/cloudsql"         = { sa = "status-api", role = "roles/cloudsql.client" }
    "mlflow/cloudsql"             = { sa = "mlflow", role = "roles/cloudsql.client" }
    # Create, poll and cancel CustomJobs.
    "job-launcher/aiplatform" = { sa = "job-launcher", role = "roles/aiplatform.user" }
    # Serving services (one per pipeline, named in its spec) are created at run time, so the
    # deployer manages Cloud Run services project-wide; it also submits the image builds.
    "deployer/run"        = { sa = "deployer", role = "roles/run.developer" }
    "deployer/cloudbuild" = { sa = "deployer", role = "roles/cloudbuild.builds.editor" }
    # GET /models/{pipeline}: which revision serves with which traffic.
    "status-api/run-viewer" = { sa = "status-api", role = "roles/run.viewer" }
    # Eventarc delivers to the trigger's identity.
    "eventarc/receiver" = { sa = "eventarc", role = "roles/eventarc.eventReceiver" }
    # Builds run as model-builder and must log somewhere (CLOUD_LOGGING_ONLY).
    "model-builder/logs" = { sa = "model-builder", role = "roles/logging.logWriter" }
  }

  # Bucket roles: read what a service reads, create what it writes; only the trainer overwrites.
  bucket_roles = {
    "dataset-listener/viewer"    = { sa = "dataset-listener", role = "roles/storage.objectViewer" }
    "job-launcher/viewer"        = { sa = "job-launcher", role = "roles/storage.objectViewer" }
    "completion-handler/viewer"  = { sa = "completion-handler", role = "roles/storage.objectViewer" }
    "completion-handler/creator" = { sa = "completion-handler", role = "roles/storage.objectCreator" }
    "deployer/viewer"            = { sa = "deployer", role = "roles/storage.objectViewer" }
    "deployer/creator"           = { sa = "deployer", role = "roles/storage.objectCreator" }
    "trainer/admin"              = { sa = "trainer", role = "roles/storage.objectAdmin" }
    "mlflow/viewer"              = { sa = "mlflow", role = "roles/storage.objectViewer" }
    "model-builder/viewer"       = { sa = "model-builder", role = "roles/storage.objectViewer" }
  }

  # Who may act as whom: launching a job / deploying a revision / running a build as another
  # identity needs iam.serviceAccountUser on that identity, and only on it.
  act_as = {
    "job-launcher/trainer"   = { sa = "job-launcher", target = "trainer" }
    "deployer/model-server"  = { sa = "deployer", target = "model-server" }
    "deployer/model-builder" = { sa = "deployer", target = "model-builder" }
  }
}

resource "google_service_account" "sa" {
  for_each = local.service_accounts

  account_id   = "ctflow-${each.key}"
  display_name = "ctflow ${each.key}"
  description  = each.value

  depends_on = [google_project_service.apis]
}

resource "google_project_iam_member" "sa" {
  for_each = local.project_roles

  project = var.project_id
  role    = each.value.role
  member  = local.sa_member[each.value.sa]
}

resource "google_storage_bucket_iam_member" "sa" {
  for_each = local.bucket_roles

  bucket = google_storage_bucket.data.name
  role   = each.value.role
  member = local.sa_member[each.value.sa]
}

resource "google_service_account_iam_member" "act_as" {
  for_each = local.act_as

  service_account_id = google_service_account.sa[each.value.target].name
  role               = "roles/iam.serviceAccountUser"
  member             = local.sa_member[each.value.sa]
}

# Serving images are pushed by the builds the deployer submits.
resource "google_artifact_registry_repository_iam_member" "model_builder_push" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = local.sa_member["model-builder"]
}

# Pub/Sub mints the push subscriptions' OIDC tokens as ctflow-pubsub-pusher. (Projects whose
# Pub/Sub agent predates April 2021 need this; for newer ones it is harmless.)
resource "google_service_account_iam_member" "pubsub_agent_mints_push_tokens" {
  service_account_id = google_service_account.sa["pubsub-pusher"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent

  depends_on = [google_project_service.apis]
}
