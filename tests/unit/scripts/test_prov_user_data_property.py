"""Any user data, however odd: first boot takes it and renders the role, or stops with exit 3
and one line. Never a crash later (exit 1, restarted forever by systemd)."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from provfakes import RecordingContext
from provisioning.boot import firstboot
from provisioning.shared import contract, layout
from provisioning.shared.envfile import parse_env_text

BUCKET = st.from_regex(r"[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]", fullmatch=True)
# Keys of the characters an S3 URI may hold (quotes among them), with or without what quoting
# trips on, and any text.
KEY_TEXT = st.one_of(
    st.text(alphabet="az09/!_.*'()-", max_size=24),
    st.text(alphabet="az09/!_.*'()-\\\"$` \n", max_size=24),
    st.text(max_size=24),
)
S3_URIS = st.builds("s3://{}/{}".format, BUCKET, KEY_TEXT)
WORDS = st.sampled_from(
    ["standalone", "controller", "worker", "latest", "analytics", "10.0.1.5", "ip-10-0-1-5.ec2.internal"]
)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2000),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    S3_URIS,
    S3_URIS.map(lambda uri: uri + ".sql.gz"),
    WORDS,
    st.lists(st.one_of(st.text(max_size=10), WORDS), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)
FIELDS = st.sampled_from(contract.Role._fields)
KEYS = st.one_of(FIELDS, st.text(max_size=12))
NAMES = st.text(alphabet="az09-_./'", min_size=1, max_size=20)
# Per key, values near what it takes: they pass the key's own check more often than not.
PLAUSIBLE = {
    "dags_s3_uri": S3_URIS,
    "backup_s3_uri": S3_URIS,
    "task_logs_s3_uri": S3_URIS,
    "restore": S3_URIS.map(lambda uri: uri + ".sql.gz"),
    "controller": st.one_of(st.ip_addresses().map(str), NAMES),
    "cluster": NAMES,
    "deployment": NAMES,
    "autoscaling_group": NAMES,
    "lifecycle_hook": NAMES,
    "worker_queues": st.lists(NAMES, max_size=3),
    "worker_concurrency": st.integers(0, 300),
    "backup_interval_minutes": st.integers(0, 2000),
}
VALID = [
    contract.user_data("standalone", deployment="analytics", backup_s3_uri="s3://backups/airflow"),
    contract.user_data("controller", cluster="analytics", dags_s3_uri="s3://dags/analytics"),
    contract.user_data(
        "worker",
        cluster="analytics",
        dags_s3_uri="s3://dags/analytics",
        controller="10.0.1.5",
        worker_concurrency=8,
        autoscaling_group="airflow-ami-analytics-workers",
        lifecycle_hook=contract.LIFECYCLE_HOOK,
        task_logs_s3_uri="s3://logs/task-logs",
    ),
]
PLAUSIBLE_CHANGE = FIELDS.flatmap(lambda key: st.tuples(st.just(key), PLAUSIBLE.get(key, VALUES)))
CHANGES = st.one_of(PLAUSIBLE_CHANGE, PLAUSIBLE_CHANGE, PLAUSIBLE_CHANGE, st.tuples(KEYS, VALUES))
# Near-valid documents (keys changed, added or dropped) find what random ones never reach.
MUTATED = st.builds(
    lambda base, changes, drop: json.dumps(
        {k: v for k, v in {**json.loads(base), **dict(changes)}.items() if k != drop}
    ),
    st.sampled_from(VALID),
    st.lists(CHANGES, min_size=1, max_size=2),
    st.one_of(st.none(), FIELDS),
)
DOCUMENTS = st.one_of(
    MUTATED,
    MUTATED,
    MUTATED,
    st.dictionaries(KEYS, VALUES, max_size=6).map(json.dumps),
    st.text(max_size=40).map(lambda text: "{" + text),
)


class Imds:
    def __init__(self, text):
        self.text = text

    def get(self, path):
        assert path == "user-data"
        return self.text


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS)
def test_every_document_is_rendered_or_stops_first_boot_with_one_line(document):
    # api_tls none: a cluster's role is refused with any other (exit 3 too, but before rendering).
    ctx = RecordingContext({"task_logs_s3_uri": "", "api_tls": "none"}, state=firstboot.FirstbootState())
    ctx.state.imds, ctx.state.identity_known = Imds(document), True
    try:
        firstboot.read_role(ctx)
        firstboot.write_role(ctx)
    except firstboot.StepFailed as exc:
        assert exc.exit_status == layout.BAD_USER_DATA_EXIT, exc
        assert "\n" not in str(exc) and str(exc).startswith("user data")
        return
    env = parse_env_text(ctx.written[layout.ROLE_ENV])
    role = ctx.state.role
    if role.role != "standalone":
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert json.loads(env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"])[0]["kwargs"]["bucket_name"]
    if role.task_logs_s3_uri:
        assert env["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"] == role.task_logs_s3_uri.rstrip("/")
