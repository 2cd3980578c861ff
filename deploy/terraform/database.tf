# ---------------------------------------------------------------------------------------------
# Cloud SQL PostgreSQL 15: database `ctflow` (the ledger) and database `mlflow` (MLflow's
# backend store), each with its own user. Public IP without authorized networks: the only way
# in is the Cloud SQL Auth Proxy built into Cloud Run (or `cloud-sql-proxy` on an operator's
# machine), which authenticates with IAM (roles/cloudsql.client) and encrypts the connection.
# Schema: `ctflow db-upgrade` (docs/deploy.md), which migrates under an advisory lock.
# ---------------------------------------------------------------------------------------------
resource "google_sql_database_instance" "ledger" {
  name                = var.sql_instance_name
  region              = var.region
  database_version    = "POSTGRES_15"
  deletion_protection = var.sql_deletion_protection

  settings {
    tier                        = var.sql_tier
    edition                     = "ENTERPRISE"
    availability_type           = var.sql_availability_type
    disk_autoresize             = true
    deletion_protection_enabled = var.sql_deletion_protection

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = "02:00"
    }

    ip_configuration {
      ipv4_enabled = true
      ssl_mode     = "ENCRYPTED_ONLY"
    }

    database_flags {
      name  = "max_connections"
      value = tostring(var.sql_max_connections)
    }

    insights_config {
      query_insights_enabled = true
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_sql_database" "ctflow" {
  name     = "ctflow"
  instance = google_sql_database_instance.ledger.name
}

resource "google_sql_database" "mlflow" {
  name     = "mlflow"
  instance = google_sql_database_instance.ledger.name
}

# Alphanumeric only, so the passwords need no escaping inside a URL.
resource "random_password" "ctflow_db" {
  length  = 40
  special = false
}

resource "random_password" "mlflow_db" {
  length  = 40
  special = false
}

resource "google_sql_user" "ctflow" {
  name     = "ctflow"
  instance = google_sql_database_instance.ledger.name
  password = random_password.ctflow_db.result
}

resource "google_sql_user" "mlflow" {
  name     = "mlflow"
  instance = google_sql_database_instance.ledger.name
  password = random_password.mlflow_db.result
}

# ---------------------------------------------------------------------------------------------
# Connection URLs in Secret Manager. The services read ctflow-database-url as
# CTFLOW_DATABASE_URL (secretKeyRef in deploy/cloudrun/*.yaml); MLflow reads
# ctflow-mlflow-database-url as MLFLOW_BACKEND_STORE_URI. Host: the proxy's unix socket.
# ---------------------------------------------------------------------------------------------
resource "google_secret_manager_secret" "database_url" {
  secret_id = "ctflow-database-url"

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "database_url" {
  secret      = google_secret_manager_secret.database_url.id
  secret_data = "postgresql+psycopg://${google_sql_user.ctflow.name}:${random_password.ctflow_db.result}@/${google_sql_database.ctflow.name}?host=/cloudsql/${google_sql_database_instance.ledger.connection_name}"
}

resource "google_secret_manager_secret_iam_member" "database_url_accessor" {
  for_each = local.services

  secret_id = google_secret_manager_secret.database_url.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.sa_member[each.key]
}

resource "google_secret_manager_secret" "mlflow_db_url" {
  secret_id = "ctflow-mlflow-database-url"

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "mlflow_db_url" {
  secret      = google_secret_manager_secret.mlflow_db_url.id
  secret_data = "${var.mlflow_db_driver}://${google_sql_user.mlflow.name}:${random_password.mlflow_db.result}@/${google_sql_database.mlflow.name}?host=/cloudsql/${google_sql_database_instance.ledger.connection_name}"
}

resource "google_secret_manager_secret_iam_member" "mlflow_db_url_accessor" {
  secret_id = google_secret_manager_secret.mlflow_db_url.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.sa_member["mlflow"]
}
