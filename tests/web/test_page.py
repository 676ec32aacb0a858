"""The trader's page (web/, served by perpdex.web) in Debian's headless chromium against a real
anvil node with the deployment, the keeper process (`ape run keeper`, polling every 0.5 s) and
a price publisher (a round of every market each second, as the devnet's pusher does).

A trader's walk, in order (each test continues from the one before): connect anvil's account
2 without any extension, faucet, deposit (keyboard: Enter submits); an order beyond the margin
is refused with the exchange's sentence and its numbers, one beyond the global open-interest
cap's room with the order book's, and nothing is sent; a market order
is executed by the keeper and the position appears with the liquidation price the quote
announced; a stop-loss rests until a price below its trigger is published, then the keeper
closes the position; the history shows the fills; the free collateral is withdrawn. On the
way, the layout is checked at a laptop's width and at a phone's (nothing cut off or
overlapping). Last, the page is reloaded with a browser wallet's provider injected
(injected_wallet.js, window.ethereum, holding an account the node does not list): the page
connects it and sends through it the faucet, the deposit, a limit order and its cancellation,
a market order and its close, a liquidity deposit request; a refused withdrawal never reaches
it; the page follows the wallet's account switch and warns on its chain switch.

Then other dev accounts, chosen in the page's wallet list, on ETH-USD (the walk's BTC-USD is left
as it was): a take-profit rests until a price above its trigger is published, then the keeper
closes the long with its profit; a 20x long is liquidated by the keeper after a 15 % gap,
bankrupt beyond the insurance fund, and its history shows the liquidation and the bad debt
with the liquidator's numbers; the keeper (an ADL keeper in the test deployment) takes the
uncovered deficit from the profitable short on the other side, whose history shows the ADL
haircut; an LP's deposit request is executed by the keeper, its shares shown locked for the
vault's cooldown (a redemption refused meanwhile, nothing sent), and past the cooldown (the
node's clock moved on) its redemption request waits, is executed by the keeper, and the
shares turn into the wallet's tokens on the page.

PERPDEX_WEB_SCREENSHOTS=docs saves the main views as docs/web-*.png (README.md shows them);
by default they go to the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from pathlib import Path

import pytest
from anvil_tools import USDC, WAD, Chain
from eth_account import Account
from eth_utils import keccak
from browser import missing_browser, start_browser, stop_browser, wait_for
from cli_tools import KEEPER, TRADER, Publisher, deploy

from perpdex.web import serve

pytestmark = pytest.mark.anvil
REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PHONE = {"width": 390, "height": 844}  # CSS pixels: a common phone's viewport
KEEPER_INTERVAL = "0.5"  # seconds between the keeper's passes
SCREENSHOTS = os.environ.get("PERPDEX_WEB_SCREENSHOTS")


class PricePublisher(Publisher):
    """The price publisher, and the only writer of the feeds: a price the test pushes
    (`publish`) is the answer of its rounds from then on. (A push sent beside a publisher that
    republishes the latest answer can be undone by its round read before the push was mined.)"""

    def __init__(self, chain: Chain, interval: float = 1.0):
        super().__init__(chain, interval)
        self.answers: dict[str, int] = {}  # symbol -> the answer published from now on

    def publish(self, symbol: str, answer: int) -> None:
        self.answers[symbol] = answer

    def _answer(self, symbol: str, feed) -> int:
        answer = self.answers.get(symbol)
        return super()._answer(symbol, feed) if answer is None else answer


@pytest.fixture(scope="module")
def devnet(node, tools):
    """The deployment, the keeper and rounds every second (what `make devnet` runs); the
    publisher is devnet.publisher."""
    chain = deploy(node)
    keeper = tools("keeper", "keeper", "--account", f"TEST::{KEEPER}", "--json-logs", "--interval", KEEPER_INTERVAL,
                   "--deployments", str(chain.path.parent), "--checkpoint", str(node.tmp / "keeper.json"))
    with PricePublisher(chain) as publisher:
        chain.publisher = publisher
        keeper.wait_for(lambda: keeper.records("pass"), 120, "the keeper's first pass")
        yield chain
        assert not publisher.errors, f"the price publisher failed: {publisher.errors}"


@pytest.fixture(scope="module")
def page(devnet: Chain, node, tmp_path_factory):
    """The page served by perpdex.web (any free port) in a headless chromium; both end with the module."""
    reason = missing_browser()
    if reason:
        pytest.fail(reason, pytrace=False)
    server = serve(0, node.url, devnet.path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    driver = None
    try:
        driver = start_browser(tmp_path_factory.mktemp("chromium-profile"))
        driver.get(f"http://127.0.0.1:{server.server_port}/")
        wait_for(lambda: driver.execute_script("return document.body.dataset.ready") == "true", 30, "the page to load")
        yield Page(driver, Path(SCREENSHOTS) if SCREENSHOTS else Path(tempfile.mkdtemp(dir=node.tmp)))
    finally:
        if driver is not None:
            stop_browser(driver)
        server.shutdown()
        server.server_close()


class Page:
    """What a trader does and reads on the page."""

    def __init__(self, driver, shots: Path):
        self.driver, self.shots = driver, shots

    def text(self, element_id: str) -> str:
        return self.driver.execute_script(f"return document.getElementById('{element_id}').innerText")

    def field(self, element_id: str, value: str, enter: bool = False) -> None:
        from selenium.webdriver.common.by import By

        element = self.driver.find_element(By.ID, element_id)
        element.clear()
        element.send_keys(value + ("\n" if enter else ""))

    def choose(self, element_id: str, visible_text: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        Select(self.driver.find_element(By.ID, element_id)).select_by_visible_text(visible_text)

    def click(self, selector: str) -> None:
        """Click what `selector` finds. The page re-renders its tables at every block: a row's
        button found just before a re-render is gone when clicked, so it is found again (the
        re-render puts the same button back; at most a few times)."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By

        for attempt in range(5):
            try:
                self.driver.find_element(By.CSS_SELECTOR, selector).click()
                return
            except StaleElementReferenceException:
                if attempt == 4:
                    raise

    def idle(self) -> bool:
        """No action under way (the page disables its buttons while one is)."""
        return self.driver.execute_script("return !document.querySelector('main button:disabled')")

    def settled(self, what: str) -> str:
        """Wait for the action to finish; the notice (a refusal) or the status line."""
        wait_for(self.idle, 60, what)
        return self.text("notice") or self.text("status")

    def row(self, table_id: str, first_cell: str) -> list[str] | None:
        rows = self.driver.execute_script(
            f"return [...document.querySelectorAll('#{table_id} tbody tr')].map(r => [...r.cells].map(c => c.innerText))")
        return next((r for r in rows if r and r[0] == first_cell), None)

    def watch(self, table_id: str) -> None:
        """Record every row the table shows from now on, in order, in window.perpdexSeen (the
        states the page went through, however short)."""
        self.driver.execute_script("""
            window.perpdexSeen = [];
            const body = document.querySelector(`#${arguments[0]} tbody`);
            const note = () => { for (const r of body.rows) window.perpdexSeen.push([...r.cells].map(c => c.innerText)); };
            window.perpdexWatch?.disconnect();
            window.perpdexWatch = new MutationObserver(note);
            window.perpdexWatch.observe(body, { childList: true, subtree: true, characterData: true });""", table_id)

    def layout_problems(self) -> list[str]:
        """What is cut off or overlapping at the current width (layout_problems.js)."""
        return self.driver.execute_script((HERE / "layout_problems.js").read_text())

    def screenshot(self, name: str, section: str | None = None) -> None:
        self.shots.mkdir(parents=True, exist_ok=True)
        if section:
            self.driver.execute_script(f"document.getElementById('{section}').scrollIntoView()")
        self.driver.save_screenshot(str(self.shots / f"web-{name}.png"))


def usd_text(wad: int) -> str:
    """A WAD amount as the page writes it: two decimals, rounded toward zero, thousands separated."""
    return f"{wad // 10**16 / 100:,.2f}"


def number(text: str) -> float:
    return float(re.search(r"-?[\d,]+\.\d+", text).group(0).replace(",", ""))


# =============================================================================================
# The walk
# =============================================================================================


def test_connect_the_dev_account_faucet_and_deposit(page, devnet):
    me = devnet.account(TRADER)
    assert f"Devnet account #{TRADER} " in page.text("wallet-choice")
    page.click("#connect")
    assert me.lower() in page.settled("connecting").lower()
    assert "chain 31337 (local devnet)" in page.text("network")

    page.field("faucet-amount", "10000")
    page.click("#faucet-form button")
    assert page.settled("the faucet") == "minted 10,000.00 USD of devnet collateral"
    assert devnet.collateral.functions.balanceOf(me).call() == 10_000 * USDC

    page.field("deposit-amount", "10000", enter=True)  # the keyboard submits the form
    assert page.settled("the deposit") == "deposited 10,000.00 USD: cash now 10,000.00 USD"
    assert devnet.vault.functions.cash(me, 0).call() == 10_000 * WAD
    wait_for(lambda: page.text("acct-cash") == "10,000.00 USD", 10, "the account's cash on the page")
    assert page.text("health-text") == "100.0 %"
    problems = page.layout_problems()
    assert not problems, "on a laptop's screen:\n" + "\n".join(problems)
    # no CDN, no third party: everything the page loaded or fetched came from its own server
    origin = page.driver.execute_script("return location.origin")
    loaded = page.driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and [url for url in loaded if not url.startswith(origin + "/")] == []
    # every field has a label, every button a name (screen readers, keyboard users)
    unnamed = page.driver.execute_script("""return [...document.querySelectorAll('input, select, button')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map(e => e.outerHTML)""")
    assert unnamed == []
    # the global open-interest cap's room, as the order book would compute it now: no open interest yet
    room = devnet.order_book.functions.refresh_open_interest_room().call() / WAD
    assert room > 0 and number(page.text("oi-room")) == pytest.approx(room, abs=0.01)
    assert "less the open interest, 0.00 USD" in page.text("oi-room")
    page.screenshot("markets", "markets")


def test_an_order_beyond_the_margin_is_refused_with_its_numbers_and_nothing_is_sent(page, devnet):
    me = devnet.account(TRADER)
    nonce = devnet.w3.eth.get_transaction_count(me)
    page.choose("order-market", "BTC-USD")
    page.choose("order-kind", "Market")
    page.field("order-size", "100")  # ~4,000,000 USD of BTC on 10,000 USD of collateral
    page.click("#send-order")
    refusal = page.settled("the refusal")
    assert refusal.startswith("Refused by the exchange: insufficient margin: a buy of 100.0000 BTC-USD at the BTC-USD index")
    assert "free collateral 10,000.00 USD" in refusal and refusal.endswith("Nothing was sent.")
    largest = number(refusal.split("the margin allows at most")[1])
    assert 3 < largest < 6  # ~10,000 USD at 4 % initial margin, impact and penalty on 40,000 USD BTC
    assert devnet.w3.eth.get_transaction_count(me) == nonce
    assert devnet.order_book.functions.open_orders(me, 0).call() == []
    page.screenshot("refusal", "trade")

    # beyond the global open-interest cap's room (checked before the margin, as the keeper's
    # execution would): refused with both figures, nothing sent
    room = devnet.order_book.functions.refresh_open_interest_room().call()
    added = 150 * devnet.exchange.functions.index_price(0).call()  # WAD USD: 150 BTC at the index
    page.field("order-size", "150")
    assert added > room
    wait_for(lambda: "beyond it: a keeper would cancel the order" in page.text("quote"), 10, "the quote's open-interest warning")
    page.click("#send-order")
    refusal = page.settled("the open-interest refusal")
    assert refusal == (f"Refused by the order book: open interest cap: this order adds {usd_text(added)} USD of open interest at "
                       f"the BTC-USD index, more than the room left for all markets, {usd_text(room)} USD (the liquidity vault's value "
                       "times its open-interest ratio, less the open interest); a keeper would cancel it. Nothing was sent.")
    assert devnet.w3.eth.get_transaction_count(me) == nonce


def test_a_market_order_is_executed_by_the_keeper_and_the_position_shows_its_liquidation_price(page, devnet):
    me = devnet.account(TRADER)
    page.field("order-size", "0.5")
    quoted = wait_for(lambda: re.search(r"liquidation price after the fill: ([\d,]+\.\d+)", page.text("quote")), 10,
                      "the quote's liquidation price")
    quoted = float(quoted.group(1).replace(",", ""))
    index = devnet.exchange.functions.index_price(0).call() / WAD
    added = re.search(r"adds ([\d,]+\.\d+) USD of open interest; room left, all markets: ([\d,]+\.\d+) USD$", page.text("quote"), re.M)
    assert added and float(added.group(1).replace(",", "")) == pytest.approx(0.5 * index, abs=0.01)
    room_before = float(added.group(2).replace(",", ""))
    page.click("#send-order")
    assert page.settled("the commit").startswith("committed order 0x")
    executed = wait_for(lambda: "executed by keeper" in page.text("order-outcomes") and page.text("order-outcomes"), 60,
                        "the keeper's execution shown on the page")
    assert f"executed by keeper {devnet.account(KEEPER)}: bought 0.5000 BTC-USD at" in executed
    size, entry, _, _ = devnet.exchange.functions.position(me, 0, 0).call()
    assert size == WAD // 2

    row = wait_for(lambda: page.row("positions-table", "BTC-USD"), 10, "the BTC-USD position row")
    assert row[1] == "+0.5000" and row[2] == f"{entry / WAD:,.2f}"
    liquidation = devnet.liquidator.functions.liquidation_price(me, 0, 0).call() / WAD
    assert number(row[7]) == pytest.approx(liquidation, rel=1e-3)  # funding accrues between the two reads
    assert quoted == pytest.approx(liquidation, rel=2e-3)  # the quote announced it before sending
    # the fill took its notional from the open-interest room the page shows
    open_interest = devnet.exchange.functions.open_interest_notional().call() / WAD
    assert open_interest == pytest.approx(0.5 * index, rel=1e-3)
    wait_for(lambda: f"less the open interest, {open_interest:,.2f} USD" in page.text("oi-room"), 10,
             "the open interest in the room's figures")
    room = devnet.order_book.functions.refresh_open_interest_room().call() / WAD
    assert number(page.text("oi-room")) == pytest.approx(room, abs=1)
    # less the position's notional; the vault's value moved a little too (the fee, its side of the skew)
    assert room_before - room == pytest.approx(open_interest, rel=0.01)
    page.screenshot("positions", "positions")


def test_the_page_fits_a_phone_screen(page):
    """At a phone's width (the device emulated: its viewport, touch, the meta viewport honoured)
    nothing is cut off or overlapping; wide tables scroll inside their own box."""
    driver = page.driver
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**PHONE, "deviceScaleFactor": 1, "mobile": True})
    try:
        wait_for(lambda: driver.execute_script("return document.documentElement.clientWidth") == PHONE["width"], 10,
                 "the phone-width viewport")
        wait_for(lambda: page.row("positions-table", "BTC-USD"), 10, "the position row at the phone's width")
        problems = page.layout_problems()
        assert not problems, "at a phone's width:\n" + "\n".join(problems)
        page.field("order-size", "0.1")  # the quote, the longest text of the order form
        wait_for(lambda: "liquidation price after the fill" in page.text("quote"), 10, "the quote at the phone's width")
        problems = page.layout_problems()
        assert not problems, "at a phone's width, with the quote:\n" + "\n".join(problems)
        page.screenshot("phone", "trade")
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_a_stop_loss_is_executed_by_the_keeper_when_the_price_crosses_it(page, devnet):
    me = devnet.account(TRADER)
    feed = devnet.aggregator("BTC-USD").functions
    answer = feed.latestAnswer().call()
    trigger = answer * 95 // 100 / 10**8
    page.choose("order-kind", "Stop-loss")
    page.choose("order-side", "Sell (short)")
    page.field("order-size", "0.5")
    page.field("order-trigger", f"{trigger:.2f}")
    page.click("#send-order")
    assert page.settled("the stop-loss commit").startswith("committed order 0x")
    row = wait_for(lambda: next((r for r in [page.row("orders-table", c) for c in page.text("orders-table").split()
                                             if c.startswith("0x")] if r), None), 10, "the open stop-loss row")
    assert row[2] == "stop-loss, reduce-only" and row[3] == "-0.5000" and row[4] == f"{trigger:,.2f}"
    assert len(devnet.order_book.functions.open_orders(me, 0).call()) == 1
    page.screenshot("orders", "trade")

    # the price falls through the trigger, within the order's price bound (0.5 % below the
    # trigger): the publisher keeps publishing the new answer
    push_price(devnet, "BTC-USD", answer * 949 // 1000)
    wait_for(lambda: "no open position" in page.text("positions-table"), 60, "the keeper to close the position")
    assert devnet.exchange.functions.position(me, 0, 0).call()[0] == 0
    latest = wait_for(lambda: "sold" in page.text("order-outcomes").splitlines()[0] and page.text("order-outcomes").splitlines()[0],
                      10, "the stop-loss's execution shown on the page")
    assert f"executed by keeper {devnet.account(KEEPER)}: sold 0.5000 BTC-USD at" in latest
    history = wait_for(lambda: "sold 0.5000 BTC-USD" in page.text("history-table") and page.text("history-table"), 10,
                       "the closing fill in the history")
    assert "bought 0.5000 BTC-USD" in history and "deposit\t+10,000.00 USD" in history
    page.screenshot("history", "history")


def test_the_free_collateral_is_withdrawn(page, devnet):
    me = devnet.account(TRADER)
    free = devnet.exchange.functions.withdrawable(me, 0).call()
    assert 8_000 * WAD < free < 10_000 * WAD  # the stop-loss lost about 5 % of 20,000 USD, plus fees
    page.click("#withdraw-max")
    wait_for(lambda: page.driver.execute_script("return document.getElementById('withdraw-amount').value"), 10,
             "the maximum in the withdraw field")
    page.click("#withdraw-form button[type=submit]")
    assert page.settled("the withdrawal").startswith("withdrew ")
    assert devnet.collateral.functions.balanceOf(me).call() == free // 10**12
    wait_for(lambda: page.text("acct-withdrawable") == "0.00 USD", 10, "the page to show nothing left to withdraw")
    page.screenshot("vault", "vault")


def test_an_injected_browser_wallet_signs_what_the_page_sends(page, devnet, node):
    """A browser wallet's provider (injected_wallet.js, installed before the page's scripts run,
    as an extension does) holding an account the node does not list among its dev accounts:
    the page offers it, connects it, and its faucet and deposit go through it (the wallet's own
    eth_sendTransaction, to its own node), then a limit order and its cancellation from the open
    orders' Cancel button (the reason and the refunded fee shown), a market order the keeper
    executes and the Close button's order it executes too, and a liquidity deposit request the
    keeper executes (its state and the shares shown); a refused withdrawal reaches the wallet
    not at all. When the wallet's user switches account, the page follows; when they switch
    chain, the page warns and sends nothing."""
    w3 = devnet.w3
    wallet = Account.from_key(keccak(text="perpdex web page: an injected wallet's account")).address
    assert wallet not in w3.eth.accounts  # the page cannot have reached it as a dev account
    for method, params in (("anvil_impersonateAccount", [wallet]), ("anvil_setBalance", [wallet, hex(10 * 10**18)])):
        response = w3.provider.make_request(method, params)
        assert "error" not in response, response
    config = json.dumps({"rpc": node.url, "account": wallet, "chainId": hex(w3.eth.chain_id)})
    script = (HERE / "injected_wallet.js").read_text().replace("/*CONFIG*/ null", config)
    page.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": script})
    page.driver.refresh()
    wait_for(lambda: page.driver.execute_script("return document.body.dataset.ready") == "true", 30, "the page to reload")
    assert page.driver.execute_script("return window.ethereum.isPerpdexTestWallet") is True

    page.choose("wallet-choice", "Browser wallet (injected)")
    page.click("#connect")
    assert page.settled("connecting the browser wallet") == f"connected {wallet}"
    assert page.text("address") == f"connected: {wallet} (sub-account 0)"

    page.field("faucet-amount", "600")
    page.click("#faucet-form button")
    assert page.settled("the faucet through the browser wallet") == "minted 600.00 USD of devnet collateral"
    page.field("deposit-amount", "500", enter=True)
    assert page.settled("the deposit through the browser wallet") == "deposited 500.00 USD: cash now 500.00 USD"
    assert devnet.vault.functions.cash(wallet, 0).call() == 500 * WAD
    assert devnet.collateral.functions.balanceOf(wallet).call() == 100 * USDC
    wait_for(lambda: page.text("acct-cash") == "500.00 USD", 10, "the wallet account's cash on the page")

    def sent() -> list[dict]:
        return page.driver.execute_script(
            "return window.ethereum.requests.filter(r => r.method === 'eth_sendTransaction')")

    transactions = sent()
    assert [t.get("error") for t in transactions] == [None] * 3  # faucet, approve, deposit
    receipts = [w3.eth.get_transaction_receipt(t["result"]) for t in transactions]
    assert all(r["status"] == 1 and r["from"] == wallet for r in receipts)
    assert [r["to"] for r in receipts] == [devnet.collateral.address, devnet.collateral.address, devnet.vault.address]
    assert w3.eth.get_transaction_count(wallet) == 3  # nothing else was sent from it

    page.field("withdraw-amount", "600", enter=True)
    refusal = page.settled("the refused withdrawal")
    assert refusal.startswith("Refused by the vault: insufficient free collateral: 600.00 USD is more than the free "
                              "collateral, 500.00 USD") and refusal.endswith("Nothing was sent.")
    assert len(sent()) == 3 and w3.eth.get_transaction_count(wallet) == 3

    # a limit order through the wallet rests in the open orders, and its Cancel button cancels it
    page.choose("order-market", "BTC-USD")
    page.choose("order-side", "Buy (long)")
    page.choose("order-kind", "Limit")
    page.field("order-size", "0.01")
    page.field("order-trigger", "30000")  # below the index: it rests
    page.click("#send-order")
    assert page.settled("the limit order through the browser wallet").startswith("committed order 0x")
    [order_id] = devnet.order_book.functions.open_orders(wallet, 0).call()
    assert devnet.vault.functions.cash(wallet, 0).call() < 500 * WAD  # the execution fee, escrowed
    wait_for(lambda: page.row("orders-table", page.driver.execute_script(
        f"return document.querySelector(\"#orders-table tr[data-order='{order_id}'] th\").innerText")), 10, "the limit order's row")
    page.click(f"#orders-table tr[data-order='{order_id}'] button")
    page.settled("the cancellation through the browser wallet")
    assert page.text("notice") == ""  # no refusal, no error
    outcome = wait_for(lambda: "cancelled by" in page.text("order-outcomes") and page.text("order-outcomes"), 10,
                       "the cancellation shown on the page")
    assert f"cancelled by {wallet}: cancelled by owner; execution fee 0.50 USD to {wallet}" in outcome
    assert devnet.vault.functions.cash(wallet, 0).call() == 500 * WAD  # the fee came back
    wait_for(lambda: "no open order" in page.text("orders-table"), 10, "the open orders to empty")
    assert len(sent()) == 5 and w3.eth.get_transaction_count(wallet) == 5  # the commit and the cancel, signed by the wallet

    # a market order through the wallet, executed by the keeper, then closed from the position's Close button
    page.choose("order-kind", "Market")
    page.field("order-size", "0.01")
    page.click("#send-order")
    page.settled("the market order through the browser wallet")  # (the status line may show a keeper's outcome by now)
    assert page.text("notice") == ""
    wait_for(lambda: page.row("positions-table", "BTC-USD"), 60, "the keeper to open the wallet's position")
    assert devnet.exchange.functions.position(wallet, 0, 0).call()[0] == WAD // 100
    page.click("#positions-table tr[data-market='BTC-USD'] button")
    page.settled("the close through the browser wallet")
    assert page.text("notice") == ""
    wait_for(lambda: "no open position" in page.text("positions-table"), 60, "the keeper to close the wallet's position")
    assert devnet.exchange.functions.position(wallet, 0, 0).call()[0] == 0

    # a liquidity deposit request through the wallet, executed by the keeper: its state and the shares on the page
    page.field("lp-deposit-amount", "100", enter=True)
    page.settled("the liquidity deposit request")  # (the status line may show the close's outcome by now)
    assert page.text("notice") == ""
    state = wait_for(lambda: (page.text("lp-requests-table").split("\n")[1:] or [""])[0], 10, "the request's row")
    assert "deposit\t100.00 USD" in state
    executed = wait_for(lambda: "executed:" in page.text("lp-requests-table") and page.text("lp-requests-table"), 60,
                        "the keeper to execute the liquidity deposit")
    shares = devnet.liquidity_vault.functions.balanceOf(wallet).call()
    decimals = devnet.liquidity_vault.functions.decimals().call()
    shown = f"{shares // 10**(decimals - 4) / 10**4:,.4f}"  # four decimals, rounded toward zero
    assert shares > 0 and f"executed: {shown} shares minted" in executed
    wait_for(lambda: page.text("lv-shares") == shown, 10, "the wallet's shares on the page")
    assert len(sent()) == 9 and w3.eth.get_transaction_count(wallet) == 9  # + market, close, approve, request

    # the wallet's user picks another account in the wallet: the page follows it and sends from it
    other = Account.from_key(keccak(text="perpdex web page: the injected wallet's second account")).address
    for method, params in (("anvil_impersonateAccount", [other]), ("anvil_setBalance", [other, hex(10 * 10**18)])):
        assert "error" not in w3.provider.make_request(method, params)
    page.driver.execute_script("window.ethereum.selectAccount(arguments[0])", other)
    wait_for(lambda: page.text("address") == f"connected: {other} (sub-account 0)", 10, "the page to follow the wallet's account")
    wait_for(lambda: page.text("acct-cash") == "0.00 USD", 10, "the second account's cash")
    page.field("faucet-amount", "100")
    page.click("#faucet-form button")
    assert page.settled("the faucet from the second account") == "minted 100.00 USD of devnet collateral"
    assert devnet.collateral.functions.balanceOf(other).call() == 100 * USDC and w3.eth.get_transaction_count(other) == 1

    # ... then another chain: the page warns, and sends nothing while the wallet is there
    page.driver.execute_script("window.ethereum.selectChain('0x1')")
    wait_for(lambda: "the browser wallet switched to chain 1; switch it back to chain 31337" in page.text("notice"), 10,
             "the page's warning about the wallet's chain")
    page.click("#faucet-form button")
    assert page.settled("the faucet on the wrong chain") == (
        "the browser wallet is on chain 1; switch it to chain 31337, where this deployment is. Nothing was sent.")
    assert len(sent()) == 10 and w3.eth.get_transaction_count(other) == 1
    page.driver.execute_script("window.ethereum.selectChain('0x7a69')")
    wait_for(lambda: page.text("notice") == "", 10, "the warning to go once the wallet is back on the devnet's chain")


# =============================================================================================
# Take-profit, liquidation, auto-deleveraging and the liquidity vault's redemption, from other
# dev accounts chosen in the page's wallet list (the walk's trader and the browser wallet are
# done; what follows moves ETH-USD only and the chain's clock past the LP's cooldown)
# =============================================================================================

LP, TAKER, BANKRUPT = 3, 4, 5  # anvil's dev accounts the page connects to below


def connect_dev(page: Page, devnet: Chain, index: int) -> str:
    """Choose anvil's account `index` in the page's wallet list and connect it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    account = devnet.account(index)
    choice = Select(page.driver.find_element(By.ID, "wallet-choice"))
    [option] = [o for o in choice.options if o.text.startswith(f"Devnet account #{index} ")]
    choice.select_by_value(option.get_attribute("value"))
    page.click("#connect")
    page.settled(f"connecting dev account #{index}")  # (the status line then shows the account's past order outcomes)
    assert page.text("notice") == ""
    wait_for(lambda: page.text("address").lower() == f"connected: {account} (sub-account 0)".lower(), 10,
             f"dev account #{index} shown as connected")
    return account


def fund(page: Page, devnet: Chain, me: str, usd: int, deposit: bool = True) -> None:
    """Faucet `usd` into the wallet and, with `deposit`, all of it into the vault, from the page."""
    page.field("faucet-amount", str(usd))
    page.click("#faucet-form button")
    assert page.settled("the faucet") == f"minted {usd:,.2f} USD of devnet collateral"
    if deposit:
        cash = devnet.vault.functions.cash(me, 0).call()
        page.field("deposit-amount", str(usd), enter=True)
        assert page.settled("the deposit") == f"deposited {usd:,.2f} USD: cash now {usd_text(cash + usd * WAD)} USD"


def market_order(page: Page, devnet: Chain, me: str, symbol: str, side: str, size: str) -> None:
    """A market order from the page's form (not reduce-only), waited for until the keeper has executed it."""
    market = devnet.market_id(symbol)
    before = devnet.exchange.functions.position(me, 0, market).call()[0]
    delta = int(float(size) * 10**4) * 10**14 * (1 if side.startswith("Buy") else -1)
    page.choose("order-market", symbol)
    page.choose("order-kind", "Market")
    page.choose("order-side", side)
    page.field("order-size", size)
    assert page.driver.execute_script("return document.getElementById('order-reduce').checked") is False
    page.click("#send-order")
    page.settled(f"the {symbol} market order")  # (the status line may show a keeper's outcome by now)
    assert page.text("notice") == ""
    wait_for(lambda: devnet.exchange.functions.position(me, 0, market).call()[0] == before + delta, 60,
             f"the keeper to execute the {symbol} market order")


def events(contract, name: str, devnet: Chain, **filters) -> list:
    """The `name` events of `contract` since the deployment, with the indexed arguments `filters`."""
    return getattr(contract.events, name)().get_logs(from_block=devnet.manifest.get("block", 0), argument_filters=filters)


def history(page: Page) -> list[list[str]]:
    """The history's rows, newest first: [block, kind, what happened]."""
    return page.driver.execute_script(
        "return [...document.querySelectorAll('#history-table tbody tr')].map(r => [...r.cells].map(c => c.innerText))")


def fill_text(trade, symbol: str) -> str:
    """A Trade event as the history writes its fill."""
    a = trade["args"]
    side = "bought" if a["size_delta"] > 0 else "sold"
    return (f"{side} {abs(a['size_delta']) / WAD:,.4f} {symbol} at {usd_text(a['fill_price'])}; fee {usd_text(a['fee'])}, "
            f"realized PnL {signed_usd(a['realized_pnl'])}; position now {signed_usd(a['new_size'], 4).lstrip('+')}")


def signed_usd(wad: int, shown: int = 2) -> str:
    """A signed WAD amount as the page writes it (rounded toward zero, '-' only when nonzero)."""
    scale = 10 ** (18 - shown)
    magnitude = abs(wad) // scale
    text = f"{magnitude // 10**shown:,}.{magnitude % 10**shown:0{shown}d}"
    return ("-" if wad < 0 and magnitude else "") + text


def push_price(devnet: Chain, symbol: str, answer: int) -> None:
    """The feed's answer from the publisher's next round on, waited for until published."""
    devnet.publisher.publish(symbol, answer)
    wait_for(lambda: devnet.aggregator(symbol).functions.latestAnswer().call() == answer, 10, f"the {symbol} price push")


def utc(seconds: int) -> str:
    """A chain timestamp as the page writes it."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def order_row(page: Page, order_id: int) -> list[str] | None:
    return page.driver.execute_script(
        f"const r = document.querySelector(\"#orders-table tr[data-order='{order_id}']\"); return r && [...r.cells].map(c => c.innerText)")


def test_a_take_profit_is_executed_by_the_keeper_when_the_price_reaches_it(page, devnet):
    me = connect_dev(page, devnet, TAKER)
    fund(page, devnet, me, 20000)
    eth = devnet.market_id("ETH-USD")
    market_order(page, devnet, me, "ETH-USD", "Buy (long)", "2")
    wait_for(lambda: (page.row("positions-table", "ETH-USD") or [""])[1:2] == ["+2.0000"], 10, "the ETH-USD long on the page")
    answer = devnet.aggregator("ETH-USD").functions.latestAnswer().call()  # 8 decimals
    trigger = answer * 102 // 100
    page.choose("order-kind", "Take-profit")
    page.choose("order-side", "Sell (short)")
    page.field("order-size", "2")
    page.field("order-trigger", f"{trigger / 10**8:.2f}")
    page.click("#send-order")
    page.settled("the take-profit commit")  # (the status line may show the market order's outcome by now)
    assert page.text("notice") == ""
    [order_id] = devnet.order_book.functions.open_orders(me, 0).call()
    row = wait_for(lambda: order_row(page, order_id), 10, "the take-profit's row in the open orders")
    assert row[1:5] == ["ETH-USD", "take-profit, reduce-only", "-2.0000", f"{trigger / 10**8:,.2f}"]
    assert devnet.exchange.functions.position(me, 0, eth).call()[0] == 2 * WAD  # it rests below its trigger

    # the price rises through the trigger (within the order's price bound, 0.5 % below it)
    push_price(devnet, "ETH-USD", answer * 1021 // 1000)
    wait_for(lambda: "no open position" in page.text("positions-table"), 60, "the keeper to close the position at the take-profit")
    assert devnet.exchange.functions.position(me, 0, eth).call()[0] == 0
    assert devnet.order_book.functions.open_orders(me, 0).call() == []
    latest = wait_for(lambda: "sold" in page.text("order-outcomes").splitlines()[0] and page.text("order-outcomes").splitlines()[0],
                      10, "the take-profit's execution shown on the page")
    assert f"executed by keeper {devnet.account(KEEPER)}: sold 2.0000 ETH-USD at" in latest
    *_, opened, closed = events(devnet.exchange, "Trade", devnet, owner=me, market_id=eth)
    assert closed["args"]["size_delta"] == -2 * WAD and closed["args"]["fill_price"] >= trigger * 10**10 * 995 // 1000
    assert closed["args"]["realized_pnl"] > 0  # the profit taken: about 2 % of 4,000 USD
    block = str(closed["blockNumber"])
    shown = wait_for(lambda: (fills := [r for r in history(page) if r[1] == "fill"]) and fills[0][0] == block and fills, 10,
                     "the closing fill in the history")
    assert [r[2] for r in shown[:2]] == [fill_text(closed, "ETH-USD"), fill_text(opened, "ETH-USD")]
    wait_for(lambda: page.text("acct-cash") == f"{signed_usd(devnet.vault.functions.cash(me, 0).call())} USD", 10,
             "the cash after the take-profit on the page")


def test_a_bankrupt_account_is_liquidated_and_the_history_shows_it(page, devnet):
    """A 20x long of ETH-USD; the price gaps 15 % down in one round: the keeper liquidates the
    account, which is left bankrupt beyond what the insurance fund holds. The page, on that
    account, shows the position gone and, in the history, the liquidation's close, the
    liquidation and the bad debt with the liquidator's numbers. (The profitable short on the
    other side, opened first from the page by the take-profit's trader, is what the next test's
    auto-deleveraging takes the deficit from.)"""
    eth = devnet.market_id("ETH-USD")
    taker = devnet.account(TAKER)
    market_order(page, devnet, taker, "ETH-USD", "Sell (short)", "10")
    me = connect_dev(page, devnet, BANKRUPT)
    fund(page, devnet, me, 1000)
    market_order(page, devnet, me, "ETH-USD", "Buy (long)", "10")  # ~20,400 USD on 1,000 USD
    wait_for(lambda: (page.row("positions-table", "ETH-USD") or [""])[1:2] == ["+10.0000"], 10, "the ETH-USD long on the page")
    answer = devnet.aggregator("ETH-USD").functions.latestAnswer().call()
    loss = 10 * answer * 15 // 100 * 10**10  # WAD USD
    insurance = devnet.vault.functions.insurance_cash().call()
    assert loss - 1000 * WAD > insurance, f"the insurance fund ({usd_text(insurance)} USD) would cover the bankruptcy"

    push_price(devnet, "ETH-USD", answer * 85 // 100)
    wait_for(lambda: "no open position" in page.text("positions-table"), 60, "the keeper to liquidate the long")
    assert devnet.exchange.functions.position(me, 0, eth).call()[0] == 0
    [liquidation] = events(devnet.liquidator, "Liquidation", devnet, owner=me)
    [bad_debt] = events(devnet.liquidator, "BadDebt", devnet, owner=me)
    *_, close = events(devnet.exchange, "Trade", devnet, owner=me, market_id=eth)
    a, b = liquidation["args"], bad_debt["args"]
    assert a["keeper"] == devnet.account(KEEPER) and a["fully_closed"] and a["equity_after"] < 0
    assert b["uncovered"] > 0 and b["deficit"] == b["covered_by_insurance"] + b["uncovered"]
    expected = {
        "liquidation": f"fully liquidated: {usd_text(a['closed_notional'])} USD of notional closed, penalty {usd_text(a['penalty'])} USD; "
                       f"equity after {signed_usd(a['equity_after'])} USD",
        "bad debt": f"deficit {usd_text(b['deficit'])} USD: {usd_text(b['covered_by_insurance'])} covered by the insurance fund, "
                    f"{usd_text(b['uncovered'])} uncovered",
        "fill": fill_text(close, "ETH-USD"),
    }
    block = str(liquidation["blockNumber"])
    rows = wait_for(lambda: (found := {r[1]: r for r in history(page) if r[1] in expected and r[0] == block}) and len(found) == 3 and found,
                    10, "the liquidation's entries in the history")
    assert {kind: r[2] for kind, r in rows.items()} == expected
    page.screenshot("liquidation", "history")


def test_auto_deleveraging_takes_the_deficit_from_the_profitable_short(page, devnet):
    """The bankrupt account's uncovered deficit in ETH-USD is taken from the profit of the
    short on the other side: the keeper (an ADL keeper in this deployment) auto-deleverages it
    at the index. The page, on the short's account, shows the ADL entry with the liquidator's
    numbers (size closed, price, realized PnL, haircut), the position left and the cash."""
    eth = devnet.market_id("ETH-USD")
    taker, bankrupt = devnet.account(TAKER), devnet.account(BANKRUPT)
    [bad_debt] = events(devnet.liquidator, "BadDebt", devnet, owner=bankrupt)
    wait_for(lambda: devnet.liquidator.functions.total_uncovered_deficit().call() == 0, 60,
             "the keeper's auto-deleveraging to cover the deficit")
    adl = events(devnet.liquidator, "AutoDeleveraged", devnet, owner=taker)
    assert adl and all(e["args"]["trigger"] == 1 and e["args"]["market_id"] == eth for e in adl)  # 1: a deficit to cover
    # the short's profit covered the whole deficit, and the bankrupt account's cash is back to zero
    assert sum(e["args"]["haircut"] for e in adl) == bad_debt["args"]["uncovered"]
    assert devnet.vault.functions.cash(bankrupt, 0).call() == 0
    size = devnet.exchange.functions.position(taker, 0, eth).call()[0]
    assert -10 * WAD < size < 0  # partly closed: its profit was more than the deficit

    connect_dev(page, devnet, TAKER)
    expected = [f"auto-deleveraged (a deficit to cover): {signed_usd(abs(a['size_closed']), 4)} ETH-USD closed at "
                f"{usd_text(a['price'])}, realized PnL {signed_usd(a['realized_pnl'])}, haircut {usd_text(a['haircut'])} USD"
                for a in reversed([e["args"] for e in adl])]  # newest first, as the history lists them
    assert all(a["haircut"] > 0 and a["realized_pnl"] >= a["haircut"] for a in (e["args"] for e in adl))
    shown = wait_for(lambda: [r[2] for r in history(page) if r[1] == "ADL"], 10, "the ADL entries in the history")
    assert shown == expected
    wait_for(lambda: (page.row("positions-table", "ETH-USD") or [""])[1:2] == [f"-{signed_usd(-size, 4)}"], 10,
             "the short's remaining size on the page")
    cash = devnet.vault.functions.cash(taker, 0).call()
    wait_for(lambda: page.text("acct-cash") == f"{signed_usd(cash)} USD", 10, "the short's cash after the haircut on the page")
    page.screenshot("adl", "history")


def test_a_liquidity_redemption_is_requested_after_the_cooldown_and_executed_by_the_keeper(page, devnet):
    """An LP's deposit request is executed by the keeper; its shares are shown locked for the
    vault's cooldown, and a redemption requested during it is refused in shares and UTC with
    nothing sent; past the cooldown (the node's clock moved on by it) the redemption request
    waits for the keeper, which executes it: the shares are gone and the assets paid are in
    the wallet's balance, as the page shows them."""
    w3, lv = devnet.w3, devnet.liquidity_vault.functions
    me = connect_dev(page, devnet, LP)
    fund(page, devnet, me, 1000, deposit=False)
    page.field("lp-deposit-amount", "500", enter=True)
    assert page.settled("the LP deposit request").startswith("requested a liquidity deposit of 500.00 USD")
    wait_for(lambda: "executed:" in page.text("lp-requests-table"), 60, "the keeper to execute the LP deposit")
    shares = lv.balanceOf(me).call()
    decimals = lv.decimals().call()
    shown = f"{shares // 10**(decimals - 4) / 10**4:,.4f}"
    [executed] = events(devnet.liquidity_vault, "DepositExecuted", devnet, receiver=me)
    assert shares == executed["args"]["shares"] > 0
    wait_for(lambda: page.text("lv-shares") == shown, 10, "the LP's shares on the page")
    cooldown = lv.lp_params().call()[2]
    locked, until = lv.locked_shares(me).call()
    assert locked == shares and until == w3.eth.get_block(executed["blockNumber"]).timestamp + cooldown
    assert page.text("lv-locked") == f"{shown} until {utc(until)}"
    problems = page.layout_problems()
    assert not problems, "with the locked shares shown:\n" + "\n".join(problems)

    # within the cooldown, a redemption is refused with the locked shares and when they free up
    nonce = w3.eth.get_transaction_count(me)
    page.field("lp-redeem-amount", shown.replace(",", ""), enter=True)
    refusal = page.settled("the redemption refused in the cooldown")
    assert refusal == (f"Refused by the liquidity vault: {shown} of your {shown} shares come from a deposit still in its cooldown "
                       f"and are locked until {utc(until)}; 0.0000 can be redeemed now. Nothing was sent.")
    assert w3.eth.get_transaction_count(me) == nonce and lv.balanceOf(me).call() == shares
    page.screenshot("lp-cooldown", "vault")

    # the node's clock past the cooldown's end: the shares are free
    now = w3.eth.get_block("latest").timestamp
    assert "error" not in w3.provider.make_request("evm_increaseTime", [until - now + 1])
    assert "error" not in w3.provider.make_request("evm_mine", [])
    wait_for(lambda: page.text("lv-locked") == "none", 10, "the page to show the shares unlocked")
    wallet_before = devnet.collateral.functions.balanceOf(me).call()
    page.watch("lp-requests-table")
    page.field("lp-redeem-amount", f"{shares // 10**decimals}.{shares % 10**decimals:0{decimals}d}", enter=True)  # all of them
    status = page.settled("the redemption request")
    assert page.text("notice") == "" and status.startswith("requested the redemption of ")
    [requested] = events(devnet.liquidity_vault, "RedeemRequested", devnet, requester=me)
    assert requested["args"]["shares"] == shares and lv.balanceOf(me).call() == 0  # held by the vault until executed
    # pending, until the keeper executes it at the first round after the request's delay
    request = f"0x{requested['args']['request_id']:x}"
    done = wait_for(lambda: next((r for r in [page.row("lp-requests-table", request)] if r and r[3].startswith("executed: ")), None),
                    60, "the keeper to execute the redemption")
    states = [r[1:4] for r in page.driver.execute_script("return window.perpdexSeen") if r[0] == request]
    assert states[0] == ["redemption", f"{shown} shares", "waiting for a keeper at the next prices"]
    [redeemed] = events(devnet.liquidity_vault, "RedeemExecuted", devnet, receiver=me)
    assets = redeemed["args"]["assets"]
    assert redeemed["args"]["request_id"] == requested["args"]["request_id"] and redeemed["args"]["shares"] == shares
    assert done[3] == f"executed: {assets // 10**4 / 100:,.2f} USD paid"
    assert 490 * USDC < assets <= 501 * USDC  # the 500 USD back, give or take the vault's PnL meanwhile
    assert devnet.collateral.functions.balanceOf(me).call() == wallet_before + assets
    wait_for(lambda: page.text("lv-shares") == "0.0000", 10, "the page to show no shares left")
    wait_for(lambda: page.text("acct-wallet") == f"{(wallet_before + assets) // 10**4 / 100:,.2f} USD", 10,
             "the wallet's balance with the redeemed assets on the page")
    page.screenshot("lp-redeemed", "vault")
