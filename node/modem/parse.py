"""Pure parsers for the AT replies we read from Quectel (EC25/EG25-G/EC200) and SIMCom (SIM7600) modems.

Every function takes the information line(s) the driver returned (without the final OK) and gives back
plain values; "not known" codes (CSQ 99, CESQ 255, "-" fields) become None rather than a made-up number.
A line that does not have the expected shape raises RemoteDataError("modem_reply_malformed"): the
modem is outside data and a garbled reply must not turn into a plausible-looking reading.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from node.errors import RemoteDataError

MALFORMED = "modem_reply_malformed"

# Vietnamese operators by MCC-MNC (MCC 452). Brand names as technicians and dashboards know them.
VIETNAM_OPERATORS = {
    "45201": "MobiFone",
    "45202": "VinaPhone",
    "45204": "Viettel",
    "45205": "Vietnamobile",
    "45207": "Gmobile",  # formerly Beeline VN; the licence now belongs to Wintel
}


def operator_name(mcc_mnc: str | None) -> str | None:
    """Brand name for a known MCC-MNC ("45204" -> "Viettel"), else None."""
    if not mcc_mnc:
        return None
    return VIETNAM_OPERATORS.get(mcc_mnc.replace("-", "").strip())


def _fail(what: str, line: str) -> RemoteDataError:
    return RemoteDataError(MALFORMED, f"unexpected {what} reply: {line[:80]!r}")


def _body(line: str, prefix: str) -> str:
    """Text after '+XXX:' (prefix is matched case-insensitively; some firmwares answer in lower case)."""
    stripped = line.strip()
    if not stripped.upper().startswith(prefix.upper()):
        raise _fail(prefix, line)
    return stripped[len(prefix) :].strip()


def split_fields(text: str) -> list[str]:
    """Split a comma-separated AT parameter list, keeping commas inside double quotes; strips quotes."""
    fields, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            fields.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    fields.append("".join(current).strip())
    return fields


def _int(value: str | None) -> int | None:
    """Integer field; '-', '' and anything non-numeric (some firmwares print '-' for not known) -> None."""
    if value is None:
        return None
    value = value.strip()
    if not re.fullmatch(r"[+-]?\d+", value):
        return None
    return int(value)


def _first_line(lines: list[str] | str, prefix: str) -> str:
    if isinstance(lines, str):
        return lines
    for line in lines:
        if line.strip().upper().startswith(prefix.upper()):
            return line
    raise RemoteDataError(MALFORMED, f"no {prefix} line in reply {lines[:3]!r}")


# --- SIM -----------------------------------------------------------------------------------------------

CPIN_STATES = {
    "READY": "ready",
    "SIM PIN": "pin_required",
    "SIM PUK": "puk_required",
    "SIM PIN2": "ready",  # PIN2 guards only fixed-dialling/phonebook features, not data
    "SIM PUK2": "ready",
    "NOT INSERTED": "absent",
    "NOT READY": "error",
}

# 27.007 §9.2.1 CME error codes that describe the SIM, as the status field they imply.
CME_SIM_STATES = {10: "absent", 11: "pin_required", 12: "puk_required", 13: "error", 14: "error", 15: "error"}


def parse_cpin(lines: list[str] | str) -> str:
    """'+CPIN: READY' -> 'ready'; unknown codes (PH-SIM PIN, ...) -> 'error'."""
    value = _body(_first_line(lines, "+CPIN:"), "+CPIN:").strip('"').upper()
    return CPIN_STATES.get(value, "error")


# --- signal --------------------------------------------------------------------------------------------


def parse_csq(lines: list[str] | str) -> int | None:
    """+CSQ: <rssi>,<ber> -> RSSI in dBm, None when not known (99/199).

    0..31 map to -113 + 2n (0 means "-113 or less", 31 "-51 or greater"); Quectel extends 100..191 for
    TD-SCDMA RSCP as -116 + (n - 100).
    """
    fields = split_fields(_body(_first_line(lines, "+CSQ:"), "+CSQ:"))
    rssi = _int(fields[0])
    if rssi is None or len(fields) != 2:
        raise _fail("+CSQ", str(lines))
    if 0 <= rssi <= 31:
        return -113 + 2 * rssi
    if 100 <= rssi <= 191:
        return -116 + (rssi - 100)
    return None


@dataclass(frozen=True)
class Cesq:
    """3GPP 27.007 §8.69 extended signal quality, converted to the lower edge of each reported range."""

    rxlev_dbm: int | None  # GSM RSSI
    rscp_dbm: int | None  # UMTS
    ecno_db: float | None  # UMTS
    rsrq_db: float | None  # LTE
    rsrp_dbm: int | None  # LTE


def parse_cesq(lines: list[str] | str) -> Cesq:
    """+CESQ: <rxlev>,<ber>,<rscp>,<ecno>,<rsrq>,<rsrp>.

    Mapping (TS 45.008 / 25.133 / 36.133 ranges; each index n names a 1 dB or 0.5 dB step, we report the
    step's lower edge, saturating at both ends):
      rxlev 0..63   -> -111 + n dBm   (0: < -110, 63: >= -48),   99 = not known
      rscp  0..96   -> -121 + n dBm   (0: < -120, 96: >= -25),  255 = not known
      ecno  0..49   -> -24.5 + n/2 dB (0: < -24,  49: >= 0),    255 = not known
      rsrq  0..34   -> -20 + n/2 dB   (0: < -19.5, 34: >= -3),  255 = not known
      rsrp  0..97   -> -141 + n dBm   (0: < -140, 97: >= -44),  255 = not known
    """
    fields = split_fields(_body(_first_line(lines, "+CESQ:"), "+CESQ:"))
    if len(fields) != 6:
        raise _fail("+CESQ", str(lines))
    rxlev, _ber, rscp, ecno, rsrq, rsrp = (_int(f) for f in fields)

    def conv(n, top, fn):
        return fn(n) if n is not None and 0 <= n <= top else None

    return Cesq(
        rxlev_dbm=conv(rxlev, 63, lambda n: -111 + n),
        rscp_dbm=conv(rscp, 96, lambda n: -121 + n),
        ecno_db=conv(ecno, 49, lambda n: -24.5 + n / 2),
        rsrq_db=conv(rsrq, 34, lambda n: -20 + n / 2),
        rsrp_dbm=conv(rsrp, 97, lambda n: -141 + n),
    )


@dataclass(frozen=True)
class ServingCell:
    """What the vendor's engineering command says about the serving cell; None = not reported."""

    access_technology: str | None  # gsm | umts | lte | nr | None (no service)
    state: str | None = None  # vendor state: SEARCH, LIMSRV, NOCONN, CONNECT, Online...
    mcc_mnc: str | None = None
    rssi_dbm: float | None = None
    rsrp_dbm: float | None = None
    rsrq_db: float | None = None
    sinr_db: float | None = None
    cell_id: str | None = None
    area_code: str | None = None  # TAC (LTE) or LAC (GSM/UMTS)
    band: str | None = None


def _mcc_mnc(mcc: str | None, mnc: str | None) -> str | None:
    """Join MCC and MNC. Firmwares print the MNC without its leading zero ('452,4'); two digits is what
    every Vietnamese operator uses, so pad to two (a 3-digit MNC printed as 3 digits is kept)."""
    mcc_i, mnc_s = _int(mcc), (mnc or "").strip()
    if mcc_i is None or not mnc_s.isdigit():
        return None
    return f"{mcc_i:03d}{mnc_s.zfill(2)}"


def _num(value: str | None) -> float | None:
    if value is None:
        return None
    value = value.strip()
    if not re.fullmatch(r"[+-]?\d+(\.\d+)?", value):
        return None
    number = float(value)
    return int(number) if number.is_integer() else number


def parse_qcsq(lines: list[str] | str) -> ServingCell:
    """Quectel +QCSQ: "LTE",<rssi>,<rsrp>,<sinr>,<rsrq> / "WCDMA",<rssi>,<rscp>,<ecio> / "GSM",<rssi> /
    "NOSERVICE". LTE SINR is coded in 1/5 dB steps from -20 dB (0..250); some EG21/EC25 firmwares print the
    LTE RSSI as a positive magnitude, which we negate."""
    fields = split_fields(_body(_first_line(lines, "+QCSQ:"), "+QCSQ:"))
    mode = fields[0].upper()
    if mode == "LTE" and len(fields) >= 5:
        rssi = _num(fields[1])
        sinr = _int(fields[3])
        return ServingCell(
            "lte",
            rssi_dbm=-abs(rssi) if rssi is not None else None,
            rsrp_dbm=_num(fields[2]),
            sinr_db=round(sinr / 5 - 20, 1) if sinr is not None and 0 <= sinr <= 250 else None,
            rsrq_db=_num(fields[4]),
        )
    if mode == "WCDMA" and len(fields) >= 2:
        return ServingCell("umts", rssi_dbm=_num(fields[1]))
    if mode == "GSM" and len(fields) >= 2:
        return ServingCell("gsm", rssi_dbm=_num(fields[1]))
    if mode in ("NOSERVICE", "NO SERVICE"):
        return ServingCell(None, state="NOSERVICE")
    raise _fail("+QCSQ", str(lines))


def parse_qeng_servingcell(lines: list[str]) -> ServingCell:
    """Quectel AT+QENG="servingcell".

    LTE:  +QENG: "servingcell",<state>,"LTE",<is_tdd>,<MCC>,<MNC>,<cellID>,<PCID>,<earfcn>,<band>,
                 <ul_bw>,<dl_bw>,<TAC>,<RSRP>,<RSRQ>,<RSSI>,<SINR>,<CQI>,<tx_power>,<srxlev>
    EN-DC: +QENG: "servingcell",<state>  then  +QENG: "LTE",<is_tdd>,<MCC>,... (same LTE fields)
                  and  +QENG: "NR5G-NSA",<MCC>,<MNC>,<PCID>,<RSRP>,<SINR>,<RSRQ>,<ARFCN>,<band>,...
    WCDMA: ...,"WCDMA",<MCC>,<MNC>,<LAC>,<cellID>,<uarfcn>,<PSC>,<RAC>,<RSCP>,<ecio>,...
    GSM:   ...,"GSM",<MCC>,<MNC>,<LAC>,<cellID>,<BSIC>,<arfcn>,<band>,<rxlev>,...
    SEARCH/LIMSRV without a cell: +QENG: "servingcell","SEARCH".
    The LTE SINR here is printed in dB on EC25/EG25-G firmwares (values like -5 and 20 are seen); the
    1/5-dB coding in some manuals belongs to AT+QCSQ and is applied there only.
    """
    rows = [
        split_fields(_body(line, "+QENG:")) for line in lines if line.strip().upper().startswith("+QENG:")
    ]
    if not rows or rows[0][0].lower() != "servingcell" or len(rows[0]) < 2:
        raise _fail('+QENG: "servingcell"', str(lines))
    state = rows[0][1].upper()
    cell_rows = [rows[0][2:]] if len(rows[0]) > 2 else []
    cell_rows += rows[1:]
    found: dict[str, list[str]] = {row[0].upper(): row for row in cell_rows if row}
    if "NR5G-NSA" in found and "LTE" in found:
        lte, nr = found["LTE"], found["NR5G-NSA"]
        anchor = _lte_fields(lte, state)
        return ServingCell(
            "nr",
            state,
            anchor.mcc_mnc or _mcc_mnc(_at(nr, 1), _at(nr, 2)),
            rssi_dbm=anchor.rssi_dbm,
            rsrp_dbm=_num(_at(nr, 4)),
            sinr_db=_num(_at(nr, 5)),
            rsrq_db=_num(_at(nr, 6)),
            cell_id=anchor.cell_id,
            area_code=anchor.area_code,
            band=f"n{_at(nr, 8)}" if _int(_at(nr, 8)) is not None else None,
        )
    if "NR5G-SA" in found:
        row = found["NR5G-SA"]  # "NR5G-SA",<duplex>,<MCC>,<MNC>,<cellID>,<PCID>,<TAC>,<ARFCN>,<band>,
        return ServingCell(  # <NR_DL_bw>,<RSRP>,<RSRQ>,<SINR>,...
            "nr",
            state,
            _mcc_mnc(_at(row, 2), _at(row, 3)),
            rsrp_dbm=_num(_at(row, 10)),
            rsrq_db=_num(_at(row, 11)),
            sinr_db=_num(_at(row, 12)),
            cell_id=_at(row, 4),
            area_code=_at(row, 6),
        )
    if "LTE" in found:
        return _lte_fields(found["LTE"], state)
    if "WCDMA" in found:
        row = found["WCDMA"]
        # <RSCP> (field 8) is a code power, not an RSSI: it is left out rather than mislabelled.
        return ServingCell(
            "umts", state, _mcc_mnc(_at(row, 1), _at(row, 2)), cell_id=_at(row, 4), area_code=_at(row, 3)
        )
    if "GSM" in found:
        row = found["GSM"]
        return ServingCell(
            "gsm",
            state,
            _mcc_mnc(_at(row, 1), _at(row, 2)),
            rssi_dbm=_num(_at(row, 8)),
            cell_id=_at(row, 4),
            area_code=_at(row, 3),
            band=_at(row, 7),
        )
    return ServingCell(None, state)


def _at(row: list[str], index: int) -> str | None:
    if index >= len(row) or row[index] in ("", "-"):
        return None
    return row[index]


def _lte_fields(row: list[str], state: str) -> ServingCell:
    # row: "LTE",<is_tdd>,<MCC>,<MNC>,<cellID>,<PCID>,<earfcn>,<band>,<ul_bw>,<dl_bw>,<TAC>,<RSRP>,<RSRQ>,
    #      <RSSI>,<SINR>,...
    if len(row) < 15:
        raise _fail('+QENG: "servingcell" LTE', ",".join(row))
    return ServingCell(
        "lte",
        state,
        _mcc_mnc(_at(row, 2), _at(row, 3)),
        rssi_dbm=_num(_at(row, 13)),
        rsrp_dbm=_num(_at(row, 11)),
        rsrq_db=_num(_at(row, 12)),
        sinr_db=_num(_at(row, 14)),
        cell_id=_at(row, 4),
        area_code=_at(row, 10),
        band=f"B{_at(row, 7)}" if _int(_at(row, 7)) is not None else None,
    )


_CPSI_ACT = {
    "LTE": "lte",
    "WCDMA": "umts",
    "GSM": "gsm",
    "TDSCDMA": "umts",
    "NR5G_SA": "nr",
    "NR5G_NSA": "nr",
}


def parse_cpsi(lines: list[str] | str) -> ServingCell:
    """SIMCom AT+CPSI? (SIM7600).

    LTE:   +CPSI: LTE,Online,452-04,0x1A2B,<SCellID>,<PCellID>,EUTRAN-BAND3,<earfcn>,<dlbw>,<ulbw>,
                  <RSRQ>,<RSRP>,<RSSI>,<RSSNR>   (RSRQ/RSRP/RSSI in tenths of dB/dBm; RSSNR in dB)
    WCDMA: +CPSI: WCDMA,Online,452-04,<LAC>,<CellID>,<band>,<PSC>,<freq>,<SSC>,<EC/IO>,<RSCP>,<Qual>,
                  <RxLev>,<TXPWR>
    GSM:   +CPSI: GSM,Online,452-04,<LAC>,<CellID>,<ARFCN>,<RxLev dBm>,<TrackLO>,<C1-C2>
    None:  +CPSI: NO SERVICE,Online
    """
    line = _first_line(lines, "+CPSI:")
    fields = split_fields(_body(line, "+CPSI:"))
    mode = fields[0].upper().replace(" ", "_")
    state = fields[1] if len(fields) > 1 else None
    if mode == "NO_SERVICE":
        return ServingCell(None, state)
    act = _CPSI_ACT.get(mode)
    if act is None:
        raise _fail("+CPSI", line)
    plmn = _at(fields, 2)
    mcc_mnc = None
    if plmn and re.fullmatch(r"\d{3}-\d{2,3}", plmn):
        mcc_mnc = plmn.replace("-", "")

    def tenths(value):
        number = _num(value)
        return None if number is None else round(number / 10, 1)

    if mode == "LTE":
        if len(fields) < 14:
            raise _fail("+CPSI LTE", line)
        band = _at(fields, 6)
        return ServingCell(
            "lte",
            state,
            mcc_mnc,
            rsrq_db=tenths(fields[10]),
            rsrp_dbm=tenths(fields[11]),
            rssi_dbm=tenths(fields[12]),
            sinr_db=_num(fields[13]),
            cell_id=_at(fields, 4),
            area_code=_at(fields, 3),
            band=band.replace("EUTRAN-BAND", "B") if band else None,
        )
    if mode == "GSM":
        return ServingCell(
            "gsm",
            state,
            mcc_mnc,
            rssi_dbm=_num(_at(fields, 6)),
            cell_id=_at(fields, 4),
            area_code=_at(fields, 3),
        )
    return ServingCell(act, state, mcc_mnc, cell_id=_at(fields, 4), area_code=_at(fields, 3))


# --- registration and operator ------------------------------------------------------------------------

REG_STATES = {
    0: "not_registered",
    1: "home",
    2: "searching",
    3: "denied",
    4: "unknown",
    5: "roaming",
    # 6..10 are SMS-only / emergency / CSFB-not-preferred variants of home and roaming
    6: "home",
    7: "roaming",
    8: "not_registered",
    9: "home",
    10: "roaming",
}


@dataclass(frozen=True)
class Registration:
    state: str
    unsolicited: bool  # True when the line had the URC shape (no leading <n>)
    area_code: str | None = None
    cell_id: str | None = None
    act: int | None = None


def parse_creg(line: str, prefix: str = "+CREG:") -> Registration:
    """+CREG/+CGREG/+CEREG, both shapes.

    Reply to a query:  +CREG: <n>,<stat>[,<lac>,<ci>[,<AcT>]]
    Unsolicited:       +CREG: <stat>[,<lac>,<ci>[,<AcT>]]
    The two are told apart by the second field: in a reply it is <stat> (a bare number); in a URC it
    is absent or the quoted <lac>. A URC "+CREG: 1,..." can therefore never be read as "n=1".
    """
    raw = _body(line, prefix)
    fields = split_fields(raw)
    second_is_number = len(fields) >= 2 and re.fullmatch(r"\d+", fields[1]) is not None
    second_was_quoted = len(fields) >= 2 and raw.split(",")[1].strip().startswith('"')
    solicited = second_is_number and not second_was_quoted
    values = fields[1:] if solicited else fields
    stat = _int(values[0]) if values else None
    if stat is None:
        raise _fail(prefix, line)
    return Registration(
        REG_STATES.get(stat, "unknown"),
        not solicited,
        area_code=_at(values, 1),
        cell_id=_at(values, 2),
        act=_int(_at(values, 3)),
    )


def parse_cgreg(line: str) -> Registration:
    return parse_creg(line, "+CGREG:")


def parse_cereg(line: str) -> Registration:
    return parse_creg(line, "+CEREG:")


ACT_NAMES = {
    0: "gsm",
    1: "gsm",
    2: "umts",
    3: "gsm",
    4: "umts",
    5: "umts",
    6: "umts",
    7: "lte",
    8: "gsm",
    9: "nbiot",
    10: "lte",
    11: "nr",
    12: "nr",
    13: "nr",
}


@dataclass(frozen=True)
class Operator:
    mode: int
    name: str | None = None  # long alphanumeric name (format 0)
    mcc_mnc: str | None = None  # numeric (format 2)
    access_technology: str | None = None


def parse_cops(lines: list[str] | str) -> Operator:
    """+COPS: <mode>[,<format>,<oper>[,<AcT>]]; format 0 long name, 1 short name, 2 numeric."""
    line = _first_line(lines, "+COPS:")
    fields = split_fields(_body(line, "+COPS:"))
    mode = _int(fields[0])
    if mode is None:
        raise _fail("+COPS", line)
    if len(fields) < 3 or not fields[2]:
        return Operator(mode)
    fmt, oper, act = _int(fields[1]), fields[2], _int(_at(fields, 3))
    act_name = ACT_NAMES.get(act) if act is not None else None
    if fmt == 2:
        return Operator(
            mode, mcc_mnc=oper if re.fullmatch(r"\d{5,6}", oper) else None, access_technology=act_name
        )
    return Operator(mode, name=oper, access_technology=act_name)


# --- identities -----------------------------------------------------------------------------------------


def parse_cgsn(lines: list[str] | str) -> str:
    """IMEI from AT+CGSN / AT+GSN: bare digits or '+CGSN: "..."'; 15 digits with a valid Luhn check."""
    candidates = [lines] if isinstance(lines, str) else lines
    for line in candidates:
        text = line.strip()
        if text.upper().startswith("+CGSN:"):
            text = text[6:]
        text = text.strip().strip('"')
        if re.fullmatch(r"\d{15}", text) and _luhn_ok(text):
            return text
    raise RemoteDataError(MALFORMED, f"no IMEI in reply {candidates[:3]!r}")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def parse_iccid(lines: list[str] | str) -> str:
    """ICCID from +QCCID: (Quectel), +ICCID: (SIMCom AT+CICCID), +CCID: or a bare line: 19-20 digits.
    Some SIMs pad to 20 nibbles with a trailing F, which is not part of the number."""
    candidates = [lines] if isinstance(lines, str) else lines
    for line in candidates:
        text = line.strip()
        match = re.match(r"^\+(QCCID|ICCID|CICCID|CCID):\s*(.*)$", text, re.IGNORECASE)
        if match:
            text = match.group(2)
        text = text.strip().strip('"').upper().rstrip("F")
        if re.fullmatch(r"\d{19,20}", text):
            return text
    raise RemoteDataError(MALFORMED, f"no ICCID in reply {candidates[:3]!r}")


# --- time ---------------------------------------------------------------------------------------------

_TIME_RE = re.compile(
    r"^(?P<y>\d{2}|\d{4})/(?P<mo>\d{1,2})/(?P<d>\d{1,2}),(?P<h>\d{1,2}):(?P<mi>\d{1,2}):(?P<s>\d{1,2})"
    r"(?P<tz>[+-]\d{1,2})$"
)


def _parse_clock(text: str, *, utc_given: bool) -> dt.datetime:
    """'yy/MM/dd,hh:mm:ss±zz' where zz counts QUARTER hours (27.007 §8.15: +28 = UTC+7, +32 = UTC+8).

    utc_given=False: the time is local time at that offset (AT+CCLK, AT+QLTS=2).
    utc_given=True: the time is UTC and the offset only says where we are (AT+QLTS / =1, NITZ style).
    """
    match = _TIME_RE.match(text.strip().strip('"'))
    if not match:
        raise RemoteDataError(MALFORMED, f"unexpected modem time {text[:40]!r}")
    year = int(match["y"])
    if year < 100:  # modem RTC defaults are 1980 ("80/01/06") or 2000; pivot at 70
        year += 1900 if year >= 70 else 2000
    quarters = int(match["tz"])
    if not -56 <= quarters <= 56:  # UTC-14..UTC+14
        raise RemoteDataError(MALFORMED, f"time zone {quarters} quarter-hours is out of range")
    zone = dt.timezone(dt.timedelta(minutes=15 * quarters))
    try:
        naive = dt.datetime(
            year, int(match["mo"]), int(match["d"]), int(match["h"]), int(match["mi"]), int(match["s"])
        )
    except ValueError as exc:
        raise RemoteDataError(MALFORMED, f"impossible modem time {text[:40]!r}") from exc
    if utc_given:
        return naive.replace(tzinfo=dt.timezone.utc).astimezone(zone)
    return naive.replace(tzinfo=zone)


def parse_cclk(lines: list[str] | str) -> dt.datetime:
    """+CCLK: "26/11/26,12:30:00+28" -> 2026-11-26 12:30:00+07:00 (local time with its offset)."""
    return _parse_clock(_body(_first_line(lines, "+CCLK:"), "+CCLK:"), utc_given=False)


def parse_qlts(lines: list[str] | str, *, mode: int = 2) -> dt.datetime | None:
    """+QLTS: "2026/11/26,12:30:00+28,0" -> aware datetime; None when the network never sent time ('""').

    The trailing ,<dst> says whether daylight saving is in the offset already; we ignore it because the
    quarter-hour offset is the whole truth. Mode 0/1 print UTC plus the zone; mode 2 prints local time.
    """
    value = _body(_first_line(lines, "+QLTS:"), "+QLTS:").replace('"', "").strip()
    if not value:
        return None
    stamp = re.sub(r",\d+$", "", value) if value.count(",") >= 2 else value
    return _parse_clock(stamp, utc_given=mode in (0, 1))
