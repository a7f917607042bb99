from ledger import EntryRequest, PostingLine, get_account, open_account, post_entry


def test_a_deposit_moves_both_balances(session):
    open_account(session, "custody:bank", "Custody", "asset", "CNY")
    open_account(session, "prepaid:b1@brand", "Prepaid", "liability", "CNY", min_balance_minor=0)
    post_entry(session, EntryRequest("deposit", [
        PostingLine("custody:bank", "debit", 100, "CNY"),
        PostingLine("prepaid:b1@brand", "credit", 100, "CNY")]))
    assert get_account(session, "custody:bank").posted_minor == 100
    assert get_account(session, "prepaid:b1@brand").posted_minor == 100
