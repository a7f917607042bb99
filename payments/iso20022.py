"""ISO 20022 payment files: pain.001 to pay, pain.002 to learn what happened.

Most banks that take payout files at all take the ISO 20022 *customer credit
transfer initiation* (pain.001.001.03, the version SEPA and most Chinese
banks' cash-management platforms still read) and answer with a *customer
payment status report* (pain.002.001.03). Pure functions over bytes, so the
file export, the status upload and the simulated bank share one
implementation and tests can round-trip them.

Two things matter more than the rest:

* **Amounts are exact.** Minor units become decimal strings with integer
  arithmetic, and amounts read back must be a whole number of minor units;
  nothing is rounded, nothing is a float. Every currency we handle has two
  decimals (fen, cents), as everywhere in the project.
* **Files we read are hostile until parsed.** ``defusedxml`` refuses DTDs,
  entities and external references (billion laughs, XXE), and any doubt about
  a status report refuses the whole file (``StatusFileError``): applying half
  a file would confirm some payouts and silently forget others.
"""
from __future__ import annotations

import re
from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import Iterable, NoReturn, Sequence
from xml.etree import ElementTree as ET

import defusedxml
import defusedxml.ElementTree as SafeET

from payments.payout_bank import (
    InvalidInstruction,
    OutcomeStatus,
    PayoutInstruction,
    PayoutOutcome,
    check_instruction,
    check_text,
)

__all__ = [
    "PAIN_001",
    "PAIN_002",
    "StatusFileError",
    "minor_to_decimal",
    "decimal_to_minor",
    "payout_file",
    "parse_status_report",
    "status_report",
]

PAIN_001 = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"
PAIN_002 = "urn:iso:std:iso:20022:tech:xsd:pain.002.001.03"

# pain.002 transaction statuses, as our outcomes name them. ACTC (technical
# validation passed) and ACWC (accepted with change) are accepted too: the
# bank has taken the instruction, nothing is settled yet.
TX_STATUSES: dict[str, OutcomeStatus] = {
    "ACSC": "confirmed",   # AcceptedSettlementCompleted: the payee's account is credited
    "ACCP": "accepted",    # AcceptedCustomerProfile
    "ACSP": "accepted",    # AcceptedSettlementInProcess
    "ACTC": "accepted",    # AcceptedTechnicalValidation
    "ACWC": "accepted",    # AcceptedWithChange
    "PDNG": "accepted",    # Pending
    "RJCT": "failed",      # Rejected
}
# Group and payment-information statuses add two that say nothing about any
# single transaction.
GROUP_ONLY_STATUSES = frozenset({"PART", "RCVD"})
# What we write for each outcome (status_report).
REPORT_CODES = {"confirmed": "ACSC", "accepted": "ACSP", "failed": "RJCT"}

MAX35 = 35
_AMOUNT = re.compile(r"[0-9]{1,18}(\.[0-9]{1,5})?")   # ISO: 18 digits, at most 5 decimals; no sign or exponent
_CURRENCY = re.compile(r"[A-Z]{3}")
_REASON_CODE = re.compile(r"[A-Z0-9]{4}")
_MAX_ADDTL_INF = 105


class StatusFileError(ValueError):
    """A status report that must not be applied; the message says where."""


# -- amounts -------------------------------------------------------------------------


def minor_to_decimal(amount_minor: int) -> str:
    """123456 -> "1234.56", by integer arithmetic (never a float)."""
    if type(amount_minor) is not int or amount_minor < 0:
        raise ValueError("an amount in minor units is a non-negative integer")
    return f"{amount_minor // 100}.{amount_minor % 100:02d}"


def decimal_to_minor(text: str) -> int:
    """ "1234.56" (or "1234.560") -> 123456, exactly; ``ValueError`` for a
    sign, an exponent, or a fraction of a minor unit."""
    if not isinstance(text, str) or not _AMOUNT.fullmatch(text):
        raise ValueError(f"not a decimal amount: {text!r}")
    minor = Decimal(text).scaleb(2)   # exact: at most 23 significant digits, within the default 28
    if minor != minor.to_integral_value():
        raise ValueError(f"not a whole number of minor units: {text!r}")
    return int(minor)


# -- pain.001: what we send ----------------------------------------------------------


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = text
    return element


def _path(parent: ET.Element, path: str, text: str, **attrib: str) -> ET.Element:
    """``_path(x, "A/B/C", "t")``: nested elements, the last one holding ``t``."""
    *outer, last = path.split("/")
    for tag in outer:
        parent = _sub(parent, tag)
    return _sub(parent, last, text, **attrib)


def _datetime(moment: datetime, name: str) -> str:
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return moment.isoformat(timespec="seconds")


def _max35(value: object, name: str) -> str:
    """An identifier ISO 20022 types Max35Text (MsgId, PmtInfId, MmbId...)."""
    return check_text(name, value, max_len=MAX35)


def _to_bytes(root: ET.Element) -> bytes:
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def payout_file(
    instructions: Sequence[PayoutInstruction],
    *,
    message_id: str,
    created_at: datetime,
    debtor_name: str,
    debtor_account: str,
    debtor_bank_code: str,
    execution_date: date,
) -> bytes:
    """A pain.001.001.03 document paying every instruction from the debtor
    (custody) account on ``execution_date``: one payment-information block,
    one credit transfer per instruction, ``EndToEndId`` = our reference.

    ``ValueError`` (naming the field) rather than a file the bank would
    refuse: no instructions, a bad one, a reference twice (it would pay
    twice), ids over 35 characters.
    """
    if not instructions:
        raise ValueError("a payout file needs at least one instruction")
    seen: set[str] = set()
    for index, instruction in enumerate(instructions):
        try:
            check_instruction(instruction)
        except InvalidInstruction as exc:
            raise InvalidInstruction(exc.field, f"{exc.reason} (instruction {index + 1}, "
                                                f"reference {instruction.reference!r})") from None
        if instruction.reference in seen:
            raise ValueError(f"reference {instruction.reference!r} appears twice (instruction {index + 1})")
        seen.add(instruction.reference)
    message_id = _max35(message_id, "message_id")
    created = _datetime(created_at, "created_at")
    if not isinstance(execution_date, date) or isinstance(execution_date, datetime):
        raise ValueError("execution_date must be a date (not a datetime)")
    check_text("debtor_name", debtor_name, max_len=140)
    if not isinstance(debtor_account, str) or not re.fullmatch(r"[!-~]{1,34}", debtor_account):
        raise ValueError("debtor_account must be 1 to 34 characters without spaces")
    debtor_bank_code = _max35(debtor_bank_code, "debtor_bank_code")

    total_minor = sum(i.amount_minor for i in instructions)
    if total_minor >= 10**18:
        raise ValueError("the file's control sum has more than 18 digits: split it")
    count, control_sum = str(len(instructions)), minor_to_decimal(total_minor)

    # The namespace as a plain xmlns attribute: children inherit it as the
    # default namespace, and nothing touches ElementTree's global prefix table.
    root = ET.Element("Document", {"xmlns": PAIN_001})
    initiation = _sub(root, "CstmrCdtTrfInitn")
    group = _sub(initiation, "GrpHdr")
    _sub(group, "MsgId", message_id)
    _sub(group, "CreDtTm", created)
    _sub(group, "NbOfTxs", count)
    _sub(group, "CtrlSum", control_sum)
    _path(group, "InitgPty/Nm", debtor_name)

    payment = _sub(initiation, "PmtInf")
    _sub(payment, "PmtInfId", message_id)
    _sub(payment, "PmtMtd", "TRF")
    _sub(payment, "NbOfTxs", count)
    _sub(payment, "CtrlSum", control_sum)
    _sub(payment, "ReqdExctnDt", execution_date.isoformat())
    _path(payment, "Dbtr/Nm", debtor_name)
    _path(payment, "DbtrAcct/Id/Othr/Id", debtor_account)
    _path(payment, "DbtrAgt/FinInstnId/ClrSysMmbId/MmbId", debtor_bank_code)

    for i in instructions:
        transfer = _sub(payment, "CdtTrfTxInf")
        _path(transfer, "PmtId/EndToEndId", i.reference)
        _path(transfer, "Amt/InstdAmt", minor_to_decimal(i.amount_minor), Ccy=i.currency)
        institution = _sub(_sub(transfer, "CdtrAgt"), "FinInstnId")
        _path(institution, "ClrSysMmbId/MmbId", i.payee_bank_code)
        if i.payee_bank_name:
            _sub(institution, "Nm", i.payee_bank_name)
        _path(transfer, "Cdtr/Nm", i.payee_name)
        _path(transfer, "CdtrAcct/Id/Othr/Id", i.payee_account)
        if i.remark:
            _path(transfer, "RmtInf/Ustrd", i.remark)
    return _to_bytes(root)


# -- pain.002: what the bank answers ---------------------------------------------------


def _reason_elements(parent: ET.Element, reason: str | None) -> None:
    """``"AC04: closed account"`` -> Rsn/Cd AC04 + AddtlInf; free text goes
    under the ISO code NARR (narrative)."""
    if not reason:
        return
    code, sep, text = reason.partition(": ")
    if not (_REASON_CODE.fullmatch(code) and (sep or not text)):
        code, text = "NARR", reason
    info = _sub(parent, "StsRsnInf")
    _path(info, "Rsn/Cd", code)
    for start in range(0, len(text), _MAX_ADDTL_INF):
        _sub(info, "AddtlInf", text[start:start + _MAX_ADDTL_INF])


def status_report(
    outcomes: Iterable[PayoutOutcome],
    *,
    message_id: str,
    created_at: datetime,
    original_message_id: str,
    currency: str = "CNY",
) -> bytes:
    """A pain.002.001.03 document reporting ``outcomes`` of the pain.001
    ``original_message_id``. Written by the simulated bank (and tests); a
    real bank writes its own. ``currency`` labels the amounts (one report,
    one currency, as one payout file). ``unknown`` cannot be reported."""
    outcomes = list(outcomes)
    message_id = _max35(message_id, "message_id")
    original_message_id = _max35(original_message_id, "original_message_id")
    created = _datetime(created_at, "created_at")
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise ValueError("currency must be three uppercase letters")

    root = ET.Element("Document", {"xmlns": PAIN_002})
    report = _sub(root, "CstmrPmtStsRpt")
    group = _sub(report, "GrpHdr")
    _sub(group, "MsgId", message_id)
    _sub(group, "CreDtTm", created)
    original = _sub(report, "OrgnlGrpInfAndSts")
    _sub(original, "OrgnlMsgId", original_message_id)
    _sub(original, "OrgnlMsgNmId", "pain.001.001.03")
    payment = _sub(report, "OrgnlPmtInfAndSts")
    _sub(payment, "OrgnlPmtInfId", original_message_id)
    for outcome in outcomes:
        code = REPORT_CODES.get(outcome.status)
        if code is None:
            raise ValueError(f"{outcome.reference}: status {outcome.status!r} cannot be reported")
        transaction = _sub(payment, "TxInfAndSts")
        _sub(transaction, "OrgnlEndToEndId", _max35(outcome.reference, "reference"))
        _sub(transaction, "TxSts", code)
        _reason_elements(transaction, outcome.reason)
        if outcome.occurred_at is not None:
            _sub(transaction, "AccptncDtTm", _datetime(outcome.occurred_at, "occurred_at"))
        if outcome.bank_reference:
            _sub(transaction, "AcctSvcrRef", _max35(outcome.bank_reference, "bank_reference"))
        if outcome.amount_minor is not None:
            _path(transaction, "OrgnlTxRef/Amt/InstdAmt", minor_to_decimal(outcome.amount_minor), Ccy=currency)
    return _to_bytes(root)


_NS = {"p": PAIN_002}


def _q(path: str) -> str:
    """ "A/B" -> "p:A/p:B" (ElementTree's namespaced paths)."""
    return "/".join(f"p:{step}" for step in path.split("/"))


def _bad(where: str, why: str) -> NoReturn:
    raise StatusFileError(f"{where}: {why}")


def _text(element: ET.Element, path: str) -> str | None:
    """The stripped text at ``path``; None when absent or empty."""
    found = element.find(_q(path), _NS)
    value = (found.text or "").strip() if found is not None else ""
    return value or None


def _required(element: ET.Element, path: str, where: str) -> str:
    value = _text(element, path)
    if value is None:
        _bad(where, f"{path} is missing or empty")
    return value


def _status(code: str | None, where: str, *, group_level: bool) -> str | None:
    if code is None:
        return None
    if code not in TX_STATUSES and not (group_level and code in GROUP_ONLY_STATUSES):
        _bad(where, f"unknown status code {code!r}")
    return code


def _reason(parent: ET.Element) -> str | None:
    """StsRsnInf as ``"CODE: additional text"`` (several joined by "; ")."""
    parts = []
    for info in parent.findall("p:StsRsnInf", _NS):
        code = _text(info, "Rsn/Cd") or _text(info, "Rsn/Prtry")
        extra = " ".join(
            (e.text or "").strip() for e in info.findall("p:AddtlInf", _NS) if (e.text or "").strip()
        )
        part = ": ".join(p for p in (code, extra) if p)
        if part:
            parts.append(part)
    return "; ".join(parts) or None


def _parse(data: bytes) -> ET.Element:
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError("a status report is bytes, as received")
    try:
        # forbid_dtd: a pain.002 has no business with a DOCTYPE, so any DTD
        # is refused before an entity or external reference can be declared.
        return SafeET.fromstring(bytes(data), forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise StatusFileError(f"refused: the file declares a DTD, entity or external reference ({exc})") from None
    except ET.ParseError as exc:
        line, column = exc.position
        raise StatusFileError(f"line {line}, column {column}: not well-formed XML ({exc})") from None


def _moment(text: str | None, where: str, naive_tz: tzinfo | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        _bad(where, f"AccptncDtTm is not an ISO date-time: {text!r}")
    if moment.tzinfo is None:
        if naive_tz is None:
            _bad(where, f"AccptncDtTm has no UTC offset: {text!r}")
        moment = moment.replace(tzinfo=naive_tz)
    return moment


def parse_status_report(data: bytes, *, naive_tz: tzinfo | None = None) -> list[PayoutOutcome]:
    """The outcomes of a pain.002.001.03 status report, in document order.

    A transaction without its own ``TxSts`` takes its block's or the group's
    status. ``StatusFileError`` for anything that cannot be applied whole:
    not well-formed, a DTD or entity, another namespace or message, unknown
    status codes, a reference missing or twice, an amount that is not a
    whole number of minor units, and a group or block *settled or rejected
    as a whole* without per-transaction detail (we could not tell which
    payouts it means). Times without an offset are refused unless
    ``naive_tz`` says whose local time they are.
    """
    root = _parse(data)
    expected = f"{{{PAIN_002}}}Document"
    if root.tag != expected:
        _bad("root element", f"is {root.tag!r}; expected Document in namespace {PAIN_002}")
    report = root.find("p:CstmrPmtStsRpt", _NS)
    if report is None:
        _bad("Document", "has no CstmrPmtStsRpt (not a customer payment status report)")
    _required(report, "GrpHdr/MsgId", "GrpHdr")
    original = report.find("p:OrgnlGrpInfAndSts", _NS)
    if original is None:
        _bad("CstmrPmtStsRpt", "has no OrgnlGrpInfAndSts")
    group_where = "OrgnlGrpInfAndSts"
    group_status = _status(_text(original, "GrpSts"), group_where, group_level=True)
    group_reason = _reason(original)

    outcomes: list[PayoutOutcome] = []
    seen: set[str] = set()
    blocks = report.findall("p:OrgnlPmtInfAndSts", _NS)
    if not blocks and group_status in ("ACSC", "RJCT"):
        _bad(group_where, f"the whole file is {group_status} without per-transaction detail; "
                          "apply it by hand from the original file")
    number = 0
    for block_index, block in enumerate(blocks, start=1):
        block_where = f"OrgnlPmtInfAndSts #{block_index}"
        block_status = _status(_text(block, "PmtInfSts"), block_where, group_level=True)
        block_reason = _reason(block)
        inherited = block_status or group_status
        transactions = block.findall("p:TxInfAndSts", _NS)
        if not transactions and inherited in ("ACSC", "RJCT"):
            _bad(block_where, f"is {inherited} without per-transaction detail; "
                              "apply it by hand from the original file")
        for transaction in transactions:
            number += 1
            where = f"TxInfAndSts #{number}"
            reference = _required(transaction, "OrgnlEndToEndId", where)
            where = f"{where} ({reference})"
            if reference in seen:
                _bad(where, "the same OrgnlEndToEndId appears twice")
            seen.add(reference)
            code = _status(_text(transaction, "TxSts"), where, group_level=False)
            if code is None:
                if inherited is None or inherited in GROUP_ONLY_STATUSES:
                    _bad(where, "has no TxSts, and its block and group give no transaction status")
                code = inherited
            status = TX_STATUSES[code]
            reason = _reason(transaction) or (block_reason or group_reason if code == "RJCT" else None)
            amount_minor = None
            amount = transaction.find(_q("OrgnlTxRef/Amt/InstdAmt"), _NS)
            if amount is not None:
                if not _CURRENCY.fullmatch(amount.get("Ccy", "")):
                    _bad(where, "InstdAmt needs a Ccy of three uppercase letters")
                try:
                    amount_minor = decimal_to_minor((amount.text or "").strip())
                except ValueError as exc:
                    _bad(where, f"InstdAmt: {exc}")
            outcomes.append(PayoutOutcome(
                reference=reference,
                status=status,
                bank_reference=_text(transaction, "AcctSvcrRef"),
                reason=reason,
                occurred_at=_moment(_text(transaction, "AccptncDtTm"), where, naive_tz),
                amount_minor=amount_minor,
            ))
    return outcomes
