"""`gankit report`: one self-contained page of a run, or of several side by side; rendered in a real
browser (headless Chromium, when installed) with no script errors, and a screenshot kept."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gankit.cli import main

SHORT = ["--quiet", "--set", "train.log_every=20", "--set", "train.snapshot_every=100", "--set", "eval.every=100",
         "--set", "eval.n=300"]


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    for name, lr in (("fast", "0.002"), ("slow", "0.0005")):
        assert main(["train", "quadratic", "--steps", "300", "--out", str(folder / name), *SHORT,
                     "--set", f"optim_g.lr={lr}"]) == 0
    return folder


def external_references(page: str) -> list[str]:
    """Resources the page's markup would fetch: src/href attributes and CSS url() pointing off the page.
    Script bodies are left out (Plotly's code holds link texts it never loads); what scripts fetch
    is checked in the browser test, with the network switched off."""
    markup = re.sub(r"<script>.*?</script>", "", page, flags=re.S)
    return re.findall(r"""(?:src|href)\s*=\s*["']((?:https?:)?//[^"']+)""", markup) + \
        re.findall(r"""url\(\s*["']?((?:https?:)?//[^)"']+)""", markup)


def test_training_ends_by_writing_the_runs_report(toy_runs):
    page = (toy_runs / "fast" / "report.html").read_text()
    for section in ("What was trained", "Verdict", "Training curves", "Evaluation over training",
                    "Samples over training", "The article's pictures", "Timings", "config.toml"):
        assert section in page
    assert "D at equilibrium: 2 ln 2" in page and "curve_error" in page
    assert page.count("data:image/png;base64,") >= 3 and "data:image/gif;base64," in page
    assert external_references(page) == []


def test_several_runs_share_one_page_with_their_differences(toy_runs, tmp_path, capsys):
    out = tmp_path / "both.html"
    assert main(["report", str(toy_runs / "fast"), str(toy_runs / "slow"), "--out", str(out)]) == 0
    page = out.read_text()
    assert "2 runs compared" in page and "Config differences" in page
    differences = page[page.index("Config differences"):page.index("</table>", page.index("Config differences"))]
    assert "optim_g.lr" in differences and "0.002" in differences and "0.0005" in differences
    assert "train.steps" not in differences  # the same in both
    assert external_references(page) == []


def test_a_folder_that_is_no_run_is_one_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a gankit run directory" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="needs a browser: apt-get install chromium (.ci/run installs it)")
@pytest.mark.parametrize("pages", ["one", "two"])
def test_the_report_renders_in_a_browser_without_script_errors(toy_runs, tmp_path, pages):
    if pages == "one":
        page = toy_runs / "fast" / "report.html"
    else:
        page = tmp_path / "both.html"
        assert main(["report", str(toy_runs / "fast"), str(toy_runs / "slow"), "--out", str(page)]) == 0
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
               "--v=0", "--virtual-time-budget=8000", "--window-size=1200,3000",
               "--host-resolver-rules=MAP * ~NOTFOUND"]  # no network: a fetch would fail in the console
    done = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "Uncaught" in line or "Error" in line or "ERR_" in line], console
    assert "ERR_NAME_NOT_RESOLVED" not in done.stderr
    assert done.stdout.count("main-svg") >= 4  # Plotly drew the charts
    shot = Path(tmp_path) / f"report-{pages}.png"  # kept in pytest's folder to look at
    subprocess.run([*browser, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=180)
    assert shot.is_file() and shot.stat().st_size > 50_000
