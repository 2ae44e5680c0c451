"""First paint of the dashboard row browser on a 10,000-row collection, in headless chromium (docs/DASHBOARD.md).

Not a test (pytest does not collect it). Run from the repository:
  cd Tests/Compat && AERODB_BIN=$(cd ../.. && swift build --show-bin-path)/aerodb ../../.venv/bin/python dashboard_paint.py
Prints the milliseconds from navigation to "rows 1-50 of 10000" shown, five runs (WebDriver polling every 10 ms included).
"""
import os, sys, time
sys.path.insert(0, os.getcwd())
from conftest import Node
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait
n = Node()
try:
    n.admin("POST", "collections", {"name": "big", "fields": {"id": {"type": "int", "required": True}, "name": {"type": "text"}, "qty": {"type": "int", "nullable": True}}, "primary_key": "id"})
    for b in range(10):
        n.admin("POST", "transactions", {"ops": [{"op": "insert", "collection": "big", "doc": {"id": b*1000+i, "name": f"item {b*1000+i}", "qty": i}} for i in range(1000)]})
    o = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800"): o.add_argument(a)
    d = webdriver.Chrome(service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"), options=o)
    d.get(n.url + "/dashboard"); d.execute_script("sessionStorage.setItem('aerodb.dashboard.serviceKey', arguments[0])", n.service)
    times = []
    for run in range(5):
        d.get("about:blank")
        t0 = time.monotonic()
        d.get(n.url + "/dashboard#/collections/big")
        WebDriverWait(d, 20, poll_frequency=0.01).until(EC.text_to_be_present_in_element((By.ID, "row-range"), "of 10000"))
        times.append((time.monotonic() - t0) * 1000)
        nav = d.execute_script("const t=performance.getEntriesByType('navigation')[0]; return [t.domContentLoadedEventEnd, performance.now()]")
    print("ms to rows 1-50 of 10000 shown (navigation to table):", [round(t) for t in times], "in-page", nav)
    d.quit()
finally:
    n.stop()
