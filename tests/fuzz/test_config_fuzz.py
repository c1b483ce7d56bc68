"""Configuration files with random mutations: loading either works or names the file and key.

Each example copies ``conf/`` into a private folder, mutates one of its files (a value replaced by
one of another type or out of range, a key misspelt, a section replaced, the YAML broken), and
loads it as every command does. The property: the result is a valid config, or a ConfigError
whose message names the mutated file and, for a key mutation, the key's dotted path; never any
other exception.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.config import PROJECT_ROOT, load_config
from pipelines.errors import ConfigError
from pipelines.nba.catalog import load_catalog

LONG = os.environ.get("JOURNEYLAKE_FUZZ") == "long"
FILES = ("base.yml", "targets/local.yml", "actions.yml")

odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=8), st.integers(), max_size=2),
)


def leaves(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in a YAML document (keys and list indexes)."""
    if isinstance(data, dict):
        found: list[tuple[Any, ...]] = [prefix] if prefix else []
        for key, value in data.items():
            found.extend(leaves(value, (*prefix, key)))
        return found
    if isinstance(data, list):
        found = [prefix] if prefix else []
        for i, value in enumerate(data):
            found.extend(leaves(value, (*prefix, i)))
        return found
    return [prefix]


def put(data: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        data = data[step]
    data[path[-1]] = value


@pytest.fixture
def conf_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "conf"
    shutil.copytree(PROJECT_ROOT / "conf", folder)
    monkeypatch.setenv("JOURNEYLAKE_CONF_DIR", str(folder))
    monkeypatch.setenv("JOURNEYLAKE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("JOURNEYLAKE_TARGET", raising=False)
    return folder


def restore(conf: Path) -> None:
    """Undo the previous example's mutation (the fixture's folder serves every example)."""
    for name in FILES:
        shutil.copyfile(PROJECT_ROOT / "conf" / name, conf / name)


def load_everything() -> None:
    cfg = load_config("local")
    load_catalog(cfg)


@settings(max_examples=400 if LONG else 40)
@given(data=st.data())
def test_a_mutated_value_or_key_loads_or_is_named_with_its_file_and_key(
    conf_copy: Path, data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(FILES), label="file")
    restore(conf_copy)
    path = conf_copy / name
    original = path.read_text()
    document = yaml.safe_load(original)
    target = data.draw(st.sampled_from(leaves(document)), label="key")
    kind = data.draw(st.sampled_from(["value", "misspelt key"]), label="mutation")
    if kind == "value":
        put(document, target, data.draw(odd_values, label="value"))
        named = ".".join(str(p) for p in target if not isinstance(p, int))
    else:
        parent: Any = document
        for step in target[:-1]:
            parent = parent[step]
        if not isinstance(parent, dict):
            return  # list items have no key to misspell
        key = target[-1]
        parent[f"{key}x"] = parent.pop(key)
        named = ".".join(str(p) for p in target[:-1] if not isinstance(p, int))
    path.write_text(yaml.safe_dump(document))
    try:
        load_everything()
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message.strip(), message
        assert Path(name).name in message, f"{name} not named: {message}"
        # the key, or the part of it that exists (a misspelt key is reported as unknown or
        # missing). A YAML anchor's value (actions.yml's `shared:`) is named where it is used.
        head = named.split(".")[0]
        assert not head or head == "shared" or head in message, f"{named!r} not named: {message}"


@settings(max_examples=200 if LONG else 20)
@given(
    name=st.sampled_from(FILES),
    cut=st.integers(min_value=0, max_value=5000),
    junk=st.sampled_from(["\t", ": :", "[", "{", "'", "- - :", "\x00", "key: [1,"]),
)
def test_a_broken_yaml_file_is_named_with_its_line(conf_copy: Path, name: str, cut: int, junk: str) -> None:
    restore(conf_copy)
    path = conf_copy / name
    original = path.read_text()
    at = min(cut, len(original))
    path.write_text(original[:at] + junk + original[at:])
    try:
        load_everything()
    except ConfigError as exc:
        assert Path(name).name in str(exc), str(exc)
