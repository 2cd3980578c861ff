# Topics and push subscriptions: the gcp-mode twin of services/ctflow/topology.py, which stays
# the single source of truth for who receives what. tests/unit/test_deploy_static.py fails
# when the two disagree. (dataset-listener-gcs, the Eventarc trigger, is in events.tf.)

locals {
  topics = ["ctflow-events", "ctflow-hparams"]

  # Pub/Sub push subscriptions. `filter` selects on the CloudEvent type that ctflow sets as the
  # `ce-type` message attribute ("" = every message); filters cannot change after creation
  # (Terraform replaces the subscription). `ack_deadline` is how long the service may take to
  # answer one push (at most 600 s) and matches its Cloud Run request timeout.
  push_subscriptions = {
    "hparam-consumer-push" = {
      topic        = "ctflow-hparams"
      service      = "hparam-consumer"
      filter       = ""
      ack_deadline = 60
    }
    "job-launcher-push" = {
      topic        = "ctflow-events"
      service      = "job-launcher"
      filter       = "attributes.ce-type = \"ctflow.dataset.arrived.v1\" OR attributes.ce-type = \"ctflow.training.requested.v1\" OR attributes.ce-type = \"ctflow.training.completed.v1\""
      ack_deadline = 300
    }
    "completion-handler-push" = {
      topic        = "ctflow-events"
      service      = "completion-handler"
      filter       = "attributes.ce-type = \"ctflow.training.completed.v1\""
      ack_deadline = 600
    }
    "deployer-push" = {
      topic        = "ctflow-events"
      service      = "deployer"
      filter       = "attributes.ce-type = \"ctflow.model.registered.v1\""
      ack_deadline = 60
    }
  }

  pushed_services = distinct([for s in local.push_subscriptions : s.service])

  # Everything that publishes ctflow events (the outbox relays, and the trainer's
  # training.completed).
  event_publishers = ["dataset-listener", "hparam-consumer", "job-launcher", "completion-handler", "deployer", "status-api", "trainer"]
}

resource "google_pubsub_topic" "topic" {
  for_each = toset(local.topics)
  name     = each.key

  depends_on = [google_project_service.apis]
}

# ---------------------------------------------------------------------------------------------
# Dead letters. A service answers 2xx for processed, duplicate and permanently bad input (the
# latter kept as a ctflow dead letter, replayable through the status API) and 5xx only for
# transient failures. A service keeps an event whose handling failed CTFLOW_MAX_HANDLING_FAILURES
# (4) times in a row as a ctflow dead letter with the error, below Pub/Sub's fewest attempts (5);
# so what still fails after var.pubsub_max_delivery_attempts (a service unreachable or never
# ready) lands here and is held for 7 days: look at it, fix the cause, re-publish it.
# ---------------------------------------------------------------------------------------------
resource "google_pubsub_topic" "dead_letter" {
  for_each = toset(local.topics)
  name     = "${each.key}-dead-letter"

  depends_on = [google_project_service.apis]
}

# A topic without a subscription drops what is published to it.
resource "google_pubsub_subscription" "dead_letter_hold" {
  for_each = toset(local.topics)

  name                       = "${each.key}-dead-letter-hold"
  topic                      = google_pubsub_topic.dead_letter[each.key].id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

# The Pub/Sub service agent forwards undeliverable messages: it publishes to the dead-letter
# topic and acknowledges on the source subscription.
resource "google_pubsub_topic_iam_member" "pubsub_agent_dead_letter_publisher" {
  for_each = toset(local.topics)

  topic  = google_pubsub_topic.dead_letter[each.key].name
  role   = "roles/pubsub.publisher"
  member = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_dead_letter_subscriber" {
  for_each = local.push_subscriptions

  subscription = google_pubsub_subscription.push[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# ---------------------------------------------------------------------------------------------
# Push subscriptions
# ---------------------------------------------------------------------------------------------
resource "google_pubsub_subscription" "push" {
  for_each = local.push_subscriptions

  name                       = each.key
  topic                      = google_pubsub_topic.topic[each.value.topic].id
  filter                     = each.value.filter
  ack_deadline_seconds       = each.value.ack_deadline
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = "" # never expires, however quiet the topic
  }

  # Cloud Run convention: events arrive at POST /. The OIDC token is minted for the service's
  # URL (its CTFLOW_OIDC_AUDIENCE) as ctflow-pubsub-pusher (in its CTFLOW_ALLOWED_INVOKERS).
  push_config {
    push_endpoint = "${local.service_url[each.value.service]}/"

    oidc_token {
      service_account_email = google_service_account.sa["pubsub-pusher"].email
      audience              = local.service_url[each.value.service]
    }
  }

  # Transient failures back off exponentially, 10 s up to 10 min: no retry storm.
  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.value.topic].id
    max_delivery_attempts = var.pubsub_max_delivery_attempts
  }

  depends_on = [
    google_service_account_iam_member.pubsub_agent_mints_push_tokens,
    google_pubsub_topic_iam_member.pubsub_agent_dead_letter_publisher,
  ]
}

# ---------------------------------------------------------------------------------------------
# Publishers
# ---------------------------------------------------------------------------------------------
resource "google_pubsub_topic_iam_member" "events_publisher" {
  for_each = toset(local.event_publishers)

  topic  = google_pubsub_topic.topic["ctflow-events"].name
  role   = "roles/pubsub.publisher"
  member = local.sa_member[each.key]
}

# People and systems that send hyperparameter messages (`ctflow publish`, gcloud). Cloud
# Scheduler's pipeline schedules publish as the Cloud Scheduler service agent.
resource "google_pubsub_topic_iam_member" "hparams_publisher" {
  for_each = toset(var.hparam_publishers)

  topic  = google_pubsub_topic.topic["ctflow-hparams"].name
  role   = "roles/pubsub.publisher"
  member = each.key
}
