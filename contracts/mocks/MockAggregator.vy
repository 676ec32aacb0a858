# pragma version ~=0.4.3
# pragma nonreentrancy on
"""
@title MockAggregator
@custom:contract-name MockAggregator
@license GNU Affero General Public License v3.0 only
@notice A Chainlink-compatible price feed for devnets and tests. The owner or an updater
        (the devnet price pusher) publishes answers with `update_answer`, or writes any raw
        round with `set_round` (to replay real Chainlink rounds, malformed ones included, or
        to craft faulty rounds in tests). Before the first round `latestRoundData` returns
        all zeros, which consumers must reject as an incomplete round.
@custom:security Devnet and tests only: whoever holds the owner or updater role sets the
        price. Never point a production market at this contract.
"""

from snekmate.auth import ownable
from snekmate.auth import ownable_2step

from ..interfaces import AggregatorV3Interface

implements: AggregatorV3Interface

initializes: ownable
initializes: ownable_2step[ownable := ownable]

exports: (
    ownable_2step.owner,
    ownable_2step.pending_owner,
    ownable_2step.transfer_ownership,
    ownable_2step.accept_ownership,
)


# ---------------------------------------------------------------- CONSTANTS

# @notice Chainlink's AggregatorV3Interface version.
VERSION: constant(uint256) = 4

# Packed round: roundId (bits 0..79) | answeredInRound (80..159) | startedAt (160..207)
# | updatedAt (208..255).
ROUND_MASK: constant(uint256) = 2**80 - 1
ANSWERED_SHIFT: constant(uint256) = 80
STARTED_SHIFT: constant(uint256) = 160
UPDATED_SHIFT: constant(uint256) = 208
TIMESTAMP_MASK: constant(uint256) = 2**48 - 1


# ---------------------------------------------------------------- EVENTS

event AnswerUpdated:
    current: indexed(int256)
    roundId: indexed(uint256)
    updatedAt: uint256

event NewRound:
    roundId: indexed(uint256)
    startedBy: indexed(address)
    startedAt: uint256

event UpdaterSet:
    updater: indexed(address)
    allowed: bool


# ---------------------------------------------------------------- STORAGE

# @notice Decimals of every answer.
decimals: public(uint8)
# @notice Human-readable name of the feed, e.g. "ETH / USD".
description: public(String[64])
# @notice Accounts allowed to publish rounds besides the owner.
is_updater: public(HashMap[address, bool])

# latest round: two slots, so latestRoundData costs two storage reads
_latest_answer: int256
_latest_round: uint256

# round id => answer and packed round (a stored round id is never 0, so 0 means "no data")
_answers: HashMap[uint80, int256]
_rounds: HashMap[uint80, uint256]


# ---------------------------------------------------------------- CONSTRUCTOR


@deploy
def __init__(decimals: uint8, description: String[64], initial_answer: int256):
    """
    @notice The deployer becomes the owner. A non-zero `initial_answer` is published as
            round 1 at the current block time.
    @param decimals Decimals of every answer.
    @param description Human-readable name of the feed.
    @param initial_answer First answer, or 0 for no round yet.
    """
    ownable.__init__()
    ownable_2step.__init__()
    self.decimals = decimals
    self.description = description
    if initial_answer != 0:
        self._write_round(1, initial_answer, block.timestamp, block.timestamp, 1)


# ---------------------------------------------------------------- EXTERNAL: ADMIN


@external
def set_updater(updater: address, allowed: bool):
    """
    @notice Grant or revoke the right to publish rounds.
    @param updater The account, e.g. the devnet price pusher.
    @param allowed True to grant, False to revoke.
    """
    ownable._check_owner()
    self.is_updater[updater] = allowed
    log UpdaterSet(updater=updater, allowed=allowed)


@external
def update_answer(answer: int256):
    """
    @notice Publish `answer` as a new complete round at the current block time.
    @param answer The new answer, in `decimals` decimals.
    """
    self._check_updater()
    round_id: uint80 = convert(self._latest_round & ROUND_MASK, uint80) + 1
    self._write_round(round_id, answer, block.timestamp, block.timestamp, round_id)


@external
def set_round(
    round_id: uint80,
    answer: int256,
    started_at: uint256,
    updated_at: uint256,
    answered_in_round: uint80,
):
    """
    @notice Write an arbitrary raw round and make it the latest, as returned by
            `latestRoundData`. Nothing is validated but the storage ranges.
    @param round_id Non-zero round id.
    @param answer The answer, in `decimals` decimals.
    @param started_at When the round started (below 2**48).
    @param updated_at When the round was answered (below 2**48).
    @param answered_in_round The round in which the answer was computed.
    """
    self._check_updater()
    assert round_id != 0, "aggregator: zero round"
    self._write_round(round_id, answer, started_at, updated_at, answered_in_round)


# ---------------------------------------------------------------- EXTERNAL: VIEWS


@external
@view
@reentrant
def version() -> uint256:
    """
    @notice The AggregatorV3Interface version.
    @return 4.
    """
    return VERSION


@external
@view
@reentrant
def latestRoundData() -> (uint80, int256, uint256, uint256, uint80):
    """
    @notice The latest round.
    @return roundId, answer, startedAt, updatedAt, answeredInRound; all zero before the
            first round.
    """
    return self._unpack(self._latest_answer, self._latest_round)


@external
@view
@reentrant
def getRoundData(_roundId: uint80) -> (uint80, int256, uint256, uint256, uint80):
    """
    @notice A past round.
    @param _roundId The round id.
    @return roundId, answer, startedAt, updatedAt, answeredInRound.
    """
    packed: uint256 = self._rounds[_roundId]
    assert packed != 0, "aggregator: no data"
    return self._unpack(self._answers[_roundId], packed)


@external
@view
@reentrant
def latestAnswer() -> int256:
    """
    @notice The latest answer (Chainlink's deprecated v2 read).
    @return The latest answer, 0 before the first round.
    """
    return self._latest_answer


@external
@view
@reentrant
def latestRound() -> uint256:
    """
    @notice The latest round id (Chainlink's deprecated v2 read).
    @return The latest round id, 0 before the first round.
    """
    return self._latest_round & ROUND_MASK


# ---------------------------------------------------------------- INTERNAL


@internal
def _check_updater():
    if not self.is_updater[msg.sender]:
        ownable._check_owner()


@internal
def _write_round(
    round_id: uint80,
    answer: int256,
    started_at: uint256,
    updated_at: uint256,
    answered_in_round: uint80,
):
    assert (
        started_at <= TIMESTAMP_MASK and updated_at <= TIMESTAMP_MASK
    ), "aggregator: timestamp too large"
    packed: uint256 = (
        convert(round_id, uint256)
        | (convert(answered_in_round, uint256) << ANSWERED_SHIFT)
        | (started_at << STARTED_SHIFT)
        | (updated_at << UPDATED_SHIFT)
    )
    self._latest_answer = answer
    self._latest_round = packed
    self._answers[round_id] = answer
    self._rounds[round_id] = packed
    log NewRound(roundId=convert(round_id, uint256), startedBy=msg.sender, startedAt=started_at)
    log AnswerUpdated(current=answer, roundId=convert(round_id, uint256), updatedAt=updated_at)


@internal
@pure
def _unpack(answer: int256, packed: uint256) -> (uint80, int256, uint256, uint256, uint80):
    return (
        convert(packed & ROUND_MASK, uint80),
        answer,
        (packed >> STARTED_SHIFT) & TIMESTAMP_MASK,
        packed >> UPDATED_SHIFT,
        convert((packed >> ANSWERED_SHIFT) & ROUND_MASK, uint80),
    )
