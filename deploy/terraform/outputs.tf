# The values deploy/cloudrun-deploy.sh fills into deploy/cloudrun/*.yaml:
#   eval "$(terraform -chdir=deploy/terraform output -raw deploy_env)"
output "deploy_env" {
  description = "Shell exports for deploy/cloudrun-deploy.sh (the manifests' placeholders)."
  value       = <<-EOT
    export PROJECT_ID=${var.project_id}
    export PROJECT_NUMBER=${local.project_number}
    export REGION=${var.region}
    export BUCKET=${google_storage_bucket.data.name}
    export SQL_CONNECTION_NAME=${google_sql_database_instance.ledger.connection_name}
    export IMAGE_REPO=${local.image_repo}
  EOT
}

output "project_number" {
  value = local.project_number
}

output "bucket" {
  description = "Data bucket (CTFLOW_BUCKET)."
  value       = google_storage_bucket.data.name
}

output "image_repo" {
  description = "Artifact Registry repository for skaffold --default-repo."
  value       = local.image_repo
}

output "service_urls" {
  description = "Deterministic URLs of the ctflow services and MLflow (also the OIDC audiences)."
  value       = local.service_url
}

output "status_api_url" {
  value = local.service_url["status-api"]
}

output "mlflow_tracking_uri" {
  value = local.service_url["mlflow"]
}

output "sql_connection_name" {
  description = "For cloud-sql-proxy and the run.googleapis.com/cloudsql-instances annotation."
  value       = google_sql_database_instance.ledger.connection_name
}

output "database_url_secret" {
  description = "Secret Manager secret holding CTFLOW_DATABASE_URL."
  value       = google_secret_manager_secret.database_url.secret_id
}

output "service_accounts" {
  description = "Service account e-mail per role."
  value       = { for key, sa in google_service_account.sa : key => sa.email }
}

output "scheduler_jobs" {
  description = "Cloud Scheduler jobs: pipeline schedules and reconcile ticks."
  value = concat(
    [for job in google_cloud_scheduler_job.pipeline_schedule : job.name],
    [for job in google_cloud_scheduler_job.reconcile : job.name],
  )
}
