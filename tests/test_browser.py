"""The observers' web pages in a real browser: Debian's headless Chromium
driven by selenium (``make test`` installs both), against the reduction
service's throwaway DaCHS.

A member logs in, submits a simulated frame through the form and watches
the job page reach COMPLETED without a reload, with the summary's numbers
and the plots; a broken frame shows its one-line reason; the image search
finds the frame, with its preview and DataLink; no page logs a JavaScript
error; every page fits a 480-pixel window; header values that look like
markup stay text on every page.  Screenshots of the job page
during and after a run and of a failure go to build/test-artefacts/.
"""
import time
import urllib.parse
from pathlib import Path
from xml.etree import ElementTree

import pytest
import pyvo
import requests

from conftest import SKY
from test_reduction_service import NOT_FITS, exposure

pytestmark = pytest.mark.archive

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTEFACTS = Path(__file__).resolve().parent.parent / "build" / "test-artefacts"
NARROW = 480
FINAL = ("COMPLETED", "ERROR", "ABORTED")
#: header values an observer's camera software could write: pages must show them as text
MARKUP = {"OBJECT": '<img src=x onerror="window.pwned=1">', "OBSERVER": "<script>window.pwned=2</script>"}


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def logged_in(service, path, user="alice", password="s3cret"):
    """``path`` on the service with the member's credentials in the URL (the
    browser then sends them with every request below that path)."""
    parts = urllib.parse.urlsplit(service.url)
    return f"{parts.scheme}://{user}:{password}@{parts.netloc}{path}"


def markup_ran(driver):
    """Whether header values (``MARKUP``) ran as markup on the current page."""
    return driver.execute_script("return window.pwned !== undefined")


def console_errors(driver):
    """The page's SEVERE console entries.  Failed loads from other hosts are
    left out: the test machine has no network, and DaCHS's DataLink page
    asks ivoa.net for the DataLink vocabulary."""
    own = urllib.parse.urlsplit(driver.current_url).netloc.split("@")[-1]
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
            and not ("Failed to load resource" in entry["message"] and own not in entry["message"].split()[0])]


def overflow_at(driver, width):
    """What sticks out of the current page in a window ``width`` pixels wide:
    [] if the page is within the window, else the page's width and the
    first elements past the window's edge (tables may scroll inside themselves)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    try:
        return driver.execute_script("""
            if (document.documentElement.scrollWidth <= window.innerWidth) return [];
            const out = [document.documentElement.scrollWidth];
            for (const e of document.querySelectorAll("body *")) {
              const box = e.getBoundingClientRect();
              if (box.right > window.innerWidth && !e.closest("table") && out.length < 6)
                out.push(e.tagName + "." + e.className + " " + Math.round(box.left) + "-" + Math.round(box.right));
            }
            return out;""")
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def text_of(driver, css):
    from selenium.webdriver.common.by import By
    return driver.find_element(By.CSS_SELECTOR, css).text


def wait_for(driver, condition, timeout=120, every=0.2):
    """Poll ``condition(driver)`` until it is true (its value) or the time is up (AssertionError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition(driver)
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"no {condition.__name__} within {timeout} s on {driver.current_url}")


def submit_through_the_form(driver, service, frame):
    """The reduction form, with the frame chosen and the defaults left; the job's id."""
    from selenium.webdriver.common.by import By
    driver.get(logged_in(service, "/rapas/q/reduce/form"))
    driver.find_element(By.NAME, "image").send_keys(str(frame))
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(driver, lambda d: "job.html?job=" in d.current_url, timeout=60)
    driver.execute_script("window.rapasSamePage = true")         # gone if the page reloads
    return urllib.parse.parse_qs(urllib.parse.urlsplit(driver.current_url).query)["job"][0]


def final_phase(driver):
    phase = text_of(driver, "#phase")
    return phase if phase in FINAL else None


def images_loaded(driver, css, timeout=30):
    """How many images ``css`` selects, and how many of them were decoded,
    once every one has loaded or failed."""
    count = ("const images = [...document.querySelectorAll(arguments[0])];"
             "return images.every(i => i.complete) ? [images.length, images.filter(i => i.naturalWidth > 0).length]"
             " : null")
    return wait_for(driver, lambda d: d.execute_script(count, css), timeout=timeout)


def test_the_forms_and_home_page_work_and_fit_a_phone(browser, service):
    browser.get(service.url + "/")
    assert browser.execute_script("return typeof jQuery === 'function'"), "DaCHS's jQuery did not load"
    assert console_errors(browser) == []
    assert overflow_at(browser, NARROW) == []
    browser.get(logged_in(service, "/rapas/q/reduce/form"))
    ticked = browser.execute_script(
        "return [...document.querySelectorAll('input:checked')].map(i => i.name + '=' + i.value)")
    assert {"psf=True", "enrich=True", "plate_solve=auto", "colour_plane=G"} <= set(ticked), ticked
    assert "Output format" not in browser.page_source and "UPLOAD=" not in text_of(browser, "body")
    assert console_errors(browser) == []
    assert overflow_at(browser, NARROW) == []
    browser.get(service.url + "/rapas/q/browse/form")
    assert console_errors(browser) == []
    assert overflow_at(browser, NARROW) == []


def test_a_member_watches_a_frame_reduce_and_finds_it_in_the_archive(browser, service):
    job_id = submit_through_the_form(browser, service, exposure(service, 9, **MARKUP))
    # live: the job page shows stages finishing while the job runs, then the result
    wait_for(browser, lambda d: text_of(d, "#phase") == "EXECUTING" and d.find_elements("css selector",
             "#stages li.done"), timeout=120, every=0.1)
    browser.save_screenshot(str(ARTEFACTS / "job-running.png"))
    assert wait_for(browser, final_phase, timeout=180) == "COMPLETED"
    wait_for(browser, lambda d: d.find_element("id", "result").is_displayed())
    assert browser.execute_script("return window.rapasSamePage === true"), "the job page was reloaded"
    assert not markup_ran(browser)
    browser.save_screenshot(str(ARTEFACTS / "job-completed.png"))

    session = requests.Session()
    session.auth = ("alice", "s3cret")
    results = f"{service.jobs_url}/{job_id}/results"
    summary = session.get(f"{results}/summary.json", timeout=30).json()
    archived = session.get(f"{results}/archive.json", timeout=30).json()
    assert f"{summary['zero_point']:.3f} ± {summary['zero_point_err']:.3f}" in text_of(browser, "[data-key=zero_point]")
    assert f"{summary['limiting_mag_5sigma']:.2f}" in text_of(browser, "[data-key=limiting_mag]")
    assert str(summary["n_sources"]) in text_of(browser, "[data-key=n_sources]")
    assert summary["source_file"] == "exp9.fits" and text_of(browser, "#frame") == "exp9.fits ·"
    pngs = [p for p in summary["products"] if p["media_type"] == "image/png"]
    assert len(pngs) >= 4 and images_loaded(browser, "#plots img") == [len(pngs), len(pngs)]
    stages = browser.execute_script("return [...document.querySelectorAll('#stages li')].map(l => l.className)")
    assert stages and set(stages) == {"done"}, stages
    assert console_errors(browser) == []
    assert overflow_at(browser, NARROW) == []

    # the member's job list (the UWS job list's address, opened in the browser)
    # names the job with its zero point
    browser.get(service.jobs_url)
    assert browser.current_url.endswith("/rapas/q/reduce/static/jobs.html")
    row = wait_for(browser, lambda d: d.find_elements("css selector", f"tr[data-job='{job_id}']"))[0]
    assert "COMPLETED" in row.text and f"{summary['zero_point']:.3f}" in row.text and not markup_ran(browser)
    assert console_errors(browser) == [] and overflow_at(browser, NARROW) == []

    # the image search finds the frame: its row links to the preview, the frame's page and DataLink
    browser.get(service.url + "/rapas/q/browse/form?" + urllib.parse.urlencode(
        {"hPOS": f"{SKY['ra']}, {SKY['dec']}", "hSIZE": "0.1", "hINTERSECT": "OVERLAPS",
         "__nevow_form__": "genForm", "submit": "Go"}))
    obs_id = archived["obs_id"]
    page_link = browser.find_element("css selector", f"a[href$='image.html?obs_id={obs_id}']")
    row = page_link.find_element("xpath", "./ancestor::tr")
    assert MARKUP["OBJECT"] in row.text and MARKUP["OBSERVER"] in row.text and not markup_ran(browser)
    assert images_loaded(browser, f"tr:has(a[href$='obs_id={obs_id}']) img.rapas-thumb") == [1, 1]
    datalink = row.find_element("link text", "DataLink").get_attribute("href")
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(datalink).query)["ID"] == [archived["obs_publisher_did"]]
    assert console_errors(browser) == [] and overflow_at(browser, NARROW) == []
    browser.get(datalink)
    assert f"image.html?obs_id={obs_id}" in browser.page_source and "zeropoint.png" in browser.page_source
    assert console_errors(browser) == []

    # the frame's page: its summary and plots, for anyone
    browser.get(service.url + f"/rapas/q/web/static/image.html?obs_id={obs_id}")
    wait_for(browser, lambda d: d.find_element("id", "result").is_displayed())
    assert f"{summary['zero_point']:.3f}" in text_of(browser, "[data-key=zero_point]")
    assert MARKUP["OBJECT"] in text_of(browser, "#status") and not markup_ran(browser)
    assert images_loaded(browser, "#plots img") == [len(pngs), len(pngs)]
    assert console_errors(browser) == [] and overflow_at(browser, NARROW) == []

    # a target in the frame: its page shows the light curve plot and the frame's point
    added = session.post(service.url + "/rapas/q/target_edit/api", timeout=60, data={
        "name": "BRW 2026web", "ra": summary["ra_center"], "dec": summary["dec_center"], "kind": "SN"})
    assert added.status_code == 200 and "ERROR" not in added.text
    tap = pyvo.dal.TAPService(service.url + "/tap")
    wait_for(browser, lambda d: str(tap.search("SELECT backfill FROM rapas.targets WHERE name='BRW 2026web'")
                                    .to_table()["backfill"][0]).startswith("done"), timeout=120, every=0.5)
    browser.get(service.url + "/rapas/q/web/static/target.html?name=BRW%202026web")
    wait_for(browser, lambda d: d.find_element("id", "result").is_displayed())
    assert images_loaded(browser, "#plot") == [1, 1]
    points = browser.find_elements("css selector", "#points tbody tr")
    assert any(obs_id in row.text for row in points), [row.text for row in points]
    assert console_errors(browser) == [] and overflow_at(browser, NARROW) == []
    assert MARKUP["OBSERVER"] in text_of(browser, "#points") and not markup_ran(browser)


def test_a_failing_frame_shows_its_reason_without_reload(browser, service):
    broken = service.work / "shopping-list.fits"
    broken.write_bytes(NOT_FITS)
    job_id = submit_through_the_form(browser, service, broken)
    assert wait_for(browser, final_phase, timeout=120) == "ERROR"
    wait_for(browser, lambda d: d.find_element("id", "failure").is_displayed())
    assert browser.execute_script("return window.rapasSamePage === true"), "the job page was reloaded"
    browser.save_screenshot(str(ARTEFACTS / "job-failed.png"))
    session = requests.Session()
    session.auth = ("alice", "s3cret")
    document = ElementTree.fromstring(session.get(f"{service.jobs_url}/{job_id}", timeout=30).content)
    reason = text_of(browser, "#reason")
    assert reason and "\n" not in reason
    assert reason == document.find(".//{http://www.ivoa.net/xml/UWS/v1.0}message").text.strip()
    assert "FITS" in reason
    assert "submit the frame again" in text_of(browser, "#advice")
    assert console_errors(browser) == [] and overflow_at(browser, NARROW) == []
    # the job's UWS address, opened in the browser, is its page too
    browser.get(f"{service.jobs_url}/{job_id}")
    assert browser.current_url.endswith(f"/rapas/q/reduce/static/job.html?job={job_id}")
    assert wait_for(browser, final_phase) == "ERROR"
