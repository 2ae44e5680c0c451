"""The dashboard (/dashboard, docs/DASHBOARD.md) in a real headless chromium against a real node.

Needs Debian's chromium and chromium-driver and the `selenium` package (scripts/lib/setup.sh).
Invariant DASH1: strict CSP on every dashboard answer, API data rendered as text only.
"""
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import BINARY, Node

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    # scripts/test installs both (AERODB_APT_PACKAGES); a missing browser is a set-up error, not a pass.
    raise RuntimeError("chromium and chromium-driver are required (apt-get install chromium chromium-driver)")

WAIT_SECONDS = 20
STATIC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "Sources", "BaaS", "Dashboard", "static")
JS_FILES = sorted(f for f in os.listdir(STATIC) if f.endswith(".js"))
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
    shutil.rmtree(n.dir, ignore_errors=True)  # conftest keeps node directories; these tests clean theirs


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


def node_log(node, expected, seconds=20):
    """The node's log once it holds `expected`, or as it is after `seconds`: request lines are
    written by the node's log writer thread shortly after the answer (LogLine.Writer)."""
    deadline = time.monotonic() + seconds
    while True:
        with open(os.path.join(node.dir, "node.log"), errors="replace") as f:
            log = f.read()
        if expected in log or time.monotonic() > deadline:
            return log
        time.sleep(0.02)


def console_errors(driver):
    """Severe browser-console entries other than the network log of an expected 401."""
    return [e for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and not (e.get("source") == "network" and " 401 " in e["message"])]


def test_dashboard_headers_csp_and_files(dash_node):
    for path in ("/dashboard", "/dashboard/", "/dashboard/style.css", *(f"/dashboard/{f}" for f in JS_FILES)):
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
    browser.find_element(By.ID, "page-next").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "row-range"), "rows 51–100 of 121"))
    assert "r049" in browser.find_element(By.ID, "rows").text  # ids sort "a-xss", r000.., so r049 is row 51
    # Sort by a column: n descending puts r119 (n=119) first; the pager keeps the order.
    browser.find_element(By.LINK_TEXT, "n").click()
    wait(browser).until(EC.presence_of_element_located((By.LINK_TEXT, "n ▲")))
    browser.find_element(By.LINK_TEXT, "n ▲").click()
    wait(browser).until(EC.presence_of_element_located((By.LINK_TEXT, "n ▼")))
    first_row = browser.find_element(By.CSS_SELECTOR, "#rows tbody tr").text
    assert first_row.startswith("r119"), first_row
    assert "sort=n&dir=desc" in browser.current_url
    # Keyset paging in that order (the cursor is the last row: n < 70, ties by id), and back.
    browser.find_element(By.ID, "page-next").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "row-range"), "rows 51–100 of 121"))
    assert browser.find_element(By.CSS_SELECTOR, "#rows tbody tr").text.startswith("r069")
    browser.find_element(By.ID, "page-next").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "row-range"), "rows 101–121 of 121"))
    assert browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")[-1].text.startswith("a-xss")  # n = -1 last
    assert browser.find_element(By.ID, "page-next").get_attribute("disabled") is not None
    browser.find_element(By.ID, "page-prev").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "row-range"), "rows 51–100 of 121"))
    assert browser.find_element(By.CSS_SELECTOR, "#rows tbody tr").text.startswith("r069")
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
DOC_IMAGES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", "images")
ARTIFACTS = os.environ.get("AERODB_ARTIFACTS_DIR", os.path.join(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))), ".build", "dashboard-screenshots"))
PAGES = {"cluster": "lag-chart", "collections/notes": "rows", "collections": "migrations", "query": "query-input",
         "policies": "tester", "users": "outbox", "storage": "buckets", "functions": "functions",
         "realtime": "realtime-messages", "logs": "audit-log"}
# Pages whose laptop screenshot goes to docs/images when AERODB_DASHBOARD_DOC_IMAGES=1 (docs/DASHBOARD.md).
DOC_IMAGES = {"collections/notes": None, "policies": None, "logs": "charts"}


def doc_image(browser, name, scroll_to=None):
    """With AERODB_DASHBOARD_DOC_IMAGES=1: the page (scrolled to an element) as docs/images/dashboard-<name>.png."""
    if os.environ.get("AERODB_DASHBOARD_DOC_IMAGES") != "1":
        return
    import time
    if scroll_to:
        browser.execute_script("document.getElementById(arguments[0]).scrollIntoView()", scroll_to)
    time.sleep(6)  # a few samples in the charts
    if scroll_to:
        browser.execute_script("document.getElementById(arguments[0]).scrollIntoView()", scroll_to)
    browser.save_screenshot(os.path.join(DOC_IMAGES_DIR, f"dashboard-{name}.png"))


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
            if width == 1280 and page in DOC_IMAGES:
                doc_image(browser, page.replace("/", "-"), DOC_IMAGES[page])
    assert console_errors(browser) == []


# --- Editing through the dashboard, checked through the public APIs -------------------------------------------------

def rest(node, method, path, body=None, token=None, headers=None):
    """A request with the service key, or with the anon key and a user's access token; returns (status, body)."""
    h = {"apikey": node.service if token is None else node.anon, "Authorization": f"Bearer {token or node.service}",
         **(headers or {})}
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(node.url + path, method=method, data=data, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


def accept_confirm(driver):
    WebDriverWait(driver, WAIT_SECONDS).until(EC.alert_is_present())
    driver.switch_to.alert.accept()


def signed_in(driver, url, key, page):
    sign_in(driver, url, key)
    wait(driver).until(EC.visibility_of_element_located((By.ID, "node-status")))
    driver.get(f"{url}/dashboard#/{page}")


def status_text(driver, element_id, text):
    try:
        wait(driver).until(EC.text_to_be_present_in_element((By.ID, element_id), text))
    except Exception:
        shown = driver.find_elements(By.ID, element_id)
        raise AssertionError(f"#{element_id} never showed {text!r}: {shown[0].text if shown else '(absent)'!r}")
    return driver.find_element(By.ID, element_id).text


def test_dashboard_schema_and_row_editing_round_trip(dash_node, browser):
    """Creates a collection, adds a field and an index, inserts, edits, filters and deletes a row from the
    page; every step is checked through /rest/v1 and /admin/v1, an API refusal is shown with its code."""
    signed_in(browser, dash_node.url, dash_node.service, "collections")
    box = wait(browser).until(EC.visibility_of_element_located((By.ID, "new-collection")))
    box.clear()
    box.send_keys(json.dumps({"name": "edits", "primary_key": "id", "fields": {
        "id": {"type": "text", "required": True}, "title": {"type": "text", "nullable": True},
        "qty": {"type": "int", "nullable": True}}}))
    browser.find_element(By.ID, "create-collection").click()
    wait(browser).until(EC.presence_of_element_located((By.ID, "row-range")))
    assert "edits" in browser.current_url
    # Add a field and an index through the schema forms.
    browser.find_element(By.XPATH, "//summary[text()='Add a field']").click()
    browser.find_element(By.ID, "field-name").send_keys("tags")
    ty = browser.find_element(By.ID, "field-type")
    ty.clear()
    ty.send_keys("array<text>")
    browser.find_element(By.ID, "field-add").click()
    status_text(browser, "schema-outcome", "added tags")
    browser.find_element(By.XPATH, "//summary[text()='Add an index']").click()
    browser.find_element(By.ID, "index-fields").send_keys("qty")
    browser.find_element(By.ID, "index-add").click()
    status_text(browser, "schema-outcome", "index added")
    schema = next(c for c in dash_node.admin("GET", "collections")["collections"] if c["name"] == "edits")
    assert schema["fields"]["tags"]["type"] == "array<text>"
    assert [i["fields"] for i in schema["indexes"]] == [["qty"]]
    # Insert a row.
    wait(browser).until(EC.element_to_be_clickable((By.XPATH, "//button[text()='Insert row']"))).click()
    wait(browser).until(EC.visibility_of_element_located((By.ID, "edit-id"))).send_keys("e1")
    browser.find_element(By.ID, "edit-title").send_keys("first")
    browser.find_element(By.ID, "edit-qty").send_keys("5")
    browser.find_element(By.ID, "edit-tags").send_keys('["a","b"]')
    browser.find_element(By.ID, "row-save").click()
    status_text(browser, "row-outcome", "inserted id = e1")
    assert rest(dash_node, "GET", "/rest/v1/edits?id=eq.e1") == (200, [{"id": "e1", "title": "first", "qty": 5, "tags": ["a", "b"]}])
    # Edit it: only the changed fields are sent; an emptied field becomes null.
    row = browser.find_element(By.XPATH, "//tr[td[1][text()='e1']]")
    row.find_element(By.XPATH, ".//button[text()='edit']").click()
    title = wait(browser).until(EC.visibility_of_element_located((By.ID, "edit-title")))
    assert title.get_attribute("value") == "first"
    title.clear()
    title.send_keys('second, with "quotes" & <b>')
    qty = browser.find_element(By.ID, "edit-qty")
    qty.clear()
    qty.send_keys("7")
    browser.find_element(By.ID, "edit-tags").clear()
    browser.find_element(By.ID, "row-save").click()
    status_text(browser, "row-outcome", "saved id = e1")
    assert rest(dash_node, "GET", "/rest/v1/edits?id=eq.e1") == (
        200, [{"id": "e1", "title": 'second, with "quotes" & <b>', "qty": 7, "tags": None}])
    # Inline: double-click a cell, type, Enter saves that one field; Escape cancels.
    def cell_of(key, column):
        names = [th.text.split(" ")[0] for th in browser.find_elements(By.CSS_SELECTOR, "#rows thead th")]
        return browser.find_element(By.XPATH, f"//tr[td[1][text()='{key}']]/td[{names.index(column) + 1}]")
    cell = cell_of("e1", "qty")
    ActionChains(browser).double_click(cell).perform()
    box = wait(browser).until(EC.visibility_of_element_located((By.CSS_SELECTOR, "input.cell-input")))
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("8", Keys.ENTER)
    status_text(browser, "row-outcome", "saved qty of id = e1")
    assert rest(dash_node, "GET", "/rest/v1/edits?id=eq.e1&select=qty") == (200, [{"qty": 8}])
    cell = cell_of("e1", "title")
    cell.send_keys(Keys.ENTER)  # keyboard: the focused cell opens with Enter
    box = wait(browser).until(EC.visibility_of_element_located((By.CSS_SELECTOR, "input.cell-input")))
    box.send_keys("ignored", Keys.ESCAPE)
    wait(browser).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "input.cell-input"))
    assert rest(dash_node, "GET", "/rest/v1/edits?id=eq.e1&select=title") == (200, [{"title": 'second, with "quotes" & <b>'}])
    # A bad value is refused by the page; a duplicate key by the API, shown with status and code.
    rest(dash_node, "POST", "/rest/v1/edits", {"id": "e2", "title": "other", "qty": 1})
    browser.find_element(By.XPATH, "//button[text()='Insert row']").click()
    wait(browser).until(EC.visibility_of_element_located((By.ID, "edit-id"))).send_keys("e2")
    browser.find_element(By.ID, "edit-qty").send_keys("seven")
    browser.find_element(By.ID, "row-save").click()
    assert "not an integer" in status_text(browser, "editor-outcome", "AERO_DASHBOARD_VALUE")
    q = browser.find_element(By.ID, "edit-qty")
    q.clear()
    q.send_keys("2")
    browser.find_element(By.ID, "row-save").click()
    err = status_text(browser, "editor-outcome", "HTTP 409")
    assert "23505" in err, err
    # Filter with PostgREST operators (through the builder and the box).
    browser.get(dash_node.url + "/dashboard#/collections/edits?sort=id&dir=asc")
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "row-range"), "of 2"))
    browser.find_element(By.ID, "filter-column").send_keys("qty")
    browser.find_element(By.ID, "filter-op").send_keys("gte")
    browser.find_element(By.ID, "filter-value").send_keys("6")
    browser.find_element(By.XPATH, "//button[text()='+ condition']").click()
    assert browser.find_element(By.ID, "filter-input").get_attribute("value") == "qty=gte.6"
    browser.find_element(By.ID, "filter-apply").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "row-range"), "rows 1–1 of 1"))
    assert "e1" in browser.find_element(By.CSS_SELECTOR, "#rows tbody").text
    box = browser.find_element(By.ID, "filter-input")
    box.clear()
    box.send_keys("qty=gte.abc")
    browser.find_element(By.ID, "filter-apply").click()
    assert "22P02" in status_text(browser, "rows", "HTTP 400")
    box = browser.find_element(By.ID, "filter-input")
    box.clear()
    box.send_keys("title=like.*quotes*")
    browser.find_element(By.ID, "filter-apply").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "row-range"), "rows 1–1 of 1"))
    # Delete it, after the confirmation.
    browser.find_element(By.XPATH, "//tr[td[1][text()='e1']]//button[text()='delete']").click()
    accept_confirm(browser)
    status_text(browser, "row-outcome", "deleted id = e1")
    assert rest(dash_node, "GET", "/rest/v1/edits?id=eq.e1") == (200, [])
    # Drop the field (confirmed), then the collection.
    browser.get(dash_node.url + "/dashboard#/collections/edits")
    wait(browser).until(EC.presence_of_element_located((By.XPATH, "//tr[td[1][text()='tags']]//button[text()='drop']"))).click()
    accept_confirm(browser)
    status_text(browser, "schema-outcome", "dropped tags")
    schema = next(c for c in dash_node.admin("GET", "collections")["collections"] if c["name"] == "edits")
    assert "tags" not in schema["fields"]
    browser.find_element(By.XPATH, "//button[text()='Drop collection edits']").click()
    accept_confirm(browser)
    wait(browser).until(EC.presence_of_element_located((By.ID, "migrations")))
    assert all(c["name"] != "edits" for c in dash_node.admin("GET", "collections")["collections"])
    assert console_errors(browser) == [] or all(" 409 " in e["message"] or " 400 " in e["message"] for e in console_errors(browser))


def test_dashboard_csv_export_and_import(dash_node, browser, tmp_path):
    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    dash_node.admin("POST", "collections", {"name": "csvs", "primary_key": "id", "fields": {
        "id": {"type": "int", "required": True}, "label": {"type": "text", "nullable": True},
        "meta": {"type": "json", "nullable": True}}})
    source = tmp_path / "in.csv"
    lines = ["id,label,meta"] + [f'{i},"label, {i} ""q""","{{""k"":{i}}}"' for i in range(1, 1501)] + ['1501,,null']
    source.write_text("\r\n".join(lines) + "\r\n")
    signed_in(browser, dash_node.url, dash_node.service, "collections/csvs")
    wait(browser).until(EC.presence_of_element_located((By.ID, "csv-file"))).send_keys(str(source))
    status_text(browser, "row-outcome", "imported 1501 rows")
    assert rest(dash_node, "GET", "/rest/v1/csvs?id=eq.7") == (200, [{"id": 7, "label": 'label, 7 "q"', "meta": {"k": 7}}])
    assert rest(dash_node, "GET", "/rest/v1/csvs?id=eq.1501") == (200, [{"id": 1501, "label": None, "meta": None}])
    # Export (keyset pages of 1,000: two requests) gives the same rows back.
    browser.find_element(By.XPATH, "//button[text()='Export CSV']").click()
    status_text(browser, "row-outcome", "exported 1501 rows")
    target = tmp_path / "csvs.csv"
    deadline = WAIT_SECONDS
    import time
    end = time.time() + deadline
    while not target.exists() and time.time() < end:
        time.sleep(0.1)
    text = target.read_bytes().decode()
    out = text.split("\r\n")
    assert out[0] == "id,label,meta" and out[7] == '7,"label, 7 ""q""","{""k"":7}"' and out[1501] == "1501,,"
    assert len([x for x in out if x]) == 1502
    # Keyset paging on a text column whose values hold commas and quotes (the cursor is quoted in or=(...)),
    # descending: the null label first, then by label; the page after shows exactly the next 50.
    labels = [(None, 1501)] + sorted(((f'label, {i} "q"', i) for i in range(1, 1501)), reverse=True)
    browser.get(dash_node.url + "/dashboard#/collections/csvs?sort=label&dir=desc")
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "row-range"), "rows 1–50 of 1501"))
    browser.find_element(By.ID, "page-next").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "row-range"), "rows 51–100 of 1501"))
    ids = [int(tr.find_element(By.TAG_NAME, "td").text) for tr in browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")]
    assert ids == [i for _, i in labels[50:100]]
    # A CSV naming an unknown column is refused before anything is sent.
    bad = tmp_path / "bad.csv"
    bad.write_text("id,nope\n1,x\n")
    browser.find_element(By.ID, "csv-file").send_keys(str(bad))
    assert "nope is not a field" in status_text(browser, "row-outcome", "AERO_DASHBOARD_CSV")


from selenium.webdriver.support.ui import Select  # noqa: E402


def choose(driver, element_id, value):
    Select(driver.find_element(By.ID, element_id)).select_by_value(value)


def sign_in_user(node, email, password):
    return rest(node, "POST", "/auth/v1/token?grant_type=password", {"email": email, "password": password},
                token=node.anon)


def create_user_from_page(browser, email, password):
    browser.find_element(By.ID, "user-email").send_keys(email)
    browser.find_element(By.ID, "user-password").send_keys(password)
    browser.find_element(By.ID, "user-create").click()
    return status_text(browser, "user-outcome", f"user {email} created")


def test_dashboard_policies_checked_with_a_user_token(dash_node, browser):
    """RLS on, a policy with a mistake (marked where it is), fixed, then a user's JWT sees only its rows through
    /rest/v1; the tester shows the condition; editing and deleting the policy change what the user sees."""
    dash_node.admin("POST", "collections", {"name": "secrets", "primary_key": "id", "fields": {
        "id": {"type": "text", "required": True}, "owner": {"type": "text", "nullable": True},
        "body": {"type": "text", "nullable": True}}})
    signed_in(browser, dash_node.url, dash_node.service, "users")
    wait(browser).until(EC.visibility_of_element_located((By.ID, "user-email")))
    create_user_from_page(browser, "pol@example.com", "pw-Policies-1")
    status, session = sign_in_user(dash_node, "pol@example.com", "pw-Policies-1")
    assert status == 200, session
    uid, token = session["user"]["id"], session["access_token"]
    dash_node.admin("POST", "transactions", {"ops": [
        {"op": "insert", "collection": "secrets", "doc": {"id": "mine", "owner": uid, "body": "x"}},
        {"op": "insert", "collection": "secrets", "doc": {"id": "theirs", "owner": "someone", "body": "x"}},
        {"op": "insert", "collection": "secrets", "doc": {"id": "open", "owner": "someone", "body": "public"}}]})
    assert len(rest(dash_node, "GET", "/rest/v1/secrets", token=token)[1]) == 3  # RLS off: everything
    browser.get(dash_node.url + "/dashboard#/policies")
    wait(browser).until(EC.presence_of_element_located((By.XPATH, "//tr[td[1][text()='secrets']]//button[text()='enable']"))).click()
    status_text(browser, "policy-outcome", "row-level security enabled on secrets")
    assert rest(dash_node, "GET", "/rest/v1/secrets", token=token) == (200, [])  # on, no policy: nothing
    choose(browser, "policy-collection", "secrets")
    browser.find_element(By.ID, "policy-name").send_keys("owner_read")
    choose(browser, "policy-operation", "select")
    browser.find_element(By.ID, "policy-using").send_keys("owner =\n  = auth.uid()")
    browser.find_element(By.ID, "policy-save").click()
    err = status_text(browser, "policy-outcome", "HTTP 400")
    assert "using: policy expression" in err and "at offset" in err, err
    mark = browser.find_element(By.ID, "mark-using").text
    assert mark.startswith("line 2, column 3:") and "\n  = auth.uid()\n  ^" in mark, mark
    using = browser.find_element(By.ID, "policy-using")
    using.clear()
    using.send_keys("owner = auth.uid()")
    browser.find_element(By.ID, "policy-save").click()
    status_text(browser, "policy-outcome", "policy owner_read on secrets created")
    assert rest(dash_node, "GET", "/rest/v1/secrets?select=id", token=token) == (200, [{"id": "mine"}])
    # The tester, as that user (made-up caller with its claims).
    wait(browser).until(EC.presence_of_element_located((By.ID, "tester-collection")))
    choose(browser, "tester-collection", "secrets")
    browser.find_element(By.ID, "tester-claims").send_keys(json.dumps({"sub": uid}))
    browser.find_element(By.ID, "tester-run").click()
    out = status_text(browser, "tester-output", uid)
    assert "row-level security\nenabled" in out and "owner" in out, out
    # An edit with a mistake is refused (PUT, one transaction): the old policy stays in force, untouched.
    before = dash_node.admin("GET", "policies")["policies"]
    browser.find_element(By.XPATH, "//tr[td[2][text()='owner_read']]//button[text()='edit']").click()
    using = browser.find_element(By.ID, "policy-using")
    using.clear()
    using.send_keys("owner = auth.uid() or\n  = 'public'")
    browser.find_element(By.ID, "policy-save").click()
    err = status_text(browser, "policy-outcome", "HTTP 400")
    assert "using: policy expression" in err and "at offset" in err, err
    assert browser.find_element(By.ID, "mark-using").text.startswith("line 2, column 3:")
    assert dash_node.admin("GET", "policies")["policies"] == before
    assert rest(dash_node, "GET", "/rest/v1/secrets?select=id", token=token) == (200, [{"id": "mine"}])
    # Edit (wider), then delete: the user's view follows.
    using = browser.find_element(By.ID, "policy-using")
    using.clear()
    using.send_keys("owner = auth.uid() or body = 'public'")
    browser.find_element(By.ID, "policy-save").click()
    status_text(browser, "policy-outcome", "policy owner_read on secrets saved")
    assert rest(dash_node, "GET", "/rest/v1/secrets?select=id&order=id", token=token) == (200, [{"id": "mine"}, {"id": "open"}])
    browser.find_element(By.XPATH, "//tr[td[2][text()='owner_read']]//button[text()='delete']").click()
    accept_confirm(browser)
    status_text(browser, "policy-outcome", "policy owner_read deleted")
    assert rest(dash_node, "GET", "/rest/v1/secrets", token=token) == (200, [])
    assert dash_node.admin("GET", "policies")["policies"] == []


def test_dashboard_users_ban_invite_link_delete(dash_node, browser):
    signed_in(browser, dash_node.url, dash_node.service, "users")
    wait(browser).until(EC.visibility_of_element_located((By.ID, "user-email")))
    create_user_from_page(browser, "ban@example.com", "pw-Banned-1")
    assert sign_in_user(dash_node, "ban@example.com", "pw-Banned-1")[0] == 200
    row = "//tr[td[text()='ban@example.com']]"
    wait(browser).until(EC.presence_of_element_located((By.XPATH, row + "//button[text()='ban']"))).click()
    WebDriverWait(browser, WAIT_SECONDS).until(EC.alert_is_present())
    prompt = browser.switch_to.alert
    prompt.send_keys("24h")
    prompt.accept()
    status_text(browser, "user-outcome", "ban@example.com banned for 24h")
    status, body = sign_in_user(dash_node, "ban@example.com", "pw-Banned-1")
    assert status == 400 and "banned" in json.dumps(body), (status, body)
    # Search (email or phone contains), then act on the result.
    browser.find_element(By.ID, "user-search").send_keys("BAN@example")
    browser.find_element(By.ID, "user-search-run").click()
    assert status_text(browser, "search-summary", "1 users whose email or phone contains").startswith("1 users")
    wait(browser).until(EC.presence_of_element_located((By.XPATH, row + "//button[text()='unban']"))).click()
    status_text(browser, "user-outcome", "ban@example.com unbanned")
    assert sign_in_user(dash_node, "ban@example.com", "pw-Banned-1")[0] == 200
    wait(browser).until(EC.presence_of_element_located((By.XPATH, row + "//button[text()='recovery link']"))).click()
    assert "/auth/v1/verify?" in status_text(browser, "link-output", "Recovery link for ban@example.com")
    browser.find_element(By.ID, "invite-email").send_keys("invited@example.com")
    browser.find_element(By.ID, "invite-send").click()
    status_text(browser, "user-outcome", "invitation sent to invited@example.com")
    assert "invited@example.com" in status_text(browser, "outbox", "invited@example.com")
    wait(browser).until(EC.presence_of_element_located((By.XPATH, row + "//button[text()='delete']"))).click()
    accept_confirm(browser)
    status_text(browser, "user-outcome", "ban@example.com deleted")
    # An auth setting set cluster-wide from the page, then reset.
    key_row = "//tr[td[1][text()='auth.password_min_length']]"
    wait(browser).until(EC.presence_of_element_located((By.XPATH, key_row + "//button[text()='set']"))).click()
    WebDriverWait(browser, WAIT_SECONDS).until(EC.alert_is_present())
    prompt = browser.switch_to.alert
    prompt.send_keys("12")
    prompt.accept()
    status_text(browser, "user-outcome", "auth.password_min_length set cluster-wide")
    assert dash_node.admin("GET", "settings/auth.password_min_length")["value"] == 12
    wait(browser).until(EC.presence_of_element_located((By.XPATH, key_row + "//button[text()='reset']"))).click()
    accept_confirm(browser)
    status_text(browser, "user-outcome", "auth.password_min_length reset")
    assert dash_node.admin("GET", "settings/auth.password_min_length")["source"] != "cluster"
    users = rest(dash_node, "GET", "/auth/v1/admin/users?per_page=1000")[1]["users"]
    assert all(u.get("email") != "ban@example.com" for u in users)


def tiny_png():
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_dashboard_storage_upload_download_sign_delete(dash_node, browser, tmp_path):
    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path / "dl")})
    png = tmp_path / "pic.png"
    png.write_bytes(tiny_png())
    signed_in(browser, dash_node.url, dash_node.service, "storage")
    wait(browser).until(EC.visibility_of_element_located((By.ID, "bucket-name"))).send_keys("files")
    browser.find_element(By.ID, "bucket-create").click()
    status_text(browser, "storage-outcome", "bucket files created")
    assert rest(dash_node, "GET", "/storage/v1/bucket/files")[1]["public"] is False
    browser.find_element(By.XPATH, "//tr[td[1][text()='files']]//a[text()='browse']").click()
    wait(browser).until(EC.presence_of_element_located((By.ID, "upload-file"))).send_keys(str(png))
    browser.find_element(By.ID, "upload-send").click()
    status_text(browser, "storage-outcome", f"uploaded pic.png ({len(tiny_png())} bytes)")
    assert rest(dash_node, "GET", "/storage/v1/object/files/pic.png") == (200, tiny_png())
    # Into a new folder: the path makes it.
    browser.find_element(By.ID, "upload-folder").send_keys("photos/2026")
    browser.find_element(By.ID, "upload-file").send_keys(str(png))
    browser.find_element(By.ID, "upload-send").click()
    status_text(browser, "storage-outcome", "uploaded photos/2026/pic.png")
    assert rest(dash_node, "GET", "/storage/v1/object/files/photos/2026/pic.png") == (200, tiny_png())
    assert rest(dash_node, "DELETE", "/storage/v1/object/files", {"prefixes": ["photos/2026/pic.png"]})[0] == 200
    # A folder made through the API shows as a folder; its file downloads byte for byte.
    text = "a text file, é\n".encode()
    assert rest(dash_node, "POST", "/storage/v1/object/files/docs/readme.txt", text, headers={"Content-Type": "text/plain"})[0] == 200
    browser.get(dash_node.url + "/dashboard#/storage/files?prefix=")
    wait(browser).until(EC.presence_of_element_located((By.XPATH, "//tr[td[1][text()='docs/']]//a[text()='open']"))).click()
    wait(browser).until(EC.presence_of_element_located((By.XPATH, "//tr[td[1][text()='readme.txt']]//button[text()='download']"))).click()
    status_text(browser, "storage-outcome", "downloaded docs/readme.txt")
    target = tmp_path / "dl" / "readme.txt"
    import time
    end = time.time() + WAIT_SECONDS
    while not target.exists() and time.time() < end:
        time.sleep(0.1)
    assert target.read_bytes() == text
    # Preview (a blob: image, allowed by img-src) and a signed URL that works without a key.
    browser.find_element(By.XPATH, "//a[text()='files']").click()
    wait(browser).until(EC.presence_of_element_located((By.XPATH, "//tr[td[1][text()='pic.png']]//button[text()='preview']"))).click()
    img = wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#preview img")))
    assert img.get_attribute("src").startswith("blob:")
    wait(browser).until(lambda d: d.execute_script("return arguments[0].naturalWidth", img) == 2)
    browser.find_element(By.XPATH, "//tr[td[1][text()='pic.png']]//button[text()='signed URL']").click()
    WebDriverWait(browser, WAIT_SECONDS).until(EC.alert_is_present())
    browser.switch_to.alert.accept()
    url = wait(browser).until(EC.presence_of_element_located((By.ID, "signed-url"))).text
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == tiny_png()
    # A bucket that is not empty cannot be deleted (the API's 409, shown); delete the objects, then the bucket.
    browser.find_element(By.XPATH, "//tr[td[1][text()='pic.png']]//button[text()='delete']").click()
    accept_confirm(browser)
    status_text(browser, "storage-outcome", "deleted pic.png")
    assert rest(dash_node, "GET", "/storage/v1/object/files/pic.png")[0] in (400, 404)
    browser.get(dash_node.url + "/dashboard#/storage")
    wait(browser).until(EC.presence_of_element_located((By.XPATH, "//tr[td[1][text()='files']]//button[text()='delete']"))).click()
    accept_confirm(browser)
    assert "409" in status_text(browser, "storage-outcome", "HTTP 409")
    browser.find_element(By.XPATH, "//tr[td[1][text()='files']]//button[text()='empty']").click()
    accept_confirm(browser)
    status_text(browser, "storage-outcome", "bucket files emptied")
    wait(browser).until(EC.presence_of_element_located((By.XPATH, "//tr[td[1][text()='files']]//button[text()='delete']"))).click()
    accept_confirm(browser)
    status_text(browser, "storage-outcome", "bucket files deleted")
    assert rest(dash_node, "GET", "/storage/v1/bucket/files")[0] in (400, 404)


def test_dashboard_realtime_inspector_sees_a_rest_insert(dash_node, browser):
    signed_in(browser, dash_node.url, dash_node.service, "realtime")
    wait(browser).until(EC.presence_of_element_located((By.ID, "rt-table")))
    choose(browser, "rt-table", "notes")
    browser.find_element(By.ID, "rt-connect").click()
    status_text(browser, "realtime-status", "joined realtime:dashboard")
    status_text(browser, "realtime-log", "Subscribed to PostgreSQL")
    assert rest(dash_node, "POST", "/rest/v1/notes", {"id": "rt-1", "body": "live <b>", "n": 7})[0] == 201
    line = status_text(browser, "realtime-log", "rt-1")
    assert "postgres_changes" in line and "INSERT" in line and "live <b>" in line
    assert browser.find_elements(By.CSS_SELECTOR, "#realtime-log b") == []
    browser.find_element(By.ID, "rt-broadcast").click()
    status_text(browser, "realtime-status", "broadcast message sent")
    status_text(browser, "realtime-log", '"text":"hello"')
    browser.find_element(By.XPATH, "//button[text()='Track presence']").click()
    status_text(browser, "realtime-log", "presence_diff")
    doc_image(browser, "realtime", "realtime-messages")
    # Leaving the page closes the socket (no stray connection, no console error).
    browser.find_element(By.LINK_TEXT, "Cluster").click()
    wait(browser).until(EC.presence_of_element_located((By.ID, "node-status")))
    assert console_errors(browser) == []
    # DASH1: the key travelled in the socket's query; the node's log never holds it (the upgrade is not a
    # logged request, and RequestLog redacts that path's query should it become one).
    log = node_log(dash_node, '"path":"/rest/v1/notes"')
    assert '"path":"/rest/v1/notes"' in log and dash_node.service not in log


def test_dashboard_observability_and_functions(dash_node, browser):
    from test_functions import wasm
    module = wasm("hello")
    signed_in(browser, dash_node.url, dash_node.service, "logs")
    metrics = status_text(browser, "metrics", "durable LSN")
    assert "commits" in metrics and "documents" in metrics
    assert "admin POST /admin/v1/collections" in status_text(browser, "audit-log", "admin POST /admin/v1/collections")
    wait(browser).until(EC.presence_of_element_located((By.ID, "slow-log")))
    # Two polls later the rate chart has a line of two points.
    wait(browser).until(lambda d: len((d.find_element(By.CSS_SELECTOR, "#rate-chart polyline").get_attribute("points") or "").split()) >= 2)
    browser.get(dash_node.url + "/dashboard#/functions")
    wait(browser).until(EC.visibility_of_element_located((By.ID, "fn-name"))).send_keys("echo")
    browser.find_element(By.ID, "fn-module").send_keys(module)
    browser.find_element(By.ID, "fn-deploy").click()
    status_text(browser, "function-outcome", "deployed echo version 1")
    browser.find_element(By.XPATH, "//tr[td[text()='echo']]//a[text()='open']").click()
    body = wait(browser).until(EC.visibility_of_element_located((By.ID, "fn-body")))
    body.clear()
    body.send_keys('{"from":"dashboard"}')
    browser.find_element(By.ID, "fn-invoke").click()
    assert '{"from":"dashboard"}' in status_text(browser, "fn-answer", "HTTP 200")
    assert "1" in browser.find_element(By.ID, "fn-versions").text
    assert console_errors(browser) == []


def test_dashboard_request_log_page(dash_node, browser):
    """The Observability page's recent requests (GET /admin/v1/requests, the request log's ring): a request just
    made is shown with the stdout log's redaction (a key sent in the query is `(redacted)`), filtered by path
    prefix and status; the route takes the service key only and ranged integers (OBS1)."""
    marker = f"reqlog{os.getpid()}"
    assert rest(dash_node, "GET", f"/admin/v1/status?apikey={dash_node.service}&note={marker}")[0] == 200
    assert rest(dash_node, "GET", f"/rest/v1/{marker}_missing")[0] == 404
    for bad in ("limit=0", "limit=1001", "limit=99999999999999999999", "status=600", "status=9xx", "path_prefix=rest"):
        status, body = rest(dash_node, "GET", f"/admin/v1/requests?{bad}")
        assert status == 400 and body["code"] == "AERO_REQUEST_INVALID", (bad, body)
    anon = {"apikey": dash_node.anon, "Authorization": f"Bearer {dash_node.anon}"}
    assert rest(dash_node, "GET", "/admin/v1/requests", headers=anon)[0] in (401, 403)
    status, body = rest(dash_node, "GET", "/admin/v1/requests?path_prefix=/admin/v1/status&status=2xx&limit=50")
    assert status == 200 and body["entries_max"] == 1000 and body["kept"] <= 1000 and body["bytes"] <= body["bytes_max"]
    mine = [e for e in body["entries"] if marker in e["query"]]
    assert len(mine) == 1 and mine[0]["query"] == f"apikey=(redacted)&note={marker}", mine
    assert mine[0]["method"] == "GET" and mine[0]["status"] == 200 and mine[0]["request_id"]
    assert dash_node.service not in json.dumps(body)
    signed_in(browser, dash_node.url, dash_node.service, "logs")
    prefix = wait(browser).until(EC.visibility_of_element_located((By.ID, "requests-path")))
    status_text(browser, "requests", "kept of at most 1000")
    prefix.send_keys("/admin/v1/status")
    browser.find_element(By.ID, "requests-apply").click()
    shown = status_text(browser, "requests-list", marker)
    assert "apikey=(redacted)" in shown and dash_node.service not in browser.page_source
    doc_image(browser, "logs-requests", "requests")
    prefix.clear()
    prefix.send_keys(f"/rest/v1/{marker}")
    browser.find_element(By.ID, "requests-status").send_keys("404")
    browser.find_element(By.ID, "requests-apply").click()
    shown = status_text(browser, "requests-list", f"/rest/v1/{marker}_missing")
    assert "404" in shown and "/admin/v1/status" not in shown
    status_box = browser.find_element(By.ID, "requests-status")
    status_box.clear()
    status_box.send_keys("2xx")
    browser.find_element(By.ID, "requests-apply").click()
    status_text(browser, "requests-list", "no request matches")
    assert console_errors(browser) == []
    status_box.clear()
    status_box.send_keys("999")
    browser.find_element(By.ID, "requests-apply").click()
    assert "HTTP 400 AERO_REQUEST_INVALID: status must be" in status_text(browser, "requests-list", "HTTP 400")
    # The one console entry is the network log of that refused request (no script error).
    assert [e["source"] for e in console_errors(browser)] == ["network"]
    # The stdout log holds the same line, redacted the same way.
    log = node_log(dash_node, f"apikey=(redacted)&note={marker}")
    assert f"apikey=(redacted)&note={marker}" in log and dash_node.service not in log


def test_policy_update_is_one_transaction(dash_node):
    """PUT /admin/v1/collections/<c>/policies/<p>: a refused policy leaves the old one as it was; a valid one
    replaces it (or renames it) in one commit; a rename onto an existing policy is refused whole; audited."""
    dash_node.admin("POST", "collections", {"name": "putpol", "primary_key": "id", "fields": {
        "id": {"type": "text", "required": True}, "owner": {"type": "text", "nullable": True}}})
    base = "/admin/v1/collections/putpol/policies"
    assert rest(dash_node, "POST", base, {"name": "p1", "operation": "select", "using": "owner = auth.uid()"})[0] == 201
    assert rest(dash_node, "POST", base, {"name": "p2", "operation": "select", "using": "owner = 'x'"})[0] == 201
    listed = lambda: sorted((p["name"], p["using"]) for p in dash_node.admin("GET", "policies")["policies"] if p["collection"] == "putpol")
    before = listed()
    status, body = rest(dash_node, "PUT", f"{base}/p1", {"operation": "select", "using": "owner = = auth.uid()"})
    assert status == 400 and "using: policy expression" in body["message"], body
    status, body = rest(dash_node, "PUT", f"{base}/p1", {"operation": "insert"})
    assert status == 400 and listed() == before
    status, body = rest(dash_node, "PUT", f"{base}/p1", {"name": "p2", "operation": "select", "using": "owner = 'y'"})
    assert status == 409 and listed() == before, body  # p2 exists: the delete of p1 did not happen either
    assert rest(dash_node, "PUT", f"{base}/nope", {"operation": "select", "using": "owner = 'y'"})[0] == 404
    status, body = rest(dash_node, "PUT", f"{base}/p1", {"operation": "select", "using": "owner = auth.uid() or owner = 'shared'"})
    assert status == 200 and body["name"] == "p1", body
    assert listed() == [("p1", body["using"]), ("p2", "owner = 'x'")]
    status, body = rest(dash_node, "PUT", f"{base}/p1", {"name": "p3", "operation": "select", "using": "owner = 'z'"})
    assert status == 200 and [n for n, _ in listed()] == ["p2", "p3"]
    actions = [e["action"] for e in dash_node.admin("GET", "audit?limit=200")["events"]]
    assert "admin PUT /admin/v1/collections/putpol/policies/p1" in actions
    dash_node.admin("DELETE", "collections/putpol")


def tab_through_every_control(browser):
    """Presses Tab from the top of the page until every visible, enabled control was focused; each shows an outline."""
    count = browser.execute_script("""
        const els = [...document.querySelectorAll('a[href], button, input, select, textarea, summary, [tabindex]')]
          .filter((e) => !e.disabled && e.tabIndex >= 0 && e.getClientRects().length > 0 && !e.closest('dialog'));
        els.forEach((e, i) => { e.dataset.tabcheck = String(i); });
        document.activeElement.blur();
        return els.length;""")
    assert count >= 8, count
    reached, unseen_outline = set(), []
    for _ in range(count + 10):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        idx, outline = browser.execute_script("""
            const a = document.activeElement, cs = getComputedStyle(a);
            return [a.dataset.tabcheck ?? null, cs.outlineStyle !== 'none' && cs.outlineWidth !== '0px' ? 'ok' : a.outerHTML.slice(0, 80)];""")
        if idx is not None:
            reached.add(int(idx))
            if outline != "ok":
                unseen_outline.append(outline)
        if len(reached) == count:
            break
    missed = browser.execute_script("return arguments[0].map((i) => document.querySelector(`[data-tabcheck='${i}']`).outerHTML.slice(0, 80));",
                                    sorted(set(range(count)) - reached))
    assert missed == [] and unseen_outline == [], (missed, unseen_outline)


def test_dashboard_keyboard_shortcuts_and_tab_order(dash_node, browser):
    """g then a letter opens a page, ? shows the list (Escape closes it), / focuses the page's filter; keys typed
    into a field stay there; every control of the policies page is reached by Tab, each with a visible outline."""
    signed_in(browser, dash_node.url, dash_node.service, "cluster")
    wait(browser).until(EC.visibility_of_element_located((By.ID, "node-status")))
    keys = lambda *k: ActionChains(browser).send_keys(*k).perform()
    keys("g", "t")
    wait(browser).until(lambda d: d.current_url.endswith("#/collections"))
    wait(browser).until(EC.visibility_of_element_located((By.ID, "new-collection")))
    keys("?")
    help_box = wait(browser).until(EC.visibility_of_element_located((By.ID, "shortcuts")))
    assert "g t" in help_box.text and "Collections" in help_box.text and "focus the page's filter" in help_box.text
    keys(Keys.ESCAPE)
    wait(browser).until(EC.invisibility_of_element_located((By.ID, "shortcuts")))
    keys("g", "l")
    wait(browser).until(lambda d: d.current_url.endswith("#/logs"))
    wait(browser).until(EC.visibility_of_element_located((By.ID, "requests-path")))
    keys("/")
    assert browser.switch_to.active_element.get_attribute("id") == "requests-path"
    keys("g", "t")  # typed into the field, not a shortcut
    assert browser.current_url.endswith("#/logs") and browser.find_element(By.ID, "requests-path").get_attribute("value") == "gt"
    browser.find_element(By.ID, "requests-path").clear()
    browser.execute_script("document.activeElement.blur()")  # out of the field
    keys("g", "p")
    wait(browser).until(EC.visibility_of_element_located((By.ID, "policy-form")))
    assert browser.switch_to.active_element.get_attribute("id") == "view"  # the page's content has the focus
    tab_through_every_control(browser)
    for page, ready in (("logs", "requests-path"), ("users", "user-email"), ("cluster", "node-status")):
        browser.get(f"{dash_node.url}/dashboard#/{page}")
        wait(browser).until(EC.visibility_of_element_located((By.ID, ready)))
        tab_through_every_control(browser)
    assert console_errors(browser) == []


def post_json(url, key, path, body=None):
    req = urllib.request.Request(url + path, method="POST", data=None if body is None else json.dumps(body).encode(),
                                 headers={"apikey": key, "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def dry_promote_and_switchover_change_nothing(cluster):
    """Promote and switchover with ?dry_run=true on the replica n2 of a live primary: the promote dry run answers
    the refusal the real call answers (same checks, same words), the switchover dry run the checks it makes before
    asking the primary to demote; epochs, roles and writes are unchanged; `aerodb promote --dry-run` prints it."""
    replica = cluster.urls[1]
    roles = lambda: [(cluster.admin(i, "GET", "status")["role"], cluster.admin(i, "GET", "status")["epoch"]) for i in range(3)]
    assert roles() == [("primary", 1), ("replica", 1), ("replica", 1)]
    status, dry = post_json(replica, cluster.service, "/admin/v1/cluster/promote?dry_run=true", {"force": False})
    assert status == 409 and dry["dry_run"] is True and dry["would_promote"] is False and dry["promoted"] is False, dry
    assert {"name": "old primary unreachable", "outcome": "refuse"}.items() <= dry["checks"][-1].items(), dry
    assert roles() == [("primary", 1), ("replica", 1), ("replica", 1)]
    status, real = post_json(replica, cluster.service, "/admin/v1/cluster/promote", {"force": False})
    assert status == 409 and "dry_run" not in real
    assert real["checks"] == dry["checks"]  # the same validation, word for word
    assert post_json(replica, cluster.service, "/admin/v1/cluster/promote?dry_run=maybe")[0] == 400
    status, sw = post_json(replica, cluster.service, "/admin/v1/cluster/switchover?dry_run=true")
    assert status == 200 and sw["would_promote"] is True and sw["promoted"] is False and sw["epoch"] == 2, sw
    assert [(c["name"], c["outcome"]) for c in sw["checks"]] == [
        ("target is a replica", "pass"), ("target is healthy", "pass"), ("primary reachable", "pass")], sw
    assert roles() == [("primary", 1), ("replica", 1), ("replica", 1)]
    cluster.admin(0, "POST", "transactions", {"ops": [{"op": "insert", "collection": "items", "doc": {"id": "after-dry-run"}}]})
    cli = subprocess.run([BINARY, "promote", "--url", replica, "--dir", os.path.join(cluster.dir, "n2"), "--dry-run"],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 1 and "[refuse] old primary unreachable" in cli.stdout and "dry run: refused; nothing was changed" in cli.stdout, cli
    cli = subprocess.run([BINARY, "switchover", "--url", replica, "--dir", os.path.join(cluster.dir, "n2"), "--dry-run"],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and "[pass] primary reachable" in cli.stdout, cli
    assert "dry run: the checks pass; it would open epoch 2; nothing was changed" in cli.stdout, cli
    assert roles() == [("primary", 1), ("replica", 1), ("replica", 1)]
    # A dry run is logged as such, never as an audited operation (no audit line, no audit row attempted).
    with open(os.path.join(cluster.dir, "n2.log"), errors="replace") as f:
        log = f.read()
    assert log.count("cluster operation dry run") == 4, log[-3000:]
    assert "admin POST /admin/v1/cluster/switchover" not in log
    assert all("cluster operation dry run" in line and '"audit"' not in line for line in log.splitlines() if '"action":"switchover"' in line)


def test_dashboard_on_a_replica_of_three_nodes(browser):
    """The dashboard served by a replica: every member shown with its lag chart, a row inserted from the
    table editor is forwarded to the primary and read there."""
    from conftest import Cluster
    cluster = Cluster(nodes=3)
    try:
        cluster.admin(0, "POST", "collections", {"name": "items", "primary_key": "id", "fields": {
            "id": {"type": "text", "required": True}, "qty": {"type": "int", "nullable": True}}})
        replica = cluster.urls[1]
        signed_in(browser, replica, cluster.service, "cluster")
        members = wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#members table")))
        for node_id in ("n1", "n2", "n3"):
            assert node_id in members.text
        assert "replica" in browser.find_element(By.ID, "node-status").text
        wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#lag-chart polyline")) == 3)
        # The chart grows with the polls (one sample per member every 2 s).
        wait(browser).until(lambda d: all(len((p.get_attribute("points") or "").split()) >= 2
                                          for p in d.find_elements(By.CSS_SELECTOR, "#lag-chart polyline")))
        assert browser.find_element(By.XPATH, "//button[text()='Promote']")  # offered on a replica
        doc_image(browser, "cluster", "members")
        browser.get(replica + "/dashboard#/collections/items")
        wait(browser).until(EC.element_to_be_clickable((By.XPATH, "//button[text()='Insert row']"))).click()
        wait(browser).until(EC.visibility_of_element_located((By.ID, "edit-id"))).send_keys("via-replica")
        browser.find_element(By.ID, "edit-qty").send_keys("3")
        browser.find_element(By.ID, "row-save").click()
        status_text(browser, "row-outcome", "inserted id = via-replica")
        rows = cluster.admin(0, "POST", "query", {"collection": "items", "filter": {"id": "via-replica"}})["rows"]
        assert rows == [{"id": "via-replica", "qty": 3}]
        assert "via-replica" in browser.find_element(By.CSS_SELECTOR, "#rows tbody").text  # read your write on the replica
        assert console_errors(browser) == []
        # Dry runs (?dry_run=true) while the primary is alive: the same checks as the real call, nothing changed.
        dry_promote_and_switchover_change_nothing(cluster)
        # The cluster page shows the dry run's refusal in its confirmation; Cancel changes nothing.
        browser.get(replica + "/dashboard#/cluster")
        wait(browser).until(EC.element_to_be_clickable((By.XPATH, "//button[text()='Promote']"))).click()
        wait(browser).until(EC.visibility_of_element_located((By.ID, "confirm-dialog")))
        report = wait(browser).until(EC.visibility_of_element_located((By.ID, "dryrun-report"))).text
        assert "old primary unreachable" in report and "refuse" in report and "use `aerodb switchover`" in report, report
        assert "The checks refuse" in browser.find_element(By.ID, "dryrun-verdict").text
        assert "n1: primary, epoch 1" in browser.find_element(By.ID, "confirm-members").text
        doc_image(browser, "promote-dry-run", "confirm-dialog")
        browser.find_element(By.ID, "confirm-cancel").click()
        status_text(browser, "promote-outcome", "promote: cancelled, nothing was changed")
        assert browser.find_elements(By.ID, "confirm-dialog") == []  # closed and removed
        assert cluster.admin(1, "GET", "status")["role"] == "replica" and cluster.admin(0, "GET", "status")["epoch"] == 1
        # The primary dies; the replica is promoted from its cluster page, the report shown; writes work again.
        cluster.processes[0].send_signal(signal.SIGKILL)
        cluster.processes[0].wait(timeout=10)
        browser.get(replica + "/dashboard#/cluster")
        wait(browser).until(EC.text_to_be_present_in_element((By.ID, "members"), "false"))  # n1 seen unreachable
        wait(browser).until(EC.element_to_be_clickable((By.XPATH, "//button[text()='Promote']"))).click()
        wait(browser).until(EC.visibility_of_element_located((By.ID, "confirm-dialog")))
        question = wait(browser).until(EC.visibility_of_element_located((By.ID, "confirm-members"))).text
        assert "n1: unreachable" in question and "n3: replica, epoch 1, durable LSN" in question, question
        verdict = browser.find_element(By.ID, "dryrun-verdict").text
        assert "The checks pass: it would open epoch 2" in verdict, (verdict, browser.find_element(By.ID, "confirm-dialog").text)
        dry = browser.find_element(By.ID, "dryrun-report").text
        assert "most up-to-date replica" in dry and "acknowledged history on the target" in dry, dry
        assert cluster.admin(1, "GET", "status")["role"] == "replica"  # the dialog is open: nothing acted on yet
        browser.find_element(By.ID, "confirm-ok").click()
        done = status_text(browser, "promote-outcome", "promote")
        wait(browser).until(lambda d: "…" not in d.find_element(By.ID, "promote-outcome").text)
        done = browser.find_element(By.ID, "promote-outcome").text
        report = browser.find_element(By.ID, "promotion-report").text
        assert done.startswith("promote: done, epoch 2"), (done, report)
        assert "target is a replica" in report and "pass" in report
        assert cluster.admin(1, "GET", "status")["role"] == "primary"
        browser.get(replica + "/dashboard#/collections/items?sort=id&dir=desc")
        wait(browser).until(EC.element_to_be_clickable((By.XPATH, "//button[text()='Insert row']"))).click()
        wait(browser).until(EC.visibility_of_element_located((By.ID, "edit-id"))).send_keys("after-promotion")
        browser.find_element(By.ID, "row-save").click()
        status_text(browser, "row-outcome", "inserted id = after-promotion")
        rows = cluster.admin(1, "POST", "query", {"collection": "items", "order": [{"field": "id"}]})["rows"]
        assert [r["id"] for r in rows] == ["after-dry-run", "after-promotion", "via-replica"]
    finally:
        cluster.stop()
        shutil.rmtree(cluster.dir, ignore_errors=True)
