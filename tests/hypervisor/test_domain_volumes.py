"""Volume disks in domain XML: parsed with their pool and volume, resolved to the
volume's path through libvirt (test:///default's pool), and written by a rewrite."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from stasis.errors import HypervisorError
from stasis.hypervisor.domain import Rewrite, parse, rewrite
from stasis.hypervisor.pools import open_pool, resolve_volumes

libvirt = pytest.importorskip("libvirt")

XML = """<domain type='kvm'><name>v</name><uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
<devices>
  <disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>
    <source pool='default-pool' volume='v-vda.qcow2'/><target dev='vda'/></disk>
  <disk type='file' device='disk'><driver name='qemu' type='raw'/>
    <source file='/images/v-vdb.img'/><target dev='vdb'/></disk>
</devices></domain>"""


def test_a_volume_disk_is_parsed_resolved_and_rewritten() -> None:
    info = parse(XML)
    vda, vdb = info.disks
    assert (vda.target, vda.source, vda.pool, vda.volume) == ("vda", "", "default-pool",
                                                               "v-vda.qcow2")
    assert (vdb.source, vdb.pool) == ("/images/v-vdb.img", "")
    conn = libvirt.open("test:///default")
    try:
        pool = open_pool(conn, "default-pool")
        pool.handle.createXML("<volume><name>v-vda.qcow2</name><capacity>1048576</capacity>"
                              "</volume>", 0)
        resolved = resolve_volumes(conn, info)
        path = pool.handle.storageVolLookupByName("v-vda.qcow2").path()
        assert resolved.disks[0].source == path and resolved.disks[0].kind == "file"
        missing = parse(XML.replace("v-vda.qcow2", "gone.qcow2"))
        with pytest.raises(HypervisorError, match=r"volume gone\.qcow2 of the storage pool"):
            resolve_volumes(conn, missing)
        assert resolve_volumes(conn, missing, strict=False).disks[0].source == ""
    finally:
        conn.close()
    out = ET.fromstring(rewrite(XML, Rewrite(
        name="w", disk_paths={"vda": "/x/w-vda.qcow2"}, disk_formats={}, file_paths={},
        storage=Path("/x"), disk_volumes={"vdb": ("p", "w-vdb.img")})))
    vda_el, vdb_el = out.iterfind("devices/disk")
    assert vda_el.get("type") == "file" and vda_el.find("source").attrib == {  # type: ignore[union-attr]
        "file": "/x/w-vda.qcow2"}
    assert vdb_el.get("type") == "volume" and vdb_el.find("source").attrib == {  # type: ignore[union-attr]
        "pool": "p", "volume": "w-vdb.img"}
