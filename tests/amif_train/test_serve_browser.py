"""``amif serve`` in a real browser: headless Chromium (system package) driven by Selenium.

Starts the server on a micro model, uploads an image, asks a question and checks that ranked answers
with probabilities and the heatmap appear; then uploads a text file and checks the message. Needs
``chromium`` and ``chromedriver`` (``make browser`` / ``.ci/install-browser`` installs them); without
them the test fails rather than skips, so CI cannot pass without running it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import make_shapes_dataset, save_micro_model, write_test_images

START_TIMEOUT_S = 180  # importing gradio + torch on a loaded 2-core machine
WAIT_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.fail("the browser test needs chromium and chromedriver (run `make browser`)")
    return browser, driver


@pytest.fixture(scope="module")
def server(module_tmp):
    tmp = module_tmp("browser")
    model = save_micro_model(tmp / "model")
    data = make_shapes_dataset(tmp / "data", n_images=20)
    files = write_test_images(tmp / "img")
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "amif_train.cli", "serve", "--model", str(model), "--port",
                             str(port), "--examples", str(data)], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + START_TIMEOUT_S
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read(1)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"amif serve did not start: {(tmp / 'serve.log').read_text()[-2000:]}")
            time.sleep(1)
    yield {"url": url, **files}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, chromedriver = _browser_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(chromedriver), options=opts)
    d.set_page_load_timeout(WAIT_S)
    yield d
    d.quit()


def _ask(driver, url: str, image: Path, question: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, WAIT_S)
    upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#amif-image input[type=file]")))
    upload.send_keys(str(image))
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f"#amif-image td[aria-label='{image.name}']")))
    box = driver.find_element(By.CSS_SELECTOR, "#amif-question textarea")
    box.send_keys(question)
    driver.find_element(By.ID, "amif-answer").click()


def _message(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "amif-message").text


def test_upload_ask_and_see_answers_and_heatmap(server, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _ask(driver, server["url"], server["png"], "Is there a lesion on the left?")
    wait = WebDriverWait(driver, WAIT_S)
    wait.until(lambda d: "Answer:" in _message(d))
    answers = driver.find_element(By.ID, "amif-answers").text
    assert "%" in answers and any(a in answers for a in ("yes", "no", "left", "right"))
    heat = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#amif-heatmap img"))
    assert heat[0].get_attribute("src") and heat[0].size["width"] > 20
    assert "GCA reads most" in _message(driver)


def test_bad_upload_shows_the_message(server, driver):
    from selenium.webdriver.support.ui import WebDriverWait

    _ask(driver, server["url"], server["not_image"], "Is there a lesion?")
    WebDriverWait(driver, WAIT_S).until(lambda d: "Could not use this input" in _message(d))
    text = _message(driver)
    assert "notes.png" in text and "Traceback" not in text
