"""The Lens returns, in one call, exactly what the individual views and the model say."""

from perpdex.fixed_point import WAD

BTC, ETH = 0, 1


def test_markets_snapshot_matches_the_model(system, trader, other_trader):
    s = system
    s.deposit(trader, 50_000)
    s.trade(trader, BTC, 2 * WAD)
    s.deposit(other_trader, 50_000)
    s.trade(other_trader, ETH, -10 * WAD)
    s.warp(600)
    s.set_price(BTC, 41_000)
    s.set_price(ETH, 1_990)
    snapshots = s.lens.markets()
    assert [m.market_id for m in snapshots] == [BTC, ETH]
    for m in snapshots:
        state, params = s.model.markets[m.market_id], s.model.params[m.market_id]
        assert m.index_price == s.model.index[m.market_id]
        assert (m.long_oi, m.short_oi) == (state.long_oi, state.short_oi)
        assert (m.funding_per_unit, m.last_funding_time) == (state.funding_per_unit, state.last_funding_time)
        assert m.open_notional_sum == state.open_notional_sum
        assert m.params.skew_scale == params.skew_scale
        assert m.params.max_liquidation_size == params.max_liquidation_size


def test_accounts_snapshot_matches_positions_and_cash(system, trader, other_trader):
    s = system
    s.deposit(trader, 50_000, sub_account=3)
    s.trade(trader, BTC, WAD, sub_account=3)
    s.trade(trader, ETH, -5 * WAD, sub_account=3)
    s.deposit(other_trader, 1_000)
    never_used = ("0x000000000000000000000000000000000000dEaD", 7)
    keys = [(trader, 3), (other_trader, 0), never_used]
    out = s.lens.accounts(keys)
    assert [(a.owner, a.sub_account) for a in out] == keys
    assert out[0].cash == s.model.cash_of((trader, 3))
    expected = []
    for market_id in (BTC, ETH):
        p = s.model.position((trader, 3), market_id)
        expected.append((market_id, p.size, p.open_notional, p.funding_snapshot))
    assert [(p.market_id, p.size, p.open_notional, p.funding_snapshot) for p in out[0].positions] == expected
    assert out[1].cash == 1_000 * WAD and out[1].positions == []
    assert out[2].cash == 0 and out[2].positions == []
