"""The console's second wave in a real browser, without a guest (libvirt's test driver,
points committed to the API's real repository, a real ext4 image backed up): a VM of
many points renders from ONE request of its points and loads older ones on demand
(no request per point), the VMs list takes each VM's labels from the listing, the
dashboard draws the last 30 days per VM and group, the repository's growth and
forecast and the copy lag of a second site, a point's page reads its hold back after
a reload, and Explore downloads a selection of files and a directory as one zip."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import libvirt
import pytest
from fastapi.testclient import TestClient

from stasis.api.context import ApiContext
from stasis.catalog import PointIndex, PolicyStore
from stasis.hypervisor import labels as lb
from stasis.protection.backup import back_up_images
from stasis.repository import DiskRecord, Manifest, Repository, VmRecord
from stasis_testkit import fsimages, sample_tree
from stasis_testkit.disks import MiB
from tests.api.conftest import TEST_URI, api_ctx, client, real_ctx
from tests.conftest import init_repo, write_image
from tests.console.conftest import Browsing, shoot, sign_in
from tests.console.test_console import USER_PASSWORD, server, user

__all__ = ["api_ctx", "client", "real_ctx", "server"]  # fixtures used here too

pytestmark = pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)

V1 = "/api/v1"
MANY = 130  # more than a page (100) of the VM page's listing


def manifest(n: int, at: datetime, vms: list[str], index: str, *, kind: str = "vm",
             name: str | None = None, mode: str = "full", consistency: str = "crash",
             tags: dict[str, str] | None = None) -> Manifest:
    disks = [DiskRecord(name="vda", index=index, virtual_size=1 << 30, format="qcow2",
                        mode=mode, bytes_read=(n + 1) * 4096, stored_new=1000)]
    return Manifest(id=f"{n:032x}", name=name or vms[0], time=at.isoformat(), kind=kind,
                    vms=[VmRecord(name=v, kind="vm", consistency=consistency, disks=disks)
                         for v in vms], tags=tags or {}, timings={"frozen_ms": 3.5})


@pytest.fixture
def index(repo: Repository, tmp_path: Path) -> str:
    """A real disk index (the repository's info reads every point's)."""
    src = write_image(tmp_path / "small.raw", 1 << 20, [(0, b"x" * 4096)])
    return back_up_images(repo, [src], name="small").disks()[0][1].index


def point_requests(b: Browsing) -> tuple[list[str], list[str]]:
    """(listings of points, requests of one point) the browser made."""
    lists = [u for u in b.requests if re.search(r"/api/v1/points\?", u)]
    ones = [u for u in b.requests if re.search(r"/api/v1/points/[0-9a-f]{32}(\?|$)", u)]
    return lists, ones


def test_a_vm_of_many_points_renders_from_one_request_and_loads_older_on_demand(
        api_ctx: ApiContext, repo: Repository, index: str, server: str,
        browse: Callable[..., Browsing]) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    for n in range(MANY):  # hourly, the newest an hour ago
        repo.commit(manifest(n, now - timedelta(hours=MANY - n), ["test"], index,
                             mode="full" if n % 10 == 0 else "incremental",
                             consistency="filesystem" if n % 2 else "crash"))
    user(api_ctx, "vera", "viewer")
    b = browse(server)
    page = b.page()
    sign_in(page, "vera", USER_PASSWORD)
    b.requests.clear()
    page.goto(f"{server}/#/vms/test")
    rows = page.get_by_role("table", name="Points").locator("tbody tr")
    rows.first.wait_for()
    assert rows.count() == 100
    assert page.get_by_test_id("timeline").locator("a.mark").count() == 100
    newest = f"{MANY - 1:032x}"
    assert newest[:12] in rows.first.inner_text()
    assert "incremental" in rows.first.inner_text() and "filesystem" in rows.first.inner_text()
    assert "3.5 ms" in rows.first.inner_text()
    assert page.get_by_test_id("timeline").locator("a.mark.full").count() == 10
    lists, ones = point_requests(b)
    assert len(lists) == 1 and not ones, (lists, ones)
    assert "sort=-time" in lists[0] and "limit=100" in lists[0]
    caption = page.get_by_text("The 100 newest points")
    assert caption.is_visible()
    shoot(page, "vm-many-points")
    more = page.get_by_role("button", name="Load 100 older points")
    more.click()
    sync_expect_count(rows, MANY)
    assert page.get_by_test_id("timeline").locator("a.mark").count() == MANY
    assert f"{0:032x}"[:12] in rows.last.inner_text()
    assert more.is_hidden() and page.get_by_text(f"All {MANY} points").is_visible()
    lists, ones = point_requests(b)
    assert len(lists) == 2 and "cursor=" in lists[1] and not ones
    assert not b.foreign(), b.foreign()


def sync_expect_count(locator: object, n: int) -> None:
    from playwright.sync_api import expect

    expect(locator).to_have_count(n)  # type: ignore[arg-type]


@pytest.fixture
def labelled() -> Iterator[None]:
    conn = libvirt.open(TEST_URI)
    dom = conn.lookupByName("test")
    lb.update_labels(dom, {"tier": "web"}, [])
    yield
    lb.update_labels(dom, {}, ["tier"])
    conn.close()


@pytest.mark.usefixtures("labelled")
def test_the_vms_list_takes_labels_from_the_listing(
        api_ctx: ApiContext, server: str, browse: Callable[..., Browsing]) -> None:
    user(api_ctx, "vic", "viewer")
    b = browse(server)
    page = b.page()
    sign_in(page, "vic", USER_PASSWORD)
    page.goto(f"{server}/#/vms")
    row = page.locator("tr[data-vm='test']")
    row.get_by_text("tier=web").wait_for()
    page.get_by_label("Search").fill("tier=web")
    assert row.is_visible()
    assert not [u for u in b.requests if "/labels" in u]  # no request per VM


POLICY = """
[[policy]]
name = "nightly"
vms = ["test"]
every = "1d"
rpo = "36h"
repository = "main"

[policy.retention]
keep_last = 50

[[policy.copy]]
to = "offsite"
every = "1d"
"""


def test_the_dashboard_draws_days_growth_forecast_and_copy_lag(
        api_ctx: ApiContext, repo: Repository, index: str, server: str, tmp_path: Path,
        browse: Callable[..., Browsing], client: Callable[..., TestClient]) -> None:
    c = api_ctx.catalog
    PolicyStore(c).store("nightly", POLICY)
    offsite = init_repo(tmp_path / "offsite")
    PointIndex(c).name_repositories({"main": repo, "offsite": offsite})
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    tag = {"policy": "nightly"}
    made = [manifest(n, today - timedelta(days=d, hours=-1), ["test"], index, tags=tag)
            for n, d in ((1, 9), (2, 8), (3, 5), (4, 4), (5, 1))]
    for m in made:
        repo.commit(m)
    offsite.commit(made[3])  # copied up to day -4: one point and 3 days behind
    PointIndex(c).sync(offsite)
    made_group = client("operator").post(f"{V1}/groups", json={"name": "shop",
                                                                "vms": ["test"]})
    assert made_group.status_code == 201, made_group.text
    group = [manifest(9, today - timedelta(days=2), ["test"], index, kind="group",
                      name="shop")]
    repo.commit(group[0])
    user(api_ctx, "otto", "operator")
    b = browse(server)
    page = b.page()
    sign_in(page, "otto", USER_PASSWORD)
    page.goto(f"{server}/#/")
    strip = page.get_by_test_id("strip-vm-test")
    strip.wait_for()
    cells = strip.locator("span")
    assert cells.count() == 30
    label = strip.get_attribute("aria-label") or ""
    assert "last 30 days" in label and "breached on" in label, label
    assert cells.nth(29 - 9).get_attribute("class") == "met made"  # its first point
    assert cells.nth(29 - 10).get_attribute("class") == "before"
    assert cells.nth(29 - 7).get_attribute("class") == "breached"  # 2 days without
    title = cells.nth(29 - 9).get_attribute("title") or ""
    assert title.startswith((today - timedelta(days=9)).date().isoformat()), title
    forecast = page.get_by_test_id("forecast-main").inner_text()
    assert forecast.startswith(("full in about", "not full within", "not growing")), forecast
    lag = page.get_by_role("table", name="Copy lag")
    row = lag.locator("tbody tr").first
    text = row.inner_text()
    assert "nightly" in text and "offsite" in text, text
    assert "72 h behind" in text or "3 days behind" in text, text
    shoot(page, "dashboard-history")
    assert not b.foreign(), b.foreign()


def test_a_points_page_reads_its_hold_back_after_a_reload(
        api_ctx: ApiContext, repo: Repository, index: str, server: str,
        browse: Callable[..., Browsing]) -> None:
    m = manifest(1, datetime.now(UTC) - timedelta(hours=2), ["test"], index)
    repo.commit(m)
    user(api_ctx, "hana", "operator")
    b = browse(server)
    page = b.page()
    sign_in(page, "hana", USER_PASSWORD)
    page.goto(f"{server}/#/points/{m.id}")
    page.get_by_label("Reason").fill("audit 2027")
    page.get_by_label("Until").fill("2099-06-30")
    page.get_by_role("button", name="Hold point").click()
    page.get_by_role("button", name="Release hold").wait_for()
    page.reload()
    facts = page.get_by_test_id("hold-facts")
    facts.wait_for()
    text = facts.inner_text()
    assert "audit 2027" in text and "hana" in text and "2099" in text, text
    shoot(page, "point-hold")
    page.get_by_role("button", name="Release hold").click()
    page.get_by_role("button", name="Hold point").wait_for()
    # the expired or released hold: a released one is gone, so no facts are shown
    assert page.get_by_test_id("hold-facts").count() == 0


def test_explore_downloads_a_selection_as_one_zip(
        api_ctx: ApiContext, repo: Repository, server: str, tmp_path: Path,
        browse: Callable[..., Browsing]) -> None:
    tree = sample_tree(tmp_path / "tree")
    image = fsimages.ext4_disk(tmp_path / "web1.img", tree, size=64 * MiB).path
    m = back_up_images(repo, [image], name="web1")
    vm, disk = m.vms[0].name, m.vms[0].disks[0].name
    user(api_ctx, "rita", "restore")
    b = browse(server)
    page = b.page()
    sign_in(page, "rita", USER_PASSWORD)
    page.goto(f"{server}/#/points/{m.id}/explore?vm={vm}&disk={disk}&path=/")
    page.get_by_label("Select README").check()
    page.get_by_label("Select name with spaces.txt").check()
    page.get_by_label("Select deep").check()
    count = page.get_by_test_id("selected-count")
    assert count.inner_text().startswith("3 selected")
    page.get_by_label("Select name with spaces.txt").uncheck()
    assert count.inner_text().startswith("2 selected")
    page.get_by_label("Select name with spaces.txt").check()
    shoot(page, "explore-selection")
    with page.expect_download() as got:
        page.get_by_role("link", name="Download the 3 selected as zip").click()
    data = Path(got.value.path()).read_bytes()
    zf = zipfile.ZipFile(io.BytesIO(data))
    files = {i.filename.lstrip("/"): zf.read(i) for i in zf.infolist() if not i.is_dir()}
    assert files == {"README": (tree / "README").read_bytes(),
                     "name with spaces.txt": (tree / "name with spaces.txt").read_bytes(),
                     "deep/a/b/c/d/leaf.txt": (tree / "deep/a/b/c/d/leaf.txt").read_bytes()}
    page.get_by_role("button", name="Clear selection").click()
    assert count.inner_text() == "Nothing selected"
    assert page.get_by_label("Select README").is_checked() is False
    assert not b.foreign(), b.foreign()
