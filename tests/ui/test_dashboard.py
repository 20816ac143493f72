"""Browser tests: the served dashboard in a real Chromium."""
import io
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser
SHOTS = Path(tempfile.gettempdir()) / "ree-ui"
SHOTS.mkdir(exist_ok=True)


def _wait_text(page, pattern, timeout=120):
    """Wait until some element's text matches ``pattern`` (the page updates itself)."""
    deadline = time.time() + timeout
    regex = re.compile(pattern)
    while time.time() < deadline:
        if page.get_by_text(regex).count():
            return
        time.sleep(0.5)
    page.screenshot(path=str(SHOTS / "failure.png"))
    raise AssertionError(f"no text matching {pattern!r} within {timeout} s (screenshot in "
                         f"{SHOTS})")


def _figures_drawn(page) -> int:
    """Figures on the page: each static figure's decoded picture, and Bokeh canvases."""
    pictures = page.locator(".figure-picture img").evaluate_all(
        "imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length")
    return pictures + page.locator("canvas").count()


def _wait_figures(page, count=1, timeout=30):
    deadline = time.time() + timeout
    while _figures_drawn(page) < count:
        assert time.time() < deadline, f"fewer than {count} figures drawn within {timeout} s"
        time.sleep(0.2)


def _submit(page) -> str:
    page.get_by_role("button", name="Train", exact=True).click()
    _wait_text(page, r"Submitted \S+", timeout=30)
    text = page.get_by_text(re.compile(r"Submitted \S+")).first.inner_text()
    return re.search(r"Submitted (\S+?):", text).group(1)


def _choose_tiny_dataset(page):
    # the Discovery tab's null select offers "control: tiny.nc" too
    page.locator("select").filter(
        has=page.locator("option", has_text=re.compile(r"^tiny\.nc$"))).select_option("tiny.nc")


def test_page_loads_with_shipped_runs_and_no_console_errors(page):
    _wait_text(page, "rotation-rgroup-C4", timeout=30)
    time.sleep(2)
    assert page.console_errors == [], "\n".join(page.console_errors)


def test_the_page_loads_no_bundle_it_does_not_use(page):
    """No MathJax (no TeX here) or WebGL (canvas figures) bundle; Bokeh and its widgets load."""
    _wait_text(page, "rotation-rgroup-C4", timeout=30)
    scripts = page.evaluate("() => [...document.scripts].map((s) => s.src).filter(Boolean)")
    names = [src.rsplit("/", 1)[-1].split("?")[0] for src in scripts]
    assert "bokeh.min.js" in names and "bokeh-widgets.min.js" in names
    assert not {"bokeh-mathjax.min.js", "bokeh-gl.min.js"} & set(names), names
    assert page.console_errors == []


def test_one_session_clicking_sends_nothing_to_another(browser, dashboard_url):
    """Sessions are independent: a click in one page makes the server send nothing to another.
    (Panel's template busy spinner follows one process-wide flag, so with it every callback of
    every session was pushed to every open page and set its spinner going; the app has none.)
    Runs before any test trains, so the shared listing, the only thing pushed to all, is still."""
    pages = []
    for _ in range(2):
        context = browser.new_context(viewport={"width": 1500, "height": 1000})
        page = context.new_page()
        page.frames_in = []
        page.on("websocket", lambda ws, page=page: ws.on(
            "framereceived", lambda frame: page.frames_in.append(frame)))
        page.goto(dashboard_url)
        _wait_text(page, "rotation-rgroup-C4", timeout=60)
        pages.append(page)
    clicker, other = pages
    time.sleep(2)  # the other page's own start-up messages are done
    before = len(other.frames_in)
    for tab in ("Symmetry breaking", "Equivariance", "Runs"):
        clicker.get_by_text(tab, exact=True).first.click()
        time.sleep(1)
    assert len(clicker.frames_in) > 0
    assert len(other.frames_in) == before, other.frames_in[before:][:3]
    for page in pages:
        page.context.close()


FRAME_COUNTER = """(() => { window.__frames = 0; const request = window.requestAnimationFrame;
  window.requestAnimationFrame = (callback) => { window.__frames += 1;
                                                 return request.call(window, callback); }; })();"""


def test_an_idle_page_draws_no_frames_until_a_file_dropper_is_shown(browser, dashboard_url):
    """A page nobody touches asks for no animation frames (the file dropper's library would run
    a 60 frames a second loop from its load on); opening the dropper starts its frames."""
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    context.add_init_script(FRAME_COUNTER)
    page = context.new_page()
    page.goto(dashboard_url)
    _wait_text(page, "rotation-rgroup-C4", timeout=60)
    time.sleep(2)  # start-up layout is done
    page.evaluate("() => { window.__frames = 0; }")
    time.sleep(1)
    assert page.evaluate("() => window.__frames") == 0
    page.get_by_text("Bring your own data").click()
    page.wait_for_selector(".filepond--root", timeout=30000)
    page.evaluate("() => { window.__frames = 0; }")
    time.sleep(1)
    assert page.evaluate("() => window.__frames") > 10  # the dropper animates its drop area
    context.close()


def test_changing_the_group_offers_only_valid_models(page):
    group = page.locator("select").filter(has=page.locator("option", has_text="SO2"))
    group.select_option("SO2")
    model = page.locator("select").filter(has=page.locator("option", has_text="rsteer"))
    deadline = time.time() + 10
    while model.locator("option").all_inner_texts() != ["steer", "rsteer"]:
        assert time.time() < deadline, model.locator("option").all_inner_texts()
        time.sleep(0.2)
    group.select_option("D4")
    model = page.locator("select").filter(has=page.locator("option", has_text="combo"))
    time.sleep(1)
    assert "steer" not in model.locator("option").all_inner_texts()


def test_tiny_training_reaches_done_renders_and_survives_reload(page):
    _choose_tiny_dataset(page)
    run_id = _submit(page)
    page.get_by_text("Jobs", exact=True).first.click()
    _wait_text(page, rf"{run_id} · done", timeout=180)
    page.get_by_text("Runs", exact=True).first.click()
    ours = page.locator("tr.run-row", has_text=run_id)
    ours.first.wait_for(timeout=30000)
    # select only the new run
    for row in page.locator("tr.run-row").all():
        box = row.locator("input[type=checkbox]")
        if box.count() and box.is_checked():
            box.click()
    ours.locator("input[type=checkbox]").click()
    page.get_by_text("Symmetry breaking", exact=True).first.click()
    _wait_text(page, rf"Symmetry breaking: {run_id}", timeout=30)
    _wait_figures(page)
    assert page.console_errors == [], "\n".join(page.console_errors)
    page.get_by_text("Rollout", exact=True).first.click()
    _wait_text(page, rf"Flow player: {run_id}", timeout=30)
    _wait_figures(page, 2)
    time.sleep(2)
    assert page.console_errors == [], "\n".join(page.console_errors)
    page.reload()
    page.wait_for_selector("text=Experiment", timeout=60000)
    _wait_text(page, run_id, timeout=30)
    assert page.console_errors == [], "\n".join(page.console_errors)


def test_the_runs_table_sorts_in_the_page_and_a_clicked_row_is_shown(page):
    _wait_text(page, "rotation-rgroup-C4", timeout=30)
    table = page.locator("table", has=page.locator("tr.run-row")).first
    names = [t.strip(" \u25B2\u25BC") for t in table.locator("thead th").all_inner_texts()]
    column = names.index("future RMSE")  # the checkbox's column counts: cells line up

    def values():
        return table.locator("tr.run-row").evaluate_all(
            f"rows => rows.map(r => r.cells[{column}].textContent)")

    header = table.locator("thead th").nth(column)
    for descending in (False, True):
        header.click()
        shown = values()
        numbers = [float(v) for v in shown if v]
        assert numbers == sorted(numbers, reverse=descending) and len(numbers) >= 2
        assert shown[:len(numbers)] == [v for v in shown if v]  # empty cells last
    assert header.get_attribute("aria-sort") == "descending"
    page.keyboard.press("Enter")  # the sorted header keeps the focus: the keyboard sorts too
    assert header.get_attribute("aria-sort") == "ascending"
    # only one run checked, by a click on its row: the tabs show it
    for box in table.locator("tr.run-row input[type=checkbox]").all():
        if box.is_checked():
            box.click()
    assert table.locator("tr.run-row.selected").count() == 0
    table.locator("tr.run-row", has_text="rotation-gconv-C4").locator("td").last.click()
    assert [t.split()[0] for t in table.locator("tr.run-row.selected").all_inner_texts()] == [
        "rotation-gconv-C4"]
    page.get_by_text("Equivariance", exact=True).first.click()
    _wait_text(page, r"Equivariance: rotation-gconv-C4", timeout=60)
    assert page.console_errors == [], "\n".join(page.console_errors)


def test_cancel_stops_a_running_job(page):
    _choose_tiny_dataset(page)
    page.get_by_text("Training budget").click()
    epochs = page.get_by_label("Epochs")
    epochs.fill("500")
    epochs.press("Enter")
    time.sleep(0.5)
    run_id = _submit(page)
    page.get_by_text("Jobs", exact=True).first.click()
    _wait_text(page, rf"{run_id} · running", timeout=60)
    page.locator("button:not([disabled])", has_text="Cancel").first.click()
    _wait_text(page, rf"{run_id} · cancelled", timeout=60)


def test_sweep_view_renders_for_the_shipped_runs(page):
    _wait_text(page, "rotation-rgroup-C4", timeout=30)
    page.get_by_text("Sweep", exact=True).first.click()
    _wait_text(page, r"Relaxation sweep: rgroup C4 on", timeout=30)
    _wait_figures(page)
    assert page.console_errors == [], "\n".join(page.console_errors)


def test_discovery_tab_shows_the_shipped_verdict_and_runs_a_cancellable_job(page):
    _wait_text(page, "rotation-rgroup-C4", timeout=30)
    page.get_by_text("Symmetry breaking", exact=True).first.click()
    page.get_by_role("button", name=re.compile("Open the Discovery tab")).click()
    _wait_text(page, r"member differently|Strongest boundary", timeout=30)
    _wait_figures(page)
    assert page.console_errors == [], "\n".join(page.console_errors)
    page.locator("select").filter(has=page.locator("option", has_text="orbits.nc")).first \
        .select_option("orbits.nc")
    time.sleep(0.5)
    page.get_by_role("button", name="Discover", exact=True).click()
    _wait_text(page, r"Started \S+", timeout=30)
    _wait_text(page, r"\(running, runs\)", timeout=60)
    page.locator("button:not([disabled])", has_text="Cancel").first.click()
    _wait_text(page, r"\(cancelled, runs\)", timeout=90)
    assert page.console_errors == [], "\n".join(page.console_errors)


def test_drop_a_flow_map_its_names_save_and_choose_it(page, tmp_path):
    """Bring your own data: a netCDF whose names need mapping is dropped on the page."""
    import base64

    import numpy as np
    import xarray as xr

    flow = np.random.default_rng(3).standard_normal((3, 40, 2, 12, 20)).astype("float32")
    path = tmp_path / "odd.nc"
    xr.Dataset({"east": (("run", "frame", "a", "b"), flow[:, :, 0]),
                "north": (("run", "frame", "a", "b"), flow[:, :, 1])}).to_netcdf(
        path, engine="h5netcdf")
    page.get_by_text("Bring your own data").click()
    page.wait_for_selector(".filepond--root", timeout=30000)
    # a real drag and drop: dragenter, dragover and drop with the file in a DataTransfer
    transfer = page.evaluate_handle(
        """([name, data]) => {
               const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
               const dt = new DataTransfer();
               dt.items.add(new File([bytes], name));
               return dt;
           }""", ["odd.nc", base64.b64encode(path.read_bytes()).decode()])
    target = page.locator(".filepond--drop-label").first
    box = target.bounding_box()
    at = dict(clientX=box["x"] + box["width"] / 2, clientY=box["y"] + box["height"] / 2)
    for kind in ("dragenter", "dragover", "drop"):
        target.dispatch_event(kind, {"dataTransfer": transfer, **at})
        time.sleep(0.2)
    roles = page.locator("select").filter(has=page.locator("option", has_text="north"))
    deadline = time.time() + 60
    while roles.count() < 8:  # the mapping step: one select per role, offering the file's names
        assert time.time() < deadline, "the mapping step did not appear"
        time.sleep(0.5)
    for i, name in enumerate(["east", "north", "", "", "run", "frame", "a", "b"]):
        if name:
            roles.nth(i).select_option(name)
            time.sleep(0.3)
    page.get_by_role("button", name="Read with these names").click()
    _wait_text(page, r"3 sims x 40 steps on 12 x 20", timeout=60)
    # the preview frame (the Runs tab has no plot)
    page.wait_for_selector("canvas", state="attached", timeout=30000)
    assert any((c.bounding_box() or {}).get("width", 0) > 50 for c in page.locator("canvas").all())
    name = page.locator(".bk-input-group", has_text="Save as").locator("input")
    assert name.input_value() == "odd.nc"  # proposed from the uploaded file's name
    name.fill("dropped.nc")
    name.press("Enter")
    time.sleep(0.5)
    page.get_by_role("button", name="Save to the data folder").click()
    _wait_text(page, r"Saved dropped\.nc", timeout=60)
    choice = page.locator("select").filter(has=page.locator("option", has_text="dropped.nc"))
    assert choice.first.input_value() == "dropped.nc"
    assert page.console_errors == [], "\n".join(page.console_errors)


def _picture(locator) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB"), dtype=float)


def test_the_flow_player_steps_in_the_page_and_comes_back(page):
    """The player's frames are swapped into the drawn figure by the page: a step draws another
    picture, and stepping back to the first draws the first picture again."""
    _wait_text(page, "rotation-rgroup-C4", timeout=30)
    page.get_by_text("Rollout", exact=True).first.click()
    _wait_text(page, r"Flow player: ", timeout=60)
    figure = page.locator(".flow-player").first
    figure.locator(".figure-interactive").click(timeout=30000)  # its picture, made interactive
    figure.locator("canvas").first.wait_for(timeout=30000)
    time.sleep(1.5)
    first = _picture(figure)
    box = page.locator("input[type=range]").first.bounding_box()

    def step_to(fraction):  # press on the slider there (the thumb jumps to the spot)
        page.mouse.move(box["x"] + fraction * box["width"], box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.up()
        time.sleep(1.5)
        return _picture(figure)

    late, back = step_to(0.9), step_to(0.0)
    step = np.abs(late - first).mean()
    assert step > 1.0, "a step did not change the picture"
    assert np.abs(back - first).mean() < 0.05 * step, "the first step looks different the 2nd time"
    assert page.console_errors == [], "\n".join(page.console_errors)


def test_a_left_tab_takes_its_figures_out_of_the_page(page):
    """Each static figure made interactive is a Bokeh document in the page; leaving its tab
    drops it, so a student flipping tabs all lesson does not pile them up."""
    _wait_text(page, "rotation-rgroup-C4", timeout=30)
    counts = []
    for _ in range(3):
        for tab, text in (("Symmetry breaking", "Symmetry breaking: "),
                          ("Equivariance", "Model vs data")):
            page.get_by_text(tab, exact=True).first.click()
            _wait_text(page, text, timeout=60)
            _wait_figures(page)
            buttons = page.locator(".figure-interactive")
            while buttons.count():  # every figure built (a clicked one's button goes)
                buttons.first.click()
            page.wait_for_function("() => window.Bokeh.documents.length > 1", timeout=30000)
            time.sleep(1)
            counts.append(page.evaluate("() => window.Bokeh.documents.length"))
    # the app's own document and the shown tab's figures: the same after every round
    assert counts[:2] == counts[2:4] == counts[4:6] and max(counts) <= 3, counts
    assert page.console_errors == [], "\n".join(page.console_errors)


def test_a_tab_shows_pictures_until_a_figure_is_asked_for_interactive(page):
    """A tab's figures come as pictures drawn on the server: no Bokeh figure is built in the
    page until its picture or its button is clicked; then that one figure is, with its tools,
    and the others stay pictures. A step of the flow player makes it interactive at that step."""
    _wait_text(page, "rotation-rgroup-C4", timeout=30)
    page.get_by_text("Symmetry breaking", exact=True).first.click()
    _wait_text(page, "Symmetry breaking: ", timeout=60)
    _wait_figures(page, 2)
    pictures = page.locator(".figure-picture img")
    assert pictures.count() == 2 and page.locator("canvas").count() == 0
    assert page.evaluate("() => window.Bokeh.documents.length") == 1  # the app's own
    pictures.first.click()
    page.locator("canvas").first.wait_for(timeout=30000)
    page.wait_for_function("() => window.Bokeh.documents.length === 2", timeout=30000)
    assert page.locator(".figure-picture img").count() == 1  # the other one stays a picture
    assert page.locator(".bk-toolbar, .bk-Toolbar").count() >= 1  # zoom, pan, save...
    page.get_by_text("Rollout", exact=True).first.click()
    _wait_text(page, r"Flow player: ", timeout=60)
    figure = page.locator(".flow-player").first
    figure.locator(".figure-picture img").wait_for(timeout=30000)
    box = page.locator("input[type=range]").first.bounding_box()
    page.mouse.click(box["x"] + 0.5 * box["width"], box["y"] + box["height"] / 2)
    figure.locator("canvas").first.wait_for(timeout=30000)
    assert figure.locator(".figure-picture").count() == 0
    # another quantity at this step: its picture shows the first step, so it is built at once
    drawn = figure.locator("canvas").first.element_handle()
    page.locator("button", has_text=re.compile(r"^\s*speed\s*$")).first.click()
    drawn.wait_for_element_state("hidden", timeout=60000)  # the vorticity figure has gone
    figure.locator("canvas").first.wait_for(timeout=60000)
    assert figure.locator(".figure-picture").count() == 0
    assert page.console_errors == [], "\n".join(page.console_errors)
