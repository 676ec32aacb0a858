"""The keeper's view calls without ape (perpdex.keeper.reads): the calldata they send, the
answers shaped as ape shapes them, and reverts told apart from node trouble."""

from __future__ import annotations

import pytest
from ape.exceptions import ProviderError
from eth_abi import encode
from eth_utils import keccak
from ethpm_types import ContractType
from web3.providers import JSONBaseProvider

from perpdex.keeper.chain import is_rpc_error, revert_reason
from perpdex.keeper.reads import Views, ViewReverted, revert_reason_of

OWNER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
FEED = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
ABI = [
    {"type": "function", "name": "feeds", "stateMutability": "view",
     "inputs": [{"name": "market_id", "type": "uint256"}],
     "outputs": [{"name": "", "type": "tuple[]", "components": [
         {"name": "aggregator", "type": "address"}, {"name": "heartbeat", "type": "uint256"},
         {"name": "decimals", "type": "uint8"}]}]},
    {"type": "function", "name": "liquidation_window", "stateMutability": "view",
     "inputs": [{"name": "market_id", "type": "uint256"}],
     "outputs": [{"name": "", "type": "uint256"}, {"name": "", "type": "uint256"}]},
    {"type": "function", "name": "account", "stateMutability": "view",
     "inputs": [{"name": "owner", "type": "address"}, {"name": "sub_account", "type": "uint256"}],
     "outputs": [{"name": "", "type": "int256"}, {"name": "", "type": "uint256"}]},
    {"type": "function", "name": "market_count", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "uint256"}]},
]
ERROR = bytes.fromhex("08c379a0")


class Node(JSONBaseProvider):
    """A JSON-RPC node answering eth_call from a table: calldata -> result or error."""

    def __init__(self, answers: dict[str, dict]):
        super().__init__()
        self.answers = answers
        self.requests: list[tuple[str, list]] = []

    def make_request(self, method, params):
        self.requests.append((method, params))
        return {"jsonrpc": "2.0", "id": 1, **self.answers[params[0]["data"]]}


class Provider:
    def __init__(self, node: Node):
        self.web3 = type("Web3", (), {"provider": node})()


class Contract:
    address = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    contract_type = ContractType.model_validate({"abi": ABI})


def calldata(signature: str, types: list[str], args: list) -> str:
    return "0x" + (keccak(text=signature)[:4] + encode(types, args)).hex()


def views(answers: dict[str, dict]) -> tuple[Views, Node]:
    node = Node(answers)
    return Views(Contract(), Provider(node), OWNER), node


def test_a_view_sends_its_calldata_at_the_block_and_answers_as_ape_does():
    feeds_call = calldata("feeds(uint256)", ["uint256"], [1])
    answer = encode(["(address,uint256,uint8)[]"], [[(FEED.lower(), 3600, 8)]])
    account_call = calldata("account(address,uint256)", ["address", "uint256"], [OWNER, 2])
    v, node = views({
        feeds_call: {"result": "0x" + answer.hex()},
        account_call: {"result": "0x" + encode(["int256", "uint256"], [-5, 3]).hex()},
        calldata("market_count()", [], []): {"result": "0x" + encode(["uint256"], [2]).hex()},
    })
    (feed,) = v.feeds(1, block_id=77)
    assert (feed.aggregator, feed.heartbeat, feed.decimals) == (FEED, 3600, 8)  # checksummed, by field name
    assert node.requests[-1] == ("eth_call", [{"from": OWNER, "to": Contract.address, "data": feeds_call}, "0x4d"])
    assert v.account(OWNER, 2, block_id="pending") == (-5, 3)  # several outputs: a tuple
    assert node.requests[-1][1][1] == "pending"
    assert v.market_count() == 2  # one output: itself


def test_a_revert_carries_the_contracts_reason_and_is_not_node_trouble():
    reason = "oracle: price older than the heartbeat"
    data = "0x" + (ERROR + encode(["string"], [reason])).hex()
    v, _ = views({calldata("liquidation_window(uint256)", ["uint256"], [0]): {
        "error": {"code": 3, "message": f"execution reverted: {reason}", "data": data}}})
    with pytest.raises(ViewReverted) as caught:
        v.liquidation_window(0, block_id=5)
    assert revert_reason(caught.value) == reason
    assert not is_rpc_error(caught.value)


def test_a_node_error_is_rpc_trouble_the_keeper_retries():
    v, _ = views({calldata("market_count()", [], []): {"error": {"code": -32000, "message": "header not found"}}})
    with pytest.raises(ProviderError) as caught:
        v.market_count(block_id=10**9)
    assert revert_reason(caught.value) is None and is_rpc_error(caught.value)


def test_revert_reasons_from_the_forms_nodes_give():
    assert revert_reason_of("execution reverted: order: unknown order") == "order: unknown order"
    assert revert_reason_of("execution reverted", "0x") == "revert without a reason"
    assert revert_reason_of("execution reverted: x", "0x" + (ERROR + encode(["string"], ["y"])).hex()) == "y"
    assert revert_reason_of("connection refused") is None
