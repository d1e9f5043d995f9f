"""pytest-testinfra suite: proves a host built from the Airflow image is correct.

Run: pytest tests/infra --hosts=ssh://user@addr --ssh-identity-file=KEY [-m 'not slow']
"""
