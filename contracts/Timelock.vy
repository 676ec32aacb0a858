# pragma version ~=0.4.3
# pragma nonreentrancy off
"""
@title Timelock
@custom:contract-name Timelock
@license GNU Affero General Public License v3.0 only
@notice The owner of every perpdex contract: snekmate's `timelock_controller`, unchanged.
        A proposer schedules a call (a parameter change, a listing, a feed change, a role)
        with a delay of at least `get_minimum_delay` seconds; the `CallScheduled` event shows
        its target and calldata to everyone at once; after the delay an executor executes it.
        A canceller (every proposer, and anyone granted the role) can cancel it before.
        Roles and the minimum delay change only through the timelock itself
        (self-administered), unless an admin is named at deployment.
@custom:security The delay is what lets traders close and LPs redeem before a change that
        would hurt them lands: it must exceed the longest exit queue (docs/governance.md).
        Only the exchange's guardian acts at once, and only to tighten risk.
"""

from ethereum.ercs import IERC165
from snekmate.auth import access_control
from snekmate.auth.interfaces import IAccessControl
from snekmate.governance import timelock_controller
from snekmate.tokens.interfaces import IERC721Receiver
from snekmate.tokens.interfaces import IERC1155Receiver

implements: IERC165
implements: IAccessControl
implements: IERC721Receiver
implements: IERC1155Receiver

initializes: access_control
initializes: timelock_controller[access_control := access_control]

exports: timelock_controller.__interface__


@deploy
@payable
def __init__(
    minimum_delay: uint256,
    proposers: DynArray[address, timelock_controller._DYNARRAY_BOUND],
    executors: DynArray[address, timelock_controller._DYNARRAY_BOUND],
    admin: address,
):
    """
    @notice A timelock with `minimum_delay` seconds; `proposers` get the proposer and
            canceller roles, `executors` the executor role (the zero address among them opens
            execution to anyone); `admin` (the zero address for none) may grant and revoke
            roles without the delay and should renounce once set up.
    @param minimum_delay Shortest delay, in seconds, a proposer may schedule with.
    @param proposers Accounts that schedule and cancel operations.
    @param executors Accounts that execute ready operations.
    @param admin Optional account with the admin role, for setting roles up.
    """
    # access_control grants its admin role to the deployer; timelock_controller revokes it
    # again and makes the timelock its own admin
    access_control.__init__()
    timelock_controller.__init__(minimum_delay, proposers, executors, admin)
