"""The admin in a real browser: Debian's Chromium, driven by Playwright, against a live server.

Few and broad on purpose: each walks what an operator or an organization's owner does in one
sitting. The rules behind each step are tested one by one, with Django's test client, in
test_admin_tenancy.py and test_admin_pages.py.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from io import StringIO

import pytest
import requests
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import override_settings
from playwright.sync_api import Browser, Page, expect, sync_playwright

from billing.models import Balance, LedgerEntry
from burki.models import ApiKey, Organization
from calls.models import Call
from telephony.models import PhoneNumber, ProviderAccount

CHROMIUM = "/usr/bin/chromium"  # Debian's package: `apt-get install chromium`
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP = {"width": 1366, "height": 768}
PASSWORD = "operator-password-for-tests"
TABLE_FITS = """(() => {
    const table = document.querySelector("#result_list");
    return !table || table.scrollWidth <= table.closest(".results").clientWidth;
})()"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Playwright's sync API keeps an event loop running in this thread, and Django refuses ORM
    # calls from a thread with a running loop; the test's own queries are plain sync code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser: Browser, live_server) -> Iterator[Page]:
    context = browser.new_context(base_url=live_server.url, viewport=LAPTOP)
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


def log_in(page: Page, username: str, password: str) -> None:
    page.goto("/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text("Welcome")


def save(page: Page) -> None:
    page.click("input[name=_save]")
    expect(page.locator(".messagelist .success")).to_be_visible()


def pick(page: Page, field: str, text: str) -> None:
    """Choose `text` in an autocomplete (select2) field, as a person types and clicks."""
    page.click(f".field-{field} .select2-selection")
    page.fill(".select2-search__field", text)
    page.click(f".select2-results__option:has-text('{text}')")


def test_an_operator_sets_up_an_organization_and_reads_its_call(page: Page, live_server) -> None:
    User.objects.create_superuser("operator", "op@example.com", PASSWORD)
    log_in(page, "operator", PASSWORD)

    # The organization, which comes with its balance.
    page.goto("/admin/burki/organization/add/")
    page.fill("#id_name", "Newco")
    save(page)
    organization = Organization.objects.get(name="Newco")
    balance = Balance.objects.get(organization=organization)

    # An API key, shown once.
    page.goto("/admin/burki/organization/")
    page.check(f"input[name=_selected_action][value='{organization.pk}']")
    page.select_option("select[name=action]", "create_api_key")
    page.click("button[name=index]")
    message = page.locator(".messagelist .warning").inner_text()
    raw_key = re.search(r"bk_[\w-]+", message).group(0)  # type: ignore[union-attr]
    assert ApiKey.hash(raw_key) == ApiKey.objects.get(organization=organization).hashed_key
    page.reload()
    assert raw_key not in page.content()

    # A top-up, in dollars.
    page.goto(f"/admin/billing/balance/{balance.pk}/change/")
    expect(page.locator("h1")).to_have_text("View balance")
    expect(page.locator("input[name=_save]")).to_have_count(0)
    page.click("text=Top up / adjust")
    page.fill("#id_amount", "20.00")
    page.fill("#id_memo", "first invoice")
    page.click("input[value=Record]")
    expect(page.locator(".messagelist")).to_contain_text("Newco: +$20.00 recorded.")
    expect(page.locator(".field-balance")).to_contain_text("$20.00")

    # A provider account: only providers that use one are offered.
    page.goto("/admin/telephony/provideraccount/add/")
    page.select_option("#id_organization", label="Newco")
    offered = page.locator("#id_provider option").all_inner_texts()
    assert offered == ["---------", "Twilio", "Telnyx", "Vonage"]
    page.select_option("#id_provider", "twilio")
    page.fill("#id_name", "Newco Twilio")
    page.click("summary:has-text('Twilio')")
    page.fill("#id_twilio__account_sid", "XY123")
    page.fill("#id_twilio__auth_token", "a-twilio-auth-token")
    page.click("input[name=_save]")
    expect(page.locator(".errorlist")).to_contain_text("An Account SID is AC and 32")
    page.fill("#id_twilio__account_sid", "AC" + "0123456789abcdef" * 2)
    page.fill("#id_twilio__auth_token", "a-twilio-auth-token")
    save(page)
    assert ProviderAccount.objects.get(organization=organization).secrets == {
        "auth_token": "a-twilio-auth-token"
    }

    # An assistant, then a number (the demo's kind: possible, not valid) that uses it.
    page.goto("/admin/assistants/assistant/add/")
    page.select_option("#id_organization", label="Newco")
    page.fill("#id_name", "Newco Support")
    page.fill("#id_welcome_message", "Hello from Newco.")
    save(page)
    page.goto("/admin/telephony/phonenumber/add/")
    page.select_option("#id_organization", label="Newco")
    page.fill("#id_number", "+15551234567")
    page.fill("#id_label", "Newco main")
    page.select_option("#id_provider", "sandbox")
    pick(page, "assistant", "Newco Support")
    save(page)
    number = PhoneNumber.objects.get(organization=organization)
    assert (str(number.number), number.assistant.name) == ("+15551234567", "Newco Support")

    # The key places a call; its page reads as a record, not a form.
    placed = requests.post(
        f"{live_server.url}/calls/initiate",
        json={"from_phone_number": "+15551234567", "to_phone_number": "+15559876543"},
        headers={"Authorization": f"Bearer {raw_key}"},
        timeout=10,
    )
    assert placed.status_code == 200, placed.text
    page.goto("/admin/calls/call/")
    page.click("#result_list tbody tr th a")
    expect(page.locator("h1")).to_have_text("View call")
    expect(page.locator(".field-to_number")).to_contain_text("+15559876543")
    expect(page.locator(".field-hold")).to_contain_text("$1.00")
    expect(page.locator("input[type=submit]")).to_have_count(0)
    assert str(Call.objects.get().pk) == placed.json()["call_id"]


def test_the_acme_owner_finds_only_acme(page: Page, live_server) -> None:
    with override_settings(DEBUG=True):
        out = StringIO()
        call_command("seed_demo", "--json", stdout=out)
    demo = json.loads(out.getvalue())
    placed = requests.post(
        f"{live_server.url}/calls/initiate",
        json={"from_phone_number": demo["from_phone_number"], "to_phone_number": "+15559876543"},
        headers={"Authorization": f"Bearer {demo['api_key']}"},
        timeout=10,
    )
    assert placed.status_code == 200, placed.text
    log_in(page, demo["member_username"], demo["member_password"])

    # Every page the owner is offered, and each of its rows.
    page.goto("/admin/")
    offered = page.locator("#content-main a[href^='/admin/']").evaluate_all(
        "links => [...new Set(links.map(a => a.getAttribute('href')))]"
    )
    assert "/admin/telephony/phonenumber/" in offered
    assert "/admin/auth/user/" not in offered
    for href in offered:
        page.goto(href)
        text = page.locator("#content").inner_text()
        assert "Globex" not in text and "Initech" not in text, href
        # Wider than a laptop's screen (or than its own box, which scrolls) is a table no one
        # reads whole.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), href
        assert page.evaluate(TABLE_FITS), href
    globex_balance = Balance.objects.get(organization__name="Globex")
    response = page.goto(f"/admin/billing/balance/{globex_balance.pk}/change/")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")

    # Acme's balance, while a call holds money: nothing on the page to save.
    acme_balance = Balance.objects.get(organization__name="Acme")
    page.goto(f"/admin/billing/balance/{acme_balance.pk}/change/")
    expect(page.locator(".field-reserved")).to_contain_text("$1.00")
    expect(page.locator("input[name=_save]")).to_have_count(0)
    expect(page.locator("text=Top up / adjust")).to_have_count(0)

    # The owner adds an assistant and a number: Acme is the only organization to choose.
    page.goto("/admin/assistants/assistant/add/")
    assert page.locator("#id_organization option").all_inner_texts() == ["---------", "Acme"]
    page.select_option("#id_organization", label="Acme")
    page.fill("#id_name", "Acme Reminders")
    save(page)
    page.goto("/admin/telephony/phonenumber/add/")
    page.select_option("#id_organization", label="Acme")
    page.fill("#id_number", "+1 (555) 123-0000")
    pick(page, "assistant", "Acme Reminders")
    save(page)
    added = PhoneNumber.objects.get(number="+15551230000")
    assert (added.organization.name, added.assistant.name) == ("Acme", "Acme Reminders")
    assert LedgerEntry.objects.filter(organization__name="Acme", kind="hold").count() == 1
