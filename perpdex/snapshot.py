"""On-chain state as a `perpdex.model.ExchangeModel`, from two Lens calls.

Keepers and the demo value accounts off-chain with the same integer math as the contracts:
read every market and the accounts of interest in one eth_call each, then ask the model.
"""

from __future__ import annotations

from perpdex.model import ExchangeModel, GlobalParams, MarketParams, MarketState, Position

Account = tuple[str, int]


def market_params(raw) -> MarketParams:
    return MarketParams(**{name: int(getattr(raw, name)) for name in MarketParams.__dataclass_fields__})


def load_globals(exchange) -> GlobalParams:
    return GlobalParams(
        insurance_fee_share=exchange.insurance_fee_share(),
        protocol_fee_share=exchange.protocol_fee_share(),
        keeper_min_reward=exchange.keeper_min_reward(),
        keeper_reward_share=exchange.keeper_reward_share(),
    )


def load_model(deployment, accounts: list[Account], now: int, globals_: GlobalParams | None = None) -> ExchangeModel:
    """Markets, prices and the given accounts' cash and positions, exactly as on chain."""
    model = ExchangeModel(token_decimals=6)
    model.globals = globals_ or load_globals(deployment.exchange)
    model.now = now
    apply_markets(model, deployment.lens.markets())
    if accounts:
        apply_accounts(model, deployment.lens.accounts(accounts))
    return model


def apply_markets(model: ExchangeModel, snapshots) -> None:
    for m in snapshots:
        market_id = int(m.market_id)
        model.params[market_id] = market_params(m.params)
        model.markets[market_id] = MarketState(
            long_oi=int(m.long_oi),
            short_oi=int(m.short_oi),
            funding_per_unit=int(m.funding_per_unit),
            last_funding_time=int(m.last_funding_time),
            open_notional_sum=int(m.open_notional_sum),
        )
        model.index[market_id] = int(m.index_price)


def apply_accounts(model: ExchangeModel, snapshots) -> None:
    for a in snapshots:
        account = (str(a.owner), int(a.sub_account))
        model.cash[account] = int(a.cash)
        for key in [k for k in model.positions if k[0] == account]:
            del model.positions[key]
        for p in a.positions:
            model.positions[(account, int(p.market_id))] = Position(
                size=int(p.size), open_notional=int(p.open_notional), funding_snapshot=int(p.funding_snapshot)
            )
