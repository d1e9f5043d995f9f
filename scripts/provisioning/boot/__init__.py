"""Boot time: first boot's per-instance setup, run at every boot by airflow-firstboot.service."""
