"""One reading of the modem: `read_status(port)` asks the family's commands and fills `ModemStatus`.

Each query stands alone: a +CME ERROR or an unknown command leaves its fields null and the others are
still read (a missing SIM must not hide the IMEI or the signal). A port that vanishes (ModemGone)
propagates: there is nothing left to read. Two timeouts in a row also propagate (the modem stopped
answering); one timeout only costs its field.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from node.errors import RemoteDataError
from node.modem import parse
from node.modem.at import ModemCommandError, ModemTimeout

STATUS_KEYS = (
    "model",
    "sim",
    "registration",
    "operator",
    "mcc_mnc",
    "access_technology",
    "rssi_dbm",
    "rsrp_dbm",
    "rsrq_db",
    "sinr_db",
    "imei",
    "iccid",
    "network_time",
)
# A modem that has not received network time shows its own RTC (often 1980 or 2000): not a time source.
PLAUSIBLE_NETWORK_TIME_FROM = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


@dataclass
class ModemStatus:
    model: str | None = None  # "EC25", "SIMCOM_SIM7600E-H": what a technician reads off the module
    sim: str | None = None  # ready | pin_required | puk_required | absent | error
    registration: str | None = None  # home | roaming | searching | denied | not_registered | unknown
    operator: str | None = None
    mcc_mnc: str | None = None
    access_technology: str | None = None  # gsm | umts | lte | nr | nbiot
    rssi_dbm: int | None = None  # whole dBm: the modems' tenths are below their accuracy
    rsrp_dbm: int | None = None
    rsrq_db: float | None = None
    sinr_db: float | None = None
    imei: str | None = None
    iccid: str | None = None
    network_time: str | None = None  # ISO 8601 with offset
    details: dict = field(default_factory=dict)  # vendor, model, revision, cell, per-command errors

    def to_json(self) -> dict:
        """Exactly the public keys (documented in docs/modem.md), null when unknown."""
        return {key: getattr(self, key) for key in STATUS_KEYS}

    @property
    def registered(self) -> bool:
        return self.registration in ("home", "roaming")


def identify(
    ati_lines: list[str], model_lines: list[str] | None = None
) -> tuple[str, str | None, str | None]:
    """-> (family, model, revision); family is 'quectel', 'simcom' or 'generic'."""
    text = " ".join(ati_lines + (model_lines or [])).upper()
    model = revision = None
    for line in ati_lines:
        lower = line.lower()
        if lower.startswith("model:"):
            model = line.split(":", 1)[1].strip()
        elif lower.startswith("revision:"):
            revision = line.split(":", 1)[1].strip()
    if model is None and model_lines:
        model = model_lines[0].strip()
    if model is None and len(ati_lines) >= 2 and not ati_lines[1].lower().startswith("revision"):
        model = ati_lines[1].strip()  # Quectel ATI: vendor, model, "Revision: ..."
    if "QUECTEL" in text or (model or "").upper().startswith(("EC2", "EG2", "EC200", "EG9", "BG9", "RM5")):
        return "quectel", model, revision
    if "SIMCOM" in text or "SIM7" in (model or "").upper():
        return "simcom", model, revision
    return "generic", model, revision


class _Asker:
    def __init__(self, port, details: dict):
        self.port = port
        self.errors = details.setdefault("errors", {})
        self.timeouts_in_a_row = 0

    def __call__(self, command: str) -> list[str] | None:
        try:
            lines = self.port.command(command)
        except ModemCommandError as exc:
            self.timeouts_in_a_row = 0
            self.errors[command] = exc.cme_code if exc.cme_code is not None else exc.text
            raise
        except ModemTimeout:
            self.timeouts_in_a_row += 1
            self.errors[command] = "timeout"
            if self.timeouts_in_a_row >= 2:
                raise
            return None
        self.timeouts_in_a_row = 0
        return lines

    def quietly(self, command: str, parser, *args, **kwargs):
        """Ask and parse; any CME error or malformed reply -> None (recorded in details.errors)."""
        try:
            lines = self(command)
        except ModemCommandError:
            return None
        if lines is None:
            return None
        try:
            return parser(lines, *args, **kwargs)
        except RemoteDataError as exc:
            self.errors[command] = exc.reason
            return None
        except (IndexError, ValueError):
            self.errors[command] = parse.MALFORMED
            return None


def _best_registration(states: list[str]) -> str | None:
    for wanted in ("home", "roaming", "searching", "denied", "not_registered", "unknown"):
        if wanted in states:
            return wanted
    return None


def read_status(port) -> ModemStatus:
    """Ask the modem on `port` (an ATPort) for everything in ModemStatus."""
    status = ModemStatus()
    ask = _Asker(port, status.details)

    ati = ask.quietly("ATI", lambda lines: lines) or []
    model_lines = None if len(ati) >= 2 else ask.quietly("AT+CGMM", lambda lines: lines)
    family, model, revision = identify(ati, model_lines)
    status.model = model
    status.details.update(family=family, revision=revision)

    try:
        status.sim = parse.parse_cpin(ask("AT+CPIN?") or [])
    except ModemCommandError as exc:
        status.sim = parse.CME_SIM_STATES.get(exc.cme_code, "error")
    except RemoteDataError:
        status.sim = None

    status.imei = ask.quietly("AT+CGSN", parse.parse_cgsn)
    if status.sim != "absent":
        iccid_command = {"quectel": "AT+QCCID", "simcom": "AT+CICCID"}.get(family, "AT+CCID")
        status.iccid = ask.quietly(iccid_command, parse.parse_iccid)
        if status.iccid is None and iccid_command != "AT+CCID":
            status.iccid = ask.quietly("AT+CCID", parse.parse_iccid)

    registrations = []
    for command, prefix in (("AT+CREG?", "+CREG:"), ("AT+CGREG?", "+CGREG:"), ("AT+CEREG?", "+CEREG:")):
        reg = ask.quietly(command, lambda lines, p=prefix: parse.parse_creg(parse._first_line(lines, p), p))
        if reg is not None:
            registrations.append(reg.state)
    status.registration = _best_registration(registrations)

    operator = ask.quietly("AT+COPS?", parse.parse_cops)
    if operator is not None:
        status.access_technology = operator.access_technology
        status.mcc_mnc = operator.mcc_mnc

    cell = None
    if family == "quectel":
        cell = ask.quietly('AT+QENG="servingcell"', parse.parse_qeng_servingcell)
    elif family == "simcom":
        cell = ask.quietly("AT+CPSI?", parse.parse_cpsi)
    if cell is not None:
        status.mcc_mnc = status.mcc_mnc or cell.mcc_mnc
        status.access_technology = cell.access_technology or status.access_technology
        status.rsrp_dbm, status.rsrq_db, status.sinr_db = cell.rsrp_dbm, cell.rsrq_db, cell.sinr_db
        status.details.update(
            serving_state=cell.state, cell_id=cell.cell_id, area_code=cell.area_code, band=cell.band
        )

    status.rssi_dbm = ask.quietly("AT+CSQ", parse.parse_csq)
    if status.rssi_dbm is None and cell is not None:
        status.rssi_dbm = cell.rssi_dbm
    if status.rsrp_dbm is None and status.access_technology in (None, "lte"):
        cesq = ask.quietly("AT+CESQ", parse.parse_cesq)
        if cesq is not None:
            status.rsrp_dbm, status.rsrq_db = cesq.rsrp_dbm, cesq.rsrq_db
            status.rssi_dbm = status.rssi_dbm if status.rssi_dbm is not None else cesq.rxlev_dbm
    status.rssi_dbm = _whole_dbm(status.rssi_dbm)
    status.rsrp_dbm = _whole_dbm(status.rsrp_dbm)

    if status.mcc_mnc is None and status.registered:
        # Only ask for the numeric form when nothing else said it; put the long-name format back after.
        if ask.quietly("AT+COPS=3,2", lambda lines: True):
            numeric = ask.quietly("AT+COPS?", parse.parse_cops)
            status.mcc_mnc = numeric.mcc_mnc if numeric else None
            ask.quietly("AT+COPS=3,0", lambda lines: True)
    status.operator = parse.operator_name(status.mcc_mnc) or (operator.name if operator else None)

    status.network_time = _network_time(ask, family)
    return status


def _whole_dbm(value: float | None) -> int | None:
    return None if value is None else int(round(value))


def _network_time(ask: _Asker, family: str) -> str | None:
    when = None
    if family == "quectel":
        when = ask.quietly("AT+QLTS=2", parse.parse_qlts, mode=2)
    if when is None:
        # AT+CCLK? is the modem's RTC; it is network time only when NITZ updates it (AT+CTZU 1 or 3).
        ctzu = ask.quietly("AT+CTZU?", lambda lines: parse.split_fields(parse._body(lines[0], "+CTZU:"))[0])
        if ctzu in ("1", "3"):
            when = ask.quietly("AT+CCLK?", parse.parse_cclk)
    if when is None or when < PLAUSIBLE_NETWORK_TIME_FROM:
        return None
    return when.isoformat(timespec="seconds")

