"""Gateway accounts and split instructions (issue 6, "Who moves the money"):
a party registers its accounts at gateways (its manage key, or the brand's;
the platform's own account, the brand's manage key); the brand's finance
reads every split instruction and retries those that failed, a party reads
the instructions it is the payee or a receiver of; the brand's finance reads
the split returns refunds asked for and retries those that failed."""
from __future__ import annotations

from dataclasses import asdict

from flask import current_app

from channel_api import access, split_instructions, split_returns
from channel_api.clearing_rules import PLATFORM
from channel_api.errors import AccessDenied
from service.api_payments import GATEWAYS_KEY
from service.channel_edge import ChannelBlueprint, actor, caller, mutation, party_to_list
from service.request_db import db_session
from service.schemas_splits import (
    GatewayAccountIn,
    GatewayAccountList,
    GatewayAccountOut,
    SplitInstructionDetailOut,
    SplitInstructionListArgs,
    SplitInstructionOut,
    SplitInstructionPage,
    SplitReturnListArgs,
    SplitReturnOut,
    SplitReturnPage,
    SplitRetryIn,
)

blp = ChannelBlueprint("channel_splits", __name__, url_prefix="/v1",
                       description="Parties' accounts at gateways; split instructions.")


def _adapters():
    return current_app.extensions[GATEWAYS_KEY].adapters


def _manager_of(party: str) -> None:
    who = caller()
    if party == PLATFORM:
        access.require_brand_manager(who)
    else:
        access.require_manager_of(who, party)


@blp.route("/parties/<party>/gateway-accounts", methods=["POST"])
@mutation
@blp.arguments(GatewayAccountIn)
@blp.response(201, GatewayAccountOut)
def register_gateway_account(body, party: str):
    """The party's account at a gateway from now on (the previous one there
    is retired): its sales paid through that gateway are collected with it
    as payee, and its split legs are paid into this account. The party's
    manage key, or the brand's; ``platform`` (the platform's own legs): the
    brand's manage key."""
    _manager_of(party)
    return split_instructions.register_gateway_account(db_session(), party, actor=actor(),
                                                       **body)


@blp.route("/parties/<party>/gateway-accounts", methods=["GET"])
@blp.response(200, GatewayAccountList)
def gateway_accounts(party: str):
    who = caller()
    if who.party_code != party:
        access.require_brand_finance(who)
    return {"items": split_instructions.gateway_accounts(db_session(), party)}


@blp.route("/split-instructions", methods=["GET"])
@blp.arguments(SplitInstructionListArgs, location="query", as_kwargs=True)
@blp.response(200, SplitInstructionPage)
def list_split_instructions(party=None, state=None, attention=False, gateway=None, order=None,
                            payment=None, after=None, limit=100):
    """Newest first. The brand's finance sees all (``attention=true``: those
    waiting for it); a party sees those it is the payee or a receiver of."""
    party = party_to_list(party)
    items, cursor = split_instructions.list_instructions(
        db_session(), party=party, state=state, attention=attention, gateway=gateway,
        order=order, payment=payment, after=after, limit=limit)
    return {"items": items, "next_cursor": cursor}


@blp.route("/split-instructions/<instruction_id>", methods=["GET"])
@blp.response(200, SplitInstructionDetailOut)
def get_split_instruction(instruction_id: str):
    """One instruction with its receivers and every state change (who, why,
    and the ledger entry it posted)."""
    session, who = db_session(), caller()
    view = split_instructions.get_instruction(session, instruction_id)
    if not split_instructions.involves(view, who.party_code):
        try:
            access.require_brand_finance(who)
        except AccessDenied:
            raise AccessDenied("this split instruction is another party's") from None
    return {**asdict(view),
            "events": split_instructions.instruction_events(session, instruction_id)}


@blp.route("/split-instructions/<instruction_id>/retry", methods=["POST"])
@mutation
@blp.arguments(SplitRetryIn)
@blp.response(201, SplitInstructionOut)
def retry_split_instruction(body, instruction_id: str):
    """A blocked, refused or failed instruction is retried as a new one (a
    new ``out_order_no``) for what it still owes; the send job sends it.
    The brand's finance."""
    access.require_brand_finance(caller())
    return split_instructions.retry_instruction(db_session(), instruction_id, _adapters(),
                                                actor=actor(), note=body["note"])


@blp.route("/split-returns", methods=["GET"])
@blp.arguments(SplitReturnListArgs, location="query", as_kwargs=True)
@blp.response(200, SplitReturnPage)
def list_split_returns(party=None, state=None, attention=False, order=None, after=None,
                       limit=100):
    """Returns of receivers' splits that refunds asked for, newest first
    (``attention=true``: the failed ones, waiting for finance). The brand's
    finance."""
    access.require_brand_finance(caller())
    items, cursor = split_returns.list_returns(db_session(), party=party, state=state,
                                               attention=attention, order=order, after=after,
                                               limit=limit)
    return {"items": items, "next_cursor": cursor}


@blp.route("/split-returns/<return_id>/retry", methods=["POST"])
@mutation
@blp.arguments(SplitRetryIn)
@blp.response(201, SplitReturnOut)
def retry_split_return(body, return_id: str):
    """A failed split return is retried as a new one (a new
    ``out_return_no``); the job sends it. The brand's finance."""
    access.require_brand_finance(caller())
    return split_returns.retry_return(db_session(), return_id, actor=actor(),
                                      note=body["note"])
