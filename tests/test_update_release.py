"""Signed releases and update commands: what a stolen key, a stale file or a wrong platform can do."""

import datetime as dt
import json

import pytest

from node.errors import RemoteDataError
from node.trust import keys as ed25519
from node.trust import reasons
from node.trust.envelope import PAYLOAD_COMMAND, PAYLOAD_RELEASE
from node.trust.trustdoc import load_trust_file
from node.trust.verifier import verify_command
from node.update import release as rel
from provisioning.district import signing

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ROOT = ed25519.from_seed(b"r" * 32)
KEYS = {name: ed25519.from_seed(name.encode().ljust(32, b".")) for name in
        ("release-a", "release-b", "release-c", "bulletin", "schedule")}
ROLES = {"release-a": ["release"], "release-b": ["release"], "release-c": ["release"],
         "bulletin": ["bulletin"], "schedule": ["schedule"]}


def make_trust(thresholds=None, revoked=()):
    entries = dict(signing.trust_key_entry(n, k, ROLES[n]) for n, k in KEYS.items())
    body = signing.build_trust_body(version=1, issued_at=NOW - dt.timedelta(days=1),
                                    expires=NOW + dt.timedelta(days=300), root_keys=[ROOT], root_threshold=1,
                                    keys=entries, thresholds=thresholds or {},
                                    revoked=[ed25519.keyid_of_key(KEYS[n]) for n in revoked])
    return load_trust_file(signing.sign_trust(body, [ROOT]))


TRUST = make_trust()
WHEEL = {"name": "speaker_node-0.2.0-py3-none-any.whl", "sha256": "a" * 64, "length": 1234}


def release_body(**over):
    body = {"v": 1, "type": "release", "version": "0.2.0", "min_version": "0.1.0", "package": "speaker-node",
            "architectures": ["arm64", "x86_64"], "python": ["3.11"], "files": [WHEEL],
            "issued_at": "2026-12-01T00:00:00Z", "expires": "2027-01-01T00:00:00Z"}
    body.update(over)
    return body


def signed_release(signers=("release-a", "release-b"), **over) -> bytes:
    return signing.sign_envelope(PAYLOAD_RELEASE, signing.encode_body(release_body(**over)),
                                 [KEYS[n] for n in signers])


def update_command(release: bytes, signers=("release-a", "release-b"), **body_over) -> bytes:
    body = {"release": release.decode(), "files_url": "https://district.example/rel/0.2.0/", **body_over}
    command = signing.build_command("update", body, targets=["27787-03"], issued_at=NOW)
    # Signed without the district's pre-check, so the node's own refusals are what is tested.
    return signing.sign_envelope(PAYLOAD_COMMAND, signing.encode_body(command), [KEYS[n] for n in signers])


def verify(envelope, trust=TRUST):
    return verify_command(envelope, trust=trust, node_id="27787-03", groups=["c27787"],
                          topic="spk/node/27787-03/cmd", now=NOW)


def test_release_signed_by_two_release_keys_verifies():
    release = rel.verify_release(signed_release(), TRUST, NOW)
    assert release.version == "0.2.0"
    assert release.files == (rel.ReleaseFile(WHEEL["name"], WHEEL["sha256"], WHEEL["length"]),)
    assert len(release.keyids) == 2


def test_one_stolen_release_key_cannot_sign_a_release_even_if_the_trust_document_says_one():
    one = make_trust(thresholds={"release": 1})
    with pytest.raises(RemoteDataError) as err:
        rel.verify_release(signed_release(signers=("release-a",)), one, NOW)
    assert err.value.reason == reasons.THRESHOLD_NOT_MET


def test_same_release_key_signing_twice_counts_once():
    with pytest.raises(RemoteDataError) as err:
        rel.verify_release(signed_release(signers=("release-a", "release-a")), TRUST, NOW)
    assert err.value.reason == reasons.THRESHOLD_NOT_MET


def test_release_signed_by_keys_without_the_release_role_is_refused():
    with pytest.raises(RemoteDataError) as err:
        rel.verify_release(signed_release(signers=("bulletin", "schedule")), TRUST, NOW)
    assert err.value.reason == reasons.THRESHOLD_NOT_MET


def test_revoked_release_key_does_not_count():
    revoked = make_trust(revoked=("release-b",))
    with pytest.raises(RemoteDataError) as err:
        rel.verify_release(signed_release(), revoked, NOW)
    assert err.value.reason == reasons.THRESHOLD_NOT_MET
    assert rel.verify_release(signed_release(signers=("release-a", "release-c")), revoked, NOW).version == "0.2.0"


def test_tampered_release_file_list_fails_its_signatures():
    envelope = json.loads(signed_release())
    other = signing.encode_body(release_body(files=[{**WHEEL, "sha256": "b" * 64}]))
    import base64
    envelope["payload"] = base64.b64encode(other).decode()
    with pytest.raises(RemoteDataError) as err:
        rel.verify_release(json.dumps(envelope).encode(), TRUST, NOW)
    assert err.value.reason == reasons.THRESHOLD_NOT_MET


def test_expired_release_is_refused():
    with pytest.raises(RemoteDataError) as err:
        rel.verify_release(signed_release(expires="2026-12-01T11:00:00Z"), TRUST, NOW)
    assert err.value.reason == reasons.EXPIRED


@pytest.mark.parametrize("field,value", [
    ("version", "1.2.3-evil"), ("files", []), ("architectures", ["mips"]), ("python", ["2.7"]),
    ("files", [{**WHEEL, "name": "../../etc/passwd.whl"}]), ("files", [WHEEL, WHEEL]),
    ("files", [{**WHEEL, "length": True}]), ("package", "speaker node"),
])
def test_malformed_release_bodies_are_refused_with_malformed(field, value):
    with pytest.raises(RemoteDataError) as err:
        rel.verify_release(signed_release(**{field: value}), TRUST, NOW)
    assert err.value.reason == reasons.MALFORMED
    assert field in err.value.detail or "files" in err.value.detail


def test_update_command_needs_two_release_signatures():
    single = verify(update_command(signed_release(), signers=("release-a",)))
    assert (single.decision, single.reason) == ("rejected", reasons.THRESHOLD_NOT_MET)
    accepted = verify(update_command(signed_release()))
    assert accepted.decision == "accepted"
    assert accepted.command.body.files_url.startswith("https://")


def test_update_command_signed_by_a_bulletin_key_is_role_not_allowed():
    result = verify(update_command(signed_release(), signers=("bulletin",)))
    assert (result.decision, result.reason) == ("rejected", reasons.ROLE_NOT_ALLOWED)


def test_update_command_carrying_a_singly_signed_release_is_rejected_by_the_verifier():
    result = verify(update_command(signed_release(signers=("release-a",))))
    assert (result.decision, result.reason) == ("rejected", reasons.THRESHOLD_NOT_MET)
    assert result.detail.startswith("body.release:")
    assert result.command_id is not None


def test_update_command_with_plain_http_files_url_is_malformed():
    result = verify(update_command(signed_release(), files_url="http://district.example/rel/"))
    assert (result.decision, result.reason) == ("rejected", reasons.MALFORMED)


def _decide(release_over=None, **kw):
    release = rel.parse_release_body(signing.encode_body(release_body(**(release_over or {}))))
    args = {"running": "0.1.0", "architecture": "arm64", "python": "3.11"}
    args.update(kw)
    return rel.decide_update(release, **args)


def test_newer_release_for_this_platform_installs():
    assert _decide() == rel.UpdateDecision(True)


def test_older_release_is_refused_as_rollback_unless_a_signed_downgrade():
    assert _decide(running="0.3.0").reason == rel.REFUSED_ROLLBACK
    assert _decide({"downgrade": True, "min_version": "0.1.0"}, running="0.3.0").install


def test_same_version_is_already_running():
    assert _decide(running="0.2.0").reason == rel.REFUSED_ALREADY_RUNNING


def test_running_version_below_min_version_is_refused():
    assert _decide({"min_version": "0.1.5"}, running="0.1.2").reason == rel.REFUSED_MIN_VERSION


def test_release_for_another_architecture_or_python_is_refused():
    assert _decide(architecture="armhf").reason == rel.REFUSED_PLATFORM
    assert _decide(python="3.13").reason == rel.REFUSED_PLATFORM


def test_version_that_already_failed_here_is_known_bad():
    assert _decide(known_bad=frozenset({"0.2.0"})).reason == rel.REFUSED_KNOWN_BAD


def test_node_without_release_layout_is_not_updatable():
    assert _decide(updatable=False).reason == rel.REFUSED_NOT_UPDATABLE


def test_versions_compare_numerically_not_as_text():
    assert rel.version_key("0.10.0") > rel.version_key("0.9.9")
    with pytest.raises(ValueError):
        rel.version_key("0.1.0rc1")


def test_rollout_is_deterministic_and_grows_monotonically():
    nodes = [f"27787-{i:02d}" for i in range(100)]
    ten = {n for n in nodes if rel.in_rollout(n, 10, "r1")}
    fifty = {n for n in nodes if rel.in_rollout(n, 50, "r1")}
    assert ten <= fifty
    assert 2 <= len(ten) <= 25 and 30 <= len(fifty) <= 70      # sha256 buckets over 100 ids
    assert ten == {n for n in nodes if rel.in_rollout(n, 10, "r1")}
    assert ten != {n for n in nodes if rel.in_rollout(n, 10, "r2")}
    assert all(rel.in_rollout(n, None, "") and rel.in_rollout(n, 100, "x") for n in nodes)


# -- the published vectors (tests/vectors/updates/vectors.json): what another implementation must reproduce ----
def _vectors():
    from pathlib import Path

    return json.loads((Path(__file__).parent / "vectors" / "updates" / "vectors.json").read_text(encoding="utf-8"))


def test_update_vectors_are_current():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent / "vectors" / "make_update_vectors.py"
    assert subprocess.run([sys.executable, str(script), "--check"]).returncode == 0, \
        "tests/vectors/updates/vectors.json is stale: run tests/vectors/make_update_vectors.py"


def test_update_vectors_release_cases():
    from node.trust.durations import parse_time

    v = _vectors()
    trust = load_trust_file(v["trust"].encode())
    for case in v["releases"]:
        try:
            rel.verify_release(case["envelope"].encode(), trust, parse_time(v["now"]))
            got = None
        except RemoteDataError as exc:
            got = exc.reason
        assert got == case["expected_reason"], case["description"]


def test_update_vectors_command_cases():
    from node.trust.durations import parse_time

    v = _vectors()
    trust = load_trust_file(v["trust"].encode())
    for case in v["commands"]:
        result = verify_command(case["envelope"].encode(), trust=trust, node_id=v["node_id"],
                                topic=f"spk/node/{v['node_id']}/cmd", now=parse_time(v["now"]))
        got = {"decision": result.decision, "reason": getattr(result, "reason", None)}
        assert got == case["expected"], case["description"]


def test_update_vectors_decisions_and_rollout():
    import base64

    v = _vectors()
    base = json.loads(base64.b64decode(v["release_body_b64"]))
    for case in v["decisions"]:
        release = rel.parse_release_body(signing.encode_body({**base, **case["release"]}))
        d = rel.decide_update(release, running=case["running"], architecture=case["arch"], python=case["python"])
        assert (d.install, d.reason) == (case["install"], case["reason"]), case
    for case in v["rollout"]:
        assert rel.in_rollout(case["node"], case["percent"], case["salt"]) is case["in"]
        assert (case["bucket"] < case["percent"]) is case["in"]
    assert any(c["in"] for c in v["rollout"]) and not all(c["in"] for c in v["rollout"])
