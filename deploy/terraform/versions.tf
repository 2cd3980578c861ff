terraform {
  required_version = ">= 1.5.0"

  required_providers {
    # 6.x: google_cloud_run_v2_service.deletion_protection and friends.
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 7.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.5, < 4.0"
    }
  }

  # The state holds the generated database passwords: keep it in a private, versioned bucket,
  # never in the work tree. Configure with `terraform init -backend-config=bucket=NAME`.
  backend "gcs" {
    prefix = "ctflow/terraform"
  }
}
