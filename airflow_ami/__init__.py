"""Bake Apache Airflow machine images: settings -> render -> Packer -> instance."""
