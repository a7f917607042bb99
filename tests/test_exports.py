"""Money shown to people: exact decimal text from integer minor units."""
import pytest

from service.exports import decimal_text, to_money


@pytest.mark.parametrize("minor, currency, text", [
    (12345, "CNY", "123.45"), (5, "CNY", "0.05"), (-250, "CNY", "-2.50"), (0, "CNY", "0.00"),
    (1234, "JPY", "1234"), (1, "BHD", "0.001"), (10**17 + 1, "CNY", "1000000000000000.01"),
])
def test_minor_units_become_exact_decimal_text(minor, currency, text):
    assert decimal_text(minor, currency) == text


def test_money_keeps_the_currency():
    money = to_money(990, "CNY")
    assert str(money.currency) == "CNY" and str(money.amount) == "9.9"
