"""The Extension Index entry (``LossLab.json``) and what the index checks in this repository, offline.

Slicer/ExtensionsIndex's ``scripts/check_description_files.py`` (read 2026-08) runs these checks on a
description file ``<Name>.json`` and a clone of its ``scm_url``. The ones that need no network are redone
here: JSON format and LF line endings, the catalogue schema (v1.0.x: required keys, known keys, types),
the extension name (matches ``project()``, does not start with "Slicer"), the category, the ``scm_url``
scheme, the repository name (starts with "Slicer"), a licence file at the root, literal http(s) icon and
screenshot URLs in ``CMakeLists.txt`` (the check reads the ``set(...)`` lines as text: a ``${VAR}`` is not
expanded and fails), and the repository size (under 100 MB). Downloading the schema, the GitHub topic and
the URLs' reachability need the network and are left to the index's CI (README.md, "Publishing").
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "LossLab.json"

#: slicer-extension-catalog-entry-schema v1.0.1 / v1.0.2 (Slicer/Slicer, Schemas/): required keys, and the
#: type of every allowed key (additionalProperties is false); v1.0.2 adds dicom_support_rule.
SCHEMA_REQUIRED = ("$schema", "category", "scm_url")
SCHEMA_TYPES = {
    "$schema": str,
    "category": str,
    "scm_url": str,
    "scm_revision": str,
    "scm_type": str,
    "build_dependencies": list,
    "build_subdirectory": str,
    "enabled": bool,
    "tier": int,
    "dicom_support_rule": str,
}
SCHEMA_URL = re.compile(
    r"^https://raw\.githubusercontent\.com/Slicer/Slicer/main/Schemas/"
    r"slicer-extension-catalog-entry-schema-v1\.0\.[0-2]\.json#?$"
)
#: the prefixes check_git_repository_name accepts
REPOSITORY_PREFIXES = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")
#: the licence file names check_license_file looks for at the root
LICENSE_NAMES = ("LICENSE", "LICENCE", "License.txt", "license.txt", "LICENSE.txt", "COPYING", "COPYING.txt")
#: a few of check_description_files.py's ACCEPTED_EXTENSION_CATEGORIES (the one used here among them)
ACCEPTED_CATEGORIES = {"Segmentation", "Analysis", "Quantification", "Cardiac", "Neuroimaging", "Utilities"}


def _entry() -> dict:
    return json.loads(ENTRY.read_text(encoding="utf-8"))


def _cmake() -> str:
    return (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")


def _repository() -> tuple[str, str]:
    """(owner, name) of the entry's scm_url."""
    parts = urllib.parse.urlsplit(_entry()["scm_url"].strip().strip("/")).path.strip("/").split("/")
    return parts[0], parts[-1].removesuffix(".git")


def test_the_entry_is_lf_only_json_with_the_schema_keys_and_types():
    raw = ENTRY.read_bytes()
    assert b"\r" not in raw, "LossLab.json must have LF line endings only"
    entry = _entry()
    missing = [k for k in SCHEMA_REQUIRED if k not in entry]
    assert not missing, f"LossLab.json lacks the schema's required keys {missing}"
    unknown = sorted(set(entry) - set(SCHEMA_TYPES))
    assert not unknown, f"LossLab.json has keys the schema does not allow: {unknown}"
    for key, value in entry.items():
        assert isinstance(value, SCHEMA_TYPES[key]) and not (key == "tier" and isinstance(value, bool)), (
            f"LossLab.json: {key} is {type(value).__name__}, the schema wants {SCHEMA_TYPES[key].__name__}"
        )
    assert SCHEMA_URL.match(entry["$schema"]), entry["$schema"]
    assert all(isinstance(d, str) for d in entry.get("build_dependencies", []))
    assert 1 <= entry.get("tier", 1) <= 5
    assert entry.get("scm_type", "git") in ("git", "local")


def test_the_entry_name_matches_project_and_the_index_naming_rules():
    name = ENTRY.stem
    # check_cmakelists_content: the first project(...) of the top-level CMakeLists.txt
    project = re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", _cmake(), re.IGNORECASE)
    assert project and project[0].strip("\"'") == name, f"project({project[:1]}) != description file {name}"
    assert not name.lower().startswith("slicer"), "the extension name should not start with 'Slicer'"
    entry = _entry()
    assert entry["category"] in ACCEPTED_CATEGORIES
    assert re.search(rf'set\(EXTENSION_CATEGORY\s+"{re.escape(entry["category"])}"\)', _cmake())


def test_scm_url_and_repository_name():
    entry = _entry()
    url = entry["scm_url"]
    assert "://" in url and urllib.parse.urlsplit(url).scheme in ("git", "https"), url
    owner, repository = _repository()
    assert owner and repository.startswith(REPOSITORY_PREFIXES), (
        f"the repository name {repository!r} should start with 'Slicer' (README.md, 'Publishing')"
    )
    assert entry.get("scm_revision"), "name the branch (or commit) the index builds"
    homepage = re.search(r'set\(EXTENSION_HOMEPAGE\s+"([^"]+)"\)', _cmake())
    assert homepage and homepage.group(1).rstrip("/") == f"https://github.com/{owner}/{repository}"


def test_build_dependencies_match_extension_depends():
    depends = re.search(r'set\(EXTENSION_DEPENDS\s+"?([^")]+)"?\)', _cmake())
    assert depends, "CMakeLists.txt does not set EXTENSION_DEPENDS"
    assert sorted(_entry().get("build_dependencies", [])) == sorted(depends.group(1).split()) == ["PyTorch"]


def _literal_urls() -> dict[str, list[str]]:
    """EXTENSION_ICONURL / EXTENSION_SCREENSHOTURLS read with check_cmakelists_content's patterns."""
    text = _cmake()
    icon = re.findall(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', text, re.IGNORECASE | re.MULTILINE)
    shots = re.findall(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', text, re.IGNORECASE | re.MULTILINE)
    assert icon, "no literal EXTENSION_ICONURL the index can read"
    assert shots, "no literal EXTENSION_SCREENSHOTURLS the index can read"
    return {"EXTENSION_ICONURL": [icon[0].strip()], "EXTENSION_SCREENSHOTURLS": shots[0].split()}


def test_icon_and_screenshot_urls_are_literal_and_name_pngs_of_this_repository():
    owner, repository = _repository()
    revision = _entry()["scm_revision"]
    prefix = f"https://raw.githubusercontent.com/{owner}/{repository}/{revision}/"
    for key, urls in _literal_urls().items():
        assert urls, f"{key} is empty"
        for url in urls:
            assert url.startswith("http") and "${" not in url, f"{key}: {url!r} is not a literal http(s) URL"
            assert url.startswith(prefix), f"{key}: {url} is not a file of {prefix}"
            path = ROOT / url[len(prefix) :]
            assert path.is_file(), f"{key}: {url} names {path.relative_to(ROOT)}, which does not exist"
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{key}: {path.name} is not a PNG"


def test_module_help_links_point_at_the_published_repository():
    owner, repository = _repository()
    for module in sorted(ROOT.glob("*/*.py")):
        for found in re.findall(r"https://github\.com/([\w.-]+)/([\w.-]+)/", module.read_text()):
            assert found == (owner, repository), f"{module.relative_to(ROOT)} links to {'/'.join(found)}"


def test_contributors_are_in_the_template_form():
    """``Name (Organisation)``, comma separated (Slicer's extension template)."""
    found = re.search(r'set\(EXTENSION_CONTRIBUTORS\s+"([^"]+)"\)', _cmake())
    assert found
    for person in found.group(1).split(", "):
        assert re.fullmatch(r"[^(),]+ \([^()]+\)", person), f"{person!r} is not 'Name (Organisation)'"


def test_licence_file_at_the_root_matches_pyproject_and_readme():
    present = [n for n in LICENSE_NAMES if (ROOT / n).is_file()]
    assert present, "no licence file at the repository root"
    text = (ROOT / present[0]).read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "Apache License 2.0" in readme and "(LICENSE)" in readme


def test_repository_is_under_the_index_size_limit():
    """check_repository_size: the checked-out files (plus history) under 100 MB; here the tracked files."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout ({exc}): the tracked files cannot be listed")
    files = [ROOT / f for f in listed.decode().split("\0") if f]
    size_mb = sum(f.stat().st_size for f in files if f.is_file()) / 2**20
    assert size_mb < 100, f"the tracked files take {size_mb:.1f} MB; the index accepts at most 100 MB"
