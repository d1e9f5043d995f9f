"""`python -m airflow_ami.clouds.local.motoserver [moto_server's arguments]`: the local cloud's
moto_server, with what it adds to moto (moto_lifecycle.py) loaded before moto serves."""

import sys

from moto.server import main

import airflow_ami.clouds.local.moto_lifecycle  # noqa: F401  (it patches moto as it loads)

if __name__ == "__main__":
    sys.exit(main())
