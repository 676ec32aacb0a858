"""What the tests on ape's embedded chain (eth-tester's py-evm) share."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def calls_name_their_sender(accounts):
    """A view call without a sender is given the first test account, as eth-tester's web3
    middleware would give it (`guess_from`), but without that middleware looking the account
    list up and checksumming it twice per call: about a third of a view call's CPU here."""
    from ape_test.provider import LocalProvider

    first = accounts[0].address
    send_call = LocalProvider.send_call

    def with_sender(self, txn, *args, **kwargs):
        if txn.sender is None:
            txn = txn.model_copy(update={"sender": first})
        return send_call(self, txn, *args, **kwargs)

    LocalProvider.send_call = with_sender
    yield
    LocalProvider.send_call = send_call
