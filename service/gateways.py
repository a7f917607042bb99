"""Which payment gateways this process speaks to, built once from the
settings. The sandbox is a gateway like the others (its adapter speaks its
signed protocol to a simulated provider, ``payments.sandbox_vendor``, held
in this process), so the demo pays end to end through the same code as
WeChat Pay or Alipay. WeChat Pay, Alipay and the bank are wired in by
passing their adapters (``create_app(gateways=...)``; configuration by
environment comes with their production keys)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from payments.gateway import Gateway
from payments.payout_bank import PayoutBank
from payments.sandbox_bank import SimulatedBank
from payments.sandbox import SandboxGateway
from payments.sandbox_vendor import SandboxVendor

SANDBOX_APP_ID = "channel-ledger-sandbox"


@dataclass
class Gateways:
    adapters: dict[str, Gateway] = field(default_factory=dict)
    sandbox_vendor: SandboxVendor | None = None
    # The bank of the custody account, that payouts are instructed to.
    payout_bank: PayoutBank | None = None

    def get(self, name: str) -> Gateway | None:
        return self.adapters.get(name)


def sandbox(secret: str) -> tuple[SandboxGateway, SandboxVendor]:
    vendor = SandboxVendor(app_id=SANDBOX_APP_ID, secret=secret.encode())
    return SandboxGateway(app_id=SANDBOX_APP_ID, secret=secret.encode(), transport=vendor), vendor


def build_gateways(settings) -> Gateways:
    if not settings.sandbox_secret:
        return Gateways()
    adapter, vendor = sandbox(settings.sandbox_secret)
    return Gateways({"sandbox": adapter}, vendor, payout_bank=sandbox_bank(settings.sandbox_secret))


# The simulated bank confirms (or fails) an instruction this long after it
# was sent, so the demo shows a payout in flight before it lands.
SANDBOX_BANK_DELAY = timedelta(seconds=30)


def sandbox_bank(secret: str) -> SimulatedBank:
    """The demo's custody bank for payouts: in this process, answering
    instructions as a bank would (an account number ending in 0000 fails)."""
    return SimulatedBank(secret.encode(), settle_after=SANDBOX_BANK_DELAY)
