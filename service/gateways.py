"""Which payment gateways this process speaks to, built once from the
settings.

* The sandbox is a gateway like the others (its adapter speaks its signed
  protocol to a simulated provider, ``payments.sandbox_vendor``, held in
  this process), so the demo pays end to end through the same code as
  WeChat Pay or Alipay. ``CL_SANDBOX_SECRET=off`` leaves it out.
* WeChat Pay, Alipay and the online bank are built from their ``CL_*``
  settings (``service.settings``: each is on when all its variables are
  set, its keys already read and parsed), and speak HTTP through one
  ``payments.http_transport.HttpTransport`` with the settings' timeout.
  WeChat Pay platform certificates that expire within
  ``CERTIFICATE_WARNING_DAYS`` (or have) are logged as a warning here, at
  start; the adapter refuses to be built when all of them have expired.
* Payouts go to the simulated custody bank while the sandbox is on; no real
  payout bank adapter exists yet.

Tests and embedders may still pass adapters in code
(``create_app(gateways=...)``), or a ``transport`` here to answer every
real gateway in-process.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from payments.alipay import Alipay
from payments.bank import OnlineBankGateway
from payments.gateway import Gateway, Transport
from payments.http_transport import HttpTransport
from payments.payout_bank import PayoutBank
from payments.sandbox import SandboxGateway
from payments.sandbox_bank import SimulatedBank
from payments.sandbox_vendor import SandboxVendor
from payments.wechatpay import WeChatPayV3

SANDBOX_APP_ID = "channel-ledger-sandbox"
# WeChat Pay issues the next platform certificate before the current one
# expires; a month leaves time to download and deploy it.
CERTIFICATE_WARNING_DAYS = 30

log = logging.getLogger(__name__)


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


def build_gateways(settings, transport: Transport | None = None) -> Gateways:
    """Every gateway the settings enable. ``transport`` (tests) replaces the
    HTTP transport of the real gateways."""
    built = Gateways()
    if settings.sandbox_secret:
        adapter, vendor = sandbox(settings.sandbox_secret)
        built.adapters["sandbox"], built.sandbox_vendor = adapter, vendor
        built.payout_bank = sandbox_bank(settings.sandbox_secret)
    real = [c for c in (settings.wechatpay, settings.alipay, settings.bank) if c is not None]
    if real and transport is None:
        transport = HttpTransport(timeout=settings.gateway_timeout_seconds)
    if settings.wechatpay is not None:
        built.adapters["wechatpay"] = wechatpay(settings.wechatpay, transport)
    if settings.alipay is not None:
        built.adapters["alipay"] = alipay(settings.alipay, transport)
    if settings.bank is not None:
        built.adapters["bank"] = bank(settings.bank, transport)
    return built


def wechatpay(config, transport: Transport) -> WeChatPayV3:
    adapter = WeChatPayV3(
        mchid=config.mchid, appid=config.appid, merchant_serial_no=config.merchant_serial_no,
        merchant_private_key=config.merchant_private_key_pem, apiv3_key=config.apiv3_key,
        platform_certificates=dict(config.platform_certificates), transport=transport,
        base_url=config.base_url, profit_sharing=config.profit_sharing,
        sub_mchid=config.sub_mchid, sub_appid=config.sub_appid)
    for serial, not_after in adapter.certificates_expiring(timedelta(days=CERTIFICATE_WARNING_DAYS)):
        log.warning("WeChat Pay platform certificate %s expires (or expired) at %s: add its successor to "
                    "CL_WECHATPAY_PLATFORM_CERT_FILES", serial, not_after.isoformat(),
                    extra={"gateway": "wechatpay", "certificate_serial": serial,
                           "not_after": not_after.isoformat()})
    return adapter


def alipay(config, transport: Transport) -> Alipay:
    return Alipay(config.app_id, config.app_private_key_pem, config.alipay_public_key_pem,
                  transport, gateway_url=config.gateway_url, seller_id=config.seller_id,
                  royalty_freeze=config.royalty_freeze)


def bank(config, transport: Transport) -> OnlineBankGateway:
    return OnlineBankGateway(mer_id=config.mer_id, secret=config.secret, transport=transport,
                             base_url=config.base_url, previous_secrets=config.previous_secrets,
                             statement_encoding=config.statement_encoding)


# The simulated bank confirms (or fails) an instruction this long after it
# was sent, so the demo shows a payout in flight before it lands.
SANDBOX_BANK_DELAY = timedelta(seconds=30)


def sandbox_bank(secret: str) -> SimulatedBank:
    """The demo's custody bank for payouts: in this process, answering
    instructions as a bank would (an account number ending in 0000 fails)."""
    return SimulatedBank(secret.encode(), settle_after=SANDBOX_BANK_DELAY)
