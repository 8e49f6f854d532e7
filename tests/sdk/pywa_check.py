"""SDK compatibility: pywa (unmodified) talking to sendgate's sandbox.

Usage: python pywa_check.py http://127.0.0.1:PORT

All checks share one sendgate process, so their order matters: the BSUID
template refusal (d) must run before anything teaches sendgate the BSUID's
phone (run.sh runs this script before the kapso one).

Prints one line per check and `pywa: N passed, M failed`; exits 1 if any
check failed.
"""

import json
import sys

import httpx
from pywa import WhatsApp
from pywa.errors import WhatsAppError
from pywa.types.templates import TemplateLanguage

BASE = sys.argv[1].rstrip("/") if len(sys.argv) > 1 else "http://127.0.0.1:8080"
PHONE_NUMBER_ID = "106540352242922"
GRAPH_VERSION = "23.0"
PHONE = "+1 (631) 555-1234"
BSUID = "US.13491208655302741918"
USERNAME = "@pablo.m"
# Meta's documented group id.
GROUP_ID = "Y2FwaV9ncm91cDoxNzA1NTU1MDEzOToxMjAzNjM0MDQ2OTQyMzM4MjAZD"

results = []


def check(name, fn):
    """Runs one check; fn returns None on success or raises AssertionError."""
    try:
        fn()
    except AssertionError as e:
        results.append(False)
        print(f"FAIL pywa {name}: {e}")
    except Exception as e:  # an unexpected exception is a failure, not a crash
        results.append(False)
        print(f"FAIL pywa {name}: unexpected {type(e).__name__}: {e}")
    else:
        results.append(True)
        print(f"PASS pywa {name}")


# The sandbox's log, read through the proxy (a separate client: not pywa's).
probe = httpx.Client(base_url=BASE, timeout=10)


def received():
    r = probe.get("/_sandbox/received")
    r.raise_for_status()
    return r.json()


def sends():
    return [e for e in received() if e["method"] == "POST" and e["path"].endswith("/messages")]


# pywa has no base-URL option: it sets graph.facebook.com as base_url on the
# httpx client it is given. We own that client, so we point it at sendgate
# afterwards through httpx's public attribute; pywa itself is untouched.
session = httpx.Client(timeout=10)
wa = WhatsApp(
    phone_id=PHONE_NUMBER_ID,
    token="SANDBOX_TOKEN",
    session=session,
    api_version=GRAPH_VERSION,
)
session.base_url = f"{BASE}/v{GRAPH_VERSION}"


def expect_error(fn, code, text=None):
    try:
        fn()
    except WhatsAppError as e:
        assert e.code == code, f"expected error code {code}, got {e.code} ({e.message})"
        if text is not None:
            assert text in e.message, f"expected {text!r} in message, got {e.message!r}"
        return e
    raise AssertionError(f"expected WhatsAppError {code}, the send succeeded")


def phone_passes_through():
    before = len(sends())
    sent = wa.send_message(to=PHONE, text="hello from pywa")
    assert sent.id.startswith("wamid."), f"unexpected message id {sent.id!r}"
    after = sends()
    assert len(after) == before + 1, f"expected one new send upstream, got {len(after) - before}"
    body = after[-1]["body"]
    # sendgate forwards a phone send byte for byte: pywa's own JSON
    # serialisation (no spaces after separators) must reach the sandbox as is.
    assert '"to":"+1 (631) 555-1234"' in body, f"phone not byte-identical upstream: {body}"
    payload = json.loads(body)
    assert payload.get("to") == PHONE, f"to = {payload.get('to')!r}"
    assert payload.get("type") == "text", f"type = {payload.get('type')!r}"
    assert payload.get("text", {}).get("body") == "hello from pywa", f"text = {payload.get('text')!r}"
    assert "recipient" not in payload, "unexpected recipient key"
    assert after[-1]["outcome"] == "delivered", f"outcome = {after[-1]['outcome']!r}"


def bsuid_text_succeeds():
    before = len(sends())
    sent = wa.send_message(to=BSUID, text="hello BSUID from pywa")
    assert sent.id.startswith("wamid."), f"unexpected message id {sent.id!r}"
    after = sends()
    assert len(after) == before + 1, f"expected one new send upstream, got {len(after) - before}"
    payload = json.loads(after[-1]["body"])
    assert payload.get("recipient") == BSUID, f"recipient = {payload.get('recipient')!r}"
    assert "to" not in payload, f"unexpected to = {payload.get('to')!r}"
    assert after[-1]["outcome"] == "delivered", f"outcome = {after[-1]['outcome']!r}"


def username_blocked():
    before = len(received())
    # pywa labels a non-phone, non-BSUID target as recipient_type "group".
    expect_error(
        lambda: wa.send_message(to=USERNAME, text="hello username"),
        100,
        "Usernames cannot be message targets",
    )
    assert len(received()) == before, "a blocked username send reached the sandbox"


def bare_username_sent_as_group_blocked():
    before = len(received())
    # pywa sends any `to` that is not all digits as recipient_type "group".
    expect_error(
        lambda: wa.send_message(to="pablomorales", text="hello username"),
        100,
        "Usernames cannot be message targets",
    )
    assert len(received()) == before, "a username sent as a group reached the sandbox"


def group_id_forwarded_untouched():
    before = len(sends())
    sent = wa.send_message(to=GROUP_ID, text="hello group")
    assert sent.id.startswith("wamid."), f"unexpected message id {sent.id!r}"
    after = sends()
    assert len(after) == before + 1, f"expected one new send upstream, got {len(after) - before}"
    body = after[-1]["body"]
    assert f'"to":"{GROUP_ID}"' in body, f"group id not byte-identical upstream: {body}"
    assert json.loads(body).get("recipient_type") == "group", body


def auth_template_to_bsuid_blocked():
    before = len(sends())
    expect_error(
        lambda: wa.send_template(to=BSUID, name="otp_login", language=TemplateLanguage("en_US")),
        131062,
    )
    assert len(sends()) == before, "a blocked template send reached the sandbox"


check("(a) text to phone +1 (631) 555-1234 passes byte-identical", phone_passes_through)
check("(b) text to BSUID succeeds (pywa sends recipient)", bsuid_text_succeeds)
check("(c) text to @pablo.m -> WhatsAppError 100 'Usernames cannot be message targets'", username_blocked)
check("(d) otp_login template to BSUID-only -> WhatsAppError 131062", auth_template_to_bsuid_blocked)
check("(e) text to pablomorales (sent by pywa as a group) -> WhatsAppError 100", bare_username_sent_as_group_blocked)
check("(f) text to Meta's example group id is forwarded untouched", group_id_forwarded_untouched)

passed = sum(results)
failed = len(results) - passed
print(f"pywa: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
