"""The studio in a real browser: Debian's Chromium, driven through its
ChromeDriver by Selenium (pinned in benches/requirements.txt).

Run by the Rust test `studio::a_marketer_builds_saves_and_exports_in_chromium`,
which starts `taglake studio` with users, asks the CLI for every figure the
page must show and passes them here in a JSON file (argv[1]). Each step
acts as a person would (clicks, typing, choosing) and reads what the page
shows; a mismatch fails with the step's name. Every page is screenshotted
at 1440x900 and checked by axe-core (vendored beside this file: labelled
inputs, contrast and the rest of WCAG 2 A/AA). Nothing is fetched from the
network: the browser starts with its background networking off.
"""

import json
import os
import sys
import tempfile
import time
import urllib.parse

os.environ.setdefault("SE_OFFLINE", "true")  # Selenium never downloads a driver or a browser.

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 30  # seconds a step may take before it fails (a debug build on a busy machine)
HERE = os.path.dirname(os.path.abspath(__file__))
AXE = os.path.join(HERE, "axe-4.11.0.min.js")


def fail(step, why):
    print(f"browser step '{step}' failed: {why}", file=sys.stderr)
    sys.exit(1)


def browser(profile):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1440,900", f"--user-data-dir={profile}",
    ]:
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_window_size(1440, 900)
    return d


def wait_for(d, step, check):
    try:
        # A live update may replace an element between finding and reading
        # it: that poll failed, the next one finds the new element.
        return WebDriverWait(d, WAIT, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda d: check(d)
        )
    except Exception as e:  # noqa: BLE001 - the step's name says what was awaited
        fail(step, f"{type(e).__name__} after {WAIT} s; page {d.current_url}:\n{d.find_element(By.TAG_NAME, 'main').text[:2000]}")


def text_of(d, css):
    try:
        found = d.find_elements(By.CSS_SELECTOR, css)
        return found[0].text if found else None
    except StaleElementReferenceException:
        return None


def value_of(d, css):
    try:
        found = d.find_elements(By.CSS_SELECTOR, css)
        return found[0].get_attribute("value") if found else None
    except StaleElementReferenceException:
        return None


def quiet(d, step):
    """Waits until htmx has had no request in flight for 0.5 s: the page's
    live updates swap fields (the expression, the blocks) when they land,
    so a step types into a page at rest."""
    calm = []

    def still(d):
        busy = d.execute_script("return document.querySelectorAll('.htmx-request').length")
        calm.append(busy == 0)
        return len(calm) >= 5 and all(calm[-5:])

    wait_for(d, step + " (the page settles)", still)


def retype(d, element_id, text):
    """Replaces the text of a field, finding it again if a live update
    replaced it meanwhile."""
    for _ in range(5):
        try:
            el = d.find_element(By.ID, element_id)
            el.send_keys(Keys.CONTROL, "a")
            el.send_keys(Keys.DELETE)
            el.send_keys(text)
            return
        except StaleElementReferenceException:
            time.sleep(0.2)
    fail(f"typing into #{element_id}", "the field kept being replaced")


def check_page(d, name, shots, violations):
    """Screenshot at 1440x900, then axe-core's WCAG 2 A/AA rules."""
    d.save_screenshot(os.path.join(shots, f"{name}.png"))
    with open(AXE, encoding="utf-8") as f:
        d.execute_script(f.read())
    found = d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"
        ".then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        "  nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}))))"
        ".catch(e => done([{id: 'axe-error', help: String(e), nodes: []}]));"
    )
    if found:
        violations[name] = found


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        c = json.load(f)
    base, shots = c["base"], c["screenshots"]
    os.makedirs(shots, exist_ok=True)
    violations = {}
    with tempfile.TemporaryDirectory() as profile:
        d = browser(profile)
        d.set_script_timeout(WAIT)
        try:
            run(d, c, base, shots, violations)
        finally:
            d.quit()
    if violations:
        fail("accessibility (axe-core)", json.dumps(violations, indent=1))
    print("browser: every step passed")


def run(d, c, base, shots, violations):
    # Not logged in: every page is the login page.
    d.get(base + "/builder")
    wait_for(d, "the login page", lambda d: d.find_elements(By.ID, "password"))
    check_page(d, "login", shots, violations)
    d.find_element(By.ID, "user").send_keys(c["user"])
    d.find_element(By.ID, "password").send_keys(c["password"])
    d.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    wait_for(d, "logging in", lambda d: "Signed in as" in d.find_element(By.TAG_NAME, "header").text)

    # Build the audience by clicking and typing.
    d.get(base + "/builder")
    d.find_element(By.ID, "b0-tags").send_keys("tier_gold category_lover_beauty")
    d.find_element(By.CSS_SELECTOR, "button[name=action][value=add]").click()
    wait_for(d, "adding a block", lambda d: d.find_elements(By.ID, "b1-tags"))
    Select(d.find_element(By.ID, "b1-kind")).select_by_value("none")
    d.find_element(By.ID, "b1-tags").send_keys("dormant_90_plus")
    want = c["count"]
    wait_for(d, f"the running total reads {want}", lambda d: text_of(d, "#audience-count") == want)
    wait_for(d, "the expression follows the blocks", lambda d: value_of(d, "#expr") == c["audience"])
    wait_for(d, "the sample, asked for once the counts are shown",
             lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sample tbody tr")) > 0)
    quiet(d, "the blocks' updates")
    check_page(d, "builder", shots, violations)

    # A condition on a member attribute: its own fields, shown by choosing the kind.
    d.find_element(By.CSS_SELECTOR, "button[name=action][value=add]").click()
    wait_for(d, "adding a third block", lambda d: d.find_elements(By.ID, "b2-kind"))
    Select(d.find_element(By.ID, "b2-kind")).select_by_value("attr")
    wait_for(d, "the attribute's fields replace the tags field",
             lambda d: d.find_element(By.ID, "b2-column").is_displayed() and not d.find_element(By.ID, "b2-tags").is_displayed())
    Select(d.find_element(By.ID, "b2-column")).select_by_value("points_balance")
    Select(d.find_element(By.ID, "b2-op")).select_by_value(">=")
    d.find_element(By.ID, "b2-value").send_keys("500")
    wait_for(d, f"the running total with the condition reads {c['points_count']}",
             lambda d: text_of(d, "#audience-count") == c["points_count"])
    wait_for(d, "the expression has the condition", lambda d: value_of(d, "#expr") == c["with_points"])
    quiet(d, "the condition's updates")
    check_page(d, "builder-attribute", shots, violations)

    # Edit the expression: the blocks follow.
    retype(d, "expr", "lifecycle_mature AND NOT tier_gold")
    wait_for(d, "the blocks follow the expression",
             lambda d: value_of(d, "#b0-tags") == "lifecycle_mature" and value_of(d, "#b1-tags") == "tier_gold")
    wait_for(d, "the second block is 'has none of'",
             lambda d: Select(d.find_element(By.ID, "b1-kind")).first_selected_option.get_attribute("value") == "none")

    # A bad expression shows the CLI's error next to the field.
    quiet(d, "the expression's update")
    retype(d, "expr", c["bad_expression"])
    wait_for(d, "the CLI's error next to the expression",
             lambda d: c["bad_error"] in (text_of(d, "#expr-error") or ""))

    # Back to the audience; save it, reload, find it.
    quiet(d, "the bad expression's update")
    retype(d, "expr", c["audience"])
    wait_for(d, "the blocks follow the audience again", lambda d: value_of(d, "#b0-tags") == "tier_gold category_lover_beauty")
    wait_for(d, "the total is back", lambda d: text_of(d, "#audience-count") == want)
    quiet(d, "the audience's update")
    d.find_element(By.ID, "save-name").send_keys(c["saved_name"])
    d.find_element(By.ID, "save-description").send_keys("gold beauty lovers, still active")
    d.find_element(By.CSS_SELECTOR, "button[name=action][value=save]").click()
    wait_for(d, "the saved audience's page", lambda d: d.current_url.endswith("/audiences/" + c["saved_name"]))
    d.get(base + "/audiences")
    d.refresh()
    wait_for(d, "the saved audience is listed after a reload",
             lambda d: d.find_elements(By.CSS_SELECTOR, f"a[href='/audiences/{c['saved_name']}']"))
    row = d.find_element(By.CSS_SELECTOR, f"a[href='/audiences/{c['saved_name']}']").find_element(By.XPATH, "./ancestor::tr")
    if want not in row.text:
        fail("the saved audience's count", f"{want} not in {row.text!r}")
    check_page(d, "audiences", shots, violations)

    # The breakdown by tier is `audience breakdown`'s.
    d.get(base + "/builder?by=tier&expr=" + urllib.parse.quote(c["audience"]))
    wait_for(d, "the breakdown", lambda d: d.find_elements(By.CSS_SELECTOR, "#breakdown tbody tr"))
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in d.find_elements(By.CSS_SELECTOR, "#breakdown tbody tr")]
    shown = [[r[0], r[1], r[3]] for r in rows]
    if shown != c["breakdown"]:
        fail("the breakdown by tier", f"page {shown} != CLI {c['breakdown']}")

    # A request without the CSRF token is refused.
    status = d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/builder/live?from=blocks', {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'},"
        " body: 'b0.tags=tier_gold'}).then(r => done(r.status)).catch(e => done(String(e)));"
    )
    if status != 403:
        fail("a POST without the CSRF token", f"answered {status}, not 403")

    # Export 90/10 with a salt.
    d.get(base + "/export?expr=" + urllib.parse.quote(c["audience"]))
    wait_for(d, "the export dialog", lambda d: d.find_elements(By.ID, "salt"))
    check_page(d, "export", shots, violations)
    retype(d, "split", "treatment=90,control=10")
    d.find_element(By.ID, "salt").send_keys(c["salt"])
    retype(d, "launch_at", c["launch_at"])
    d.find_element(By.ID, "file").send_keys(c["export_file"])
    d.find_element(By.CSS_SELECTOR, "#export button[type=submit]").click()
    wait_for(d, "the experiment's report", lambda d: "/experiments/" in d.current_url and d.find_elements(By.ID, "arms"))
    check_page(d, "experiment", shots, violations)

    # Every other page: shown, screenshotted, checked.
    for name, path in [("overview", "/"), ("tags", "/tags"), ("tag", "/tags/tier_gold"),
                       ("communities", "/communities"), ("experiments", "/experiments")]:
        d.get(base + path)
        wait_for(d, f"the {name} page", lambda d: d.find_elements(By.TAG_NAME, "h1"))
        check_page(d, name, shots, violations)

    # Logged out (no cookie): the login page again.
    d.delete_all_cookies()
    d.get(base + "/audiences")
    wait_for(d, "the login page without a session", lambda d: d.find_elements(By.ID, "password"))


if __name__ == "__main__":
    main()
