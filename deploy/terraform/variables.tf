variable "project_id" {
  description = "Google Cloud project that runs ctflow."
  type        = string
}

variable "region" {
  description = "Region for Cloud Run, Pub/Sub push targets, Cloud SQL, the bucket, Eventarc, Cloud Scheduler and Artifact Registry."
  type        = string
  default     = "us-central1"
}

variable "bucket_name" {
  description = "Data bucket (dataset versions, holdout sets, MLflow artifacts). Default: <project_id>-ctflow."
  type        = string
  default     = null
}

variable "noncurrent_version_retention_days" {
  description = "Days an overwritten or deleted object version is kept before it is deleted."
  type        = number
  default     = 30
}

variable "mlflow_image" {
  description = "MLflow server image in Artifact Registry or Docker Hub (Cloud Run pulls from nowhere else), with mlflow, psycopg2 and google-cloud-storage installed. See docs/deploy.md."
  type        = string
}

variable "mlflow_db_driver" {
  description = "SQLAlchemy driver prefix of the MLflow backend store URI; must match a driver in mlflow_image."
  type        = string
  default     = "postgresql+psycopg2"
}

variable "placeholder_image" {
  description = "Image the six ctflow services are created with, so IAM, subscriptions and the Eventarc trigger can point at them before `deploy/cloudrun-deploy.sh` replaces it."
  type        = string
  default     = "us-docker.pkg.dev/cloudrun/container/hello"
}

variable "sql_instance_name" {
  description = "Cloud SQL instance that holds the ledger and the MLflow backend store."
  type        = string
  default     = "ctflow-ledger"
}

variable "sql_tier" {
  description = "Cloud SQL machine type."
  type        = string
  default     = "db-custom-2-7680"
}

variable "sql_availability_type" {
  description = "ZONAL or REGIONAL (high availability)."
  type        = string
  default     = "ZONAL"

  validation {
    condition     = contains(["ZONAL", "REGIONAL"], var.sql_availability_type)
    error_message = "sql_availability_type must be ZONAL or REGIONAL."
  }
}

variable "sql_max_connections" {
  description = "PostgreSQL max_connections. Each ctflow instance may open up to 30 (SQLAlchemy pool 10 + overflow 20): size this to the sum of maxScale x 30 over deploy/cloudrun/*.yaml, plus MLflow."
  type        = number
  default     = 500
}

variable "sql_deletion_protection" {
  description = "Protect the Cloud SQL instance from deletion (both in Terraform and in the API)."
  type        = bool
  default     = true
}

variable "pubsub_max_delivery_attempts" {
  description = "Deliveries of one message to a push subscription before Pub/Sub moves it to the dead-letter topic. Only transient failures (5xx) are retried: permanently bad input is answered 2xx and kept as a ctflow dead letter."
  type        = number
  default     = 5

  validation {
    condition     = var.pubsub_max_delivery_attempts >= 5 && var.pubsub_max_delivery_attempts <= 100
    error_message = "Pub/Sub accepts 5 to 100 delivery attempts."
  }
}

variable "run_subnet_cidr" {
  description = "Range of the subnet the status API's Direct VPC egress uses (replays to internal-only services)."
  type        = string
  default     = "10.8.0.0/26"
}

variable "status_api_invokers" {
  description = "IAM members allowed to call the status API (e.g. \"group:ml-ops@example.com\"). Public principals are refused."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.status_api_invokers : !can(regex("^all(Authenticated)?Users$", m))])
    error_message = "The status API must not be public: remove the all-users principals."
  }
}

variable "hparam_publishers" {
  description = "IAM members allowed to publish hyperparameter messages to ctflow-hparams (e.g. \"group:ml-team@example.com\")."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.hparam_publishers : !can(regex("^all(Authenticated)?Users$", m))])
    error_message = "Publishing hyperparameters must not be public: remove the all-users principals."
  }
}
