"""Pure parsers: the numbers a technician and the district see must mean what the 3GPP/vendor text says."""

import datetime as dt

import pytest

from node.errors import RemoteDataError
from node.modem import parse


def test_csq_99_is_unknown_not_a_weak_signal():
    assert parse.parse_csq(["+CSQ: 99,99"]) is None
    assert parse.parse_csq(["+CSQ: 199,99"]) is None


@pytest.mark.parametrize(
    "n,dbm", [(0, -113), (1, -111), (2, -109), (23, -67), (30, -53), (31, -51), (100, -116)]
)
def test_csq_maps_to_dbm(n, dbm):
    assert parse.parse_csq([f"+CSQ: {n},99"]) == dbm


def test_cesq_255_and_99_are_unknown():
    cesq = parse.parse_cesq(["+CESQ: 99,99,255,255,255,255"])
    assert (cesq.rxlev_dbm, cesq.rscp_dbm, cesq.ecno_db, cesq.rsrq_db, cesq.rsrp_dbm) == (None,) * 5


@pytest.mark.parametrize(
    "reply,field,value",
    [
        ("+CESQ: 99,99,255,255,34,97", "rsrp_dbm", -44),  # 97: -44 dBm <= rsrp
        ("+CESQ: 99,99,255,255,34,1", "rsrp_dbm", -140),  # 1: -140 <= rsrp < -139
        ("+CESQ: 99,99,255,255,34,0", "rsrp_dbm", -141),  # 0: below -140, saturated
        ("+CESQ: 99,99,255,255,1,50", "rsrq_db", -19.5),
        ("+CESQ: 99,99,255,255,34,50", "rsrq_db", -3.0),
        ("+CESQ: 63,0,255,255,255,255", "rxlev_dbm", -48),
        ("+CESQ: 1,0,255,255,255,255", "rxlev_dbm", -110),
        ("+CESQ: 99,99,96,49,255,255", "rscp_dbm", -25),
        ("+CESQ: 99,99,1,1,255,255", "ecno_db", -24.0),
    ],
)
def test_cesq_uses_3gpp_ranges(reply, field, value):
    assert getattr(parse.parse_cesq([reply]), field) == value


def test_cesq_out_of_range_index_is_unknown_not_extrapolated():
    assert parse.parse_cesq(["+CESQ: 99,99,255,255,35,98"]).rsrp_dbm is None


def test_garbled_csq_is_rejected_with_reason():
    with pytest.raises(RemoteDataError) as info:
        parse.parse_csq(["+CSQ: x"])
    assert info.value.reason == "modem_reply_malformed"


@pytest.mark.parametrize(
    "line,expected",
    [
        ('+CCLK: "26/11/26,13:00:00+32"', dt.datetime(2026, 11, 26, 5, 0, tzinfo=dt.timezone.utc)),  # UTC+8
        ('+CCLK: "26/11/26,12:00:00+28"', dt.datetime(2026, 11, 26, 5, 0, tzinfo=dt.timezone.utc)),  # UTC+7
        ('+CCLK: "26/11/26,01:00:00-16"', dt.datetime(2026, 11, 26, 5, 0, tzinfo=dt.timezone.utc)),  # UTC-4
        ('+CCLK: "26/11/26,10:45:00+23"', dt.datetime(2026, 11, 26, 5, 0, tzinfo=dt.timezone.utc)),  # Nepal
    ],
)
def test_cclk_zone_counts_quarter_hours(line, expected):
    when = parse.parse_cclk([line])
    assert when == expected
    assert when.utcoffset() == dt.timedelta(minutes=15 * int(line[-4:-1]))


def test_qlts_local_mode_keeps_local_time_and_offset():
    when = parse.parse_qlts(['+QLTS: "2026/11/26,05:30:00+28,0"'], mode=2)
    assert when.isoformat() == "2026-11-26T05:30:00+07:00"


def test_qlts_utc_mode_converts_to_the_zone():
    when = parse.parse_qlts(['+QLTS: "2026/11/26,05:30:00+32,0"'], mode=0)
    assert when.isoformat() == "2026-11-26T13:30:00+08:00"


def test_qlts_without_network_time_is_none():
    assert parse.parse_qlts(['+QLTS: ""']) is None


def test_impossible_zone_is_rejected():
    with pytest.raises(RemoteDataError):
        parse.parse_cclk(['+CCLK: "26/11/26,12:00:00+99"'])


def test_qeng_lte_fields_in_manual_order():
    cell = parse.parse_qeng_servingcell(
        [
            '+QENG: "servingcell","NOCONN","LTE","FDD",452,04,7B0C10A,284,1650,3,5,5,3A9D,'
            "-98,-11,-69,13,9,-,-46"
        ]
    )
    assert (
        cell.access_technology,
        cell.mcc_mnc,
        cell.rsrp_dbm,
        cell.rsrq_db,
        cell.rssi_dbm,
        cell.sinr_db,
    ) == ("lte", "45204", -98, -11, -69, 13)
    assert (cell.cell_id, cell.area_code, cell.band, cell.state) == ("7B0C10A", "3A9D", "B3", "NOCONN")


def test_qeng_mnc_without_leading_zero_is_padded():
    cell = parse.parse_qeng_servingcell(
        [
            '+QENG: "servingcell","CONNECT","LTE","FDD",452,4,7B0C10A,284,1650,3,5,5,3A9D,'
            "-98,-11,-69,13,9,-,-46"
        ]
    )
    assert cell.mcc_mnc == "45204"


def test_qeng_search_state_has_no_cell():
    cell = parse.parse_qeng_servingcell(['+QENG: "servingcell","SEARCH"'])
    assert cell.access_technology is None and cell.state == "SEARCH"


def test_qeng_en_dc_reports_nr_signal_and_lte_anchor():
    cell = parse.parse_qeng_servingcell(
        [
            '+QENG: "servingcell","NOCONN"',
            '+QENG: "LTE","FDD",452,04,7B0C10A,284,1650,3,5,5,3A9D,-98,-11,-69,13,9,-,-46',
            '+QENG: "NR5G-NSA",452,04,512,-90,20,-11,627264,78,12,1',
        ]
    )
    assert (cell.access_technology, cell.mcc_mnc, cell.rsrp_dbm, cell.sinr_db, cell.band) == (
        "nr",
        "45204",
        -90,
        20,
        "n78",
    )


def test_qeng_wcdma_and_gsm():
    wcdma = parse.parse_qeng_servingcell(
        ['+QENG: "servingcell","NOCONN","WCDMA",452,01,0B2C,BC614E,10738,279,1,-87,-8,-,-,-,-,-']
    )
    assert (wcdma.access_technology, wcdma.mcc_mnc, wcdma.area_code) == ("umts", "45201", "0B2C")
    assert wcdma.rssi_dbm is None  # -87 is RSCP, not RSSI
    gsm = parse.parse_qeng_servingcell(
        [
            '+QENG: "servingcell","NOCONN","GSM",452,04,1A2B,3C4D,22,64,0,-77,'
            "255,255,0,0,0,1,0,0,0,0,0,0,0,0,0,0"
        ]
    )
    assert (gsm.access_technology, gsm.mcc_mnc, gsm.rssi_dbm) == ("gsm", "45204", -77)


def test_cpsi_lte_values_are_tenths():
    cell = parse.parse_cpsi(
        ["+CPSI: LTE,Online,452-04,0x3A9D,27409348,284,EUTRAN-BAND3,1650,5,5,-94,-850,-545,15"]
    )
    assert (cell.mcc_mnc, cell.rsrq_db, cell.rsrp_dbm, cell.rssi_dbm, cell.sinr_db, cell.band) == (
        "45204",
        -9.4,
        -85.0,
        -54.5,
        15,
        "B3",
    )


def test_cpsi_gsm_wcdma_and_no_service():
    assert (
        parse.parse_cpsi(["+CPSI: GSM,Online,452-04,0x1a2b,12401,27 EGSM 900,-64,2110,40-40"]).rssi_dbm == -64
    )
    assert (
        parse.parse_cpsi(
            ["+CPSI: WCDMA,Online,452-01,0x0B2C,1,WCDMA IMT 2000,279,10738,0,-8.5,-87,38,52,500"]
        ).access_technology
        == "umts"
    )
    assert parse.parse_cpsi(["+CPSI: NO SERVICE,Online"]).access_technology is None


@pytest.mark.parametrize(
    "line,state,unsolicited",
    [
        ("+CREG: 0,1", "home", False),
        ('+CREG: 2,5,"3A9D","7B0C10A",7', "roaming", False),
        ("+CREG: 1", "home", True),
        ('+CREG: 1,"3A9D","7B0C10A",7', "home", True),
        ("+CREG: 0,2", "searching", False),
        ("+CREG: 0,3", "denied", False),
        ("+CREG: 0,0", "not_registered", False),
        ("+CREG: 0,4", "unknown", False),
    ],
)
def test_creg_reply_and_urc_shapes(line, state, unsolicited):
    reg = parse.parse_creg(line)
    assert (reg.state, reg.unsolicited) == (state, unsolicited)


def test_cereg_and_cgreg_prefixes():
    assert parse.parse_cereg("+CEREG: 0,5").state == "roaming"
    assert parse.parse_cgreg("+CGREG: 2").state == "searching"


def test_cops_formats_and_access_technologies():
    assert parse.parse_cops(['+COPS: 0,0,"Viettel",7']) == parse.Operator(
        0, name="Viettel", access_technology="lte"
    )
    assert parse.parse_cops(['+COPS: 0,2,"45204",2']).mcc_mnc == "45204"
    assert parse.parse_cops(['+COPS: 0,2,"45204",13']).access_technology == "nr"
    assert parse.parse_cops(['+COPS: 0,0,"Viettel",0']).access_technology == "gsm"
    assert parse.parse_cops(["+COPS: 0"]) == parse.Operator(0)


def test_vietnam_operators_by_mcc_mnc():
    assert [parse.operator_name(c) for c in ("45201", "45202", "45204", "45205", "45207", "45299")] == [
        "MobiFone",
        "VinaPhone",
        "Viettel",
        "Vietnamobile",
        "Gmobile",
        None,
    ]


@pytest.mark.parametrize("line,iccid", [
    ("+QCCID: 89840480000123456789", "89840480000123456789"),   # 20 digits: kept whole
    ("+ICCID: 8984048000012345678F", "8984048000012345678"),    # 19 digits padded with F: F dropped
    ('+CCID: "8984048000012345678"', "8984048000012345678"),
    ("+CICCID: 8984048000012345678", "8984048000012345678"),
    ("8984048000012345678", "8984048000012345678"),
])
def test_iccid_variants_strip_trailing_f(line, iccid):
    assert parse.parse_iccid([line]) == iccid


def test_too_short_iccid_is_refused():
    with pytest.raises(RemoteDataError):
        parse.parse_iccid(["+QCCID: 1234"])


def test_imei_must_pass_luhn():
    assert parse.parse_cgsn(["867698041234561"]) == "867698041234561"
    assert parse.parse_cgsn(['+CGSN: "867698041234561"']) == "867698041234561"
    with pytest.raises(RemoteDataError):
        parse.parse_cgsn(["867698041234562"])


def test_cpin_states():
    assert parse.parse_cpin(["+CPIN: READY"]) == "ready"
    assert parse.parse_cpin(["+CPIN: SIM PIN"]) == "pin_required"
    assert parse.parse_cpin(["+CPIN: SIM PUK"]) == "puk_required"
    assert parse.parse_cpin(["+CPIN: PH-SIM PIN"]) == "error"


def test_qcsq_sinr_is_fifth_db_steps():
    cell = parse.parse_qcsq(['+QCSQ: "LTE",77,-116,76,-17'])
    assert (cell.rssi_dbm, cell.rsrp_dbm, cell.sinr_db, cell.rsrq_db) == (-77, -116, -4.8, -17)
    assert parse.parse_qcsq(['+QCSQ: "NOSERVICE"']).access_technology is None


def test_unset_modem_clock_reads_as_1980_not_2080():
    assert parse.parse_cclk(['+CCLK: "80/01/06,00:00:12+00"']).year == 1980
