# ---------------------------------------------------------------------------------------------
# Eventarc: a finalized object in the data bucket -> dataset-listener, as a binary CloudEvent
# (google.cloud.storage.object.v1.finalized). topology.py calls this route
# `dataset-listener-gcs`. The listener ignores everything but commit markers under a
# pipeline's dataset prefix.
# ---------------------------------------------------------------------------------------------

# Direct GCS events travel through Pub/Sub as the Cloud Storage service agent.
data "google_storage_project_service_account" "gcs" {
  depends_on = [google_project_service.apis]
}

resource "google_project_iam_member" "gcs_agent_publishes_events" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_eventarc_trigger" "dataset_listener_gcs" {
  name            = "dataset-listener-gcs"
  location        = var.region
  service_account = google_service_account.sa["eventarc"].email

  matching_criteria {
    attribute = "type"
    value     = "google.cloud.storage.object.v1.finalized"
  }
  matching_criteria {
    attribute = "bucket"
    value     = google_storage_bucket.data.name
  }

  destination {
    cloud_run_service {
      service = google_cloud_run_v2_service.service["dataset-listener"].name
      region  = var.region
      path    = "/"
    }
  }

  depends_on = [
    google_project_iam_member.gcs_agent_publishes_events,
    google_project_iam_member.sa,
    google_cloud_run_v2_service_iam_member.invoker,
  ]
}

# ---------------------------------------------------------------------------------------------
# Pipeline schedules: one Cloud Scheduler job per `schedules` entry of deploy/pipelines/*.yaml,
# publishing that entry's `message` (a hyperparameter message) to ctflow-hparams with the
# attribute ctflow-trigger=schedule, which hparam-consumer records as the run's trigger.
# Adding or changing a schedule is a pipeline-spec edit plus `terraform apply`.
#
# For the bundled digits pipeline this yields the job `ctflow-digits-nightly-retrain`:
#   schedule  "0 3 * * *" (Etc/UTC)
#   data      {"hyperparameters":{},"pipeline":"digits","reason":"nightly retrain on the latest dataset version"}
#   attribute ctflow-trigger = "schedule"
# ---------------------------------------------------------------------------------------------
locals {
  pipelines_dir = "${path.module}/../pipelines"
  pipeline_specs = {
    for f in fileset(local.pipelines_dir, "*.yaml") : f => yamldecode(file("${local.pipelines_dir}/${f}"))
  }
  pipeline_schedules = merge({}, [
    for spec in values(local.pipeline_specs) : {
      for s in try(spec.schedules, []) : "${spec.name}-${s.name}" => {
        pipeline  = spec.name
        cron      = s.cron
        time_zone = try(s.time_zone, "Etc/UTC")
        message   = s.message
      }
    }
  ]...)
}

resource "google_cloud_scheduler_job" "pipeline_schedule" {
  for_each = local.pipeline_schedules

  name        = "ctflow-${each.key}"
  region      = var.region
  description = "ctflow: scheduled hyperparameter message for pipeline ${each.value.pipeline}"
  schedule    = each.value.cron
  time_zone   = each.value.time_zone

  pubsub_target {
    topic_name = google_pubsub_topic.topic["ctflow-hparams"].id
    data       = base64encode(jsonencode(each.value.message))
    attributes = {
      "ctflow-trigger" = "schedule"
    }
  }

  depends_on = [google_project_service.apis]
}

# ---------------------------------------------------------------------------------------------
# Reconcile ticks: POST /reconcile on every service with reconcilers, every minute, with an
# OIDC token minted as ctflow-scheduler for the service's URL. A tick re-publishes unsent
# outbox rows, polls running jobs and advances rollouts; a missed tick is made up by the next
# one, so ticks are not retried.
# ---------------------------------------------------------------------------------------------
resource "google_cloud_scheduler_job" "reconcile" {
  for_each = { for name, svc in local.services : name => svc if svc.reconcile }

  name             = "ctflow-reconcile-${each.key}"
  region           = var.region
  description      = "ctflow: reconcile tick for ${each.key}"
  schedule         = "* * * * *"
  time_zone        = "Etc/UTC"
  attempt_deadline = "120s"

  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "${local.service_url[each.key]}/reconcile"

    oidc_token {
      service_account_email = google_service_account.sa["scheduler"].email
      audience              = local.service_url[each.key]
    }
  }

  depends_on = [google_cloud_run_v2_service_iam_member.invoker]
}
