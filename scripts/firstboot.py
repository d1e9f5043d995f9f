#!/usr/bin/env python3
"""First-boot program run by airflow-firstboot.service (installed in /usr/local/lib/airflow-ami)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from provision import main

if __name__ == "__main__":
    sys.exit(main(["firstboot", *sys.argv[1:]]))
