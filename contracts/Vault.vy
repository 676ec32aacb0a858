# pragma version ~=0.4.3
# pragma nonreentrancy on
"""
@title Vault
@custom:contract-name Vault
@license GNU Affero General Public License v3.0 only
@notice The only holder of perpdex's collateral token. Every party holds a cash balance in
        this ledger, in WAD: trader sub-accounts, the liquidity vault, the insurance fund, the
        fee receiver and the funding pool (funding paid but not yet collected by its receivers).
        Token amounts are scaled to WAD at the deposit and withdraw boundary only.
        Invariant: the sum of all cash balances equals the token balance scaled to WAD (a
        direct token transfer to the vault, a gift, only makes the balance larger).
@custom:security Only the exchange moves cash between ledger accounts (`settle`), and every
        settlement must sum to zero. Deposits credit the balance delta actually received, so a
        fee-on-transfer token cannot mint cash. All external functions are non-reentrant; the
        views the exchange reads mid-call are `@reentrant`.
"""

from ethereum.ercs import IERC20
from ethereum.ercs import IERC20Detailed
from snekmate.auth import ownable
from snekmate.auth import ownable_2step

from .interfaces import IExchange
from .interfaces import IOrderBook

initializes: ownable
initializes: ownable_2step[ownable := ownable]

exports: (
    ownable_2step.owner,
    ownable_2step.pending_owner,
    ownable_2step.transfer_ownership,
    ownable_2step.accept_ownership,
)

# ============================================================================================
# EVENTS
# ============================================================================================

event Deposit:
    owner: indexed(address)
    sub_account: indexed(uint256)
    amount: uint256  # token units received
    credited: uint256  # WAD credited to cash

event Withdraw:
    owner: indexed(address)
    sub_account: indexed(uint256)
    amount: uint256  # token units sent
    debited: uint256  # WAD debited from cash

event LiquidityDeposited:
    amount: uint256
    credited: uint256

event LiquidityWithdrawn:
    receiver: indexed(address)
    amount: uint256
    debited: uint256

event FeesWithdrawn:
    receiver: indexed(address)
    amount: uint256
    debited: uint256

event Settled:
    owner: indexed(address)
    sub_account: indexed(uint256)
    trader: int256
    liquidity: int256
    insurance: int256
    fees: int256
    funding_pool: int256
    executor: address  # an order's executor, paid `execution_fee` from the escrow (sub-account 0)
    execution_fee: uint256  # WAD; 0 when no escrowed fee is paid by this settlement

event DeficitWrittenOff:
    owner: indexed(address)
    sub_account: indexed(uint256)
    amount: uint256  # WAD from the liquidity vault's cash to the bankrupt account

event ExchangeSet:
    exchange: address

event LiquidatorSet:
    liquidator: address

event InsuranceFundSet:
    insurance_fund: address

event InsuranceDeposited:
    amount: uint256
    credited: uint256

event InsuranceWithdrawn:
    receiver: indexed(address)
    amount: uint256
    debited: uint256

event PairSettled:
    owner: indexed(address)
    sub_account: indexed(uint256)
    counterparty: indexed(address)
    counterparty_sub_account: uint256
    delta: int256
    counterparty_delta: int256
    insurance: int256

event FeeEscrowed:
    owner: indexed(address)
    sub_account: indexed(uint256)
    amount: uint256  # WAD moved from the sub-account's cash into the order escrow

event EscrowReleased:
    payee: indexed(address)
    sub_account: indexed(uint256)
    amount: uint256  # WAD moved from the order escrow to the payee's cash

event OrderBookSet:
    order_book: address

event LiquidityVaultSet:
    liquidity_vault: address

event FeeReceiverSet:
    fee_receiver: address

# ============================================================================================
# STORAGE
# ============================================================================================

TOKEN: public(immutable(IERC20))
DECIMALS: public(immutable(uint8))
SCALE: immutable(uint256)

CASH_OFFSET: constant(int256) = 2**191  # cash is an int192
HALF_OFFSET: constant(int256) = 2**127  # system balances are int128
MASK64: constant(uint256) = 2**64 - 1
MASK128: constant(uint256) = 2**128 - 1

liquidity_vault: public(address)
liquidator: public(address)
insurance_fund: public(address)
fee_receiver: public(address)
order_book: public(address)
# the exchange's address (0..159) | the execution fees escrowed for committed orders, a ledger
# account of its own (160..255, WAD): one slot, so an order's fill checks its caller and
# releases the escrow with a single cold read
_exchange_escrow: uint256

# owner -> sub-account -> (cash + OFFSET) << 64 | bitmask of markets with an open position.
# The mask is the exchange's, kept here so that one slot write settles a trade and so that the
# vault pays out accounts without positions without asking the exchange (or the oracle).
_accounts: HashMap[address, HashMap[uint256, uint256]]
# liquidity vault cash | insurance fund cash, and fee receiver cash | funding pool cash, each
# as (int128 + 2**127) in 128 bits: two slots for the four system accounts
_system_a: uint256
_system_b: uint256

# ============================================================================================
# CONSTRUCTOR
# ============================================================================================

@deploy
def __init__(token: IERC20):
    """
    @param token The collateral token (a USD stablecoin with at most 18 decimals).
    """
    ownable.__init__()
    ownable_2step.__init__()
    decimals: uint8 = staticcall IERC20Detailed(token.address).decimals()
    assert decimals <= 18, "vault: token has more than 18 decimals"
    TOKEN = token
    DECIMALS = decimals
    SCALE = 10 ** convert(18 - decimals, uint256)
    self.fee_receiver = msg.sender
    self._system_a = self._pack_pair(0, 0)
    self._system_b = self._pack_pair(0, 0)

# ============================================================================================
# TRADERS
# ============================================================================================

@external
def deposit(sub_account: uint256, amount: uint256) -> uint256:
    """
    @notice Deposit `amount` tokens into the caller's `sub_account`.
    @dev Credits what actually arrived (balance delta), scaled to WAD.
    @param sub_account The caller's sub-account (0, 1, 2, ...).
    @param amount Token units to pull with `transferFrom` (approve the vault first).
    @return The WAD amount credited to cash.
    """
    assert amount > 0, "vault: zero amount"
    received: uint256 = self._pull(msg.sender, amount)
    credited: uint256 = received * SCALE
    cash: int256 = 0
    mask: uint256 = 0
    cash, mask = self._load(msg.sender, sub_account)
    self._store(msg.sender, sub_account, cash + convert(credited, int256), mask)
    log Deposit(owner=msg.sender, sub_account=sub_account, amount=received, credited=credited)
    return credited


@external
def withdraw(sub_account: uint256, amount: uint256) -> uint256:
    """
    @notice Withdraw `amount` tokens of free collateral from the caller's `sub_account`.
    @dev Free collateral = max(0, min(cash, equity - initial requirement)).
    @param sub_account The caller's sub-account.
    @param amount Token units to send to the caller.
    @return The WAD amount debited from cash.
    """
    assert amount > 0, "vault: zero amount"
    debited: uint256 = amount * SCALE
    cash: int256 = 0
    mask: uint256 = 0
    cash, mask = self._load(msg.sender, sub_account)
    order_book: address = self.order_book
    if order_book != empty(address):
        # a pending market order must meet its margin with the collateral it was committed
        # with: no pulling collateral to make it fail after seeing the next price
        assert (
            staticcall IOrderBook(order_book).pending_market_orders(msg.sender, sub_account) == 0
        ), "vault: a market order is pending; withdraw after it executes or expires"
    assert debited <= self._free(msg.sender, sub_account, cash, mask), "vault: insufficient free collateral"
    self._store(msg.sender, sub_account, cash - convert(debited, int256), mask)
    self._push(msg.sender, amount)
    log Withdraw(owner=msg.sender, sub_account=sub_account, amount=amount, debited=debited)
    return debited


@external
@view
@reentrant
def exchange() -> address:
    """
    @notice The exchange, the only contract that settles trades.
    """
    return self._exchange()


@external
@view
@reentrant
def order_escrow_cash() -> uint256:
    """
    @notice Execution fees escrowed for committed orders (WAD), a ledger account of its own.
    """
    return self._exchange_escrow >> 160


@external
@view
@reentrant
def cash(owner: address, sub_account: uint256) -> int256:
    """
    @notice Cash balance (WAD) of a trader sub-account; negative only after a bankruptcy.
    """
    cash: int256 = 0
    mask: uint256 = 0
    cash, mask = self._load(owner, sub_account)
    return cash


@external
@view
@reentrant
def account(owner: address, sub_account: uint256) -> (int256, uint256):
    """
    @notice (cash, bitmask of the markets where the sub-account has a position).
    """
    return self._load(owner, sub_account)


@external
@view
@reentrant
def liquidity_cash() -> int256:
    """
    @notice The liquidity vault's cash (WAD).
    """
    return self._unpack_high(self._system_a)


@external
@view
@reentrant
def insurance_cash() -> int256:
    """
    @notice The insurance fund's cash (WAD).
    """
    return self._unpack_low(self._system_a)


@external
@view
@reentrant
def fee_cash() -> int256:
    """
    @notice The fee receiver's cash (WAD).
    """
    return self._unpack_high(self._system_b)


@external
@view
@reentrant
def funding_pool_cash() -> int256:
    """
    @notice Funding paid by holders and not yet collected by its receivers (WAD).
    """
    return self._unpack_low(self._system_b)


@external
@view
@reentrant
def token_scale() -> uint256:
    """
    @notice 10 ** (18 - token decimals): WAD per token unit.
    """
    return SCALE

# ============================================================================================
# ORDER BOOK: EXECUTION FEE ESCROW
# ============================================================================================

@external
def escrow_fee(owner: address, sub_account: uint256, amount: uint256):
    """
    @notice Move an order's execution fee from the sub-account's cash into the order escrow.
            Order book only. Only the cash is checked (the fee is small and bounded): margin
            is checked when the order executes.
    @param owner The trader.
    @param sub_account The trader's sub-account.
    @param amount The fee (WAD).
    """
    assert msg.sender == self.order_book, "vault: caller is not the order book"
    cash: int256 = 0
    mask: uint256 = 0
    cash, mask = self._load(owner, sub_account)
    assert convert(amount, int256) <= cash, "vault: execution fee above cash"
    self._store(owner, sub_account, cash - convert(amount, int256), mask)
    self._exchange_escrow += amount << 160  # reverts past 2**96 WAD
    log FeeEscrowed(owner=owner, sub_account=sub_account, amount=amount)


@external
def release_fee(payee: address, sub_account: uint256, amount: uint256):
    """
    @notice Pay an escrowed execution fee to `payee` (the executor of a cancelled order, a
            canceller of an expired order, or the trader on a refund). Order book only.
    @param payee The receiving ledger account's owner.
    @param sub_account Its sub-account.
    @param amount The fee (WAD).
    """
    assert msg.sender == self.order_book, "vault: caller is not the order book"
    self._release(payee, sub_account, amount)

# ============================================================================================
# EXCHANGE
# ============================================================================================

@external
def settle(
    owner: address,
    sub_account: uint256,
    trader: int256,
    liquidity: int256,
    insurance: int256,
    fees: int256,
    funding_pool: int256,
    markets_toggled: uint256,
    fee_payee: address,
    escrow_release: uint256,
) -> (int256, uint256):
    """
    @notice Move cash between a trader sub-account and the system accounts, and flip the bits
            of the markets where the account opened or closed its position; with an order's
            fill, also pay its escrowed execution fee to the executor (`fee_payee`'s
            sub-account 0). Exchange only.
    @dev The deltas must sum to exactly zero: the ledger can only be rearranged, never grown.
    @return The trader's new cash balance and open-markets mask.
    """
    assert msg.sender == self._exchange(), "vault: caller is not the exchange"
    assert trader + liquidity + insurance + fees + funding_pool == 0, "vault: unbalanced settlement"
    cash: int256 = 0
    mask: uint256 = 0
    cash, mask = self._load(owner, sub_account)
    if trader != 0 or markets_toggled != 0:
        cash += trader
        mask ^= markets_toggled
        self._store(owner, sub_account, cash, mask)
    if liquidity != 0 or insurance != 0:
        a: uint256 = self._system_a
        self._system_a = self._pack_pair(self._unpack_high(a) + liquidity, self._unpack_low(a) + insurance)
    if fees != 0 or funding_pool != 0:
        b: uint256 = self._system_b
        self._system_b = self._pack_pair(self._unpack_high(b) + fees, self._unpack_low(b) + funding_pool)
    log Settled(
        owner=owner,
        sub_account=sub_account,
        trader=trader,
        liquidity=liquidity,
        insurance=insurance,
        fees=fees,
        funding_pool=funding_pool,
        executor=fee_payee,
        execution_fee=escrow_release,
    )
    if escrow_release != 0:
        self._pay_from_escrow(fee_payee, 0, escrow_release)  # reported by Settled above
    return cash, mask

@external
def write_off(owner: address, sub_account: uint256, amount: uint256):
    """
    @notice Pay a bankrupt account's written-off deficit (WAD) from the liquidity vault's
            cash, the counterparty that booked the unpaid loss as its gain. Liquidator only.
    """
    assert msg.sender == self.liquidator, "vault: caller is not the liquidator"
    cash: int256 = 0
    mask: uint256 = 0
    cash, mask = self._load(owner, sub_account)
    self._store(owner, sub_account, cash + convert(amount, int256), mask)
    a: uint256 = self._system_a
    self._system_a = self._pack_pair(self._unpack_high(a) - convert(amount, int256), self._unpack_low(a))
    log DeficitWrittenOff(owner=owner, sub_account=sub_account, amount=amount)


@external
def settle_pair(
    owner: address,
    sub_account: uint256,
    counterparty: address,
    counterparty_sub_account: uint256,
    delta: int256,
    counterparty_delta: int256,
    insurance: int256,
) -> int256:
    """
    @notice Move cash between two trader accounts and the insurance fund: liquidation
            penalties (trader -> keeper, insurance fund), bankruptcy cover (insurance fund ->
            trader), ADL haircuts (profitable trader -> bankrupt trader). Liquidator only.
    @dev The deltas must sum to exactly zero.
    @return The first account's new cash.
    """
    assert msg.sender == self.liquidator, "vault: caller is not the liquidator"
    assert delta + counterparty_delta + insurance == 0, "vault: unbalanced settlement"
    cash: int256 = 0
    mask: uint256 = 0
    cash, mask = self._load(owner, sub_account)
    cash += delta
    if delta != 0:
        self._store(owner, sub_account, cash, mask)
    if counterparty_delta != 0:
        other_cash: int256 = 0
        other_mask: uint256 = 0
        other_cash, other_mask = self._load(counterparty, counterparty_sub_account)
        self._store(counterparty, counterparty_sub_account, other_cash + counterparty_delta, other_mask)
    if insurance != 0:
        self._system_a = self._pack_pair(
            self._unpack_high(self._system_a), self._unpack_low(self._system_a) + insurance
        )
    log PairSettled(
        owner=owner,
        sub_account=sub_account,
        counterparty=counterparty,
        counterparty_sub_account=counterparty_sub_account,
        delta=delta,
        counterparty_delta=counterparty_delta,
        insurance=insurance,
    )
    return cash

# ============================================================================================
# LIQUIDITY VAULT, INSURANCE FUND AND FEE RECEIVER
# ============================================================================================

@external
def deposit_insurance(amount: uint256) -> uint256:
    """
    @notice Pull `amount` tokens from the insurance fund contract into its cash (donations).
            Insurance fund only.
    @return Token units actually received.
    """
    assert msg.sender == self.insurance_fund, "vault: caller is not the insurance fund"
    received: uint256 = self._pull(msg.sender, amount)
    credited: uint256 = received * SCALE
    self._system_a = self._pack_pair(
        self._unpack_high(self._system_a), self._unpack_low(self._system_a) + convert(credited, int256)
    )
    log InsuranceDeposited(amount=received, credited=credited)
    return received


@external
def withdraw_insurance(receiver: address, amount: uint256) -> uint256:
    """
    @notice Pay `amount` tokens of the insurance fund's cash to `receiver`. Insurance fund only
            (which lets its owner take only the surplus above its target).
    @return The WAD debited.
    """
    assert msg.sender == self.insurance_fund, "vault: caller is not the insurance fund"
    debited: uint256 = amount * SCALE
    insurance: int256 = self._unpack_low(self._system_a)
    assert convert(debited, int256) <= insurance, "vault: insufficient insurance cash"
    self._system_a = self._pack_pair(self._unpack_high(self._system_a), insurance - convert(debited, int256))
    self._push(receiver, amount)
    log InsuranceWithdrawn(receiver=receiver, amount=amount, debited=debited)
    return debited

@external
def deposit_liquidity(amount: uint256) -> uint256:
    """
    @notice Pull `amount` tokens from the liquidity vault contract into its cash. LV only.
    @return Token units actually received.
    """
    assert msg.sender == self.liquidity_vault, "vault: caller is not the liquidity vault"
    received: uint256 = self._pull(msg.sender, amount)
    credited: uint256 = received * SCALE
    self._system_a = self._pack_pair(
        self._unpack_high(self._system_a) + convert(credited, int256), self._unpack_low(self._system_a)
    )
    log LiquidityDeposited(amount=received, credited=credited)
    return received


@external
def withdraw_liquidity(receiver: address, amount: uint256) -> uint256:
    """
    @notice Pay `amount` tokens of the liquidity vault's cash to `receiver`. LV only.
    @return The WAD debited.
    """
    assert msg.sender == self.liquidity_vault, "vault: caller is not the liquidity vault"
    debited: uint256 = amount * SCALE
    lv_cash: int256 = self._unpack_high(self._system_a)
    assert convert(debited, int256) <= lv_cash, "vault: insufficient liquidity cash"
    self._system_a = self._pack_pair(lv_cash - convert(debited, int256), self._unpack_low(self._system_a))
    self._push(receiver, amount)
    log LiquidityWithdrawn(receiver=receiver, amount=amount, debited=debited)
    return debited


@external
def withdraw_fees(receiver: address, amount: uint256):
    """
    @notice The fee receiver withdraws `amount` tokens of its accrued protocol fees.
    """
    assert msg.sender == self.fee_receiver, "vault: caller is not the fee receiver"
    assert amount > 0, "vault: zero amount"
    debited: uint256 = amount * SCALE
    fee_cash: int256 = self._unpack_high(self._system_b)
    assert convert(debited, int256) <= fee_cash, "vault: insufficient fee cash"
    self._system_b = self._pack_pair(fee_cash - convert(debited, int256), self._unpack_low(self._system_b))
    self._push(receiver, amount)
    log FeesWithdrawn(receiver=receiver, amount=amount, debited=debited)

# ============================================================================================
# ADMIN
# ============================================================================================

@external
def set_exchange(exchange: address):
    """
    @notice Wire the exchange, once. It is the only contract that can move cash.
    """
    ownable._check_owner()
    assert self._exchange() == empty(address), "vault: exchange already set"
    assert exchange != empty(address), "vault: zero address"
    self._exchange_escrow |= convert(convert(exchange, uint160), uint256)
    log ExchangeSet(exchange=exchange)


@external
def set_order_book(order_book: address):
    """
    @notice Wire the order book, once: it escrows execution fees and blocks withdrawals of
            sub-accounts with a pending market order.
    """
    ownable._check_owner()
    assert self.order_book == empty(address), "vault: order book already set"
    assert order_book != empty(address), "vault: zero address"
    self.order_book = order_book
    log OrderBookSet(order_book=order_book)


@external
def set_liquidity_vault(liquidity_vault: address):
    """
    @notice Wire the liquidity vault contract, once.
    """
    ownable._check_owner()
    assert self.liquidity_vault == empty(address), "vault: liquidity vault already set"
    assert liquidity_vault != empty(address), "vault: zero address"
    self.liquidity_vault = liquidity_vault
    log LiquidityVaultSet(liquidity_vault=liquidity_vault)


@external
def set_liquidator(liquidator: address):
    """
    @notice Wire the liquidator, once: it moves cash for penalties, bad debt and ADL.
    """
    ownable._check_owner()
    assert self.liquidator == empty(address), "vault: liquidator already set"
    assert liquidator != empty(address), "vault: zero address"
    self.liquidator = liquidator
    log LiquidatorSet(liquidator=liquidator)


@external
def set_insurance_fund(insurance_fund: address):
    """
    @notice Wire the insurance fund contract, once.
    """
    ownable._check_owner()
    assert self.insurance_fund == empty(address), "vault: insurance fund already set"
    assert insurance_fund != empty(address), "vault: zero address"
    self.insurance_fund = insurance_fund
    log InsuranceFundSet(insurance_fund=insurance_fund)


@external
def set_fee_receiver(fee_receiver: address):
    """
    @notice Change who may withdraw the protocol's fee cash.
    """
    ownable._check_owner()
    assert fee_receiver != empty(address), "vault: zero address"
    self.fee_receiver = fee_receiver
    log FeeReceiverSet(fee_receiver=fee_receiver)

# ============================================================================================
# INTERNAL
# ============================================================================================

@internal
def _pull(payer: address, amount: uint256) -> uint256:
    before: uint256 = staticcall TOKEN.balanceOf(self)
    assert extcall TOKEN.transferFrom(payer, self, amount, default_return_value=True), "vault: transfer failed"
    received: uint256 = staticcall TOKEN.balanceOf(self) - before
    assert received > 0, "vault: nothing received"
    return received


@internal
def _push(receiver: address, amount: uint256):
    assert receiver != empty(address), "vault: zero address"
    # Every cash claim is backed only while nobody's cash is negative beyond what the others
    # owe: a liquidity vault that lost more than its capital (or a deficit ADL has not covered
    # yet) leaves the tokens short of the claims. Refuse with a reason a wallet can show rather
    # than the token's own revert.
    assert staticcall TOKEN.balanceOf(self) >= amount, "vault: insufficient token balance"
    assert extcall TOKEN.transfer(receiver, amount, default_return_value=True), "vault: transfer failed"


@internal
@view
def _exchange() -> address:
    return convert(convert(self._exchange_escrow & (2**160 - 1), uint160), address)


@internal
def _release(payee: address, sub_account: uint256, amount: uint256):
    self._pay_from_escrow(payee, sub_account, amount)
    log EscrowReleased(payee=payee, sub_account=sub_account, amount=amount)


@internal
def _pay_from_escrow(payee: address, sub_account: uint256, amount: uint256):
    self._exchange_escrow -= amount << 160  # reverts when the escrow holds less
    cash: int256 = 0
    mask: uint256 = 0
    cash, mask = self._load(payee, sub_account)
    self._store(payee, sub_account, cash + convert(amount, int256), mask)


@internal
@view
def _free(owner: address, sub_account: uint256, cash: int256, mask: uint256) -> uint256:
    """
    @dev Free collateral = max(0, min(cash, equity - initial requirement)); without a
         position everything is free and no oracle is involved.
    """
    if mask == 0:
        return convert(max(cash, 0), uint256)
    return staticcall IExchange(self._exchange()).withdrawable(owner, sub_account)


@internal
@view
def _load(owner: address, sub_account: uint256) -> (int256, uint256):
    packed: uint256 = self._accounts[owner][sub_account]
    if packed == 0:
        return 0, 0
    return convert(packed >> 64, int256) - CASH_OFFSET, packed & MASK64


@internal
def _store(owner: address, sub_account: uint256, cash: int256, mask: uint256):
    assert cash > -CASH_OFFSET and cash < CASH_OFFSET, "vault: cash out of range"
    self._accounts[owner][sub_account] = (convert(cash + CASH_OFFSET, uint256) << 64) | mask


@internal
@pure
def _pack_pair(high: int256, low: int256) -> uint256:
    assert high > -HALF_OFFSET and high < HALF_OFFSET, "vault: system cash out of range"
    assert low > -HALF_OFFSET and low < HALF_OFFSET, "vault: system cash out of range"
    return (convert(high + HALF_OFFSET, uint256) << 128) | convert(low + HALF_OFFSET, uint256)


@internal
@pure
def _unpack_high(packed: uint256) -> int256:
    return convert(packed >> 128, int256) - HALF_OFFSET


@internal
@pure
def _unpack_low(packed: uint256) -> int256:
    return convert(packed & MASK128, int256) - HALF_OFFSET
