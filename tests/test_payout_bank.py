"""The payout side of the bank (issue 6): the instruction checks, the ISO
20022 files (pain.001 out, pain.002 back, exact amounts, escaping, hostile
XML refused) and the simulated custody bank (idempotent submission,
settlement on a clock we drive, failures, signed callbacks)."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import defusedxml.ElementTree as SafeET
import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments import iso20022, signing
from payments.gateway import CallbackRejected, CallbackRequest
from payments.iso20022 import PAIN_001, PAIN_002, StatusFileError
from payments.payout_bank import (
    InvalidInstruction,
    PayoutBank,
    PayoutInstruction,
    PayoutOutcome,
    check_instruction,
)
from payments.sandbox_bank import SIGNATURE_HEADER, SimulatedBank

SECRET = b"custody-bank-secret"
T0 = datetime(2024, 11, 26, 2, 30, tzinfo=timezone.utc)
NS1 = {"p": PAIN_001}


def instruction(reference: str = "po_1", **changes) -> PayoutInstruction:
    base = PayoutInstruction(
        reference=reference,
        amount_minor=12_345,
        currency="CNY",
        payee_name="上海某某商贸有限公司",
        payee_account="6222020200001234",
        payee_bank_code="102100099996",
        payee_bank_name="中国工商银行上海分行",
        remark="11月结算",
    )
    return replace(base, **changes)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs) -> None:
        self.now += timedelta(**kwargs)


def make_file(instructions, **overrides) -> bytes:
    kwargs = dict(
        message_id="pf_20241126_1",
        created_at=T0,
        debtor_name="Channel Ledger 资金监管户",
        debtor_account="31001500000050012345",
        debtor_bank_code="105290036005",
        execution_date=date(2024, 11, 27),
    )
    kwargs.update(overrides)
    return iso20022.payout_file(instructions, **kwargs)


def one(root, path: str) -> str:
    found = root.findall(path, NS1)
    assert len(found) == 1, path
    return found[0].text


# -- check_instruction ---------------------------------------------------------------


def test_a_good_instruction_passes():
    check_instruction(instruction())
    check_instruction(instruction(payee_bank_name="", remark=""))   # both optional


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"amount_minor": 0}, "amount_minor"),
        ({"amount_minor": -5}, "amount_minor"),
        ({"amount_minor": 12.5}, "amount_minor"),
        ({"amount_minor": True}, "amount_minor"),
        ({"amount_minor": Decimal("100")}, "amount_minor"),
        ({"amount_minor": 10**18}, "amount_minor"),
        ({"currency": "cny"}, "currency"),
        ({"currency": "CN"}, "currency"),
        ({"currency": "CNY\n"}, "currency"),
        ({"payee_account": "1234567"}, "payee_account"),          # 7 digits
        ({"payee_account": "1" * 35}, "payee_account"),
        ({"payee_account": "6222 0202 0000 1234"}, "payee_account"),
        ({"payee_account": "١٢٣٤٥٦٧٨٩"}, "payee_account"),        # Arabic-Indic digits
        ({"payee_bank_code": ""}, "payee_bank_code"),
        ({"payee_bank_code": "   "}, "payee_bank_code"),
        ({"payee_name": ""}, "payee_name"),
        ({"payee_name": "x" * 71}, "payee_name"),
        ({"payee_name": "Bad\x00Name"}, "payee_name"),
        ({"payee_name": "two\nlines"}, "payee_name"),
        ({"remark": "r" * 141}, "remark"),
        ({"remark": "bell\x07"}, "remark"),
        ({"reference": ""}, "reference"),
        ({"reference": "po_" + "x" * 33}, "reference"),           # 36 > Max35Text
        ({"reference": "po 1"}, "reference"),
    ],
)
def test_check_instruction_names_the_bad_field(changes, field):
    with pytest.raises(InvalidInstruction) as caught:
        check_instruction(instruction(**changes))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}:")
    assert isinstance(caught.value, ValueError)


def test_limits_are_inclusive():
    check_instruction(instruction(payee_name="名" * 70, payee_account="1" * 8, amount_minor=10**18 - 1))
    check_instruction(instruction(payee_account="9" * 34, reference="po_" + "a" * 32))


# -- pain.001 ------------------------------------------------------------------------


def test_payout_file_is_a_pain001_with_totals_and_one_transfer_per_instruction():
    items = [
        instruction("po_a", amount_minor=1),                      # 1 fen
        instruction("po_b", amount_minor=10**12),                 # 10 billion yuan
        instruction("po_c", amount_minor=99, remark=""),
    ]
    root = SafeET.fromstring(make_file(items))
    assert root.tag == f"{{{PAIN_001}}}Document"
    assert one(root, "p:CstmrCdtTrfInitn/p:GrpHdr/p:MsgId") == "pf_20241126_1"
    assert one(root, "p:CstmrCdtTrfInitn/p:GrpHdr/p:CreDtTm") == "2024-11-26T02:30:00+00:00"
    assert one(root, "p:CstmrCdtTrfInitn/p:GrpHdr/p:NbOfTxs") == "3"
    # 0.01 + 10000000000.00 + 0.99: exact, where a float sum would print 10000000001.000002
    assert one(root, "p:CstmrCdtTrfInitn/p:GrpHdr/p:CtrlSum") == "10000000001.00"
    pmt = root.find("p:CstmrCdtTrfInitn/p:PmtInf", NS1)
    assert one(pmt, "p:PmtMtd") == "TRF"
    assert one(pmt, "p:CtrlSum") == "10000000001.00"
    assert one(pmt, "p:ReqdExctnDt") == "2024-11-27"
    assert one(pmt, "p:DbtrAcct/p:Id/p:Othr/p:Id") == "31001500000050012345"
    assert one(pmt, "p:DbtrAgt/p:FinInstnId/p:ClrSysMmbId/p:MmbId") == "105290036005"
    transfers = pmt.findall("p:CdtTrfTxInf", NS1)
    assert [one(t, "p:PmtId/p:EndToEndId") for t in transfers] == ["po_a", "po_b", "po_c"]
    amounts = [t.find("p:Amt/p:InstdAmt", NS1) for t in transfers]
    assert [a.text for a in amounts] == ["0.01", "10000000000.00", "0.99"]
    assert {a.get("Ccy") for a in amounts} == {"CNY"}
    first = transfers[0]
    assert one(first, "p:CdtrAgt/p:FinInstnId/p:ClrSysMmbId/p:MmbId") == "102100099996"
    assert one(first, "p:CdtrAgt/p:FinInstnId/p:Nm") == "中国工商银行上海分行"
    assert one(first, "p:CdtrAcct/p:Id/p:Othr/p:Id") == "6222020200001234"
    assert one(first, "p:RmtInf/p:Ustrd") == "11月结算"
    assert transfers[2].find("p:RmtInf", NS1) is None     # no empty Ustrd (Max140Text is 1..140)


def test_names_with_ampersands_and_chinese_are_escaped_and_survive():
    name = "张三 & 李四 <贸易> \"合伙\""
    data = make_file([instruction(payee_name=name, remark="a&b")], debtor_name="监管户 & Co")
    assert b"&amp;" in data and b"& " not in data.replace(b"&amp;", b"")
    assert "张三".encode() in data                    # UTF-8, not numeric character references
    root = SafeET.fromstring(data)
    assert one(root, ".//p:Cdtr/p:Nm") == name
    assert one(root, ".//p:RmtInf/p:Ustrd") == "a&b"
    assert one(root, ".//p:Dbtr/p:Nm") == "监管户 & Co"


def test_amounts_beyond_float_precision_stay_exact():
    # 2**53 < 10**17: a float would turn these into ...0.00 and 10000000000000000.00
    items = [instruction("po_a", amount_minor=10**17 + 1), instruction("po_b", amount_minor=10**18 - 10**17 - 2)]
    root = SafeET.fromstring(make_file(items))
    assert [e.text for e in root.iterfind(".//p:InstdAmt", NS1)] == ["1000000000000000.01", "8999999999999999.98"]
    assert one(root, "p:CstmrCdtTrfInitn/p:GrpHdr/p:CtrlSum") == "9999999999999999.99"
    with pytest.raises(ValueError, match="18 digits"):
        make_file(items + [instruction("po_c", amount_minor=1)])


@given(st.lists(st.integers(min_value=1, max_value=10**17), min_size=1, max_size=9))
def test_control_sum_is_the_exact_sum(amounts):
    items = [instruction(f"po_{n}", amount_minor=a) for n, a in enumerate(amounts)]
    root = SafeET.fromstring(make_file(items))
    control = Decimal(one(root, "p:CstmrCdtTrfInitn/p:GrpHdr/p:CtrlSum"))
    assert control * 100 == sum(amounts)
    parsed = [Decimal(e.text) * 100 for e in root.iterfind(".//p:InstdAmt", NS1)]
    assert parsed == amounts


@pytest.mark.parametrize(
    "items, overrides, message",
    [
        ([], {}, "at least one"),
        ([instruction("po_1"), instruction("po_1")], {}, "appears twice"),
        ([instruction(amount_minor=0)], {}, "amount_minor"),
        ([instruction()], {"message_id": "pof_" + "0" * 32}, "message_id"),       # 36 characters
        ([instruction()], {"created_at": datetime(2024, 11, 26)}, "created_at"),
        ([instruction()], {"execution_date": T0}, "execution_date"),
        ([instruction()], {"debtor_account": "3100 1500"}, "debtor_account"),
        ([instruction()], {"debtor_bank_code": ""}, "debtor_bank_code"),
    ],
)
def test_payout_file_refuses_what_a_bank_would(items, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_file(items, **overrides)


def test_a_bad_instruction_in_a_file_names_field_and_reference():
    with pytest.raises(InvalidInstruction) as caught:
        make_file([instruction("po_ok"), instruction("po_bad", payee_account="12")])
    assert caught.value.field == "payee_account"
    assert "po_bad" in str(caught.value) and "instruction 2" in str(caught.value)


# -- pain.002 ------------------------------------------------------------------------


OUTCOMES = [
    PayoutOutcome("po_a", "confirmed", "SB1", None, T0, 1),
    PayoutOutcome("po_b", "failed", "SB2", "AC04: closed account number", T0 + timedelta(hours=1), 10**12),
    PayoutOutcome("po_c", "accepted", None, None, None, None),
    PayoutOutcome("po_d", "failed", None, "AC01", T0, 500),
]


def test_status_report_round_trips():
    data = iso20022.status_report(OUTCOMES, message_id="SR1", created_at=T0, original_message_id="pf_1")
    assert SafeET.fromstring(data).tag == f"{{{PAIN_002}}}Document"
    assert iso20022.parse_status_report(data) == OUTCOMES


def test_free_text_reasons_travel_as_narrative():
    outcome = PayoutOutcome("po_x", "failed", None, "the bank said no & meant it", None, None)
    data = iso20022.status_report([outcome], message_id="SR1", created_at=T0, original_message_id="pf_1")
    assert b"<Cd>NARR</Cd>" in data
    [back] = iso20022.parse_status_report(data)
    assert back.reason == "NARR: the bank said no & meant it"


def test_unknown_outcomes_cannot_be_reported():
    with pytest.raises(ValueError, match="unknown"):
        iso20022.status_report([PayoutOutcome("po_x", "unknown", None, None, None, None)],
                               message_id="SR1", created_at=T0, original_message_id="pf_1")


def pain002(transactions: str, *, group: str = "", block: str = "", namespace: str = PAIN_002) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="{namespace}">
  <CstmrPmtStsRpt>
    <GrpHdr><MsgId>BANK-SR-1</MsgId><CreDtTm>2024-11-26T18:00:00+08:00</CreDtTm></GrpHdr>
    <OrgnlGrpInfAndSts>
      <OrgnlMsgId>pf_1</OrgnlMsgId><OrgnlMsgNmId>pain.001.001.03</OrgnlMsgNmId>{group}
    </OrgnlGrpInfAndSts>
    <OrgnlPmtInfAndSts><OrgnlPmtInfId>pf_1</OrgnlPmtInfId>{block}{transactions}</OrgnlPmtInfAndSts>
  </CstmrPmtStsRpt>
</Document>""".encode()


def tx(reference: str, status: str | None = "ACSC", extra: str = "") -> str:
    sts = f"<TxSts>{status}</TxSts>" if status else ""
    return f"<TxInfAndSts><OrgnlEndToEndId>{reference}</OrgnlEndToEndId>{sts}{extra}</TxInfAndSts>"


def test_a_bank_written_report_is_read_with_statuses_reasons_times_and_amounts():
    data = pain002(
        tx("po_1", "ACSC", "<AccptncDtTm>2024-11-26T17:59:00+08:00</AccptncDtTm><AcctSvcrRef>B-1</AcctSvcrRef>"
                           "<OrgnlTxRef><Amt><InstdAmt Ccy=\"CNY\">1234.50</InstdAmt></Amt></OrgnlTxRef>")
        + tx("po_2", "RJCT", "<StsRsnInf><Rsn><Cd>AC04</Cd></Rsn><AddtlInf>账户已销户</AddtlInf></StsRsnInf>")
        + tx("po_3", "ACSP") + tx("po_4", "PDNG") + tx("po_5", "ACCP")
        + tx("po_6", "RJCT", "<StsRsnInf><Rsn><Prtry>E0042</Prtry></Rsn></StsRsnInf>")
    )
    got = {o.reference: o for o in iso20022.parse_status_report(data)}
    assert [got[r].status for r in ("po_1", "po_2", "po_3", "po_4", "po_5", "po_6")] == [
        "confirmed", "failed", "accepted", "accepted", "accepted", "failed"]
    assert got["po_1"].amount_minor == 123450
    assert got["po_1"].bank_reference == "B-1"
    assert got["po_1"].occurred_at == datetime(2024, 11, 26, 9, 59, tzinfo=timezone.utc)
    assert got["po_2"].reason == "AC04: 账户已销户"
    assert got["po_6"].reason == "E0042"
    assert got["po_1"].reason is None and got["po_3"].amount_minor is None


def test_a_transaction_without_txsts_takes_its_blocks_status_and_reason():
    block = "<PmtInfSts>RJCT</PmtInfSts><StsRsnInf><Rsn><Cd>AM04</Cd></Rsn></StsRsnInf>"
    [outcome] = iso20022.parse_status_report(pain002(tx("po_1", None), block=block))
    assert (outcome.status, outcome.reason) == ("failed", "AM04")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"<Document><unclosed></Document>", "line 1"),
        (b"", "line 1"),
        (pain002(tx("po_1"), namespace=PAIN_001), "namespace"),
        (pain002(tx("po_1"), namespace="urn:iso:std:iso:20022:tech:xsd:pain.002.001.10"), "namespace"),
        (pain002(tx("po_1", "ACXX")), "unknown status code 'ACXX'"),
        (pain002(tx("po_1", "PART")), "unknown status code 'PART'"),          # a group status only
        (pain002(tx("po_1") + tx("po_1")), "appears twice"),
        (pain002("<TxInfAndSts><TxSts>ACSC</TxSts></TxInfAndSts>"), "OrgnlEndToEndId is missing"),
        (pain002(tx("po_1", None)), "has no TxSts"),
        (pain002(tx("po_1", None), group="<GrpSts>PART</GrpSts>"), "has no TxSts"),
        (pain002(tx("po_1", extra="<OrgnlTxRef><Amt><InstdAmt Ccy=\"CNY\">1.005</InstdAmt></Amt></OrgnlTxRef>")),
         "whole number"),
        (pain002(tx("po_1", extra="<OrgnlTxRef><Amt><InstdAmt Ccy=\"CNY\">-1.00</InstdAmt></Amt></OrgnlTxRef>")),
         "InstdAmt"),
        (pain002(tx("po_1", extra="<OrgnlTxRef><Amt><InstdAmt Ccy=\"CNY\">1E3</InstdAmt></Amt></OrgnlTxRef>")),
         "InstdAmt"),
        (pain002(tx("po_1", extra="<OrgnlTxRef><Amt><InstdAmt>1.00</InstdAmt></Amt></OrgnlTxRef>")), "Ccy"),
        (pain002(tx("po_1", extra="<AccptncDtTm>2024-11-26T18:00:00</AccptncDtTm>")), "no UTC offset"),
        (pain002(tx("po_1", extra="<AccptncDtTm>yesterday</AccptncDtTm>")), "AccptncDtTm"),
        (pain002("", block="<PmtInfSts>ACSC</PmtInfSts>"), "without per-transaction detail"),
    ],
)
def test_malformed_status_reports_are_refused_whole(data, message):
    with pytest.raises(StatusFileError, match=message):
        iso20022.parse_status_report(data)


def test_a_well_formedness_error_says_where():
    data = pain002(tx("po_1")).replace(b"</TxSts>", b"</Tx>")
    with pytest.raises(StatusFileError, match=r"line 8, column \d+"):
        iso20022.parse_status_report(data)


def test_naive_times_are_read_in_the_zone_the_caller_names():
    cst = timezone(timedelta(hours=8))
    data = pain002(tx("po_1", extra="<AccptncDtTm>2024-11-26T18:00:00</AccptncDtTm>"))
    [outcome] = iso20022.parse_status_report(data, naive_tz=cst)
    assert outcome.occurred_at == datetime(2024, 11, 26, 10, 0, tzinfo=timezone.utc)


XXE_FILE = b"""<?xml version="1.0"?>
<!DOCTYPE Document [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.03"><CstmrPmtStsRpt>
<GrpHdr><MsgId>&xxe;</MsgId></GrpHdr>
<OrgnlGrpInfAndSts><OrgnlMsgId>x</OrgnlMsgId></OrgnlGrpInfAndSts>
<OrgnlPmtInfAndSts><TxInfAndSts><OrgnlEndToEndId>&xxe;</OrgnlEndToEndId><TxSts>ACSC</TxSts></TxInfAndSts>
</OrgnlPmtInfAndSts></CstmrPmtStsRpt></Document>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.03">&lol3;</Document>"""

PLAIN_DOCTYPE = b"""<?xml version="1.0"?>
<!DOCTYPE Document>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.03"/>"""


@pytest.mark.parametrize("data", [XXE_FILE, BILLION_LAUGHS, PLAIN_DOCTYPE], ids=["xxe", "laughs", "doctype"])
def test_dtds_and_entities_are_refused_not_expanded(data):
    with pytest.raises(StatusFileError, match="refused") as caught:
        iso20022.parse_status_report(data)
    assert "root:" not in str(caught.value)       # nothing of /etc/passwd leaks into the message


def test_a_status_report_must_be_bytes():
    with pytest.raises(TypeError):
        iso20022.parse_status_report(pain002(tx("po_1")).decode())


@pytest.mark.parametrize("text, minor", [("0.01", 1), ("1", 100), ("1.5", 150), ("12.30000", 1230),
                                         ("10000000000.00", 10**12)])
def test_decimal_to_minor_is_exact(text, minor):
    assert iso20022.decimal_to_minor(text) == minor
    assert iso20022.decimal_to_minor(iso20022.minor_to_decimal(minor)) == minor


# -- the simulated bank ----------------------------------------------------------------


def bank(clock: Clock | None = None, **kwargs) -> SimulatedBank:
    return SimulatedBank(SECRET, clock=clock or Clock(), **kwargs)


def test_the_simulated_bank_is_a_payout_bank():
    assert isinstance(bank(), PayoutBank)
    assert bank().name == "sandbox-bank" and bank(name="custody").name == "custody"


def test_submit_answers_each_instruction_in_order_and_refuses_bad_ones():
    b = bank(settle_after=timedelta(minutes=1))
    results = b.submit([instruction("po_1"), instruction("po_2", payee_account="12"), instruction("po_3")])
    assert [r.reference for r in results] == ["po_1", "po_2", "po_3"]
    assert [r.accepted for r in results] == [True, False, True]
    assert results[0].bank_reference and results[0].bank_reference != results[2].bank_reference
    assert results[1].bank_reference is None and "payee_account" in results[1].reason
    assert b.query("po_1").status == "accepted"
    assert b.query("po_2").status == "unknown"        # a refused instruction is not kept
    assert b.query("po_never") == PayoutOutcome("po_never", "unknown", None, None, None, None)


def test_resubmitting_a_reference_returns_the_first_answer_and_pays_once():
    clock = Clock()
    b = bank(clock)
    [first] = b.submit([instruction("po_1", amount_minor=100)])
    [again, other] = b.submit([instruction("po_1", amount_minor=100), instruction("po_2")])
    assert again == first
    # Even a changed resubmission is the first instruction: never a second payment.
    [changed] = b.submit([instruction("po_1", amount_minor=999)])
    assert changed == first
    settled = b.settle()
    assert [o.reference for o in settled] == ["po_1", "po_2"]
    assert settled[0].amount_minor == 100
    assert b.settle() == []                            # nothing changes twice
    [after] = b.submit([instruction("po_1", amount_minor=100)])
    assert after == first and b.query("po_1").status == "confirmed"


def test_a_reference_twice_in_one_batch_is_one_payment():
    b = bank()
    first, second = b.submit([instruction("po_1"), instruction("po_1")])
    assert first == second
    assert len(b.settle()) == 1


def test_settlement_waits_for_settle_after_on_the_banks_clock():
    clock = Clock()
    b = bank(clock, settle_after=timedelta(minutes=10))
    b.submit([instruction("po_early")])
    clock.advance(minutes=5)
    b.submit([instruction("po_late")])
    clock.advance(minutes=4, seconds=59)
    assert b.settle() == []
    assert b.query("po_early").status == "accepted"
    clock.advance(seconds=1)                            # exactly 10 minutes after po_early
    [early] = b.settle()
    assert (early.reference, early.status, early.occurred_at) == ("po_early", "confirmed", clock.now)
    assert early.bank_reference == b.query("po_early").bank_reference
    assert b.query("po_late").status == "accepted"
    clock.advance(minutes=5)
    assert [o.reference for o in b.settle()] == ["po_late"]


def test_query_sees_settlement_once_due_and_settle_still_reports_it_once():
    clock = Clock()
    b = bank(clock, settle_after=timedelta(seconds=30))
    b.submit([instruction("po_1")])
    assert b.query("po_1").status == "accepted"
    clock.advance(seconds=30)
    assert b.query("po_1").status == "confirmed"         # polling works with nobody calling settle()
    assert [o.reference for o in b.settle()] == ["po_1"]
    assert b.settle() == []


def test_failure_accounts_and_the_0000_suffix_fail_with_reason_codes():
    b = bank(fail_accounts={"6222020200005555": "AC04"})
    b.submit([
        instruction("po_closed", payee_account="6222020200005555"),
        instruction("po_invalid", payee_account="6222020200000000"),
        instruction("po_ok", payee_account="6222020200000001"),
    ])
    got = {o.reference: o for o in b.settle()}
    assert got["po_closed"].status == "failed" and got["po_closed"].reason.startswith("AC04")
    assert got["po_invalid"].status == "failed" and got["po_invalid"].reason.startswith("AC01")
    assert got["po_ok"].status == "confirmed" and got["po_ok"].reason is None
    assert b.query("po_closed") == got["po_closed"]


def test_a_callback_the_bank_signs_is_verified_into_its_outcomes():
    b = bank()
    b.submit([instruction("po_1", amount_minor=1), instruction("po_2", payee_account="6222020200000000")])
    outcomes = b.settle()
    request = b.callback_for(outcomes)
    assert request.header("bank-signature").startswith("t=")
    assert b.verify_callback(request) == outcomes
    body = json.loads(request.body)
    assert body["notifications"][0]["amount_minor"] == 1       # an integer on the wire, never "0.01"
    # Another adapter instance with the same secret (the web process) accepts it too.
    assert SimulatedBank(SECRET).verify_callback(replace(request, received_at=T0)) == outcomes


def settled_callback(clock: Clock | None = None) -> tuple[SimulatedBank, CallbackRequest]:
    b = bank(clock)
    b.submit([instruction("po_1")])
    return b, b.callback_for(b.settle())


def test_a_tampered_callback_is_refused():
    b, request = settled_callback()
    tampered = request.body.replace(b'"confirmed"', b'"failed"')
    assert tampered != request.body
    with pytest.raises(CallbackRejected) as caught:
        b.verify_callback(replace(request, body=tampered))
    assert caught.value.code == "bad_signature"


def test_a_callback_signed_with_another_secret_is_refused():
    b, request = settled_callback()
    impostor = SimulatedBank(b"not-the-secret", clock=Clock())
    with pytest.raises(CallbackRejected) as caught:
        impostor.verify_callback(request)
    assert caught.value.code == "bad_signature"


def test_a_stale_callback_is_refused_and_a_rotated_secret_still_verifies():
    clock = Clock()
    b, request = settled_callback(clock)
    assert b.verify_callback(replace(request, received_at=T0 + timedelta(minutes=5)))   # at the edge
    with pytest.raises(CallbackRejected) as caught:
        b.verify_callback(replace(request, received_at=T0 + timedelta(minutes=5, seconds=1)))
    assert caught.value.code == "stale_timestamp"
    rotated = SimulatedBank(b"new-secret", clock=clock, previous_secrets=[SECRET])
    assert rotated.verify_callback(request)[0].reference == "po_1"


def test_a_callback_without_signature_is_refused():
    b, request = settled_callback()
    with pytest.raises(CallbackRejected) as caught:
        b.verify_callback(CallbackRequest({}, request.body, T0))
    assert caught.value.code == "malformed"


@pytest.mark.parametrize(
    "payload",
    [
        {"notifications": []},
        {"notes": []},
        {"notifications": [{"status": "confirmed"}]},
        {"notifications": [{"reference": "po_1", "status": "paid"}]},
        {"notifications": [{"reference": "po_1", "status": "confirmed", "amount_minor": 1.0}]},
        {"notifications": [{"reference": "po_1", "status": "confirmed", "amount_minor": "100"}]},
        {"notifications": [{"reference": "po_1", "status": "confirmed", "amount_minor": True}]},
        {"notifications": [{"reference": "po_1", "status": "confirmed", "occurred_at": "2024-11-26T10:00:00"}]},
        {"notifications": [{"reference": "po_1", "status": "failed", "reason": 42}]},
    ],
)
def test_a_signed_but_malformed_callback_is_refused(payload):
    body = json.dumps(payload).encode()
    request = CallbackRequest({SIGNATURE_HEADER: signing.sign(SECRET, int(T0.timestamp()), body)}, body, T0)
    with pytest.raises(CallbackRejected) as caught:
        bank().verify_callback(request)
    assert caught.value.code == "malformed"


def test_acknowledgements_speak_the_banks_json():
    ok, no = bank().acknowledge(True), bank().acknowledge(False, "bad_signature")
    assert (ok.status, json.loads(ok.body), ok.content_type) == (200, {"code": "SUCCESS"}, "application/json")
    assert (no.status, json.loads(no.body)) == (400, {"code": "FAIL", "message": "bad_signature"})


def test_status_files_from_the_bank_parse_back_to_its_outcomes():
    b = bank()
    b.submit([instruction("po_1", amount_minor=1), instruction("po_2", payee_account="6222020200000000"),
              instruction("po_3", amount_minor=10**12)])
    outcomes = b.settle()
    data = b.status_file(outcomes, "pf_20241126_1")
    root = SafeET.fromstring(data)
    assert root.find(".//{%s}OrgnlMsgId" % PAIN_002).text == "pf_20241126_1"
    assert b.parse_status_file(data) == [replace(o, occurred_at=o.occurred_at.replace(microsecond=0))
                                         for o in outcomes]


def test_status_files_are_one_currency_each():
    b = bank()
    b.submit([instruction("po_1"), instruction("po_2", currency="USD")])
    with pytest.raises(ValueError, match="currency"):
        b.status_file(b.settle(), "pf_1")
