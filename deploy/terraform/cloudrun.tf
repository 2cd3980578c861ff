# ---------------------------------------------------------------------------------------------
# The six ctflow services, as shells. Terraform creates each one (placeholder image, its own
# service account, its ingress) so the invoker grants below, the push subscriptions, the
# Eventarc trigger and the scheduler jobs can refer to it on the first apply. From then on
# deploy/cloudrun-deploy.sh owns its configuration (deploy/cloudrun/<name>.yaml) and Terraform
# ignores every later change to it.
# ---------------------------------------------------------------------------------------------
resource "google_cloud_run_v2_service" "service" {
  for_each = local.services

  name                = each.key
  location            = var.region
  ingress             = each.value.ingress
  deletion_protection = false

  template {
    service_account = google_service_account.sa[each.key].email

    containers {
      image = var.placeholder_image
    }
  }

  lifecycle {
    ignore_changes = all
  }

  depends_on = [google_project_service.apis]
}

# ---------------------------------------------------------------------------------------------
# Who may invoke what (roles/run.invoker), per service. No public principal anywhere; each
# service additionally checks the token's audience and e-mail itself (CTFLOW_ALLOWED_INVOKERS).
# ---------------------------------------------------------------------------------------------
locals {
  invokers = merge(
    # Pub/Sub push subscriptions -> their services.
    { for s in local.pushed_services : "${s}/pubsub-pusher" => { service = s, member = local.sa_member["pubsub-pusher"] } },
    # Eventarc (GCS object finalized) -> dataset-listener.
    { "dataset-listener/eventarc" = { service = "dataset-listener", member = local.sa_member["eventarc"] } },
    # Cloud Scheduler reconcile ticks -> every service with reconcilers.
    { for name, svc in local.services : "${name}/scheduler" => { service = name, member = local.sa_member["scheduler"] } if svc.reconcile },
    # status-api replays dead letters to the service that rejected them.
    { for name in local.event_services : "${name}/status-api" => { service = name, member = local.sa_member["status-api"] } },
    # Operators -> status-api.
    { for m in var.status_api_invokers : "status-api/${m}" => { service = "status-api", member = m } },
  )
}

resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = local.invokers

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.service[each.value.service].name
  role     = "roles/run.invoker"
  member   = each.value.member
}

# ---------------------------------------------------------------------------------------------
# MLflow tracking server and model registry. Backend store: database `mlflow` on the ledger's
# Cloud SQL instance. Artifacts: gs://BUCKET/mlflow, written and read by the clients directly
# (--no-serve-artifacts), because proxying model files through Cloud Run would hit its 32 MiB
# request limit. Ingress `all` because Vertex AI training jobs run outside the VPC; every call
# still needs an identity token from one of the invokers below.
# ---------------------------------------------------------------------------------------------
resource "google_cloud_run_v2_service" "mlflow" {
  name                = "mlflow"
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = false

  template {
    service_account                  = google_service_account.sa["mlflow"].email
    timeout                          = "300s"
    max_instance_request_concurrency = 40

    scaling {
      min_instance_count = 0
      max_instance_count = 2
    }

    volumes {
      name = "cloudsql"
      cloud_sql_instance {
        instances = [google_sql_database_instance.ledger.connection_name]
      }
    }

    containers {
      image   = var.mlflow_image
      command = ["mlflow"]
      args = [
        "server",
        "--host", "0.0.0.0",
        "--port", "8080",
        "--no-serve-artifacts",
        "--default-artifact-root", "gs://${google_storage_bucket.data.name}/mlflow",
      ]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "2Gi"
        }
      }

      env {
        name = "MLFLOW_BACKEND_STORE_URI"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.mlflow_db_url.secret_id
            version = "latest"
          }
        }
      }

      # MLflow 3 refuses requests whose Host header it does not know (DNS-rebinding guard).
      env {
        name  = "MLFLOW_SERVER_ALLOWED_HOSTS"
        value = trimprefix(local.service_url["mlflow"], "https://")
      }

      volume_mounts {
        name       = "cloudsql"
        mount_path = "/cloudsql"
      }

      # First start runs the store's schema migrations: give it up to 4 minutes.
      startup_probe {
        period_seconds    = 10
        timeout_seconds   = 5
        failure_threshold = 24
        http_get {
          path = "/health"
        }
      }
    }
  }

  depends_on = [
    google_secret_manager_secret_iam_member.mlflow_db_url_accessor,
    google_secret_manager_secret_version.mlflow_db_url,
    google_project_iam_member.sa,
  ]
}

resource "google_cloud_run_v2_service_iam_member" "mlflow_invoker" {
  for_each = toset(["job-launcher", "completion-handler", "deployer", "status-api", "trainer"])

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.mlflow.name
  role     = "roles/run.invoker"
  member   = local.sa_member[each.key]
}
