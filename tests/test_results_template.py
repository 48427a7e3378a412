"""Results files made from a session's template (``monitor.session.results_template``) are the
files ``ResultsWriter`` makes directly, value for value, attribute for attribute."""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_results_writer import measured

from monitor.session.results_file import ResultsWriter, open_results
from monitor.session.results_template import ResultsTemplates
from monitor.session.results_update import take_update
from processors.config import load_config
from processors.demo_setup import write_demo_config
from stream.raster_scan import RasterScan

SCAN = RasterScan((3, 4), snake=True, step=(0.5, 0.25), origin=(1.0, 2.0), motors=("piezo_y", "piezo_x"))
TIMING = ("receive_ms", "process_ms")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return load_config(write_demo_config(tmp_path_factory.mktemp("cfg"), shape=SCAN.shape))


def _plain(value):
    """A value as comparable Python data (NaN-safe: numbers by their bytes)."""
    if isinstance(value, (bytes, str)):
        return value
    arr = np.asarray(value)
    if arr.dtype.kind in "OSU":
        return [v.decode() if isinstance(v, bytes) else v for v in arr.reshape(-1).tolist()], arr.shape
    return arr.dtype.str, arr.shape, arr.tobytes()


def contents(path) -> dict:
    """Every object of the file (each once, as HDF5 visits them), its kind, attributes and, for
    a dataset, dtype, shape, maxshape, chunks, fill value, filters and values."""
    out = {}
    with open_results(path) as f:
        def visit(name, obj):
            attrs = {k: _plain(v) for k, v in sorted(obj.attrs.items())}
            if isinstance(obj, h5py.Dataset):
                out[name] = ("dataset", attrs, str(obj.dtype), h5py.check_string_dtype(obj.dtype), obj.shape,
                             obj.maxshape, obj.chunks, _plain(obj.fillvalue), obj.compression, _plain(obj[()]))
            else:
                out[name] = ("group", attrs)
        f.visititems(visit)
        out["/"] = _plain(dict(f.attrs))
        out["links"] = [f[a].id == f[b].id for a, b in (("entry/results/y", "entry/scan/y"),
                                                          ("entry/results/x", "entry/scan/x"))]
    return out


def writer(path, config, scan=SCAN, templates=None, start_time=None, **run):
    """A writer of ``path`` whose file is made now (from ``templates`` when given)."""
    values = dict(inputs=("tcp://127.0.0.1:9999",), poni_text="poni A", setup_id="setup-a", run_uid="run-a",
                  parent_uid="", geometry="config", timing_keys=TIMING)
    values.update(run)
    w = ResultsWriter(path, config, scan, create=False, templates=templates, **values)
    if start_time is not None:
        w.start_time = start_time
    w.create()
    return w


def test_a_file_from_the_template_is_the_file_made_directly(config, tmp_path):
    templates = ResultsTemplates(config)
    first = writer(tmp_path / "first.h5", config, templates=templates)
    assert templates.built == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.h5"]  # the template's own file is gone
    # every string a run sets differs from the template's (the first run's)
    run = dict(inputs=("tcp://10.0.0.7:31001",), poni_text="poni B, longer than the first", setup_id="setup-b",
               run_uid="run-b-0123456789", parent_uid="run-a", geometry="bluesky start document")
    second = writer(tmp_path / "second.h5", config, templates=templates, **run)
    direct = writer(tmp_path / "direct.h5", config, start_time=second.start_time, **run)
    assert templates.built == 1  # the same layout: the same template
    made = contents(tmp_path / "second.h5")  # read while both are open for writing (SWMR)
    assert made == contents(tmp_path / "direct.h5")
    assert made["entry/process/run_uid"][-1] == b"run-b-0123456789"
    assert made["entry/process/inputs"][-1] == (["tcp://10.0.0.7:31001"], (1,))
    assert made["links"] == [True, True]
    # and they stay the same through writes and the end
    for w in (second, direct):
        w.write(take_update(measured(config, SCAN, [0, 1, 2, 5]), config, full=True))
        w.write(take_update(measured(config, SCAN, [0, 1, 2, 5, 7]), config, full=True, final=True,
                            exit_status="success"))
    for w in (first, second, direct):
        w.close()
    after, after_direct = contents(tmp_path / "second.h5"), contents(tmp_path / "direct.h5")
    end_time = "entry/process/end_time"
    after.pop(end_time), after_direct.pop(end_time)  # when each was closed
    assert after == after_direct


def test_a_strip_from_the_template_grows_every_map(config, tmp_path):
    """A 1-D strip grows while it is written: every map of a file from the template is resized."""
    strip = RasterScan((1, 3), motors=("", "point"))
    templates = ResultsTemplates(config)
    writer(tmp_path / "first.h5", config, strip, templates=templates).close()
    made = writer(tmp_path / "made.h5", config, strip, templates=templates, run_uid="strip")
    direct = writer(tmp_path / "direct.h5", config, strip, start_time=made.start_time, run_uid="strip")
    for w in (made, direct):
        collector = measured(config, strip, [0, 1])
        w.write(take_update(collector, config, full=True))
        collector.grow(6)
        w.write(take_update(collector, config, full=True))
        w.close()
    a, b = contents(tmp_path / "made.h5"), contents(tmp_path / "direct.h5")
    assert a == b
    maps = [name for name, v in a.items() if v[0] == "dataset" and name.startswith("entry/results/")
            and len(v[4]) == 2 and v[5] == (None, None)]
    assert len(maps) > 100 and all(a[name][4] == (1, 6) for name in maps)


def test_each_layout_gets_a_template_of_its_own(config, tmp_path):
    templates = ResultsTemplates(config)
    writer(tmp_path / "a.h5", config, templates=templates).close()
    writer(tmp_path / "b.h5", config, templates=templates, run_uid="other").close()
    assert templates.built == 1
    other_scan = RasterScan((2, 6))
    writer(tmp_path / "c.h5", config, other_scan, templates=templates).close()
    writer(tmp_path / "d.h5", config, templates=templates, timing_keys=("receive_ms",)).close()
    writer(tmp_path / "e.h5", config, templates=templates, inputs=("a.h5", "b.h5")).close()
    assert templates.built == 4
    for name, scan, run in (("c", other_scan, {}), ("d", SCAN, dict(timing_keys=("receive_ms",))),
                            ("e", SCAN, dict(inputs=("a.h5", "b.h5")))):
        f = tmp_path / f"{name}.h5"
        direct = tmp_path / f"{name}_direct.h5"
        writer(direct, config, scan, **run).close()
        a, b = contents(f), contents(direct)
        a.pop("entry/process/start_time"), b.pop("entry/process/start_time")
        assert a == b, name


def test_a_writer_with_another_config_makes_its_file_itself(config, tmp_path):
    templates = ResultsTemplates(config)
    other = load_config(write_demo_config(tmp_path / "other", shape=SCAN.shape))
    writer(tmp_path / "x.h5", other, templates=templates).close()
    assert templates.built == 0
    with open_results(tmp_path / "x.h5") as f:
        assert f["entry/process/config_file"][()].decode() == str(other.path)


def test_without_a_temporary_folder_the_file_is_made_directly(config, tmp_path, monkeypatch):
    """The template is made in a temporary folder; where there is none, each file is made as
    without templates (the run loses nothing but the speed)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
    templates = ResultsTemplates(config)
    writer(tmp_path / "made.h5", config, templates=templates, run_uid="direct").close()
    assert templates.built == 0
    with open_results(tmp_path / "made.h5") as f:
        assert f["entry/process/run_uid"][()] == b"direct"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["made.h5"]


def test_a_layout_template_made_ahead_serves_the_first_file(config, tmp_path):
    """``make_layout_template`` (a live session, before data flow) makes the template of a layout
    and nothing else: the first file of that layout is made from it, not from a new one."""
    from monitor.session.results_file import make_layout_template

    templates = ResultsTemplates(config)
    make_layout_template(templates, SCAN, inputs=("tcp://127.0.0.1:9999",), poni_text="poni A", timing_keys=TIMING)
    assert templates.built == 1
    assert not (Path(tempfile.gettempdir()) / "nanomaps-layout.h5").exists()  # its path is never made
    made = writer(tmp_path / "first.h5", config, templates=templates)
    direct = writer(tmp_path / "direct.h5", config, start_time=made.start_time)
    assert templates.built == 1
    made.close(), direct.close()
    assert contents(tmp_path / "first.h5") == contents(tmp_path / "direct.h5")
