"""The dashboard (/dashboard, docs/DASHBOARD.md) in a real headless chromium against a real node.

Needs Debian's chromium and chromium-driver and the `selenium` package (scripts/lib/setup.sh).
Invariant DASH1: strict CSP on every dashboard answer, API data rendered as text only.
"""
import json
import os
import shutil
import urllib.error
import urllib.request

import pytest

from conftest import Node

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    # scripts/test installs both (AERODB_APT_PACKAGES); a missing browser is a set-up error, not a pass.
    raise RuntimeError("chromium and chromium-driver are required (apt-get install chromium chromium-driver)")

WAIT_SECONDS = 20
XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


@pytest.fixture(scope="module")
def dash_node():
    n = Node()
    n.admin("POST", "collections", {"name": "notes", "primary_key": "id",
                                    "fields": {"id": {"type": "text", "required": True},
                                               "body": {"type": "text", "nullable": True},
                                               "n": {"type": "int", "nullable": True}}})
    ops = [{"op": "insert", "collection": "notes", "doc": {"id": f"r{i:03d}", "body": f"row {i}", "n": i}}
           for i in range(120)]
    ops.append({"op": "insert", "collection": "notes", "doc": {"id": "a-xss", "body": XSS, "n": -1}})
    n.admin("POST", "transactions", {"ops": ops})
    yield n
    n.stop()


@pytest.fixture()
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,800", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver):
    return WebDriverWait(driver, WAIT_SECONDS)


def sign_in(driver, url, key):
    driver.get(url + "/dashboard")
    field = wait(driver).until(EC.visibility_of_element_located((By.ID, "key")))
    field.send_keys(key)
    driver.find_element(By.ID, "signin-button").click()


def console_errors(driver):
    """Severe browser-console entries other than the network log of an expected 401."""
    return [e for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and not (e.get("source") == "network" and " 401 " in e["message"])]


def test_dashboard_headers_csp_and_files(dash_node):
    for path in ("/dashboard", "/dashboard/", "/dashboard/app.js", "/dashboard/api.js", "/dashboard/dom.js",
                 "/dashboard/style.css"):
        with urllib.request.urlopen(dash_node.url + path, timeout=10) as r:
            csp = r.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            body = r.read()
            assert body
            if path.endswith(".js"):
                assert r.headers["Content-Type"].startswith("text/javascript")
                # DASH1: data reaches the page as text only.
                for sink in (b"innerHTML", b"outerHTML", b"insertAdjacentHTML", b"document.write", b"eval(", b"new Function"):
                    assert sink not in body, (path, sink)
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(dash_node.url + "/dashboard/nope.js", timeout=10)
    assert missing.value.code == 404
    assert json.loads(missing.value.read())["code"] == "AERO_NOT_FOUND"


def test_dashboard_sign_in_cluster_and_rows(dash_node, browser):
    sign_in(browser, dash_node.url, dash_node.service)
    status = wait(browser).until(EC.visibility_of_element_located((By.ID, "node-status")))
    assert "primary" in status.text and "commit mode" in status.text and "durable LSN" in status.text
    # The key lives in session storage, never in the URL.
    assert browser.execute_script("return sessionStorage.getItem('aerodb.dashboard.serviceKey')") == dash_node.service
    assert dash_node.service not in browser.current_url
    browser.find_element(By.LINK_TEXT, "Collections").click()
    wait(browser).until(EC.element_to_be_clickable((By.LINK_TEXT, "notes"))).click()
    rows = wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#rows table")))
    assert "r000" in rows.text and "row 0" in rows.text
    assert browser.find_element(By.ID, "row-range").text == "rows 1–50 of 121"
    assert "text" in browser.find_element(By.ID, "schema").text
    browser.find_element(By.LINK_TEXT, "next →").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "row-range"), "rows 51–100 of 121"))
    assert "r049" in browser.find_element(By.ID, "rows").text  # ids sort "a-xss", r000.., so r049 is row 51
    # Sort by a column: n descending puts r119 (n=119) first; the pager keeps the order.
    browser.find_element(By.LINK_TEXT, "n").click()
    wait(browser).until(EC.presence_of_element_located((By.LINK_TEXT, "n ▲")))
    browser.find_element(By.LINK_TEXT, "n ▲").click()
    wait(browser).until(EC.presence_of_element_located((By.LINK_TEXT, "n ▼")))
    first_row = browser.find_element(By.CSS_SELECTOR, "#rows tbody tr").text
    assert first_row.startswith("r119"), first_row
    assert "sort=n&dir=desc" in browser.find_element(By.LINK_TEXT, "next →").get_attribute("href")
    assert console_errors(browser) == []
    browser.find_element(By.ID, "signout").click()
    wait(browser).until(EC.visibility_of_element_located((By.ID, "key")))
    assert browser.execute_script("return sessionStorage.getItem('aerodb.dashboard.serviceKey')") is None


def test_dashboard_wrong_key_refused_readably(dash_node, browser):
    sign_in(browser, dash_node.url, dash_node.service[:-4] + "AAAA")
    error = wait(browser).until(EC.visibility_of_element_located((By.ID, "signin-error")))
    assert "401" in error.text and "AERO_AUTH_UNAUTHORIZED" in error.text and "refused" in error.text
    assert browser.find_element(By.ID, "nav").get_attribute("hidden") is not None
    assert browser.execute_script("return sessionStorage.getItem('aerodb.dashboard.serviceKey')") is None
    # The anon key is a valid key but not the service key: refused with a 403 saying so.
    field = browser.find_element(By.ID, "key")
    field.clear()
    field.send_keys(dash_node.anon)
    browser.find_element(By.ID, "signin-button").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "signin-error"), "not the service key"))
    assert "403" in browser.find_element(By.ID, "signin-error").text


def test_dashboard_renders_markup_in_data_as_text(dash_node, browser):
    sign_in(browser, dash_node.url, dash_node.service)
    wait(browser).until(EC.visibility_of_element_located((By.ID, "node-status")))
    browser.get(dash_node.url + "/dashboard#/collections/notes")
    rows = wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#rows table")))
    cells = [td for td in rows.find_elements(By.TAG_NAME, "td") if "<script>" in td.text]
    assert len(cells) == 1 and cells[0].text == XSS  # shown as the characters it holds
    assert browser.find_elements(By.CSS_SELECTOR, "#rows script, #rows img") == []
    assert browser.execute_script("return window.__xss === undefined")
    assert console_errors(browser) == []


def test_dashboard_users_storage_functions_query(dash_node, browser):
    req = urllib.request.Request(dash_node.url + "/auth/v1/admin/users", method="POST",
                                 data=json.dumps({"email": "dash@example.com", "password": "pw-Dashboard-1",
                                                  "email_confirm": True}).encode(),
                                 headers={"Authorization": f"Bearer {dash_node.service}", "apikey": dash_node.service,
                                          "Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()
    sign_in(browser, dash_node.url, dash_node.service)
    wait(browser).until(EC.visibility_of_element_located((By.ID, "node-status")))
    browser.find_element(By.LINK_TEXT, "Users").click()
    users = wait(browser).until(EC.visibility_of_element_located((By.ID, "users")))
    assert "dash@example.com" in users.text
    browser.find_element(By.LINK_TEXT, "Storage").click()
    wait(browser).until(EC.visibility_of_element_located((By.ID, "buckets")))
    browser.find_element(By.LINK_TEXT, "Functions").click()
    wait(browser).until(EC.visibility_of_element_located((By.ID, "functions")))
    browser.find_element(By.LINK_TEXT, "Query").click()
    box = wait(browser).until(EC.visibility_of_element_located((By.ID, "query-input")))
    box.clear()
    box.send_keys('{"collection":"notes","filter":{"n":{"$gte":118}},"count":true}')
    browser.find_element(By.XPATH, "//button[text()='Run']").click()
    out = wait(browser).until(EC.text_to_be_present_in_element((By.ID, "query-output"), "2 rows of 2"))
    assert out
    box.clear()
    box.send_keys('{"collection":"nope"}')
    browser.find_element(By.XPATH, "//button[text()='Run']").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "query-output"), "AERO_"))
    assert "HTTP 4" in browser.find_element(By.ID, "query-output").text
    errs = [e for e in console_errors(browser) if not (e.get("source") == "network" and " 404 " in e["message"])]
    assert errs == []


# Screenshots of every page at a laptop and a phone size, saved as artifacts (docs/DASHBOARD.md).
ARTIFACTS = os.environ.get("AERODB_ARTIFACTS_DIR", os.path.join(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))), ".build", "dashboard-screenshots"))
PAGES = {"cluster": "node-status", "collections/notes": "rows", "query": "query-input", "users": "users",
         "storage": "buckets", "functions": "functions"}


def test_dashboard_every_page_at_laptop_and_phone_width(dash_node, browser):
    os.makedirs(ARTIFACTS, exist_ok=True)
    sign_in(browser, dash_node.url, dash_node.service)
    wait(browser).until(EC.visibility_of_element_located((By.ID, "node-status")))
    for width, height in ((1280, 800), (390, 844)):
        browser.set_window_size(width, height)
        for page, marker in PAGES.items():
            browser.get(f"{dash_node.url}/dashboard#/{page}")
            wait(browser).until(EC.presence_of_element_located((By.ID, marker)))
            # Wide tables scroll inside their card; the page itself never scrolls sideways.
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 1, (page, width, overflow)
            browser.save_screenshot(os.path.join(ARTIFACTS, f"{page.replace('/', '-')}-{width}x{height}.png"))
    assert console_errors(browser) == []
