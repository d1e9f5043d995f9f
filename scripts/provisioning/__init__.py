"""The image's own code, run ON the instance (stdlib only, Python >= 3.7).

It runs with the instance's own python3 before anything is installed, so it must
not import anything outside the standard library. Its subpackages say when:

- ``bake``: while Packer builds the image (install, then cleanup and validate-image);
- ``boot``: at every boot, first boot's per-instance setup (airflow-firstboot.service);
- ``running``: programs of the running instance (backups and restores);
- ``shared``: what several phases use, and the two declarations the host loads
  too: ``layout`` (the image's paths and units) and ``contract`` (what the host
  tells the instance: settings.json, OS facts, the user-data document).
"""
