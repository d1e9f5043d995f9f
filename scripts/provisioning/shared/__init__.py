"""Used by every phase; layout and contract are loaded by the host too (airflow_ami/seam.py)."""
