"""Config validation: every mistake gives one error naming the file, the key and the fix."""

import shutil

import pytest

from processors.config import ConfigError, load_config, parse_config

from conftest import DEMO_DATA, REPO

MINIMAL = """
[geometry]
poni = "eiger1m_demo.poni"

[scan]
shape = [25, 35]
snake = false

[[peak]]
name = "100"
hkl = [1, 0, 0]
q = [0.95, 1.19]
chi = [-13.0, 37.0]
"""


@pytest.fixture
def cfg_dir(tmp_path):
    shutil.copy(DEMO_DATA / "eiger1m_demo.poni", tmp_path / "eiger1m_demo.poni")
    return tmp_path


def parse(cfg_dir, text):
    return parse_config(text, cfg_dir / "cfg.toml")


def test_minimal_config_from_design_parses(cfg_dir):
    cfg = parse(cfg_dir, MINIMAL)
    assert cfg.scan.shape == (25, 35) and cfg.scan.snake is False
    assert cfg.geometry.poni == cfg_dir / "eiger1m_demo.poni"
    (peak,) = cfg.peaks
    assert peak.hkl == (1, 0, 0) and peak.q == (0.95, 1.19) and peak.chi == (-13.0, 37.0) and peak.bins is None
    assert cfg.derived.scherrer_k == 0.85
    assert cfg.williamson_hall_peaks == ("100",)


def test_shipped_configs_are_valid():
    """Every example config parses and its windows lie on its detector."""
    from processors.geometry import pixel_geometry, read_poni
    from processors.polar_lut import build_polar_lut

    paths = sorted((REPO / "configs").glob("*.toml")) + [DEMO_DATA / "demo.toml"]
    assert {p.name for p in paths} >= {"demo.toml", "p10_cspbbr3.toml"}
    for path in paths:
        cfg = load_config(path)
        geometry = pixel_geometry(read_poni(cfg.geometry.poni))
        lut = build_polar_lut(geometry, geometry.mask, cfg.peaks, source=str(path))
        assert all(w.n_pixels > 1000 for w in lut.windows), path


def test_demo_files_have_one_home_and_the_shared_poni_matches():
    """The demo lives in processors/demo_data only (package data); configs/ holds the beamline
    example, whose PONI is also the embedded Eiger4M demo's: the two copies are identical."""
    assert not (REPO / "configs" / "demo.toml").exists() and not (REPO / "configs" / "eiger1m_demo.poni").exists()
    assert (REPO / "configs" / "p10_eiger4m.poni").read_text() == (DEMO_DATA / "p10_eiger4m.poni").read_text()


def test_default_williamson_hall_peaks_are_h00_and_hh0(cfg_dir):
    text = MINIMAL + """
[[peak]]
name = "110"
hkl = [1, 1, 0]
q = [1.4, 1.6]
chi = [30, 60]

[[peak]]
name = "001"
hkl = [0, 0, 1]
q = [1.0, 1.1]
chi = [80, 100]

[[peak]]
name = "SL10"
superlattice = [1, 0]
q = [0.03, 0.05]
chi = [0, 20]
"""
    assert parse(cfg_dir, text).williamson_hall_peaks == ("100", "110")


@pytest.mark.parametrize("edit, words", [
    (lambda t: t.replace('snake = false', 'snake = false\nsnaek = true'), ["[scan]", "'snaek'", "Fix"]),
    (lambda t: t + "\n[plotting]\ncolor = 1\n", ["unknown table", "plotting"]),
    (lambda t: t.replace("q = [0.95, 1.19]", "q = [1.19, 0.95]"), ["'100'", "'q'", "low < high"]),
    (lambda t: t.replace("chi = [-13.0, 37.0]", "chi = [37.0, -13.0]"), ["'chi'", "inverted"]),
    (lambda t: t.replace("chi = [-13.0, 37.0]", "chi = [0.0, 360.0]"), ["'chi'", "narrower than 360"]),
    (lambda t: t.replace('poni = "eiger1m_demo.poni"', 'poni = "nope.poni"'), ["'poni'", "nope.poni", "not found"]),
    (lambda t: t.replace("shape = [25, 35]", "shape = [25]"), ["'shape'", "two integers"]),
    (lambda t: t.replace('hkl = [1, 0, 0]\n', ''), ["'hkl'", "exactly one"]),
    (lambda t: t.replace('name = "100"', 'name = 100'), ["'name'", "str"]),
    (lambda t: t + "\n[derived]\nwilliamson_hall = ['100', '300']\n", ["williamson_hall", "'300'"]),
    (lambda t: t + "\n[geometry.extra]\n", ["[geometry]", "'extra'"]),
    (lambda t: t.replace("[scan]", "[scan\n"), ["not valid TOML"]),
    (lambda t: t + "\n[monitor]\nflush_interval_s = 5.0\n", ["flush_interval_s", "once per second"]),
])
def test_mistakes_name_key_and_fix(cfg_dir, edit, words):
    with pytest.raises(ConfigError) as err:
        parse(cfg_dir, edit(MINIMAL))
    message = str(err.value)
    assert "\n" not in message.strip()
    assert str(cfg_dir / "cfg.toml") in message
    for w in words:
        assert w in message, (w, message)


def test_missing_config_file_is_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.toml")


def test_missing_user_mask_named(cfg_dir):
    text = MINIMAL.replace('poni = "eiger1m_demo.poni"', 'poni = "eiger1m_demo.poni"\nmask = "m.npy"')
    with pytest.raises(ConfigError, match=r"'mask'.*m\.npy.*not found"):
        parse(cfg_dir, text)


def test_window_outside_detector_coverage_fails_when_tables_are_built(cfg_dir, demo_poni_text):
    from processors.geometry import pixel_geometry
    from processors.polar_lut import build_polar_lut

    cfg = parse(cfg_dir, MINIMAL.replace("q = [0.95, 1.19]", "q = [9.5, 11.9]"))
    geometry = pixel_geometry(demo_poni_text)
    with pytest.raises(ConfigError, match=r"'100'.*holds 0 valid detector pixels.*1/nm"):
        build_polar_lut(geometry, geometry.mask, cfg.peaks, source=str(cfg.path))
