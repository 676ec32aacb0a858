"""The simulator's population (perpdex/sim/population.py): seeded, within its documented
bounds."""

from perpdex.sim.population import PopulationConfig, sample_population

START, END = 1_000_000, 1_000_000 + 100 * 3600


def sample(seed: int, **changes):
    config = PopulationConfig(**{"traders": 2_000, **changes})
    return sample_population(config, seed, [0, 1], {0: 20.0, 1: 10.0}, START, END)


def test_one_seed_one_population_another_seed_another():
    assert sample(7) == sample(7)
    assert sample(7).traders != sample(8).traders


def test_draws_stay_within_the_documented_distribution():
    population = sample(3, whales=2, lps=4)
    traders = [t for t in population.traders if not t.whale]
    assert len(traders) == 2_000 and len(population.lps) == 4
    for t in traders:
        top = 20.0 if t.market == 0 else 10.0
        assert 1.0 <= t.leverage <= top + 1e-9
        assert START <= t.entry_time < START + 0.8 * (END - START)
        assert t.collateral_usd >= 10.0
        assert t.stop_loss is None or 0.3 <= t.stop_loss <= 0.8
        assert t.exit_time is None or t.exit_time > t.entry_time
    longs = sum(t.side == 1 for t in traders) / len(traders)
    assert 0.55 < longs < 0.65, "long_share 0.6"
    stops = sum(t.stop_loss is not None for t in traders) / len(traders)
    assert 0.25 < stops < 0.35, "stop_loss_share 0.3"
    whales = [t for t in population.traders if t.whale]
    assert [t.leverage for t in whales] == [20.0 if t.market == 0 else 10.0 for t in whales]
    assert len({t.address for t in population.traders}) == len(population.traders), "one account each"
