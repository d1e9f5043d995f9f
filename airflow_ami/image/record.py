"""What an image decided when it was baked, read back by every step after the bake.

The bake settings marked IMAGE (its API port and TLS, the admin user and where
the admin password is stored, the SSH user, OS and arch) are written to the
AMI's tags and to the build's ami.json. Launch, status, ssh, scale, verify and
teardown take them from here, never from flags of their own: from ami.json
when it records this AMI, else from the AMI's tags (an AMI launched with
--ami, baked by another checkout or by CI).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_ami.builddir import BuildDir, MissingRecord
from airflow_ami.settings import (
    IMAGE,
    BakeSettings,
    Field,
    SettingsError,
    Target,
    api_url,
    fields_of,
    tag_key,
)

ON_THE_IMAGE: dict[str, Field] = {f.name: f for f in fields_of(BakeSettings) if IMAGE in f.reaches}


class NotOurImage(MissingRecord):
    """The AMI lacks what a bake of this pipeline writes on it."""


@dataclass(frozen=True)
class Baked:
    """One AMI's baked decisions: `baked.api_port`, `baked.ssh_username`, ..."""

    ami_id: str
    values: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        if name in ON_THE_IMAGE:
            return self.values[name]
        raise AttributeError(name)

    def api_url(self, address: str) -> str:
        """The API's base URL of an instance of this image at `address`."""
        return api_url(self.api_tls, self.api_port, address)

    @classmethod
    def of(cls, target: Target, ami_id: str, image_tags: Callable[[str], Mapping[str, str]]) -> Baked:
        """`ami_id`'s decisions: the build's record if it names the AMI, else `image_tags(ami_id)`."""
        bdir = BuildDir.of(target)
        try:
            record = bdir.read(bdir.ami_record, "")
        except MissingRecord:
            record = {}
        if ami_id in (record.get("ami_id"), *dict(record.get("amis") or {}).values()):
            return cls.parsed(ami_id, {name: record.get(name) for name in ON_THE_IMAGE}, str(bdir.ami_record))
        tags = image_tags(ami_id)
        found = {name: tags.get(tag_key(name)) for name in ON_THE_IMAGE}
        return cls.parsed(ami_id, found, f"the tags of {ami_id}")

    @classmethod
    def parsed(cls, ami_id: str, raw: Mapping[str, Any], where: str) -> Baked:
        missing = [name for name, value in raw.items() if value is None]
        if missing:
            raise NotOurImage(
                f"{where} lacks {', '.join(tag_key(n) for n in missing)}: {ami_id} was not baked by this"
                " version of airflow-ami; bake it again (`./bake build-ami`)"
            )
        values = {}
        for name, value in raw.items():
            try:
                values[name] = ON_THE_IMAGE[name].parse(value)
            except (ValueError, TypeError):
                raise SettingsError(f"{where}: {name}", ON_THE_IMAGE[name].allowed, value) from None
        return cls(ami_id, values)
