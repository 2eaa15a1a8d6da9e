import pytest

from node.errors import ConfigError
from provisioning.nodeid import is_valid_node_id, make_identity, parse_node_id


def test_identity_has_commune_cluster_id_and_admin_groups():
    ident = make_identity("27787", "760", "75", 3)
    assert ident.node_id == "27787-03"
    assert ident.groups == ["c27787", "d760", "p75"]


def test_short_codes_are_zero_padded_to_official_widths():
    ident = make_identity("1", "1", "1", "12")
    assert (ident.node_id, ident.groups) == ("00001-12", ["c00001", "d001", "p01"])


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        make_identity("277870", "76a", "750", 100)
    text = " ".join(err.value.problems)
    assert len(err.value.problems) == 4
    for word in ("commune", "district", "province", "cluster"):
        assert word in text


@pytest.mark.parametrize("cluster", [0, -1, "x", 100])
def test_cluster_out_of_range_is_refused(cluster):
    with pytest.raises(ConfigError, match="cluster"):
        make_identity("27787", "760", "75", cluster)


@pytest.mark.parametrize(
    "bad",
    [
        "27787-3",
        "2778-03",
        "27787_03",
        "27787-003",
        "",
        "27787-00",
        "00000-01",
        "27787-03 ",
        "27787-03\n",
        "２７７８７-03",
        "../etc-01",
    ],
)
def test_malformed_node_ids_are_rejected(bad):
    assert not is_valid_node_id(bad)
    with pytest.raises(ConfigError):
        parse_node_id(bad)


def test_node_id_round_trips():
    assert parse_node_id("27787-03") == ("27787", 3)
