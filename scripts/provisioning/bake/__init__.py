"""Bake time: run by Packer on the build instance (provision.py install | cleanup | validate-image)."""
