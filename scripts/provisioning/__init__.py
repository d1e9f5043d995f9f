"""Instance-side provisioning for the Airflow image (stdlib only, Python >= 3.7).

Runs ON the instance with its own python3 before anything is installed, so it
must not import anything outside the standard library.
"""
