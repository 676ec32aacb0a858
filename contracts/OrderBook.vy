# pragma version ~=0.4.3
# pragma nonreentrancy on
"""
@title OrderBook
@custom:contract-name OrderBook
@license GNU Affero General Public License v3.0 only
@notice Two-step trader orders, to DESIGN.md's "Orders": a trader commits an order (market,
        limit, stop-loss or take-profit) and a keeper executes it later at an oracle round
        published after the commit, earning the flat execution fee escrowed at the commit.
        A market order fills at the first round published at least `min_order_delay` after
        the commit, never a later one, and expires `max_order_age` after the commit. A
        trigger order fills at the round that crosses its trigger (that round triggers it and
        the round before did not), published after the commit. The executor names the round;
        this contract checks it. The order book is the only caller of the exchange's
        `execute_trade`: `Exchange` has no atomic trade for traders.
@custom:security The contract decides fill or cancel: `execute_order` fills the order when the
        exchange accepts it and cancels it (fee to the executor, reason in the event) only when
        the exchange refuses it for a reason of the order's own ("exchange: ..."); any other
        failure (an oracle refusal, out of gas) reverts the whole call, so no keeper can
        cancel an order that would fill. A market order cannot be cancelled by its owner
        before it expires, and its sub-account cannot withdraw while it is pending (the vault
        asks `pending_market_orders`). An owner's cancellation of a trigger order counts only
        for rounds published after it. Every loop is bounded by MAX_OPEN_ORDERS or MAX_FEEDS.
"""

from snekmate.auth import ownable
from snekmate.auth import ownable_2step

from .interfaces import IExchange
from .interfaces import IIndexOracle
from .interfaces import IVault


interface ILiquidityVault:
    def max_oi_ratio() -> uint256: view

initializes: ownable
initializes: ownable_2step[ownable := ownable]

exports: (
    ownable_2step.owner,
    ownable_2step.pending_owner,
    ownable_2step.transfer_ownership,
    ownable_2step.accept_ownership,
)

# ============================================================================================
# CONSTANTS
# ============================================================================================

KIND_MARKET: constant(uint256) = 0
KIND_LIMIT: constant(uint256) = 1
KIND_STOP_LOSS: constant(uint256) = 2
KIND_TAKE_PROFIT: constant(uint256) = 3

STATE_NONE: constant(uint256) = 0
STATE_OPEN: constant(uint256) = 1
STATE_EXECUTED: constant(uint256) = 2
STATE_CANCELLED: constant(uint256) = 3

# @notice Most open orders one sub-account may hold (the hard cap of `max_open_orders`).
MAX_OPEN_ORDERS: public(constant(uint256)) = 16
# @notice Longest `min_order_delay`, in seconds.
MAX_MIN_ORDER_DELAY: public(constant(uint256)) = 600
# @notice Longest `max_order_age`, in seconds.
MAX_MAX_ORDER_AGE: public(constant(uint256)) = 2 * 86400
# @notice Highest execution fee (WAD USD): sized to a keeper's gas, never a confiscation.
MAX_EXECUTION_FEE: public(constant(uint256)) = 50 * 10**18
# @notice Longest life of a trigger order, in seconds.
MAX_TRIGGER_LIFETIME: public(constant(uint256)) = 365 * 86400
MAX_FEEDS: constant(uint256) = 5
# @notice Most orders one `execute_orders` call executes.
MAX_BATCH: public(constant(uint256)) = 20
# @notice Gas that must be left before each order of a batch (an execution needs ~200,000;
#         margin for an account with positions in many markets).
BATCH_GAS_PER_ORDER: public(constant(uint256)) = 1_000_000
MAX_SUB_ACCOUNT: constant(uint256) = 2**32 - 1
MAX_PRICE: constant(uint256) = 2**128 - 1
OFFSET: constant(int256) = 2**127
MASK40: constant(uint256) = 2**40 - 1
MASK128: constant(uint256) = 2**128 - 1
ERROR_SELECTOR: constant(bytes4) = 0x08c379a0  # Error(string)
EXCHANGE_PREFIX: constant(Bytes[10]) = b"exchange: "
REASON_ACCEPTABLE: constant(String[35]) = "exchange: price beyond acceptable"

# order id: seq << 200 | slot << 192 | sub_account << 160 | owner
SEQ_SHIFT: constant(uint256) = 200
SLOT_SHIFT: constant(uint256) = 192
SUB_SHIFT: constant(uint256) = 160

# packed order, slot 0: seq (0..39) | market_id (40..47) | kind (48..51) | reduce_only (52)
# | state (53..55; a filled order keeps "open" here and is told by its cleared book bit)
# | not_before (56..95) | expiry (96..135) | closed_at (136..175) | fee (176..255)
# slot 1: (size_delta + 2**127) << 128 | acceptable_price; slot 2: trigger price
MARKET_SHIFT: constant(uint256) = 40
KIND_SHIFT: constant(uint256) = 48
REDUCE_SHIFT: constant(uint256) = 52
STATE_SHIFT: constant(uint256) = 53
NOT_BEFORE_SHIFT: constant(uint256) = 56
EXPIRY_SHIFT: constant(uint256) = 96
CLOSED_SHIFT: constant(uint256) = 136
FEE_SHIFT: constant(uint256) = 176

# per sub-account book: open slots (0..15) | cancelled trigger orders still executable at earlier
# rounds (16..31) | pending market orders (32..39) | bit 255 set once, so the slot never
# returns to zero (a zero-to-nonzero write costs 17,100 gas more)
LINGER_SHIFT: constant(uint256) = 16
PENDING_SHIFT: constant(uint256) = 32
SLOTS_MASK: constant(uint256) = 2**16 - 1
MASK192: constant(uint256) = 2**192 - 1
WAD: constant(uint256) = 10**18
ROOM_TIME_SHIFT: constant(uint256) = 192
# how long a computed open-interest room stays in use (seconds): the keeper refreshes it when
# the cached room would cancel an order a fresh one fits; an execution that finds it older
# refreshes it itself
ROOM_MAX_AGE: constant(uint256) = 60
BOOK_SENTINEL: constant(uint256) = 2**255

# order parameters, one slot: min_order_delay (0..31) | max_order_age (32..63)
# | max_open_orders (64..71) | execution_fee (128..255)

# ============================================================================================
# STRUCTS AND EVENTS
# ============================================================================================

struct Order:
    owner: address
    sub_account: uint256
    market_id: uint256
    size_delta: int256  # signed base units (WAD): > 0 buys, < 0 sells
    acceptable_price: uint256  # worst fill price: a maximum for buys, a minimum for sells
    kind: uint256  # 0 market, 1 limit, 2 stop-loss, 3 take-profit
    trigger_price: uint256  # WAD; 0 for market orders
    reduce_only: bool
    not_before: uint256  # earliest publication time of the execution round
    expiry: uint256  # market: no execution from then; trigger: no round published from then
    fee: uint256  # escrowed execution fee (WAD)
    state: uint256  # 1 open, 2 executed, 3 cancelled
    cancelled_at: uint256  # an owner's cancellation of a trigger order (0 otherwise)

struct OrderParams:
    min_order_delay: uint256  # seconds between a commit and its earliest execution round
    max_order_age: uint256  # seconds a market order lives; and how long after a triggering round a trigger order may still execute at it
    execution_fee: uint256  # WAD USD escrowed at commit, paid to the executor
    max_open_orders: uint256  # per sub-account

event OrderCommitted:
    order_id: indexed(uint256)
    owner: indexed(address)
    sub_account: indexed(uint256)
    market_id: uint256
    size_delta: int256
    acceptable_price: uint256
    kind: uint256
    trigger_price: uint256
    reduce_only: bool
    not_before: uint256
    expiry: uint256
    fee: uint256

event OrderExecuted:
    order_id: indexed(uint256)
    owner: indexed(address)
    executor: indexed(address)
    sub_account: uint256
    market_id: uint256
    size_delta: int256  # what was filled (a reduce-only order is clipped to the position)
    fill_price: uint256
    index_price: uint256  # the execution round's index
    round_published: uint256
    fee: uint256

event OrderCancelled:
    order_id: indexed(uint256)
    owner: indexed(address)
    by: indexed(address)
    sub_account: uint256
    reason: String[96]
    fee: uint256
    fee_to: address  # the executor, the canceller of an expired order, or the owner (refund)

event OpenInterestRoomRefreshed:
    room: uint256
    value: int256
    open_interest: uint256

event OrderParamsSet:
    min_order_delay: uint256
    max_order_age: uint256
    execution_fee: uint256
    max_open_orders: uint256

# ============================================================================================
# STORAGE
# ============================================================================================

EXCHANGE: public(immutable(IExchange))
VAULT: public(immutable(IVault))
ORACLE: public(immutable(IIndexOracle))

_params: uint256
# owner -> sub-account -> slot (0..15) -> packed order (3 words). A slot is reused by the
# sub-account's next order (its seq grows), so a steady trader writes warm, non-zero words.
_orders: HashMap[address, HashMap[uint256, HashMap[uint256, uint256[3]]]]
# owner -> sub-account -> packed book (see LINGER_SHIFT)
_book: HashMap[address, HashMap[uint256, uint256]]
# the global open-interest cap's room (WAD USD of notional) and when it was computed (by
# `refresh_open_interest_room` or an execution that found it older than ROOM_MAX_AGE):
# room (0..191) | timestamp (192..255)
_oi_room: uint256

# ============================================================================================
# CONSTRUCTOR
# ============================================================================================

@deploy
def __init__(exchange: IExchange, vault: IVault, oracle: IIndexOracle, params: OrderParams):
    """
    @param exchange The exchange whose `execute_trade` fills the orders.
    @param vault The vault holding the escrowed execution fees.
    @param oracle The index oracle whose rounds the orders execute at.
    @param params The initial order parameters (within the hard bounds).
    """
    ownable.__init__()
    ownable_2step.__init__()
    EXCHANGE = exchange
    VAULT = vault
    ORACLE = oracle
    self._set_params(params)

# ============================================================================================
# TRADERS
# ============================================================================================

@external
def commit_order(
    sub_account: uint256,
    market_id: uint256,
    size_delta: int256,
    acceptable_price: uint256,
    kind: uint256,
    trigger_price: uint256,
    reduce_only: bool,
    expiry: uint256,
) -> uint256:
    """
    @notice Commit an order of the caller's `sub_account`; a keeper executes it later. The
            execution fee is escrowed now from the sub-account's cash. Only what
            cannot change is checked here; margin is checked at execution.
    @param sub_account The caller's sub-account (below 2**32).
    @param market_id A listed market.
    @param size_delta Signed size in base units (WAD): > 0 buys, < 0 sells.
    @param acceptable_price Worst fill price: a maximum for buys, a minimum for sells (WAD).
    @param kind 0 market, 1 limit, 2 stop-loss, 3 take-profit (stop-loss and take-profit are
           always reduce-only).
    @param trigger_price Limit or trigger price (WAD); 0 for a market order.
    @param reduce_only Never increase |position|; clip to what is left at execution.
    @param expiry 0 for the longest allowed; else a market order cannot execute from this
           time on, and a trigger order cannot execute at a round published from then on.
    @return The order id.
    """
    assert sub_account <= MAX_SUB_ACCOUNT, "order: sub-account above 2**32 - 1"
    assert size_delta != 0, "order: zero size"
    assert kind <= KIND_TAKE_PROFIT, "order: unknown kind (0 market, 1 limit, 2 stop-loss, 3 take-profit)"
    max_size: uint256 = staticcall EXCHANGE.max_position_size(market_id)
    assert max_size != 0, "order: unknown market"
    assert self._abs(size_delta) <= max_size, concat(
        "order: size above the market's max position size of ", uint2str(max_size), " (WAD)"
    )
    params: uint256 = self._params
    min_delay: uint256 = params & 2**32 - 1
    max_age: uint256 = (params >> 32) & 2**32 - 1
    ro: bool = reduce_only
    horizon: uint256 = block.timestamp + max_age
    if kind == KIND_MARKET:
        assert trigger_price == 0, "order: a market order takes no trigger price"
    else:
        assert trigger_price > 0, "order: zero trigger price"
        assert trigger_price <= MAX_PRICE, "order: trigger price out of range"
        horizon = block.timestamp + MAX_TRIGGER_LIFETIME
        index: uint256 = staticcall ORACLE.index_price(market_id)
        assert not self._triggered(kind, size_delta, trigger_price, index), concat(
            "order: trigger already reached at the index ", uint2str(index), " (WAD); use a market order"
        )
        if kind != KIND_LIMIT:
            ro = True
    not_before: uint256 = block.timestamp + min_delay
    order_expiry: uint256 = expiry
    if order_expiry == 0:
        order_expiry = horizon
    assert order_expiry > not_before, "order: expiry before the order can execute"
    assert order_expiry <= horizon, concat("order: expiry after the latest allowed, ", uint2str(horizon))

    book: uint256 = self._book[msg.sender][sub_account]
    slot: uint256 = 0
    slot, book = self._free_slot(msg.sender, sub_account, book, (params >> 64) & 255, max_age)
    meta: uint256 = self._orders[msg.sender][sub_account][slot][0]
    seq: uint256 = (meta & MASK40) + 1
    fee: uint256 = params >> 128
    self._orders[msg.sender][sub_account][slot][0] = self._pack_meta(
        seq, market_id, kind, ro, STATE_OPEN, not_before, order_expiry, 0, fee
    )
    self._orders[msg.sender][sub_account][slot][1] = (convert(size_delta + OFFSET, uint256) << 128) | min(
        acceptable_price, MAX_PRICE
    )
    if self._orders[msg.sender][sub_account][slot][2] != trigger_price:
        self._orders[msg.sender][sub_account][slot][2] = trigger_price
    book |= (1 << slot) | BOOK_SENTINEL
    if kind == KIND_MARKET:
        book += 1 << PENDING_SHIFT
    self._book[msg.sender][sub_account] = book
    if fee != 0:
        extcall VAULT.escrow_fee(msg.sender, sub_account, fee)

    order_id: uint256 = (seq << SEQ_SHIFT) | (slot << SLOT_SHIFT) | (sub_account << SUB_SHIFT) | convert(
        msg.sender, uint256
    )
    log OrderCommitted(
        order_id=order_id,
        owner=msg.sender,
        sub_account=sub_account,
        market_id=market_id,
        size_delta=size_delta,
        acceptable_price=min(acceptable_price, MAX_PRICE),
        kind=kind,
        trigger_price=trigger_price,
        reduce_only=ro,
        not_before=not_before,
        expiry=order_expiry,
        fee=fee,
    )
    return order_id


@external
def cancel_order(order_id: uint256):
    """
    @notice Cancel an open order. The owner may cancel a trigger order at any time (fee
            refunded), but the cancellation counts only for rounds published after it: a
            round that already triggered the order can still execute it. A market order
            cannot be cancelled before it expires. Once an order is expired (a trigger
            order: `max_order_age` after its expiry, when no round can execute it any more),
            anyone may cancel it and takes the fee.
    @param order_id The order.
    """
    owner: address = empty(address)
    sub_account: uint256 = 0
    slot: uint256 = 0
    meta: uint256 = 0
    book: uint256 = 0
    owner, sub_account, slot, meta, book = self._load(order_id)
    assert (meta >> STATE_SHIFT) & 7 == STATE_OPEN, "order: not open"
    kind: uint256 = (meta >> KIND_SHIFT) & 15
    expiry: uint256 = (meta >> EXPIRY_SHIFT) & MASK40
    fee: uint256 = meta >> FEE_SHIFT
    max_age: uint256 = (self._params >> 32) & 2**32 - 1
    book &= ~(1 << slot)
    reason: String[96] = "expired"
    cancelled_at: uint256 = 0
    if kind == KIND_MARKET:
        assert block.timestamp >= expiry, concat(
            "order: a market order cannot be cancelled before it expires at ", uint2str(expiry)
        )
        book -= 1 << PENDING_SHIFT
    elif msg.sender == owner:
        reason = "cancelled by owner"
        cancelled_at = block.timestamp
        book |= 1 << (slot + LINGER_SHIFT)
    else:
        assert block.timestamp >= expiry + max_age, concat(
            "order: not expired; anyone may cancel it from ", uint2str(expiry + max_age)
        )
    self._book[owner][sub_account] = book
    self._orders[owner][sub_account][slot][0] = self._with_state(meta, STATE_CANCELLED, cancelled_at)
    if fee != 0:
        extcall VAULT.release_fee(msg.sender, 0 if msg.sender != owner else sub_account, fee)
    log OrderCancelled(
        order_id=order_id,
        owner=owner,
        by=msg.sender,
        sub_account=sub_account,
        reason=reason,
        fee=fee,
        fee_to=msg.sender,
    )

# ============================================================================================
# KEEPERS
# ============================================================================================

@external
def execute_order(order_id: uint256, round_ids: DynArray[uint80, MAX_FEEDS]) -> bool:
    """
    @notice Execute an order at the oracle round(s) `round_ids` (one per feed of its market):
            for a market order, the first round published at least `min_order_delay` after
            the commit; for a trigger order, a round published after the commit that
            triggers it while the round before did not. Fills when the exchange accepts the
            trade; cancels (fee still to the executor) when the exchange refuses it for the
            order's own reason (margin, caps, acceptable price of a market order, nothing left
            to reduce). A trigger order that misses its acceptable price keeps resting.
    @param order_id The order.
    @param round_ids The execution round of each of the market's feeds.
    @return True if filled, False if cancelled.
    """
    return self._execute_order(order_id, round_ids, msg.sender)


@external
@reentrant
def execute_orders(
    order_ids: DynArray[uint256, MAX_BATCH], round_ids: DynArray[DynArray[uint80, MAX_FEEDS], MAX_BATCH]
) -> uint256:
    """
    @notice Execute several orders in one transaction, each at its own rounds, as
            `execute_order` would (fill or cancel, the fee to the caller each time); an order
            that cannot execute at its rounds (already executed by another keeper, not yet
            triggered, an oracle refusal...) is skipped, never reverting the batch, so
            competing keepers waste no transaction.
    @dev Each order runs in its own call to `execute_order_in_batch` (the batch itself holds
         no lock and changes nothing but through those calls), so a skipped order changes
         nothing.
    @param order_ids The orders.
    @param round_ids The execution rounds of each order, one per feed of its market.
    @return How many orders were executed or cancelled.
    """
    assert len(order_ids) == len(round_ids), "order: one list of round ids per order expected"
    acted: uint256 = 0
    for i: uint256 in range(len(order_ids), bound=MAX_BATCH):
        # every order gets enough gas: without this, a gas estimate (the least gas with which
        # the batch does not revert) would starve the last orders, which are skipped silently
        assert msg.gas >= BATCH_GAS_PER_ORDER, "order: too little gas left for the next order of the batch"
        success: bool = False
        response: Bytes[32] = b""
        success, response = raw_call(
            self,
            abi_encode(
                order_ids[i],
                round_ids[i],
                msg.sender,
                method_id=method_id("execute_order_in_batch(uint256,uint80[],address)"),
            ),
            max_outsize=32,
            revert_on_failure=False,
        )
        if success:
            acted += 1
    return acted


@external
def execute_order_in_batch(order_id: uint256, round_ids: DynArray[uint80, MAX_FEEDS], executor: address) -> bool:
    """
    @notice One order of `execute_orders`, for `executor`. Only this contract calls it.
    """
    assert msg.sender == self, "order: only execute_orders calls this"
    return self._execute_order(order_id, round_ids, executor)


@internal
def _execute_order(order_id: uint256, round_ids: DynArray[uint80, MAX_FEEDS], executor: address) -> bool:
    # the cancellation reason, set before any check: a debugger that decodes the frame of a
    # failed check (titanoboa's) then reads an empty string, not leftover memory
    reason: String[96] = ""
    owner: address = empty(address)
    sub_account: uint256 = 0
    slot: uint256 = 0
    meta: uint256 = 0
    book: uint256 = 0
    owner, sub_account, slot, meta, book = self._load(order_id)
    state: uint256 = (meta >> STATE_SHIFT) & 7
    cancelled_at: uint256 = (meta >> CLOSED_SHIFT) & MASK40
    # an owner's cancellation of a trigger order counts only for rounds published after it
    late: bool = state == STATE_CANCELLED and cancelled_at != 0
    assert state == STATE_OPEN or late, "order: not open"
    kind: uint256 = (meta >> KIND_SHIFT) & 15
    market_id: uint256 = (meta >> MARKET_SHIFT) & 255
    not_before: uint256 = (meta >> NOT_BEFORE_SHIFT) & MASK40
    expiry: uint256 = (meta >> EXPIRY_SHIFT) & MASK40
    packed: uint256 = self._orders[owner][sub_account][slot][1]
    size_delta: int256 = convert(packed >> 128, int256) - OFFSET
    acceptable_price: uint256 = packed & MASK128

    rp: IIndexOracle.RoundPrice = staticcall ORACLE.round_price(market_id, round_ids)
    if kind == KIND_MARKET:
        assert block.timestamp < expiry, "order: expired"
        assert rp.published >= not_before, concat(
            "order: round published before the order's delay ended at ", uint2str(not_before)
        )
        assert rp.previous_published < not_before, "order: not the first round after the order's delay"
    else:
        trigger: uint256 = self._orders[owner][sub_account][slot][2]
        assert rp.published >= not_before, "order: round published before the order could trigger"
        end: uint256 = expiry
        if late:
            # a round published in the very second of the cancellation is not published after
            # it: an owner who sees a crossing round cannot cancel in the same block to escape it
            end = min(end, cancelled_at + 1)
        assert rp.published < end, "order: round published after the order's expiry or cancellation"
        max_age: uint256 = (self._params >> 32) & 2**32 - 1
        assert block.timestamp <= rp.published + max_age, "order: triggering round too old to execute"
        assert self._triggered(kind, size_delta, trigger, rp.price), "order: not triggered at this round"
        assert not self._triggered(kind, size_delta, trigger, rp.previous), "order: already triggered at the round before (not the crossing)"

    fee: uint256 = meta >> FEE_SHIFT
    size: int256 = 0
    basis: int256 = 0
    snapshot: int256 = 0
    size, basis, snapshot = staticcall EXCHANGE.position_state(owner, sub_account, market_id)
    if (meta >> REDUCE_SHIFT) & 1 == 1:
        if size == 0 or (size > 0) == (size_delta > 0):
            reason = "order: nothing left to reduce"
            assert not late, reason
        elif self._abs(size_delta) > self._abs(size):
            size_delta = -size
    if reason == "":
        # the global open-interest cap: what the fill adds to |position| (hence to the open
        # interest) must fit in the room left (`_reserve_open_interest`)
        before: uint256 = self._abs(size)
        after: uint256 = self._abs(size + size_delta)
        if after > before:
            reason = self._reserve_open_interest((after - before) * rp.price)
            if late:
                assert reason == "", reason

    fill_price: uint256 = 0
    fee_unpaid: bool = fee != 0
    if reason == "":
        # the fill's settlement pays the escrowed fee to the executor (a late execution's fee
        # was refunded at the cancellation: it is charged again after the fill, below)
        in_fill: uint256 = fee
        if late:
            in_fill = 0
        success: bool = False
        response: Bytes[256] = b""
        success, response = raw_call(
            EXCHANGE.address,
            abi_encode(
                owner,
                sub_account,
                market_id,
                size_delta,
                acceptable_price,
                rp.price,
                executor,
                in_fill,
                method_id=method_id("execute_trade(address,uint256,uint256,int256,uint256,uint256,address,uint256)"),
            ),
            max_outsize=256,
            revert_on_failure=False,
        )
        if success:
            fill_price = abi_decode(response, uint256)
            fee_unpaid = late and fee != 0
            if fee_unpaid:
                # from the cash after the fill (a stop-loss realizes what it closes, so a
                # trader the crossing left short cannot block it)
                extcall VAULT.escrow_fee(owner, sub_account, fee)
        else:
            reason = self._order_reason(response)
            # not the order's own failure (oracle, out of gas...), or a trigger order that
            # keeps resting, or a cancelled order's late execution: nothing changes
            if reason == "" or late or (kind != KIND_MARKET and reason == REASON_ACCEPTABLE):
                raw_revert(response)

    if late:
        book &= ~(1 << (slot + LINGER_SHIFT))
    else:
        book &= ~(1 << slot)
        if kind == KIND_MARKET:
            book -= 1 << PENDING_SHIFT
    self._book[owner][sub_account] = book
    if fee_unpaid:
        extcall VAULT.release_fee(executor, 0, fee)
    if reason == "":
        if late:
            # an open order's fill is recorded by its cleared book bit alone (see `_load`)
            self._orders[owner][sub_account][slot][0] = self._with_state(meta, STATE_EXECUTED, cancelled_at)
        log OrderExecuted(
            order_id=order_id,
            owner=owner,
            executor=executor,
            sub_account=sub_account,
            market_id=market_id,
            size_delta=size_delta,
            fill_price=fill_price,
            index_price=rp.price,
            round_published=rp.published,
            fee=fee,
        )
        return True
    self._orders[owner][sub_account][slot][0] = self._with_state(meta, STATE_CANCELLED, 0)
    log OrderCancelled(
        order_id=order_id,
        owner=owner,
        by=executor,
        sub_account=sub_account,
        reason=reason,
        fee=fee,
        fee_to=executor,
    )
    return False

# ============================================================================================
# OPEN-INTEREST CAP
# ============================================================================================

@internal
def _reserve_open_interest(notional_wad2: uint256) -> String[96]:
    """
    @dev Take `notional_wad2 / WAD` (rounded up) from the room of the global open-interest cap,
         or say why not. The room (`max_oi_ratio x the liquidity vault's value - the open
         interest notional`, O(markets)) is computed by `refresh_open_interest_room` and then
         only consumed (O(1)) for up to ROOM_MAX_AGE seconds: fills that reduce open interest
         do not give room back until the next refresh.
    """
    need: uint256 = (notional_wad2 + WAD - 1) // WAD
    cache: uint256 = self._oi_room
    room: uint256 = cache & MASK192
    stamp: uint256 = cache >> ROOM_TIME_SHIFT
    if block.timestamp > stamp + ROOM_MAX_AGE:
        room = self._refresh_open_interest_room()
        stamp = block.timestamp
    if need > room:
        return concat("order: open interest cap, room left ", uint2str(convert(min(room // WAD, convert(max_value(uint128), uint256)), uint128)), " USD")
    self._oi_room = (stamp << ROOM_TIME_SHIFT) | (room - need)
    return ""


@internal
def _refresh_open_interest_room() -> uint256:
    """
    @dev `max_oi_ratio x value - open interest notional` (WAD, 0 when negative), with the
         liquidity vault's value net of outstanding deficits (Exchange.liquidity_vault_value);
         stored with the time.
    """
    value: int256 = staticcall EXCHANGE.liquidity_vault_value()
    oi: uint256 = staticcall EXCHANGE.open_interest_notional()
    room: uint256 = 0
    if value > 0:
        cap: uint256 = convert(value, uint256) * staticcall ILiquidityVault(staticcall VAULT.liquidity_vault()).max_oi_ratio() // WAD
        room = min(cap - min(cap, oi), MASK192)
    self._oi_room = (block.timestamp << ROOM_TIME_SHIFT) | room
    log OpenInterestRoomRefreshed(room=room, value=value, open_interest=oi)
    return room


@external
def refresh_open_interest_room() -> uint256:
    """
    @notice Recompute the room of the global open-interest cap: `max_oi_ratio x the liquidity
            vault's value (net of deficits) - the open interest notional` (WAD USD, 0 when
            negative), O(listed markets). Executions then only consume it, at O(1), for up to
            60 seconds. Anyone may call it; the keeper does when the cached room would cancel
            an order that a fresh one fits.
    @return The room.
    """
    return self._refresh_open_interest_room()


@external
@view
def open_interest_room() -> (uint256, uint256):
    """
    @notice The notional (WAD USD, at the execution round's index) that risk-increasing
            executions may still add to the open interest, and when it was computed: until
            60 seconds after that, executions consume it; then the next one recomputes it.
    """
    cache: uint256 = self._oi_room
    return cache & MASK192, cache >> ROOM_TIME_SHIFT

# ============================================================================================
# VIEWS
# ============================================================================================

@external
@view
def order(order_id: uint256) -> Order:
    """
    @notice An order as stored. Its slot is reused by the sub-account's next order, so an
            order that ended before that is found in the events only.
    @param order_id The order.
    @return The order; reverts with "order: unknown order" for an id never committed or
            superseded.
    """
    owner: address = empty(address)
    sub_account: uint256 = 0
    slot: uint256 = 0
    meta: uint256 = 0
    book: uint256 = 0
    owner, sub_account, slot, meta, book = self._load(order_id)
    return self._order(owner, sub_account, slot, meta)


@external
@view
def open_orders(owner: address, sub_account: uint256) -> DynArray[uint256, MAX_OPEN_ORDERS]:
    """
    @notice The ids of a sub-account's open orders, by slot.
    """
    book: uint256 = self._book[owner][sub_account]
    ids: DynArray[uint256, MAX_OPEN_ORDERS] = []
    for slot: uint256 in range(MAX_OPEN_ORDERS):
        if (book >> slot) & 1 == 1:
            seq: uint256 = self._orders[owner][sub_account][slot][0] & MASK40
            ids.append((seq << SEQ_SHIFT) | (slot << SLOT_SHIFT) | (sub_account << SUB_SHIFT) | convert(owner, uint256))
    return ids


@external
@view
@reentrant
def pending_market_orders(owner: address, sub_account: uint256) -> uint256:
    """
    @notice How many market orders of the sub-account can still execute (it cannot withdraw
            meanwhile). A market order stops counting at its expiry, cancelled or not: it can
            never execute from then on.
    """
    book: uint256 = self._book[owner][sub_account]
    if (book >> PENDING_SHIFT) & 255 == 0:
        return 0
    pending: uint256 = 0
    for slot: uint256 in range(MAX_OPEN_ORDERS):
        if (book >> slot) & 1 == 1:
            meta: uint256 = self._orders[owner][sub_account][slot][0]
            if (meta >> KIND_SHIFT) & 15 == KIND_MARKET and block.timestamp < (meta >> EXPIRY_SHIFT) & MASK40:
                pending += 1
    return pending


@external
@view
def order_params() -> OrderParams:
    """
    @notice (min_order_delay, max_order_age, execution_fee, max_open_orders).
    """
    return self._unpack_params(self._params)

# ============================================================================================
# ADMIN
# ============================================================================================

@external
def set_order_params(params: OrderParams):
    """
    @notice Change the order parameters within their hard bounds. Owner. Orders already
            committed keep their fee, delay and expiry.
    """
    ownable._check_owner()
    self._set_params(params)

# ============================================================================================
# INTERNAL
# ============================================================================================

@internal
def _set_params(p: OrderParams):
    assert p.min_order_delay >= 1 and p.min_order_delay <= MAX_MIN_ORDER_DELAY, "order: min order delay out of bounds"
    assert (
        p.max_order_age > p.min_order_delay and p.max_order_age <= MAX_MAX_ORDER_AGE
    ), "order: max order age out of bounds"
    assert p.execution_fee <= MAX_EXECUTION_FEE, "order: execution fee above the cap"
    assert p.max_open_orders >= 1 and p.max_open_orders <= MAX_OPEN_ORDERS, "order: max open orders out of bounds"
    self._params = p.min_order_delay | (p.max_order_age << 32) | (p.max_open_orders << 64) | (p.execution_fee << 128)
    log OrderParamsSet(
        min_order_delay=p.min_order_delay,
        max_order_age=p.max_order_age,
        execution_fee=p.execution_fee,
        max_open_orders=p.max_open_orders,
    )


@internal
@pure
def _unpack_params(params: uint256) -> OrderParams:
    return OrderParams(
        min_order_delay=params & 2**32 - 1,
        max_order_age=(params >> 32) & 2**32 - 1,
        execution_fee=params >> 128,
        max_open_orders=(params >> 64) & 255,
    )


@internal
def _free_slot(owner: address, sub_account: uint256, book: uint256, max_open: uint256, max_age: uint256) -> (uint256, uint256):
    """
    @dev The lowest slot neither open nor held by a cancelled trigger order that an earlier
         round may still execute; a held slot is freed once `max_order_age` has passed since
         its cancellation.
    """
    open_count: uint256 = 0
    for slot: uint256 in range(MAX_OPEN_ORDERS):
        open_count += (book >> slot) & 1
    assert open_count < max_open, concat("order: too many open orders, the maximum is ", uint2str(max_open))
    held: uint256 = book | (book >> LINGER_SHIFT)
    for slot: uint256 in range(MAX_OPEN_ORDERS):
        if (held >> slot) & 1 == 0:
            return slot, book
    for slot: uint256 in range(MAX_OPEN_ORDERS):
        if (book >> slot) & 1 == 0:
            cancelled_at: uint256 = (self._orders[owner][sub_account][slot][0] >> CLOSED_SHIFT) & MASK40
            if block.timestamp > cancelled_at + max_age:
                return slot, book & ~(1 << (slot + LINGER_SHIFT))
    raise "order: every slot is held by a cancelled order that can still execute; retry later"


@internal
@view
def _load(order_id: uint256) -> (address, uint256, uint256, uint256, uint256):
    """
    @dev (owner, sub-account, slot, meta with the order's state, the sub-account's book).
    """
    owner: address = convert(convert(order_id & (2**160 - 1), uint160), address)
    sub_account: uint256 = (order_id >> SUB_SHIFT) & MAX_SUB_ACCOUNT
    slot: uint256 = (order_id >> SLOT_SHIFT) & 255
    assert slot < MAX_OPEN_ORDERS, "order: unknown order"
    meta: uint256 = self._orders[owner][sub_account][slot][0]
    state: uint256 = (meta >> STATE_SHIFT) & 7
    assert (meta & MASK40) == order_id >> SEQ_SHIFT and state != STATE_NONE, "order: unknown order"
    book: uint256 = self._book[owner][sub_account]
    if state == STATE_OPEN and (book >> slot) & 1 == 0:
        # a fill leaves the stored state open and clears the slot's bit only (a write saved)
        meta = self._with_state(meta, STATE_EXECUTED, 0)
    return owner, sub_account, slot, meta, book


@internal
@view
def _order(owner: address, sub_account: uint256, slot: uint256, meta: uint256) -> Order:
    packed: uint256 = self._orders[owner][sub_account][slot][1]
    return Order(
        owner=owner,
        sub_account=sub_account,
        market_id=(meta >> MARKET_SHIFT) & 255,
        size_delta=convert(packed >> 128, int256) - OFFSET,
        acceptable_price=packed & MASK128,
        kind=(meta >> KIND_SHIFT) & 15,
        trigger_price=self._orders[owner][sub_account][slot][2],
        reduce_only=(meta >> REDUCE_SHIFT) & 1 == 1,
        not_before=(meta >> NOT_BEFORE_SHIFT) & MASK40,
        expiry=(meta >> EXPIRY_SHIFT) & MASK40,
        fee=meta >> FEE_SHIFT,
        state=(meta >> STATE_SHIFT) & 7,
        cancelled_at=(meta >> CLOSED_SHIFT) & MASK40,
    )


@internal
@pure
def _pack_meta(
    seq: uint256,
    market_id: uint256,
    kind: uint256,
    reduce_only: bool,
    state: uint256,
    not_before: uint256,
    expiry: uint256,
    cancelled_at: uint256,
    fee: uint256,
) -> uint256:
    ro: uint256 = 0
    if reduce_only:
        ro = 1
    return (
        seq
        | (market_id << MARKET_SHIFT)
        | (kind << KIND_SHIFT)
        | (ro << REDUCE_SHIFT)
        | (state << STATE_SHIFT)
        | (not_before << NOT_BEFORE_SHIFT)
        | (expiry << EXPIRY_SHIFT)
        | (cancelled_at << CLOSED_SHIFT)
        | (fee << FEE_SHIFT)
    )


@internal
@pure
def _with_state(meta: uint256, state: uint256, cancelled_at: uint256) -> uint256:
    cleared: uint256 = meta & ~((7 << STATE_SHIFT) | (MASK40 << CLOSED_SHIFT))
    return cleared | (state << STATE_SHIFT) | (cancelled_at << CLOSED_SHIFT)


@internal
@pure
def _triggered(kind: uint256, size_delta: int256, trigger: uint256, index: uint256) -> bool:
    """
    @dev Limit and take-profit: the index at or better than the trigger (at or below for a
         buy, at or above for a sell). Stop-loss: the index through it the other way (a sell
         stop at or below, a buy stop at or above).
    """
    if kind == KIND_STOP_LOSS:
        if size_delta > 0:
            return index >= trigger
        return index <= trigger
    if size_delta > 0:
        return index <= trigger
    return index >= trigger


@internal
@pure
def _order_reason(response: Bytes[256]) -> String[96]:
    """
    @dev The reason of an exchange refusal that is the order's own ("exchange: ..."), or ""
         for anything else (an oracle refusal, a panic, out of gas).
    """
    if len(response) < 4 + 64 + 10:
        return ""
    if convert(slice(response, 0, 4), bytes4) != ERROR_SELECTOR:
        return ""
    if slice(response, 68, 10) != EXCHANGE_PREFIX:
        return ""
    length: uint256 = convert(slice(response, 36, 32), uint256)
    if length > 96 or 68 + length > len(response):
        return ""
    return convert(slice(response, 68, length), String[96])


@internal
@pure
def _abs(x: int256) -> uint256:
    if x < 0:
        return convert(-(x + 1), uint256) + 1  # no overflow at min_value(int256)
    return convert(x, uint256)
