"""The documents the code cites are in the repository, and the method notes name real config fields.

Source files cite notes as repository paths (e.g. ``docs/methods/uot.md``); a citation of a file
the repository does not hold (such as an internal ``METHODS.md``) leaves a reader with nothing to
follow. The method notes (docs/methods/) name the config field of every choice; each such field
must exist in the method's configs.
"""

from __future__ import annotations

import importlib
import pathlib
import re
import subprocess

import ml_collections
import pytest

THIS_FILE = pathlib.Path(__file__).resolve()
REPO = THIS_FILE.parents[1]
METHODS = ("uot", "autoscale", "l2sm", "dkpnet", "asnet")
# A document path as source files write it: words, slashes, dots and dashes ending in ".md".
CITATION = re.compile(r"[\w/.-]+\.md\b")
# `section.field` (optionally followed by " = value") inside backticks in the notes.
FIELD = re.compile(
    r"`((?:data|model|loss|l2s|l2sm|dkpnet|asnet|eval|evals|train|optimizer|optimizers|selection)"
    r"(?:\.\w+)+)(?: = [^`]*)?`"
)
# The configs whose fields each note may name (the shared README and datasets pages: any).
CONFIGS = {
    "uot": ("uot_shb",),
    "autoscale": ("autoscale_reg_shb", "autoscale_loc_shb"),
    "l2sm": ("l2sm_shb", "l2sm_qnrf"),
    "dkpnet": ("dkpnet_va_3joint", "dkpnet_inva_3joint", "dkpnet_va_4joint"),
    "asnet": ("asnet_sha_to_shb", "asnet_ucsd_to_mall"),
}


def _tracked_python_files() -> list[pathlib.Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    return [REPO / name for name in out.decode().split("\0") if name]


def _citations() -> dict[str, list[str]]:
    """{cited path: [file:line, ...]} over every Python file of the repository."""
    cited = {}
    for path in _tracked_python_files():
        if not path.exists() or path == THIS_FILE:  # deleted; this file names what it refuses
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in CITATION.findall(line):
                where = f"{path.relative_to(REPO)}:{number}"
                cited.setdefault(match, []).append(where)
    return cited


def test_every_cited_document_exists_in_the_repository():
    cited = _citations()
    assert cited, "no source file cites a document: the scan found nothing to check"
    missing = {doc: where for doc, where in cited.items() if not (REPO / doc).is_file()}
    assert not missing, f"cited documents not in the repository: {missing}"


def test_no_source_file_cites_the_internal_methods_notes():
    cited = _citations()
    internal = {doc: where for doc, where in cited.items() if doc.endswith("METHODS.md")}
    assert not internal, f"cite docs/methods/<method>.md instead: {internal}"


def test_every_method_has_its_notes():
    notes = REPO / "docs" / "methods"
    for method in METHODS:
        text = (notes / f"{method}.md").read_text(encoding="utf-8")
        assert "## What the paper specifies" in text, method
        assert "## What crowdjax decides where the paper is silent" in text, method
    index = (notes / "README.md").read_text(encoding="utf-8")
    for method in METHODS:
        assert f"({method}.md)" in index, f"docs/methods/README.md does not link {method}.md"


def _has_field(config: ml_collections.ConfigDict, dotted: str) -> bool:
    node = config
    for key in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
            return False
        node = node[key]
    return True


def _configs(names) -> list[ml_collections.ConfigDict]:
    return [importlib.import_module(f"configs.{name}").get_config() for name in names]


@pytest.mark.parametrize("method", METHODS)
def test_every_config_field_a_note_names_exists(method):
    text = (REPO / "docs" / "methods" / f"{method}.md").read_text(encoding="utf-8")
    fields = sorted(set(FIELD.findall(text)))
    assert fields, f"docs/methods/{method}.md names no config field"
    configs = _configs(CONFIGS[method])
    unknown = [f for f in fields if not any(_has_field(c, f) for c in configs)]
    assert not unknown, f"docs/methods/{method}.md names fields no {method} config has: {unknown}"


@pytest.mark.parametrize("page", ["docs/methods/README.md", "docs/datasets.md"])
def test_shared_pages_name_fields_of_some_config(page):
    text = (REPO / page).read_text(encoding="utf-8")
    configs = _configs(name for names in CONFIGS.values() for name in names)
    unknown = [f for f in set(FIELD.findall(text)) if not any(_has_field(c, f) for c in configs)]
    assert not unknown, f"{page} names fields no config has: {unknown}"
